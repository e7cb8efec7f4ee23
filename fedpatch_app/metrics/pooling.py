"""Pooled evaluation of one category from the clients' sufficient statistics.

Pure functions (no Flower). The clients' AUC-sPRO statistics are merged (exactly the
statistics of all their maps together, on the same 16-bit levels), and the image scores
of all clients are put on the same levels, so the pooled figures equal the centralized
computation on the same quantized maps.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedpatch_app.errors import DataError
from fedpatch_app.metrics import (
    SproStatistics,
    auc_spro_from_statistics,
    image_auroc,
    roc_curve_points,
)
from fedpatch_app.metrics.availability import NO_TEST
from fedpatch_app.metrics.map_scaling import MapScaling
from fedpatch_app.metrics.thresholds import support_warning, threshold_on_test
from fedpatch_app.results.schema import LIMIT_KEYS, category_block

log = logging.getLogger(__name__)


@dataclass
class ScoredImages:
    """One client's test images of one category: paths, defect labels, image scores."""

    rel_paths: list[str]
    defects: list[str]
    scores: np.ndarray


@dataclass
class CategoryOutcome:
    """The pooled evaluation of one category."""

    block: dict[str, Any]
    curves: dict[str, np.ndarray]
    rel_paths: list[str]
    defects: list[str]
    #: The image scores on the 16-bit levels (what the pooled AUROC ranks) and raw.
    scores: np.ndarray
    raw_scores: np.ndarray
    thresholds: dict[str, Any] | None = None

    @property
    def image_threshold(self) -> float | None:
        return None if not self.thresholds else float(self.thresholds["image"]["raw"])


def merge_statistics(parts: Sequence[SproStatistics]) -> SproStatistics:
    merged = parts[0]
    for part in parts[1:]:
        merged = merged.merge(part)
    return merged


def _spro(
    stats: SproStatistics, missing: dict[str, str], defective: int
) -> tuple[dict, dict, np.ndarray, np.ndarray]:
    try:
        spro = auc_spro_from_statistics(stats)
    except DataError as exc:
        missing["auc_spro"] = (
            f"none of the {defective} defective test images has a ground-truth mask"
            if defective
            else str(exc)
        )
        return {k: math.nan for k in LIMIT_KEYS}, {}, np.zeros(0), np.zeros(0)
    per_defect = dict(getattr(spro, "per_defect", None) or {})
    return dict(spro.auc), per_defect, spro.fpr, spro.spro


def spro_support_warning(category: str, rests: Mapping[str, int] | None) -> str | None:
    """What a pooled AUC-sPRO rests on where some defective test images have no mask
    (results.json's warnings, so that report.md shows it); None where all have one."""
    if not rests:
        return None
    return (
        f"{category}: AUC-sPRO rests on the {rests['defective_with_mask']} defective test "
        f"images with a ground-truth mask (and {rests['good']} good ones); "
        f"{rests['defective_without_mask']} defective images without one count in the "
        "image AUROC only"
    )


def _spro_support(
    category: str, merged: SproStatistics, defective: int, missing: dict[str, str]
) -> dict[str, int] | None:
    """The images a pooled AUC-sPRO rests on where some defective test images have no
    ground-truth mask (their clients leave them out of the statistics; the image AUROC
    still counts them); None where every one has a mask or there is no AUC-sPRO."""
    masked = merged.n_images - merged.n_good
    if masked >= defective or "auc_spro" in missing:
        return None
    rests = {
        "images": merged.n_images,
        "good": merged.n_good,
        "defective_with_mask": masked,
        "defective_without_mask": defective - masked,
    }
    log.warning("%s", spro_support_warning(category, rests))
    return rests


def _auroc(levels: np.ndarray, defects: list[str], missing: dict[str, str]):
    try:
        return image_auroc(levels, defects), *roc_curve_points(levels, defects)
    except DataError as exc:
        missing["image_auroc"] = str(exc)
        return {"mean": math.nan, "pooled": math.nan}, np.zeros(0), np.zeros(0)


def _images(parts: Sequence[ScoredImages]) -> tuple[list[str], list[str], np.ndarray]:
    """Every client's images in one order (by path), whatever the clients' order."""
    rows = sorted(
        row
        for part in parts
        for row in zip(part.rel_paths, part.defects, part.scores.tolist(), strict=True)
    )
    scores = np.array([r[2] for r in rows], dtype=np.float64)
    return [r[0] for r in rows], [r[1] for r in rows], scores


def pool_category(
    category: str,
    stats: Sequence[SproStatistics],
    images: Sequence[ScoredImages],
    scaling: MapScaling,
    *,
    train_images: int,
    calibration_images: int = 0,
    thresholds: dict[str, Any] | None = None,
    **extra: Any,
) -> CategoryOutcome:
    """Metrics of one category from every client's statistics and image scores; with the
    calibrated thresholds, what they achieve on the test images; `extra` goes into the
    category's results block (bank facts, clients, ...)."""
    missing: dict[str, str] = {}
    rel_paths, defects, raw = _images(images)
    defective = sum(1 for d in defects if d != "good")
    # The image score is the map's maximum; on the quantized map that is the level of
    # the float maximum (the quantization is monotone).
    levels = scaling.to_uint16(raw).astype(np.float64)
    if rel_paths:
        merged = merge_statistics(stats)
        auc, per_defect, spro_fpr, spro_tpr = _spro(merged, missing, defective)
        auroc, roc_fpr, roc_tpr = _auroc(levels, defects, missing)
        if (rests := _spro_support(category, merged, defective, missing)) is not None:
            extra["auc_spro_rests_on"] = rests
    else:  # good training images only: the model and its thresholds, nothing to evaluate
        missing = {"auc_spro": NO_TEST, "image_auroc": NO_TEST}
        auc, per_defect = dict.fromkeys(LIMIT_KEYS), {}
        auroc = {"mean": None, "pooled": None}
        spro_fpr = spro_tpr = roc_fpr = roc_tpr = np.zeros(0)
    for metric, reason in missing.items():
        log.warning("%s: %s not available: %s", category, metric, reason)
    counts = {
        "train": train_images,
        "calibration": calibration_images,
        "test_good": sum(1 for d in defects if d == "good"),
        "test_defective": sum(1 for d in defects if d != "good"),
    }
    if (warning := support_warning(category, thresholds)) is not None:
        log.warning("%s", warning)
    if thresholds is not None:
        extra["thresholds"] = dict(thresholds)
    if thresholds is not None and rel_paths:
        on_test = threshold_on_test(raw, defects, float(thresholds["image"]["raw"]))
        extra["thresholds"]["on_test"] = on_test
    block = category_block(
        auc_spro=auc,
        image_auroc=auroc,
        counts=counts,
        auc_spro_per_defect=per_defect or None,
        map_scaling=scaling.to_dict(),
        **extra,
        **({"not_available": missing} if missing else {}),
    )
    curves = {
        "spro_fpr": np.asarray(spro_fpr, dtype=np.float64),
        "spro": np.asarray(spro_tpr, dtype=np.float64),
        "roc_fpr": np.asarray(roc_fpr, dtype=np.float64),
        "roc_tpr": np.asarray(roc_tpr, dtype=np.float64),
    }
    return CategoryOutcome(block, curves, rel_paths, defects, levels, raw, thresholds)
