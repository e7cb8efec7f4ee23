"""A category's memory bank as a file (numpy .npz, no pickle), with the feature spec it
was built with. Free of PyTorch, so that a line PC loads and checks banks without it."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedpatch_app.errors import ConfigError, ModelError
from fedpatch_app.model.feature_spec import FeatureSpec

BANK_FORMAT = "fedpatch-bank-v1"


@dataclass
class Bank:
    """The memory bank of one category, with the feature spec it was built with."""

    features: np.ndarray
    spec: FeatureSpec
    category: str
    radius: float
    n_patches: int
    #: > 0: the bank lives in the space of patch features clipped to this L2 norm (a bank
    #: made from differentially private cluster summaries), so queries are clipped the
    #: same way before the nearest-neighbour search; 0 = no clipping.
    query_clip: float = 0.0

    def __post_init__(self) -> None:
        _check_features(self.features, self.spec.embed_dim, f"bank of {self.category}")
        if not (math.isfinite(self.query_clip) and self.query_clip >= 0):
            raise ModelError(
                f"bank of {self.category}: query clip must be a finite value >= 0, "
                f"got {self.query_clip}"
            )

    @property
    def size(self) -> int:
        return int(self.features.shape[0])

    def save(self, path: str | Path) -> Path:
        """Write the bank as a numpy .npz (no pickle): features, spec JSON and fingerprint."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {
            "format": BANK_FORMAT,
            "category": self.category,
            "radius": float(self.radius),
            "n_patches": int(self.n_patches),
            "query_clip": float(self.query_clip),
            # The weights as their identifier: a bank built from a local weights file
            # stays loadable on machines that keep the file elsewhere.
            "spec": self.spec.with_weights_id().to_dict(),
            "fingerprint": self.spec.fingerprint(),
        }
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(
            tmp,
            features=self.features.astype(np.float32, copy=False),
            meta=np.array(json.dumps(meta)),
        )
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path, expected_spec: FeatureSpec | None = None) -> Bank:
        """Read a bank written by `save`; refuse one built with other feature settings, and
        any damage (a truncated or altered file, missing fields, NaN or infinite values)
        with a ModelError naming the file."""
        path = Path(path)
        if not path.is_file():
            raise ModelError(f"memory bank file not found: {path}")
        features, meta = _read_bank_file(path)
        try:
            spec = FeatureSpec.from_dict(meta["spec"])
            fields = {
                "category": str(meta["category"]),
                "radius": float(meta["radius"]),
                "n_patches": int(meta["n_patches"]),
                "query_clip": float(meta.get("query_clip", 0.0)),
            }
        except (KeyError, TypeError, ValueError, ConfigError, ModelError) as exc:
            raise ModelError(f"{path}: damaged bank metadata: {exc}") from None
        if spec.fingerprint() != meta.get("fingerprint"):
            raise ModelError(f"{path}: the stored fingerprint does not match its feature spec")
        if expected_spec is not None and spec.fingerprint() != expected_spec.fingerprint():
            raise ModelError(
                f"{path} was built with other feature settings (fingerprint {spec.fingerprint()}, "
                f"expected {expected_spec.fingerprint()}): {_spec_diff(spec, expected_spec)}"
            )
        if not (math.isfinite(fields["radius"]) and fields["radius"] >= 0):
            raise ModelError(f"{path}: covering radius {fields['radius']} is not finite and >= 0")
        try:
            return cls(features=features, spec=spec, **fields)
        except ModelError as exc:
            raise ModelError(f"{path}: {exc}") from None


def _read_bank_file(path: Path) -> tuple[np.ndarray, dict]:
    """The features (finite float32) and the metadata of a bank file, or a ModelError
    naming the file whatever the damage."""
    try:
        with np.load(path, allow_pickle=False) as data:
            features = np.asarray(data["features"], dtype=np.float32)
            meta = json.loads(str(data["meta"]))
    except Exception as exc:  # noqa: BLE001 - zip, npy and JSON damage all mean one thing
        raise ModelError(
            f"{path} is not a readable fedpatch memory bank ({type(exc).__name__}: {exc})"
        ) from None
    if not isinstance(meta, dict) or meta.get("format") != BANK_FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise ModelError(f"{path}: unknown bank format {found!r}")
    if features.ndim != 2 or not np.all(np.isfinite(features)):
        raise ModelError(f"{path}: the bank's features are not a finite 2-D array")
    return features, meta


@dataclass
class Prediction:
    """Scores of a list of test images: one anomaly map (native size) and one score each."""

    image_scores: np.ndarray
    maps: list[np.ndarray]


def _spec_diff(a: FeatureSpec, b: FeatureSpec) -> str:
    da, db = a.to_dict(), b.to_dict()
    diffs = [
        f"{k}={da.get(k)!r} vs {db.get(k)!r}"
        for k in sorted(set(da) | set(db))
        if da.get(k) != db.get(k)
    ]
    return ", ".join(diffs) or "no field differs"


def _check_features(features: np.ndarray, dim: int, what: str) -> None:
    if not isinstance(features, np.ndarray) or features.ndim != 2:
        raise ModelError(
            f"{what}: expected a 2-D feature array, got {getattr(features, 'shape', type(features))}"
        )
    if features.shape[1] != dim:
        raise ModelError(
            f"{what}: feature dimension {features.shape[1]} does not match the spec's {dim}"
        )
    if features.shape[0] == 0:
        raise ModelError(f"{what}: no features")
