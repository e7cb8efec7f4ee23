"""What travels between the server and the clients, and the checks on every payload.

Three exchanges, each one instruction (server -> clients) and one reply per client:

train (MessageType.TRAIN)
    down: ConfigRecord "config" = the run plan (feature spec + fingerprint, data and
          coreset settings).
    up:   ArrayRecord "coresets" = {category: (M, D) float32|float16 local coreset};
          ConfigRecord "info" = fingerprint, partition id, categories, and per category
          "n-patches.<cat>", "n-images.<cat>", "radius.<cat>".
evaluate, phase "score" (MessageType.EVALUATE)
    down: ArrayRecord "banks" = {category: (M, D) global bank} (one RecordDict for all
          nodes: uploaded once) + ConfigRecord "config" = the plan.
    up:   ArrayRecord "scores" = {category: (n,) float64 image scores};
          ConfigRecord "info" = fingerprint, categories, "min.<cat>", "max.<cat>" (of the
          category's float maps), "defects.<cat>", "paths.<cat>" (per image).
query, phase "stats" (MessageType.QUERY)
    down: ConfigRecord "config" = the plan + "scaling.<cat>" = [low, high] per category.
    up:   ArrayRecord "stats.<cat>" = SproStatistics.to_arrays() of the client's
          quantized maps; ConfigRecord "info"; MetricRecord "local" = the client's own
          metrics on its own test images.

No image, map or pickled object leaves a client. Arrays are numpy .npy bytes that Flower
reads with allow_pickle=False; every reply is checked here before the server uses it, and
a reply that fails a check raises `InvalidReply` with the reason.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict

from fedpatch_app.errors import ConfigError, ModelError
from fedpatch_app.model.embedding import FeatureSpec
from fedpatch_app.settings import RunSettings, from_run_config, to_run_config

# Record keys.
CONFIG = "config"
INFO = "info"
CORESETS = "coresets"
BANKS = "banks"
#: Under DP: the public centres of every category (data-independent, sent so the server
#: can stand in a centre for a cluster whose noisy count is too small to be trusted).
PUBLIC = "public-centres"
#: Evaluate config key prefix (`query-clip.<category>`): the L2 norm a DP bank's queries
#: are clipped to (absent = no clipping).
QUERY_CLIP = "query-clip"
SCORES = "scores"
STATS_PREFIX = "stats."
LOCAL_METRICS = "local"

PHASE_SCORE = "score"
PHASE_STATS = "stats"

#: Array dtypes a client may send for coresets (float16 only when the plan says so).
TRANSPORT_DTYPES = {"float32": np.float32, "float16": np.float16}
#: At most this many test images per category and client (a sanity cap, far above AutoVI).
MAX_TEST_IMAGES = 100_000
#: At most this many training patches per category and client.
MAX_PATCHES = 2_000_000_000

_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_REL_PATH = re.compile(
    r"^test/([A-Za-z0-9][A-Za-z0-9_.-]{0,127})/([A-Za-z0-9][A-Za-z0-9_.-]{0,255})$"
)


class InvalidReply(ModelError):
    """A client's reply failed a check; the message says which and why."""


# --------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class Plan:
    """The server's decisions for a run, sent with every instruction.

    `settings` are the run's settings (they travel as one JSON object in run-config form
    and are validated by the same schema on arrival); `spec` is the FeatureSpec every
    client must use; `dataset`, `data_root` and `categories` are what the server resolved
    (clients with their own `data-root` in the node config use theirs).
    """

    settings: RunSettings
    spec: FeatureSpec
    dataset: str
    data_root: str
    categories: tuple[str, ...]
    run_key: str
    maps_dir: str = ""

    @property
    def fingerprint(self) -> str:
        return self.spec.fingerprint()

    def to_config(self, **extra: Any) -> ConfigRecord:
        record = ConfigRecord(
            {
                "settings": json.dumps(to_run_config(self.settings), sort_keys=True),
                "spec": json.dumps(self.spec.to_dict(), sort_keys=True),
                "fingerprint": self.fingerprint,
                "dataset": self.dataset,
                "data-root": self.data_root,
                "categories": ",".join(self.categories),
                "run-key": self.run_key,
                "maps-dir": self.maps_dir,
            }
        )
        for key, value in extra.items():
            record[key] = value
        return record

    @classmethod
    def from_config(cls, record: ConfigRecord) -> Plan:
        """Read the plan from an instruction; `ModelError` if a field is missing, mistyped,
        or the feature spec does not match its fingerprint."""
        try:
            settings = from_run_config(
                json.loads(_get(record, "settings", str)), where="plan from the server"
            )
            spec = FeatureSpec.from_dict(json.loads(_get(record, "spec", str)))
            cats = _get(record, "categories", str)
            plan = cls(
                settings=settings,
                spec=spec,
                dataset=_get(record, "dataset", str),
                data_root=_get(record, "data-root", str),
                categories=tuple(c for c in cats.split(",") if c),
                run_key=_get(record, "run-key", str),
                maps_dir=_get(record, "maps-dir", str),
            )
            expected = _get(record, "fingerprint", str)
        except (KeyError, TypeError, ValueError, ConfigError) as exc:
            raise ModelError(f"instruction from the server has a bad plan: {exc}") from None
        if plan.fingerprint != expected:
            raise ModelError(
                f"feature spec from the server does not match its fingerprint "
                f"({plan.fingerprint} != {expected})"
            )
        return plan


