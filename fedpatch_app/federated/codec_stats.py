"""The query exchange ("stats", phase B): global map scalings down, sufficient
statistics up.

down: ConfigRecord "config" = the plan + "scaling.<cat>" = [low, high] per category.
up:   ArrayRecord "stats.<cat>" = SproStatistics.to_arrays() of the client's quantized
      maps; ConfigRecord "info"; MetricRecord "local" = the client's own metrics.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict

from fedpatch_app.errors import ModelError
from fedpatch_app.federated.wire import (
    INFO,
    LOCAL_METRICS,
    STATS_PREFIX,
    InvalidReply,
    array_of,
    check_fingerprint,
    read_timings,
    reply_categories,
    reply_info,
    timing_info,
    typed,
)


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


def exclusion_config(excluded: Mapping[str, set[str]]) -> dict[str, list[str]]:
    """Config entries naming each category's test images left out of the evaluation
    (claimed by several nodes): the nodes holding them leave them out of their statistics."""
    return {f"exclude.{cat}": sorted(paths) for cat, paths in excluded.items() if paths}


def read_exclusions(record: ConfigRecord, known: Sequence[str]) -> dict[str, set[str]]:
    """The excluded test images of a phase-B instruction (client side)."""
    out: dict[str, set[str]] = {}
    for key, value in record.items():
        if not key.startswith("exclude."):
            continue
        cat = key[len("exclude.") :]
        if cat not in known or not isinstance(value, list):
            raise ModelError(f"the server sent a bad exclusion list {key!r}")
        out[cat] = {str(v) for v in value}
    return out


#: Record of one category's calibration histograms (`calibration.<cat>`).
CALIBRATION_PREFIX = "calibration."


@dataclass
class StatsReply:
    """A client's phase-B reply: per category its AUC-sPRO statistics arrays and its
    calibration histograms, and its own local metrics."""

    stats: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    calibration: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    local: dict[str, float] = field(default_factory=dict)
    #: The client's seconds per phase ("statistics").
    timings: dict[str, float] = field(default_factory=dict)


def _records(prefix: str, arrays: Mapping[str, Mapping[str, np.ndarray]]) -> dict[str, ArrayRecord]:
    return {
        f"{prefix}{cat}": ArrayRecord({k: array_of(np.asarray(v)) for k, v in values.items()})
        for cat, values in arrays.items()
    }


def encode_stats_reply(
    stats: Mapping[str, Mapping[str, np.ndarray]],
    local_metrics: Mapping[str, float],
    *,
    fingerprint: str,
    calibration: Mapping[str, Mapping[str, np.ndarray]] | None = None,
    timings: Mapping[str, float] | None = None,
) -> RecordDict:
    calibration = calibration or {}
    content = RecordDict()
    for key, record in {
        **_records(STATS_PREFIX, stats),
        **_records(CALIBRATION_PREFIX, calibration),
    }.items():
        content[key] = record
    content[INFO] = ConfigRecord(
        {
            "fingerprint": fingerprint,
            "categories": ",".join(stats),
            "calibration": ",".join(calibration),
            **timing_info(timings or {}),
        }
    )
    content[LOCAL_METRICS] = MetricRecord({k: float(v) for k, v in local_metrics.items()})
    return content


#: dtypes a statistics array may have (numbers and fixed-width strings: never objects).
_STATS_DTYPE_KINDS = "biufU"


def _array(arr: Any, what: str, max_elements: int) -> np.ndarray:
    if not isinstance(arr, Array) or arr.stype != "numpy.ndarray":
        raise InvalidReply(f"{what}: not a numpy array")
    if not arr.dtype or np.dtype(arr.dtype).kind not in _STATS_DTYPE_KINDS:
        raise InvalidReply(f"{what}: dtype {arr.dtype} not allowed")
    if math.prod(arr.shape) > max_elements:
        raise InvalidReply(f"{what}: too large ({tuple(arr.shape)})")
    try:
        values = arr.numpy()
    except Exception as exc:  # noqa: BLE001 - any decoding failure is a bad payload
        raise InvalidReply(f"{what}: cannot decode ({exc})") from None
    if values.dtype.kind not in _STATS_DTYPE_KINDS:
        raise InvalidReply(f"{what}: dtype {values.dtype} not allowed")
    if values.dtype.kind == "f" and not np.all(np.isfinite(values)):
        raise InvalidReply(f"{what}: holds NaN or infinite values")
    return values


def _arrays(content: RecordDict, key: str, what: str, max_elements: int) -> dict[str, np.ndarray]:
    record = content.array_records.get(key)
    if record is None:
        raise InvalidReply(f"{what}: listed but not sent")
    return {k: _array(record[k], f"{what} '{k}'", max_elements) for k in record.keys()}


def _listed(info: ConfigRecord, key: str, categories: Sequence[str]) -> list[str]:
    try:
        text = typed(info, key, str)
    except (KeyError, TypeError) as exc:
        raise InvalidReply(f"reply info: {exc}") from None
    cats = [c for c in text.split(",") if c]
    if any(c not in categories for c in cats) or len(set(cats)) != len(cats):
        raise InvalidReply(f"'{key}' lists unknown or repeated categories: {text!r}")
    return cats


def decode_stats_reply(
    content: RecordDict,
    *,
    fingerprint: str,
    categories: Sequence[str],
    max_elements: int = 50_000_000,
) -> StatsReply:
    """The raw statistics and calibration arrays per category (checked further by
    SproStatistics.from_arrays and CalibrationStats.from_arrays) and the local metrics."""
    info = reply_info(content, len(categories))
    check_fingerprint(info, fingerprint)
    out = StatsReply(timings=read_timings(info))
    for cat in reply_categories(info, categories):
        out.stats[cat] = _arrays(content, f"{STATS_PREFIX}{cat}", f"{cat} statistics", max_elements)
    for cat in _listed(info, "calibration", categories):
        key = f"{CALIBRATION_PREFIX}{cat}"
        out.calibration[cat] = _arrays(content, key, f"{cat} calibration", max_elements)
    out.local = _local_metrics(content, list(out.stats))
    return out


#: How far above 1 an area normalised by its limit may come out of float sums (a perfect
#: detector's AUC-sPRO was measured at 1.0000000000000002): an honest client's rounding,
#: not a claim; such values are read as 1.
ROUNDING = 1e-9


def local_metric_keys(categories: Sequence[str]) -> set[str]:
    """The metric names a client may report about its own test images."""
    from fedpatch_app.results.schema import LIMIT_KEYS

    keys = {f"{cat}.image_auroc" for cat in categories}
    return keys | {f"{cat}.auc_spro.{limit}" for cat in categories for limit in LIMIT_KEYS}


def _local_metrics(content: RecordDict, categories: Sequence[str]) -> dict[str, float]:
    """A client's own metrics: known names only, values in [0, 1]."""
    record = content.metric_records.get(LOCAL_METRICS)
    if record is None:
        return {}
    allowed = local_metric_keys(categories)
    unknown = [k for k in record.keys() if k not in allowed]
    if unknown:
        raise InvalidReply(
            f"local metrics: {len(unknown)} unknown name(s), e.g. {unknown[0][:80]!r}"
        )
    out = {}
    for key, value in record.items():
        if isinstance(value, list) or not (
            math.isfinite(float(value)) and 0 <= value <= 1 + ROUNDING
        ):
            raise InvalidReply(f"local metric {key}: {value!r} is not a value in [0, 1]")
        out[key] = min(float(value), 1.0)
    return out
