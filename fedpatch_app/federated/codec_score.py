"""The evaluate exchange ("score", phase A): the global banks down, image scores up.

down: ArrayRecord "banks" = {category: (M, D) global bank} (one RecordDict for every node:
      uploaded once) + ConfigRecord "config" = the plan (+ "query-clip.<cat>" under DP).
up:   ArrayRecord "scores" = {category: (n,) float64 image scores};
      ConfigRecord "info" = fingerprint, categories, "min.<cat>", "max.<cat>" (of the
      category's float maps), "defects.<cat>", "paths.<cat>" (per image).
The source check adds its own records to both (`codec_source_check`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, RecordDict

from fedpatch_app.defences.source_check import Report
from fedpatch_app.errors import ModelError
from fedpatch_app.federated import wire
from fedpatch_app.federated.codec_source_check import read_reports


def encode_banks(banks: Mapping[str, np.ndarray], transport_dtype: str = "float32") -> ArrayRecord:
    """The global banks as one ArrayRecord (one array per category)."""
    dtype = wire.TRANSPORT_DTYPES[transport_dtype]
    return ArrayRecord(
        {cat: wire.array_of(np.asarray(f).astype(dtype, copy=False)) for cat, f in banks.items()}
    )


def decode_banks(
    arrays: ArrayRecord, embed_dim: int, known: Sequence[str]
) -> dict[str, np.ndarray]:
    """The global banks as float32 arrays (the client checks what the server sent too)."""
    out: dict[str, np.ndarray] = {}
    for cat in arrays.keys():
        if cat not in known:
            raise ModelError(f"the server sent a bank for unknown category {cat!r}")
        values = wire.decode_array(
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
        value = config.get(f"{wire.QUERY_CLIP}.{cat}", 0.0)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ModelError(f"{wire.QUERY_CLIP}.{cat}: a number expected, got {value!r}")
        if not (math.isfinite(float(value)) and float(value) >= 0):
            raise ModelError(f"{wire.QUERY_CLIP}.{cat}: must be a finite value >= 0, got {value}")
        out[cat] = float(value)
    return out


@dataclass
class CategoryScores:
    """One category's phase-A reply from one client."""

    map_min: float
    map_max: float
    scores: np.ndarray
    defects: list[str]
    rel_paths: list[str]


@dataclass
class CalibrationRange:
    """How many calibration images of a category a client scored, and their map range."""

    count: int
    map_min: float
    map_max: float


@dataclass
class ScoreReply:
    fingerprint: str
    categories: dict[str, CategoryScores] = field(default_factory=dict)
    calibration: dict[str, CalibrationRange] = field(default_factory=dict)
    #: The client's seconds per phase ("scoring").
    timings: dict[str, float] = field(default_factory=dict)
    #: Its source-check reports per category (`codec_source_check`).
    checks: dict[str, Report] = field(default_factory=dict)


def encode_score_reply(
    per_category: Mapping[str, CategoryScores],
    *,
    fingerprint: str,
    calibration: Mapping[str, CalibrationRange] | None = None,
    timings: Mapping[str, float] | None = None,
) -> RecordDict:
    arrays = ArrayRecord()
    calibration = calibration or {}
    info = ConfigRecord(
        {
            "fingerprint": fingerprint,
            "categories": ",".join(per_category),
            "calibration": ",".join(calibration),
            **wire.timing_info(timings or {}),
        }
    )
    for cat, item in per_category.items():
        arrays[cat] = wire.array_of(np.asarray(item.scores, dtype=np.float64))
        info[f"min.{cat}"] = float(item.map_min)
        info[f"max.{cat}"] = float(item.map_max)
        info[f"defects.{cat}"] = [str(d) for d in item.defects]
        info[f"paths.{cat}"] = [str(p) for p in item.rel_paths]
    for cat, item in calibration.items():
        info[f"cal-count.{cat}"] = int(item.count)
        info[f"cal-min.{cat}"] = float(item.map_min)
        info[f"cal-max.{cat}"] = float(item.map_max)
    return RecordDict({wire.SCORES: arrays, wire.INFO: info})


def _range(info: ConfigRecord, cat: str, prefix: str = "") -> tuple[float, float]:
    try:
        lo = float(wire.typed(info, f"{prefix}min.{cat}", (int, float)))
        hi = float(wire.typed(info, f"{prefix}max.{cat}", (int, float)))
    except (KeyError, TypeError) as exc:
        raise wire.InvalidReply(f"{cat}: {exc}") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and 0 <= lo <= hi):
        raise wire.InvalidReply(
            f"{cat}: map range [{lo}, {hi}] is not finite, ordered and >= 0 (map values are "
            "nearest-neighbour distances)"
        )
    return lo, hi