def _get(record: Mapping[str, Any], key: str, kind: type | tuple[type, ...]) -> Any:
    if key not in record:
        raise KeyError(f"missing '{key}'")
    value = record[key]
    if isinstance(value, bool) and kind is not bool and bool not in _as_tuple(kind):
        raise TypeError(f"'{key}' has type bool")
    if not isinstance(value, kind):
        raise TypeError(f"'{key}' has type {type(value).__name__}")
    return value


def _as_tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


# --------------------------------------------------------------------------- sizes


def _value_bytes(value: Any) -> int:
    if isinstance(value, list):
        return sum(_value_bytes(v) for v in value)
    if isinstance(value, bool):
        return 1
    if isinstance(value, int | float):
        return 8
    if isinstance(value, str | bytes):
        return len(value)
    return 0


def record_bytes(content: RecordDict) -> int:
    """Payload bytes of a RecordDict: array data, config and metric values (8 bytes per
    number, string lengths), keys. (Flower's own `count_bytes` fails on empty strings.)"""
    total = 0
    for record in content.values():
        for key, value in record.items():
            total += len(key)
            total += len(value.data) if isinstance(value, Array) else _value_bytes(value)
    return total


def message_bytes(messages: Iterable[Message], *, broadcast: bool = False) -> int:
    """Bytes sent for these messages; with `broadcast`, a RecordDict shared by several
    messages counts once (Flower uploads identical content once)."""
    seen: set[int] = set()
    total = 0
    for msg in messages:
        if not msg.has_content():
            continue
        content = msg.content
        if broadcast and id(content) in seen:
            continue
        seen.add(id(content))
        total += record_bytes(content)
    return total


# --------------------------------------------------------------------------- arrays


def array_of(values: np.ndarray) -> Array:
    values = np.asarray(values)
    # ascontiguousarray would turn a 0-d array into 1-d: only copy when needed.
    return Array(values if values.flags.c_contiguous else np.ascontiguousarray(values))


def _declared_array(
    arr: Any, what: str, *, dtypes: Sequence[str], ndim: int, max_elements: int
) -> None:
    """Check an Array's declared dtype/shape before decoding its bytes."""
    if not isinstance(arr, Array):
        raise InvalidReply(f"{what}: not an array")
    if arr.stype != "numpy.ndarray":
        raise InvalidReply(f"{what}: serialization {arr.stype!r}, expected numpy.ndarray")
    if arr.dtype not in dtypes:
        raise InvalidReply(f"{what}: dtype {arr.dtype}, expected {' or '.join(dtypes)}")
    shape = tuple(arr.shape)
    if len(shape) != ndim or any((not isinstance(s, int)) or s < 0 for s in shape):
        raise InvalidReply(f"{what}: shape {shape}, expected {ndim} dimension(s)")
    if math.prod(shape) > max_elements:
        raise InvalidReply(f"{what}: {math.prod(shape)} values exceed the limit of {max_elements}")


