"""What every exchange between the server and the clients shares: record keys, typed
access to config values, array decoding without pickle, payload sizes.

Arrays are numpy .npy bytes that Flower reads with allow_pickle=False; every value read
from a message is checked for its type here, and a failed check raises `InvalidReply`
with the reason.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from flwr.app import Array, ConfigRecord, Message, RecordDict

from fedpatch_app.errors import ModelError

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
#: A query that only tells a node to delete its cached maps (it was dropped after phase A).
PHASE_RELEASE = "release"

#: Array dtypes a client may send for coresets (float16 only when the plan says so).
TRANSPORT_DTYPES = {"float32": np.float32, "float16": np.float16}
#: At most this many test images per category and client (a sanity cap, far above AutoVI).
MAX_TEST_IMAGES = 100_000
#: At most this many training patches per category and client.
MAX_PATCHES = 2_000_000_000

#: Keys a reply's info record may hold: a few fixed ones plus this many per category.
INFO_KEYS_FIXED = 16
INFO_KEYS_PER_CATEGORY = 16
#: The longest plain string a reply may carry in a field the server keeps (device, ...).
MAX_FIELD_TEXT = 200

SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
REL_PATH = re.compile(
    r"^test/([A-Za-z0-9][A-Za-z0-9_.-]{0,127})/([A-Za-z0-9][A-Za-z0-9_.-]{0,255})$"
)


class InvalidReply(ModelError):
    """A client's reply failed a check; the message says which and why."""


def typed(record: Mapping[str, Any], key: str, kind: type | tuple[type, ...]) -> Any:
    if key not in record:
        raise KeyError(f"missing '{key}'")
    value = record[key]
    if isinstance(value, bool) and kind is not bool and bool not in as_tuple(kind):
        raise TypeError(f"'{key}' has type bool")
    if not isinstance(value, kind):
        raise TypeError(f"'{key}' has type {type(value).__name__}")
    return value


def as_tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


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


def array_of(values: np.ndarray) -> Array:
    values = np.asarray(values)
    # ascontiguousarray would turn a 0-d array into 1-d: only copy when needed.
    return Array(values if values.flags.c_contiguous else np.ascontiguousarray(values))


def check_declared(
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
    check_declared(arr, what, dtypes=dtypes, ndim=ndim, max_elements=max_elements)
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


def reply_info(content: RecordDict, categories: int = 6) -> ConfigRecord:
    """The reply's info record, holding no more keys than the protocol uses."""
    if INFO not in content.config_records:
        raise InvalidReply(f"reply lacks the '{INFO}' config record")
    info = content.config_records[INFO]
    limit = INFO_KEYS_FIXED + INFO_KEYS_PER_CATEGORY * categories
    if len(info) > limit:
        raise InvalidReply(f"reply info holds {len(info)} keys, more than the {limit} allowed")
    return info


def reply_categories(info: ConfigRecord, known: Sequence[str]) -> list[str]:
    try:
        text = typed(info, "categories", str)
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


def check_fingerprint(info: ConfigRecord, expected: str) -> str:
    try:
        got = typed(info, "fingerprint", str)
    except (KeyError, TypeError) as exc:
        raise InvalidReply(f"reply info: {exc}") from None
    if got != expected:
        raise InvalidReply(
            f"feature-spec fingerprint {got!r} does not match the run's {expected!r}"
        )
    return got


#: Per-phase seconds a client reports (`time.<phase>` in a reply's info): at most this
#: many phases, each a finite number of seconds below a day.
_TIMING_KEY = re.compile(r"^time\.([a-z_]{1,32})$")
MAX_TIMINGS = 16


def timing_info(timings: Mapping[str, float]) -> dict[str, float]:
    """Info entries of a client's per-phase seconds."""
    return {f"time.{k}": float(v) for k, v in timings.items()}


def read_timings(info: ConfigRecord) -> dict[str, float]:
    """A reply's per-phase seconds; an implausible value is a bad reply."""
    out: dict[str, float] = {}
    for key, value in info.items():
        match = _TIMING_KEY.match(key)
        if match is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidReply(f"'{key}': a number of seconds expected, got {value!r}")
        if not (math.isfinite(float(value)) and 0 <= float(value) < 86_400):
            raise InvalidReply(f"'{key}': {value} is not a plausible number of seconds")
        out[match.group(1)] = float(value)
    if len(out) > MAX_TIMINGS:
        raise InvalidReply(f"{len(out)} timings reported, at most {MAX_TIMINGS} expected")
    return out
