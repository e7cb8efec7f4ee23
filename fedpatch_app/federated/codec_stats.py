"""The query exchange ("stats", phase B): global map scalings down, sufficient
statistics up.

down: ConfigRecord "config" = the plan + "scaling.<cat>" = [low, high] per category.
up:   ArrayRecord "stats.<cat>" = SproStatistics.to_arrays() of the client's quantized
      maps; ConfigRecord "info"; MetricRecord "local" = the client's own metrics.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

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
    reply_categories,
    reply_info,
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
    info = reply_info(content)
    check_fingerprint(info, fingerprint)
    cats = reply_categories(info, categories)
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