def decode_array(
    arr: Any,
    what: str,
    *,
    dtypes: Sequence[str],
    ndim: int,
    max_elements: int,
    finite: bool = True,
) -> np.ndarray:
    """Decode an Array (no pickle) and check dtype, shape and finiteness of the real data."""
    _declared_array(arr, what, dtypes=dtypes, ndim=ndim, max_elements=max_elements)
    try:
        values = arr.numpy()
    except Exception as exc:  # noqa: BLE001 - any decoding failure is a bad payload
        raise InvalidReply(f"{what}: cannot decode the array ({exc})") from None
    if str(values.dtype) not in dtypes or values.ndim != ndim:
        raise InvalidReply(
            f"{what}: data is {values.dtype} {values.shape}, declared {arr.dtype} {tuple(arr.shape)}"
        )
    if tuple(values.shape) != tuple(arr.shape):
        raise InvalidReply(f"{what}: data shape {values.shape} != declared {tuple(arr.shape)}")
    if finite and values.dtype.kind == "f" and not np.all(np.isfinite(values)):
        raise InvalidReply(f"{what}: holds NaN or infinite values")
    return values


# --------------------------------------------------------------------------- train


@dataclass
class LocalCoreset:
    """One category's coreset from one client, after the checks."""

    features: np.ndarray
    n_patches: int
    n_images: int
    radius: float
    #: Under DP: `features` are noisy per-cluster SUMS; this holds the noisy "counts"
    #: (K,), the public "centres" (K, D) and their "digest", and the noise and budget facts.
    dp: dict[str, Any] | None = None


@dataclass
class TrainReply:
    fingerprint: str
    partition_id: int
    coresets: dict[str, LocalCoreset]
    seconds: float = 0.0
    device: str = ""


@dataclass(frozen=True)
class TrainLimits:
    """What the server accepts from a client's train reply: the run's settings, its
    feature-spec fingerprint and width, and the categories it knows."""

    settings: RunSettings
    fingerprint: str
    categories: tuple[str, ...]
    embed_dim: int

    @classmethod
    def of(cls, plan: Plan, categories: Sequence[str]) -> TrainLimits:
        return cls(plan.settings, plan.fingerprint, tuple(categories), int(plan.spec.embed_dim))

    def max_coreset(self, n_patches: int) -> int:
        """The largest local coreset a client with `n_patches` patches may send (under DP:
        exactly one noisy sum per public centre)."""
        from fedpatch_app.model.patchcore import coreset_size

        s = self.settings
        if s.dp.enabled:
            return min(s.max_coreset_rows, s.dp.centres)
        return min(
            s.max_coreset_rows, coreset_size(n_patches, s.coreset_ratio * s.local_oversample)
        )


def encode_train_reply(
    coresets: Mapping[str, Any],
    n_images: Mapping[str, int],
    *,
    fingerprint: str,
    partition_id: int,
    transport_dtype: str = "float32",
    seconds: float = 0.0,
    device: str = "",
) -> RecordDict:
    """A client's train reply from its local banks (`Bank`-like: features, radius, n_patches)."""
    dtype = TRANSPORT_DTYPES[transport_dtype]
    arrays = ArrayRecord()
    info = ConfigRecord(
        {
            "fingerprint": fingerprint,
            "partition-id": int(partition_id),
            "categories": ",".join(coresets),
            "seconds": float(seconds),
            "device": device,
        }
    )
    for cat, bank in coresets.items():
        arrays[cat] = array_of(np.asarray(bank.features).astype(dtype, copy=False))
        info[f"n-patches.{cat}"] = int(bank.n_patches)
        info[f"n-images.{cat}"] = int(n_images[cat])
        info[f"radius.{cat}"] = float(bank.radius)
    return RecordDict({CORESETS: arrays, INFO: info})


def _info(content: RecordDict) -> ConfigRecord:
    if INFO not in content.config_records:
        raise InvalidReply(f"reply lacks the '{INFO}' config record")
    return content.config_records[INFO]


def _reply_categories(info: ConfigRecord, known: Sequence[str]) -> list[str]:
    try:
        text = _get(info, "categories", str)
    except (KeyError, TypeError) as exc:
        raise InvalidReply(f"reply info: {exc}") from None
    cats = [c for c in text.split(",") if c]
    unknown = [c for c in cats if c not in known]
    if unknown:
        raise InvalidReply(
            f"unknown categories {', '.join(map(repr, unknown))} (expected among {', '.join(known)})"
        )
    if len(set(cats)) != len(cats):
        raise InvalidReply("a category is listed twice")
    return cats


