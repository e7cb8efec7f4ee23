"""Every setting of fedpatch, defined once: name, type, default, range and help.

`RunSettings` is the schema. Everything else is derived from it by
`fedpatch_app.settings.fields`:

- the Flower run config (`coreset-ratio = 0.1`, kebab-case keys) and pyproject's
  `[tool.flwr.app.config]` defaults (a test keeps them equal),
- the `fedpatch` command-line options (`--coreset-ratio`) with their help and default,
- the plan the server sends to the clients (the settings travel as one JSON object and are
  validated by this same schema on arrival),
- the experiment presets (`coreset_ratio:`) and results.json's `run.config`
  (snake_case keys: every file a user reads writes a setting the same way).

Settings that belong together are one object (`RunSettings.dp`); their flat names carry the
group as a prefix (`dp-epsilon` in the run config, `dp_epsilon` in files).

To add a setting: add one field here (with `description`, its range, and `FEATURES` or
`RECORDED` when model.json must carry it), use it where it is needed, and run
`fedpatch settings --toml` to print pyproject's table (docs/architecture.md, "Adding a
setting"). The `backbone` choices are the backbone registry's.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from fedpatch_app.model.ann_index import AUTO_MIN_ROWS
from fedpatch_app.model.backbones import registry as backbones

#: The bounds of the backbone input size, for the run config, every command and the
#: feature spec.
MIN_IMAGE_SIZE = 32
MAX_IMAGE_SIZE = 2048
#: Seeds are 32-bit unsigned integers everywhere (numpy and torch generators accept them).
MAX_SEED = 2**32 - 1

_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
_RUN_NAME = re.compile(r"^$|^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def _lower(value: Any) -> Any:
    """Choices are matched case-insensitively ("Synthetic" -> "synthetic")."""
    return value.strip().lower() if isinstance(value, str) else value


def _strip(value: Any) -> Any:
    return value.strip() if isinstance(value, str) else value


def _device(value: str) -> str:
    if not _DEVICE.match(value):
        raise ValueError("expected auto, cpu, mps, cuda or cuda:N")
    return value


def _run_name(value: str) -> str:
    if not _RUN_NAME.match(value):
        raise ValueError("letters, digits, '.', '_' and '-' only (at most 100 characters)")
    return value


@dataclass(frozen=True)
class ChoicesFrom:
    """A choice setting whose values a registry holds (read at validation time, so a
    registered extension is a valid value); `Setting.choices` lists them for the CLI and
    the settings table."""

    names: Callable[[], tuple[str, ...]]

    def check(self, value: str) -> str:
        if value not in self.names():
            raise ValueError(f"expected one of {', '.join(self.names())}")
        return value


_BACKBONES = ChoicesFrom(backbones.names)


def parse_categories(value: Any) -> tuple[str, ...] | None:
    """Category names from a string ("" = all; commas or spaces) or a list, sorted without
    duplicates; a name that breaks the category-name rule (`data.layouts`) is refused."""
    from fedpatch_app.data.layouts import NAME_RULE, NAME_RULE_TEXT

    if value is None:
        return None
    if isinstance(value, str):
        names = [n for n in re.split(r"[,\s]+", value.strip()) if n]
    elif isinstance(value, list | tuple) and all(isinstance(n, str) for n in value):
        names = [n.strip() for n in value if n.strip()]
    else:
        raise ValueError(f"expected category names, got {value!r}")
    bad = [n for n in names if not NAME_RULE.match(n)]
    if bad:
        raise ValueError(f"category names {', '.join(map(repr, bad))}: use {NAME_RULE_TEXT}")
    return tuple(sorted(set(names))) or None


Text = Annotated[str, BeforeValidator(_strip)]
Dataset = Annotated[Literal["auto", "autovi", "synthetic"], BeforeValidator(_lower)]
Layout = Annotated[Literal["auto", "autovi", "mvtec", "folder"], BeforeValidator(_lower)]
Partition = Annotated[Literal["category", "iid", "dirichlet"], BeforeValidator(_lower)]
Scale = Annotated[Literal["tiny", "small", "autovi"], BeforeValidator(_lower)]
SyntheticKind = Annotated[Literal["drawn", "photo"], BeforeValidator(_lower)]
Backbone = Annotated[str, BeforeValidator(_lower), AfterValidator(_BACKBONES.check), _BACKBONES]
TransportDtype = Annotated[Literal["float32", "float16"], BeforeValidator(_lower)]
BankBudget = Annotated[Literal["volume", "equal", "sqrt"], BeforeValidator(_lower)]
RobustMerge = Annotated[Literal["quarantine", "rows", "strict", "off"], BeforeValidator(_lower)]
ScalingMode = Annotated[Literal["robust", "exact"], BeforeValidator(_lower)]
SourceAction = Annotated[Literal["flag", "exclude"], BeforeValidator(_lower)]
ShareMode = Annotated[Literal["raw", "relay"], BeforeValidator(_lower)]
SearchKind = Annotated[Literal["auto", "approximate", "exact"], BeforeValidator(_lower)]
Categories = Annotated[tuple[str, ...] | None, BeforeValidator(parse_categories)]
Device = Annotated[str, BeforeValidator(_lower), AfterValidator(_device)]
RunName = Annotated[str, BeforeValidator(_strip), AfterValidator(_run_name)]
Seed = Annotated[int, Field(ge=0, le=MAX_SEED)]

#: Where a setting goes besides the run (field metadata, read by `settings.fields`):
#: FEATURES: it defines the patch features, so it is a `FeatureSpec` field: recorded in
#: model.json's feature spec and read back by the predictor, which scores with it.
#: RECORDED: it shapes the banks or thresholds a model folder holds: recorded in
#: model.json's provenance (no setting that may name a path of the machine).
FEATURES: dict[str, Any] = {"features": True}
RECORDED: dict[str, Any] = {"recorded": True}
FEATURES_RECORDED: dict[str, Any] = {**FEATURES, **RECORDED}

_STRICT = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False, validate_default=True)


class DPSettings(BaseModel):
    """Differential privacy of what clients share (run-config keys `dp-*`; epsilon 0 = off).

    See docs/privacy.md for the mechanism and what it protects.
    """

    model_config = _STRICT

    epsilon: float = Field(
        0.0, ge=0, description="privacy budget per training image (0 = differential privacy off)"
    )
    delta: float = Field(1e-5, gt=0, lt=1, description="delta of (epsilon, delta)-DP")
    clip: float = Field(
        0.0, ge=0, description="L2 clip of patch features (0 = from the public reference)"
    )
    centres: int = Field(128, ge=1, le=100_000, description="public centres per category")
    clusters_per_image: int = Field(
        8, ge=1, le=100_000, description="clusters one image may contribute to"
    )
    public_images: int = Field(8, ge=1, le=1000, description="public reference images per category")
    public_seed: Seed = Field(1_000_003, description="seed of the built-in public reference images")
    public_root: Text = Field(
        "",
        description="folder of publishable good images per category ('' = built-in generator)",
    )

    @property
    def enabled(self) -> bool:
        return self.epsilon > 0

    @model_validator(mode="after")
    def _clusters_fit(self) -> DPSettings:
        if self.enabled and self.clusters_per_image > self.centres:
            raise ValueError(
                "'dp-clusters-per-image' must be between 1 and dp-centres "
                f"({self.centres}), got {self.clusters_per_image}"
            )
        return self


class RunSettings(BaseModel):
    """The settings of a run (federated, centralized or local-only)."""

    model_config = _STRICT

    # -- data
    dataset: Dataset = Field(
        "auto",
        description="autovi (your data at data-root, in any layout), synthetic (built-in "
        "generator) or auto (synthetic only while data-root is left at its default and "
        "holds no category)",
    )
    data_root: Path = Field(
        Path("data/autovi"), description="folder holding one sub-folder per category"
    )
    layout: Layout = Field(
        "auto",
        description="how data-root keeps its categories: autovi, mvtec (train/good, test/<type>, "
        "ground_truth/<type>/<name>_mask.png), folder (good/, optional test/<type>) or auto "
        "(each category's own; README 'Your own part')",
    )
    categories: Categories = Field(
        None, description="categories: names of sub-folders of data-root (empty = all found)"
    )
    synthetic_scale: Scale = Field(
        "tiny", description="size of the built-in synthetic data (autovi: AutoVI's own counts)"
    )
    synthetic_kind: SyntheticKind = Field(
        "photo",
        description="built-in synthetic data: photo (real photographs, realistic defects) or "
        "drawn (cheap drawn scenes)",
    )
    # -- federation
    partition: Partition = Field("category", description="how images are split over clients")
    dirichlet_alpha: float = Field(
        0.5, gt=0, description="Dirichlet concentration of the dirichlet partition"
    )
    num_clients: int = Field(5, ge=1, le=1000, description="clients (SuperNodes) in the run")
    min_clients: int = Field(5, ge=1, le=1000, description="clients needed in every phase")
    # -- trust: what the server does not take on a client's word (docs/security.md)
    robust_merge: RobustMerge = Field(
        "quarantine",
        description="coreset rows no other client's rows support: quarantine (a client with "
        "more of them than an honest tail of its size has loses all its rows of the "
        "category; within the tail, or with mostly unsupported rows (kept and flagged), "
        "its rows stay), rows (only those rows left out), strict (those rows left out; "
        "beyond the tail every row of the client) or off (docs/security.md)",
    )
    robust_merge_z: float = Field(
        4.0,
        gt=0,
        le=100,
        description="robust z-score (median and MAD over all rows) of a row's log distance "
        "to the other clients' rows, in their row spacings, above which it is unsupported",
    )
    source_check: bool = Field(
        True,
        description="each client scores its labelled test images with the bank less each "
        "client's rows; a client whose rows make the others' defects stand out less is "
        "flagged (catches planted rows that look normal; docs/security.md)",
    )
    source_check_gain: float = Field(
        0.1,
        gt=0,
        le=1,
        description="the source check flags a client when leaving its rows out raises the "
        "AUROC of the other clients' defect patches against their good patches by more than "
        "this (lower median over the clients whose defects its rows touch)",
    )
    source_check_action: SourceAction = Field(
        "flag",
        description="what a source-check flag does: flag (the client is named, its rows "
        "stay in this run's bank) or exclude (its rows of the category are left out, the "
        "category is merged again from the others' rows and every client scores the new "
        "banks in a second evaluate round)",
    )
    map_scaling: ScalingMode = Field(
        "robust",
        description="global map scaling: robust (clipped to a bound the merged bank sets, so "
        "no client's reply can set it) or exact (every client's extremes: trusted federations)",
    )
    node_identities: Text = Field(
        "",
        description="JSON file binding partition ids to SuperNode public keys "
        "('' = partition ids as the nodes claim them)",
    )
    share_mode: ShareMode = Field(
        "raw",
        description="how the coresets travel: raw (rows in clear to the server, which "
        "merges) or relay (sealed with the federation's share key, which every client holds "
        "as node config 'share-key' and the server never has; the server relays the "
        "ciphertexts, every client merges; docs/privacy.md)",
    )
    # -- features and model
    backbone: Backbone = Field(
        backbones.DEFAULT,
        description="feature network whose two feature maps make the patch features (the "
        "backbone registry's; docs/architecture.md 'Adding a backbone')",
        json_schema_extra=FEATURES,
    )
    weights: Text = Field(
        "imagenet",
        min_length=1,
        description="backbone weights: imagenet, none (random: for tests only) or a file path",
        json_schema_extra=FEATURES,
    )
    image_size: int = Field(
        256,
        ge=MIN_IMAGE_SIZE,
        le=MAX_IMAGE_SIZE,
        description="shorter image side at the backbone input",
        json_schema_extra=FEATURES_RECORDED,
    )
    coreset_ratio: float = Field(
        0.1,
        gt=0,
        le=1,
        description="memory-bank size as a fraction of the training patches",
        json_schema_extra=RECORDED,
    )
    local_oversample: float = Field(
        2.0,
        ge=1,
        le=100,
        description="local coreset size over the global ratio (federated)",
        json_schema_extra=RECORDED,
    )
    bank_budget: BankBudget = Field(
        "volume",
        description="how bank rows are shared across categories",
        json_schema_extra=RECORDED,
    )
    seed: Seed = Field(
        0,
        description="seed of everything random (projection, data, splits)",
        json_schema_extra=FEATURES_RECORDED,
    )
    search: SearchKind = Field(
        "auto",
        description="nearest-neighbour search of the banks, the same for calibration and the "
        "line: approximate (an index written into the model folder, best candidates re-ranked "
        f"exactly), exact, or auto (approximate for a bank of at least {AUTO_MIN_ROWS:,} "
        "rows, exact below; chosen per category)",
        json_schema_extra=RECORDED,
    )
    search_probe: int = Field(
        8,
        ge=1,
        le=4096,
        description="cells of the approximate index searched per patch",
        json_schema_extra=RECORDED,
    )
    # -- thresholds and the model in use
    calibration_fraction: float = Field(
        0.1,
        ge=0,
        le=0.9,
        description="share of each category's good training images held out of the banks "
        "to calibrate the thresholds (0 = no thresholds)",
        json_schema_extra=RECORDED,
    )
    calibration_folds: int = Field(
        0,
        ge=0,
        le=50,
        description="0: thresholds from the held-out calibration-fraction; K >= 2: "
        "cross-fitted on every good training image (each scored by a bank built without "
        "its fold of K, in a federation also without its client's rows; the bank keeps "
        "all images)",
    )
    target_false_reject: float = Field(
        0.01,
        gt=0,
        le=0.5,
        description="share of good parts the image threshold may reject",
        json_schema_extra=RECORDED,
    )
    target_pixel_fpr: float = Field(
        0.001,
        gt=0,
        le=0.5,
        description="share of good pixels the region threshold may flag",
        json_schema_extra=RECORDED,
    )
    init_model: Text = Field(
        "",
        description="model folder of an earlier run whose banks new clients join "
        "('' = start from nothing)",
    )
    # -- execution
    device: Device = Field("auto", description="auto, cpu, cuda, cuda:N or mps")
    batch_size: int = Field(8, ge=1, le=1024, description="images per backbone batch")
    num_workers: int = Field(0, ge=0, le=64, description="image loading worker processes")
    transport_dtype: TransportDtype = Field(
        "float32", description="dtype of coresets and banks on the wire"
    )
    max_coreset_rows: int = Field(
        1_000_000, ge=1, description="largest local coreset the server accepts"
    )
    round_timeout: float = Field(3600.0, gt=0, description="seconds to wait for every reply")
    wait_timeout: float = Field(
        300.0, ge=0, description="seconds to wait for min-clients clients to connect"
    )
    # -- outputs
    out_dir: Path = Field(Path("runs"), description="folder of the run folders")
    run_name: RunName = Field("", description="run folder name ('' = federated-<partition>-<time>)")
    write_maps: bool = Field(False, description="export official-format 16-bit anomaly maps")
    overwrite: bool = Field(
        False, description="clear an existing non-empty output folder of an earlier run first"
    )
    # -- privacy
    dp: DPSettings = Field(default_factory=DPSettings, description="differential privacy")

    @model_validator(mode="after")
    def _consistent(self) -> RunSettings:
        if self.min_clients > self.num_clients:
            raise ValueError(
                f"'min-clients' must be between 1 and num-clients ({self.num_clients}), "
                f"got {self.min_clients}"
            )
        if (
            self.dp.enabled
            and self.dataset != "autovi"
            and not self.dp.public_root
            and self.dp.public_seed == self.seed
        ):
            raise ValueError(
                "'dp-public-seed' must differ from 'seed', which seeds the synthetic data "
                "(the public reference must not be the private data)"
            )
        self._relay_consistent()
        return self

    def _relay_consistent(self) -> None:
        """Under share-mode relay the server never holds a row: refuse what needs them."""
        if self.share_mode != "relay":
            return
        needs = {
            "source-check": self.source_check,
            "dp-epsilon": self.dp.enabled,
            "init-model": bool(self.init_model),
        }
        why = {
            "source-check": "the server labels every bank row with its source, and in relay "
            "mode it holds no bank (set source-check = false)",
            "dp-epsilon": "the server post-processes the noisy releases in clear; relay "
            "already hides the rows from the server (set dp-epsilon = 0)",
            "init-model": "a join merges the parent model's banks, which the clients do not "
            "hold (start from nothing)",
        }
        for name, on in needs.items():
            if on:
                raise ValueError(
                    f"'share-mode = relay' cannot be combined with '{name}': {why[name]}"
                )

    def resolved_run_name(self, stamp: str) -> str:
        """The run folder's name: `run-name`, or `federated-<partition>-<stamp>`."""
        return self.run_name or f"federated-{self.partition}-{stamp}"
