"""Image-level AUROC and pixel-level AUC-sPRO, as the official AutoVI evaluator computes them.

The public face of the metrics; callers import from here. The work is split by what it does:

- ``spro_curve``: the official threshold sweep, refinement and capped area (:class:`SproResult`,
  :func:`capped_auc`, ``FPR_LIMITS``), on any source of sorted scores;
- ``spro_maps``: :func:`auc_spro` from a category's anomaly maps and ground-truth regions;
- ``sufficient_statistics``: the binned statistics clients send instead of maps
  (:class:`SproStatistics`: fields, the checks a received payload must pass, merge);
- ``spro_histograms``: maps to statistics and statistics to the metric
  (:func:`spro_statistics`, :func:`auc_spro_from_statistics`), over the edges of
  ``score_bins`` (:func:`level_edges`, :func:`uniform_edges`);
- ``map_checks``: what maps and their regions must satisfy to be scored;
- ``image_level``: :func:`image_scores`, :func:`image_auroc`, :func:`roc_curve_points`.

Beside them, the package holds what runs compute from the metrics: the 16-bit map scaling
(``map_scaling``), a category's evaluation block (``evaluate``), the pooled evaluation of the
clients' statistics (``pooling``), decision thresholds (``thresholds``), which metrics the
data allow (``availability``) and their spread across categories and clients (``fairness``).

With one bin per 16-bit level the statistics are exact for 16-bit maps, and
:func:`auc_spro_from_statistics` equals :func:`auc_spro` on them. See
``docs/phases/phase-4-evaluation/metrics.md`` for the precise definitions.
"""

from __future__ import annotations

from fedpatch_app.metrics.image_level import image_auroc, image_scores, roc_curve_points
from fedpatch_app.metrics.score_bins import level_edges, uniform_edges
from fedpatch_app.metrics.spro_curve import (
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
from fedpatch_app.metrics.spro_histograms import auc_spro_from_statistics, spro_statistics
from fedpatch_app.metrics.spro_maps import auc_spro
from fedpatch_app.metrics.sufficient_statistics import SproStatistics

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