def _check_fingerprint(info: ConfigRecord, expected: str) -> str:
    try:
        got = _get(info, "fingerprint", str)
    except (KeyError, TypeError) as exc:
        raise InvalidReply(f"reply info: {exc}") from None
    if got != expected:
        raise InvalidReply(
            f"feature-spec fingerprint {got!r} does not match the run's {expected!r}"
        )
    return got


def decode_train_reply(content: RecordDict, limits: TrainLimits) -> TrainReply:
    """Check a train reply completely; `InvalidReply` says what is wrong."""
    info = _info(content)
    fingerprint = _check_fingerprint(info, limits.fingerprint)
    cats = _reply_categories(info, limits.categories)
    arrays = content.array_records.get(CORESETS)
    if arrays is None:
        if cats:
            raise InvalidReply(f"reply lacks the '{CORESETS}' array record")
        arrays = ArrayRecord()
    extra = sorted(set(arrays.keys()) - set(cats))
    if extra:
        raise InvalidReply(f"coresets sent for categories not listed in the reply: {extra}")
    dtypes = ["float32"] + (["float16"] if limits.settings.transport_dtype == "float16" else [])
    try:
        partition_id = int(_get(info, "partition-id", int))
        seconds = (
            float(info.get("seconds", 0.0))
            if isinstance(info.get("seconds", 0.0), int | float)
            else 0.0
        )
        device = str(info.get("device", "")) if isinstance(info.get("device", ""), str) else ""
    except (KeyError, TypeError) as exc:
        raise InvalidReply(f"reply info: {exc}") from None
    out: dict[str, LocalCoreset] = {}
    for cat in cats:
        if cat not in arrays:
            raise InvalidReply(f"{cat}: listed but no coreset array sent")
        try:
            n_patches = _get(info, f"n-patches.{cat}", int)
            n_images = _get(info, f"n-images.{cat}", int)
            radius = float(_get(info, f"radius.{cat}", (int, float)))
        except (KeyError, TypeError) as exc:
            raise InvalidReply(f"{cat}: {exc}") from None
        if not 1 <= n_images <= n_patches <= MAX_PATCHES:
            raise InvalidReply(
                f"{cat}: implausible counts ({n_images} images, {n_patches} patches)"
            )
        if not (math.isfinite(radius) and radius >= 0):
            raise InvalidReply(f"{cat}: covering radius {radius} is not a finite value >= 0")
        max_rows = limits.max_coreset(n_patches)
        arr = arrays[cat]
        _declared_array(
            arr,
            f"{cat} coreset",
            dtypes=dtypes,
            ndim=2,
            max_elements=2**62,
        )
        rows, dim = arr.shape
        if dim != limits.embed_dim:
            raise InvalidReply(
                f"{cat}: feature dimension {dim}, the run's spec has {limits.embed_dim}"
            )
        if rows < 1:
            raise InvalidReply(f"{cat}: empty coreset")
        if rows > max_rows:
            raise InvalidReply(
                f"{cat}: coreset of {rows} rows exceeds the allowed {max_rows} "
                f"({n_patches} patches x ratio {limits.settings.coreset_ratio} x oversample "
                f"{limits.settings.local_oversample}, cap {limits.settings.max_coreset_rows})"
            )
        values = decode_array(
            arr, f"{cat} coreset", dtypes=dtypes, ndim=2, max_elements=max_rows * limits.embed_dim
        )
        features = values.astype(np.float32, copy=False)
        if not np.all(np.isfinite(features)):
            raise InvalidReply(f"{cat} coreset: holds NaN or infinite values")
        dp = None
        if limits.settings.dp.enabled:
            dp = _decode_dp_info(info, cat, rows)
            dp["centres"] = _decode_public_centres(content, cat, rows, limits.embed_dim, dp)
        out[cat] = LocalCoreset(
            features=features, n_patches=n_patches, n_images=n_images, radius=radius, dp=dp
        )
    return TrainReply(
        fingerprint=fingerprint,
        partition_id=partition_id,
        coresets=out,
        seconds=seconds,
        device=device,
    )


#: Per-category info keys of a DP train reply (float values, besides counts and digest).
DP_FLOAT_KEYS = ("clip", "sigma-sums", "sigma-counts", "sigma-images", "rho", "epsilon", "delta")


