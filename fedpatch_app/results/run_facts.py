"""What a run actually used, read from its results.json whatever the file's age.

The ``run`` block of results.json has grown over time. Newer files say which features were
computed (``run.features``: backbone, the weights identifier actually loaded, whether they were
random, the feature fingerprint and spec), which data were read (``run.data``: AutoVI or the
built-in synthetic data, its root and categories), where official-format maps were exported
(``run.outputs.maps``) and how the run ended (``run.status``); their ``run.config`` keys are
snake_case. Older files hold the same facts elsewhere (``run.weights``,
``run.config.fingerprint``, ``run.config.feature_spec``, ``run.config.dataset_used``, the data
root under ``data_root_used``, ``data_root`` or ``data-root``) and some of their settings are
kebab-case.

Readers (the report, comparisons) go through these accessors only, so that a fact is looked
up in one place and every layout gives the same answers. Nothing here touches the file system:
the facts are what the results say, and "unknown" where they say nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

#: Backbone of every run written before the backbone was recorded.
LEGACY_BACKBONE = "wide_resnet50_2"
#: Data kinds a run may record; "unknown" when an older file does not say.
DATA_KINDS = ("autovi", "synthetic")
#: Synthetic generator of every run written before the generator's kind was recorded.
LEGACY_SYNTHETIC_KIND = "drawn"


@dataclass(frozen=True)
class FeatureFacts:
    """The features a run computed: ``weights`` is the identifier actually loaded
    (``"imagenet-v1"``, ``"none"``, ``"file:<hash>"``); ``fingerprint`` None when unrecorded."""

    backbone: str
    weights: str
    random_weights: bool
    fingerprint: str | None
    spec: dict[str, Any]

    @property
    def image_size(self) -> int | None:
        """Input image size of the features, when the spec records it."""
        value = self.spec.get("image_size")
        return int(value) if isinstance(value, int | float) else None


@dataclass(frozen=True)
class SyntheticFacts:
    """Which built-in synthetic data a run used (generator kind, scale, seed)."""

    kind: str
    scale: str | None
    seed: int | None

    def describe(self) -> str:
        """``drawn, scale tiny, seed 0``."""
        parts = [self.kind]
        if self.scale:
            parts.append(f"scale {self.scale}")
        if self.seed is not None:
            parts.append(f"seed {self.seed}")
        return ", ".join(parts)


@dataclass(frozen=True)
class DataFacts:
    """The data a run read: ``kind`` is "autovi", "synthetic" or "unknown"."""

    kind: str
    synthetic: SyntheticFacts | None
    root: str | None
    categories: list[str]
    #: A name a person can read ("AutoVI", "parts (mvtec layout)"; None in older files).
    name: str | None = None

    @property
    def is_synthetic(self) -> bool:
        """Whether the run read the built-in synthetic data."""
        return self.kind == "synthetic"


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def run_block(results: Mapping[str, Any]) -> Mapping[str, Any]:
    """The ``run`` block of a results dict (empty when absent)."""
    return _mapping(results.get("run"))


def snake_case(config: Mapping[str, Any]) -> dict[str, Any]:
    """``config`` with kebab-case keys written snake_case; a key already in snake_case wins."""
    out = {str(k): v for k, v in config.items() if "-" not in str(k)}
    for key, value in config.items():
        out.setdefault(str(key).replace("-", "_"), value)
    return out


def config(results: Mapping[str, Any]) -> dict[str, Any]:
    """The run's settings (``run.config``) with snake_case keys."""
    return snake_case(_mapping(run_block(results).get("config")))


def _weights_id(text: str) -> str:
    """The identifier of a recorded weights setting (``imagenet`` -> ``imagenet-v1``)."""
    return "imagenet-v1" if text == "imagenet" else text


def _is_random(weights: str) -> bool:
    return "none" in (w.strip() for w in weights.split(","))


