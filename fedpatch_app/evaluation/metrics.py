"""Image-level AUROC and pixel-level AUC-sPRO, as the official AutoVI evaluator computes them.

The public face of the metrics; callers import from here. The work is split by what it does:

- ``spro_curve``: the official threshold sweep, refinement and capped area (:class:`SproResult`,
  :func:`capped_auc`, ``FPR_LIMITS``), on any source of sorted scores;
- ``spro_maps``: :func:`auc_spro` from a category's anomaly maps and ground-truth regions;
- ``spro_statistics``: the binned sufficient statistics clients send instead of maps
  (:class:`SproStatistics`, :func:`spro_statistics`, :func:`auc_spro_from_statistics`), with
  ``score_bins`` (:func:`level_edges`, :func:`uniform_edges`) and ``spro_validation`` (what a
  received payload must satisfy);
- ``image_metrics``: :func:`image_scores`, :func:`image_auroc`, :func:`roc_curve_points`.

With one bin per 16-bit level the statistics are exact for 16-bit maps, and
:func:`auc_spro_from_statistics` equals :func:`auc_spro` on them. See
``docs/phases/phase-4-evaluation/metrics.md`` for the precise definitions.
"""

from __future__ import annotations

from fedpatch_app.evaluation.image_metrics import image_auroc, image_scores, roc_curve_points
from fedpatch_app.evaluation.score_bins import level_edges, uniform_edges
from fedpatch_app.evaluation.spro_curve import (
    CURVE_MAX_DISTANCE,
    FPR_LIMITS,
    MAX_REFINED_INTERVALS,
    MIN_NEW_THRESHOLDS,
    NUM_INITIAL_THRESHOLDS,
    REFINEMENT_ROUNDS,
    THRESHOLD_EPSILON,
    RegionLike,
    SproResult,
    capped_auc,
    limit_key,
)
from fedpatch_app.evaluation.spro_maps import auc_spro
from fedpatch_app.evaluation.spro_statistics import (
    SproStatistics,
    auc_spro_from_statistics,
    spro_statistics,
)

__all__ = [
    "CURVE_MAX_DISTANCE",
    "FPR_LIMITS",
    "MAX_REFINED_INTERVALS",
    "MIN_NEW_THRESHOLDS",
    "NUM_INITIAL_THRESHOLDS",
    "REFINEMENT_ROUNDS",
    "THRESHOLD_EPSILON",
    "RegionLike",
    "SproResult",
    "SproStatistics",
    "auc_spro",
    "auc_spro_from_statistics",
    "capped_auc",
    "image_auroc",
    "image_scores",
    "level_edges",
    "limit_key",
    "roc_curve_points",
    "spro_statistics",
    "uniform_edges",
]