def dp_info(cat: str, release: Any, digest: str, clip: float) -> dict[str, Any]:
    """Info entries of one category's DP release (`fedpatch_app.model.dp.NoisyRelease`)."""
    return {
        f"dp-counts.{cat}": [float(c) for c in release.counts],
        f"dp-digest.{cat}": digest,
        f"dp-clip.{cat}": float(clip),
        f"dp-sigma-sums.{cat}": float(release.sigmas["sums"]),
        f"dp-sigma-counts.{cat}": float(release.sigmas["counts"]),
        f"dp-sigma-images.{cat}": float(release.sigmas["images"]),
        f"dp-rho.{cat}": float(release.rho),
        f"dp-epsilon.{cat}": float(release.epsilon),
        f"dp-delta.{cat}": float(release.delta),
    }


def _decode_dp_info(info: ConfigRecord, cat: str, rows: int) -> dict[str, Any]:
    try:
        counts = _get(info, f"dp-counts.{cat}", list)
        digest = _get(info, f"dp-digest.{cat}", str)
        values = {k: float(_get(info, f"dp-{k}.{cat}", (int, float))) for k in DP_FLOAT_KEYS}
    except (KeyError, TypeError) as exc:
        raise InvalidReply(f"{cat}: DP reply: {exc}") from None
    if len(counts) != rows or not all(
        isinstance(c, int | float) and not isinstance(c, bool) and math.isfinite(c) for c in counts
    ):
        raise InvalidReply(f"{cat}: DP reply: {rows} noisy counts expected, finite numbers")
    if not all(math.isfinite(v) and v >= 0 for v in values.values()):
        raise InvalidReply(f"{cat}: DP reply: noise and budget facts must be finite and >= 0")
    if not values["sigma-counts"] > 0 or not values["sigma-sums"] > 0:
        raise InvalidReply(f"{cat}: DP reply: no noise (sigma 0)")
    return {"counts": np.asarray(counts, dtype=np.float64), "digest": digest, **values}


def public_centres_record(centres: Mapping[str, np.ndarray]) -> ArrayRecord:
    """The public centres of a DP train reply, float32, one array per category."""
    return ArrayRecord(
        {cat: array_of(np.asarray(c, dtype=np.float32)) for cat, c in centres.items()}
    )


def _decode_public_centres(
    content: RecordDict, cat: str, rows: int, dim: int, dp: dict[str, Any]
) -> np.ndarray:
    """The public centres of one category, checked against the digest the sums refer to."""
    from fedpatch_app.model.dp import centres_digest

    record = content.array_records.get(PUBLIC)
    if record is None or cat not in record:
        raise InvalidReply(f"{cat}: DP reply without its public centres ('{PUBLIC}')")
    centres = decode_array(
        record[cat], f"{cat} public centres", dtypes=["float32"], ndim=2, max_elements=rows * dim
    )
    if centres.shape != (rows, dim):
        raise InvalidReply(
            f"{cat}: {centres.shape[0]}x{centres.shape[1]} public centres for {rows}x{dim} sums"
        )
    if centres_digest(centres, dp["clip"]) != dp["digest"]:
        raise InvalidReply(f"{cat}: the public centres do not match the digest of the release")
    return centres.astype(np.float64)


# --------------------------------------------------------------------------- banks


def encode_banks(banks: Mapping[str, np.ndarray], transport_dtype: str = "float32") -> ArrayRecord:
    """The global banks as one ArrayRecord (one array per category)."""
    dtype = TRANSPORT_DTYPES[transport_dtype]
    return ArrayRecord(
        {cat: array_of(np.asarray(f).astype(dtype, copy=False)) for cat, f in banks.items()}
    )


def decode_banks(
    arrays: ArrayRecord, embed_dim: int, known: Sequence[str]
) -> dict[str, np.ndarray]:
    """The global banks as float32 arrays (the client checks what the server sent too)."""
    out: dict[str, np.ndarray] = {}
    for cat in arrays.keys():
        if cat not in known:
            raise ModelError(f"the server sent a bank for unknown category {cat!r}")
        values = decode_array(
            arrays[cat],
            f"global bank {cat}",
            dtypes=["float32", "float16"],
            ndim=2,
            max_elements=2**40,
        )
        if values.shape[1] != embed_dim or values.shape[0] < 1:
            raise ModelError(
                f"global bank {cat}: shape {values.shape}, expected (M >= 1, {embed_dim})"
            )
        out[cat] = values.astype(np.float32, copy=False)
    return out