def features(results: Mapping[str, Any]) -> FeatureFacts:
    """The features the run computed (``run.features``, else the older places)."""
    recorded = _mapping(run_block(results).get("features"))
    if recorded:
        spec = dict(_mapping(recorded.get("spec")))
        weights = str(recorded.get("weights") or spec.get("weights") or "unknown")
        return FeatureFacts(
            backbone=str(recorded.get("backbone") or spec.get("backbone") or LEGACY_BACKBONE),
            weights=weights,
            random_weights=bool(recorded.get("random_weights", _is_random(weights))),
            fingerprint=_text_or_none(recorded.get("fingerprint")),
            spec=spec,
        )
    cfg = config(results)
    spec = dict(_mapping(cfg.get("feature_spec")))
    weights = _weights_id(
        str(run_block(results).get("weights") or spec.get("weights") or "unknown")
    )
    fingerprint = cfg.get("fingerprint") or _mapping(results.get("federated")).get("fingerprint")
    return FeatureFacts(
        backbone=str(spec.get("backbone") or LEGACY_BACKBONE),
        weights=weights,
        random_weights=_is_random(weights),
        fingerprint=_text_or_none(fingerprint),
        spec=spec,
    )


def _text_or_none(value: Any) -> str | None:
    return str(value) if value not in (None, "") else None


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def data(results: Mapping[str, Any]) -> DataFacts:
    """The data the run read (``run.data``, else the older places)."""
    recorded = _mapping(run_block(results).get("data"))
    cfg = config(results)
    if recorded:
        kind = str(recorded.get("kind") or "unknown")
        syn = _mapping(recorded.get("synthetic"))
        synthetic = None
        if syn:
            synthetic = SyntheticFacts(
                kind=str(syn.get("kind") or LEGACY_SYNTHETIC_KIND),
                scale=_text_or_none(syn.get("scale")),
                seed=_int_or_none(syn.get("seed")),
            )
        elif kind == "synthetic":
            synthetic = SyntheticFacts(LEGACY_SYNTHETIC_KIND, None, None)
        root = _text_or_none(recorded.get("root"))
        categories = recorded.get("categories")
    else:
        kind = _older_data_kind(results, cfg)
        synthetic = None
        if kind == "synthetic":
            synthetic = SyntheticFacts(
                LEGACY_SYNTHETIC_KIND,
                _text_or_none(cfg.get("synthetic_scale")),
                _int_or_none(cfg.get("seed")),
            )
        root = _text_or_none(cfg.get("data_root_used") or cfg.get("data_root"))
        categories = cfg.get("categories_used") or cfg.get("categories")
    if not isinstance(categories, list):
        categories = sorted(_mapping(results.get("categories")))
    name = _text_or_none(recorded.get("name")) if recorded else None
    return DataFacts(kind, synthetic, root, [str(c) for c in categories], name)


def _older_data_kind(results: Mapping[str, Any], cfg: Mapping[str, Any]) -> str:
    """Data kind of a file without ``run.data``: what it used, else what it was asked."""
    for value in (cfg.get("dataset_used"), results.get("dataset"), cfg.get("dataset")):
        if value in DATA_KINDS:
            return str(value)
    return "unknown"


def maps_folder(results: Mapping[str, Any]) -> str | None:
    """Where the run's official-format maps are (relative to the run folder, or absolute
    for older ``evaluate`` runs, whose ``run.config.maps`` names the folder they read)."""
    outputs = _mapping(run_block(results).get("outputs"))
    return _text_or_none(outputs.get("maps")) or _text_or_none(config(results).get("maps"))


def status(results: Mapping[str, Any]) -> str | None:
    """How the run ended (e.g. ``"completed"``); None when the file does not say."""
    return _text_or_none(run_block(results).get("status"))


def weights_asked(results: Mapping[str, Any]) -> str | None:
    """The weights setting the run was given, as an identifier where one is known."""
    value = _text_or_none(config(results).get("weights"))
    return _weights_id(value) if value else None