def _labels(info: ConfigRecord, cat: str, n: int) -> tuple[list[str], list[str]]:
    """One defect label and one path test/<defect>/<id> per score, each path once."""
    try:
        defects = wire.typed(info, f"defects.{cat}", list)
        paths = wire.typed(info, f"paths.{cat}", list)
    except (KeyError, TypeError) as exc:
        raise wire.InvalidReply(f"{cat}: {exc}") from None
    if len(defects) != n or len(paths) != n:
        raise wire.InvalidReply(
            f"{cat}: {n} scores but {len(defects)} defect labels and {len(paths)} paths"
        )
    if not all(isinstance(d, str) for d in defects) or not all(isinstance(p, str) for p in paths):
        raise wire.InvalidReply(f"{cat}: defect labels and paths must be strings")
    for d, p in zip(defects, paths, strict=True):
        m = wire.REL_PATH.match(p)
        if m is None or not wire.SAFE_NAME.match(d) or m.group(1) != d:
            raise wire.InvalidReply(f"{cat}: bad test image path {p!r} for defect {d!r}")
    if len(set(paths)) != n:
        raise wire.InvalidReply(f"{cat}: a test image is listed twice")
    return list(defects), list(paths)


def _test_scores(arrays: ArrayRecord, info: ConfigRecord, cat: str) -> CategoryScores:
    if cat not in arrays:
        raise wire.InvalidReply(f"{cat}: listed but no image scores sent")
    scores = wire.decode_array(
        arrays[cat],
        f"{cat} image scores",
        dtypes=["float64", "float32"],
        ndim=1,
        max_elements=wire.MAX_TEST_IMAGES,
    ).astype(np.float64)
    if len(scores) == 0:
        raise wire.InvalidReply(f"{cat}: no test images scored")
    lo, hi = _range(info, cat)
    tol = 1e-6 * max(1.0, abs(lo), abs(hi))
    if np.any(scores < lo - tol) or np.any(scores > hi + tol):
        raise wire.InvalidReply(f"{cat}: image scores fall outside the reported map range")
    defects, paths = _labels(info, cat, len(scores))
    return CategoryScores(lo, hi, scores, defects, paths)


def _calibration(info: ConfigRecord, categories: Sequence[str]) -> dict[str, CalibrationRange]:
    try:
        text = wire.typed(info, "calibration", str)
    except (KeyError, TypeError) as exc:
        raise wire.InvalidReply(f"reply info: {exc}") from None
    out: dict[str, CalibrationRange] = {}
    for cat in [c for c in text.split(",") if c]:
        if cat not in categories or cat in out:
            raise wire.InvalidReply(f"calibration images of {cat!r}: unknown or listed twice")
        try:
            count = wire.typed(info, f"cal-count.{cat}", int)
        except (KeyError, TypeError) as exc:
            raise wire.InvalidReply(f"{cat}: {exc}") from None
        if not 1 <= count <= wire.MAX_TEST_IMAGES:
            raise wire.InvalidReply(f"{cat}: {count} calibration images is not plausible")
        out[cat] = CalibrationRange(count, *_range(info, cat, "cal-"))
    return out


def decode_score_reply(
    content: RecordDict,
    *,
    fingerprint: str,
    categories: Sequence[str],
    judged: Mapping[str, int] | None = None,
) -> ScoreReply:
    """Check a phase-A reply: finite ranges and scores, one defect label and relative path
    per score, paths of the form test/<defect>/<id> that agree with the label; plausible
    calibration counts and ranges; source-check reports of the categories the server
    checks (`judged`: how many sources each judges)."""
    info = wire.reply_info(content, len(categories))
    wire.check_fingerprint(info, fingerprint)
    cats = wire.reply_categories(info, categories)
    arrays = content.array_records.get(wire.SCORES, ArrayRecord())
    out = ScoreReply(fingerprint, calibration=_calibration(info, categories))
    out.timings = wire.read_timings(info)
    for cat in cats:
        out.categories[cat] = _test_scores(arrays, info, cat)
    out.checks = read_reports(content, judged or {}, list(out.categories))
    return out