def query_clips(config: ConfigRecord, categories: Sequence[str]) -> dict[str, float]:
    """The per-category query clips of an evaluate instruction (0 = none), checked."""
    out: dict[str, float] = {}
    for cat in categories:
        value = config.get(f"{QUERY_CLIP}.{cat}", 0.0)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ModelError(f"{QUERY_CLIP}.{cat}: a number expected, got {value!r}")
        if not (math.isfinite(float(value)) and float(value) >= 0):
            raise ModelError(f"{QUERY_CLIP}.{cat}: must be a finite value >= 0, got {value}")
        out[cat] = float(value)
    return out


# --------------------------------------------------------------------------- evaluate (score)


@dataclass
class CategoryScores:
    """One category's phase-A reply from one client."""

    map_min: float
    map_max: float
    scores: np.ndarray
    defects: list[str]
    rel_paths: list[str]


@dataclass
class ScoreReply:
    fingerprint: str
    categories: dict[str, CategoryScores] = field(default_factory=dict)


def encode_score_reply(
    per_category: Mapping[str, CategoryScores], *, fingerprint: str
) -> RecordDict:
    arrays = ArrayRecord()
    info = ConfigRecord({"fingerprint": fingerprint, "categories": ",".join(per_category)})
    for cat, item in per_category.items():
        arrays[cat] = array_of(np.asarray(item.scores, dtype=np.float64))
        info[f"min.{cat}"] = float(item.map_min)
        info[f"max.{cat}"] = float(item.map_max)
        info[f"defects.{cat}"] = [str(d) for d in item.defects]
        info[f"paths.{cat}"] = [str(p) for p in item.rel_paths]
    return RecordDict({SCORES: arrays, INFO: info})


def decode_score_reply(
    content: RecordDict, *, fingerprint: str, categories: Sequence[str]
) -> ScoreReply:
    """Check a phase-A reply: finite range and scores, one defect label and relative path
    per score, paths of the form test/<defect>/<id> that agree with the label."""
    info = _info(content)
    _check_fingerprint(info, fingerprint)
    cats = _reply_categories(info, categories)
    arrays = content.array_records.get(SCORES, ArrayRecord())
    out = ScoreReply(fingerprint=fingerprint)
    for cat in cats:
        if cat not in arrays:
            raise InvalidReply(f"{cat}: listed but no image scores sent")
        scores = decode_array(
            arrays[cat],
            f"{cat} image scores",
            dtypes=["float64", "float32"],
            ndim=1,
            max_elements=MAX_TEST_IMAGES,
        ).astype(np.float64)
        try:
            lo = float(_get(info, f"min.{cat}", (int, float)))
            hi = float(_get(info, f"max.{cat}", (int, float)))
            defects = _get(info, f"defects.{cat}", list)
            paths = _get(info, f"paths.{cat}", list)
        except (KeyError, TypeError) as exc:
            raise InvalidReply(f"{cat}: {exc}") from None
        if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi):
            raise InvalidReply(f"{cat}: map range [{lo}, {hi}] is not finite and ordered")
        n = len(scores)
        if n == 0:
            raise InvalidReply(f"{cat}: no test images scored")
        if len(defects) != n or len(paths) != n:
            raise InvalidReply(
                f"{cat}: {n} scores but {len(defects)} defect labels and {len(paths)} paths"
            )
        if not all(isinstance(d, str) for d in defects) or not all(
            isinstance(p, str) for p in paths
        ):
            raise InvalidReply(f"{cat}: defect labels and paths must be strings")
        tol = 1e-6 * max(1.0, abs(lo), abs(hi))
        if np.any(scores < lo - tol) or np.any(scores > hi + tol):
            raise InvalidReply(f"{cat}: image scores fall outside the reported map range")
        for d, p in zip(defects, paths, strict=True):
            m = _REL_PATH.match(p)
            if m is None or not _SAFE_NAME.match(d) or m.group(1) != d:
                raise InvalidReply(f"{cat}: bad test image path {p!r} for defect {d!r}")
        if len(set(paths)) != n:
            raise InvalidReply(f"{cat}: a test image is listed twice")
        out.categories[cat] = CategoryScores(lo, hi, scores, list(defects), list(paths))
    return out


# --------------------------------------------------------------------------- query (stats)


def scaling_config(scalings: Mapping[str, tuple[float, float]]) -> dict[str, list[float]]:
    """Config entries carrying each category's global map scaling."""
    return {f"scaling.{cat}": [float(lo), float(hi)] for cat, (lo, hi) in scalings.items()}


def read_scalings(record: ConfigRecord, known: Sequence[str]) -> dict[str, tuple[float, float]]:
    """The per-category scalings of a phase-B instruction (client side)."""
    out: dict[str, tuple[float, float]] = {}
    for key, value in record.items():
        if not key.startswith("scaling."):
            continue
        cat = key[len("scaling.") :]
        if cat not in known:
            raise ModelError(f"the server sent a scaling for unknown category {cat!r}")
        if not (
            isinstance(value, list) and len(value) == 2 and all(isinstance(v, float) for v in value)
        ):
            raise ModelError(f"scaling of {cat}: expected [low, high], got {value!r}")
        lo, hi = value
        if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi):
            raise ModelError(f"scaling of {cat}: [{lo}, {hi}] is not finite and ordered")
        out[cat] = (lo, hi)
    return out


def encode_stats_reply(
    stats: Mapping[str, Mapping[str, np.ndarray]],
    local_metrics: Mapping[str, float],
    *,
    fingerprint: str,
) -> RecordDict:
    content = RecordDict()
    for cat, arrays in stats.items():
        content[f"{STATS_PREFIX}{cat}"] = ArrayRecord(
            {k: array_of(np.asarray(v)) for k, v in arrays.items()}
        )
    content[INFO] = ConfigRecord({"fingerprint": fingerprint, "categories": ",".join(stats)})
    content[LOCAL_METRICS] = MetricRecord({k: float(v) for k, v in local_metrics.items()})
    return content


#: dtypes a statistics array may have (numbers and fixed-width strings: never objects).
_STATS_DTYPE_KINDS = "biufU"


def decode_stats_reply(
    content: RecordDict,
    *,
    fingerprint: str,
    categories: Sequence[str],
    max_elements: int = 50_000_000,
) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, float]]:
    """The raw statistics arrays per category (checked further by SproStatistics.from_arrays)
    and the client's local metrics."""
    info = _info(content)
    _check_fingerprint(info, fingerprint)
    cats = _reply_categories(info, categories)
    out: dict[str, dict[str, np.ndarray]] = {}
    for cat in cats:
        record = content.array_records.get(f"{STATS_PREFIX}{cat}")
        if record is None:
            raise InvalidReply(f"{cat}: listed but no statistics sent")
        arrays: dict[str, np.ndarray] = {}
        for key in record.keys():
            arr = record[key]
            if not isinstance(arr, Array) or arr.stype != "numpy.ndarray":
                raise InvalidReply(f"{cat} statistics '{key}': not a numpy array")
            if not arr.dtype or np.dtype(arr.dtype).kind not in _STATS_DTYPE_KINDS:
                raise InvalidReply(f"{cat} statistics '{key}': dtype {arr.dtype} not allowed")
            if math.prod(arr.shape) > max_elements:
                raise InvalidReply(f"{cat} statistics '{key}': too large ({tuple(arr.shape)})")
            try:
                values = arr.numpy()
            except Exception as exc:  # noqa: BLE001
                raise InvalidReply(f"{cat} statistics '{key}': cannot decode ({exc})") from None
            if values.dtype.kind not in _STATS_DTYPE_KINDS:
                raise InvalidReply(f"{cat} statistics '{key}': dtype {values.dtype} not allowed")
            if values.dtype.kind == "f" and not np.all(np.isfinite(values)):
                raise InvalidReply(f"{cat} statistics '{key}': holds NaN or infinite values")
            arrays[key] = values
        out[cat] = arrays
    metrics: dict[str, float] = {}
    record = content.metric_records.get(LOCAL_METRICS)
    if record is not None:
        for key, value in record.items():
            if isinstance(value, int | float) and math.isfinite(float(value)):
                metrics[key] = float(value)
    return out, metrics
