"""Image-level metrics: image scores, AUROC per defect type and pooled, the ROC curve.

The image score is the maximum of its anomaly map, as in the official evaluator; the AUROC is
scikit-learn's (tie-corrected, the Mann-Whitney value), so ties between image scores count
one half as they should.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fedpatch_app.errors import DataError


def image_scores(maps: Sequence[np.ndarray]) -> np.ndarray:
    """Image anomaly score of each map: its maximum (float64)."""
    return np.asarray([float(np.max(m)) for m in maps], dtype=np.float64)


def _labels(scores: Sequence[float] | np.ndarray, defects: Sequence[str]):
    s = np.asarray(scores, dtype=np.float64)
    d = np.asarray(list(defects), dtype=object)
    if s.ndim != 1 or s.shape != d.shape:
        raise DataError(f"{s.size} image scores but {d.size} defect labels")
    if not np.all(np.isfinite(s)):
        raise DataError("image scores hold NaN or infinite values")
    good = d == "good"
    if not np.any(good):
        raise DataError("image AUROC needs good test images (defect 'good'); there are none")
    if np.all(good):
        raise DataError("image AUROC needs defective test images; every image is 'good'")
    return s, d, good


def image_auroc(scores: Sequence[float] | np.ndarray, defects: Sequence[str]) -> dict[str, float]:
    """Image-level AUROC, tie-corrected (the Mann-Whitney value, as scikit-learn computes it).

    Keys: each defect type (against the good images), ``"mean"`` (their unweighted mean) and
    ``"pooled"`` (all defective images against the good ones).
    """
    from sklearn.metrics import roc_auc_score

    s, d, good = _labels(scores, defects)
    kinds = sorted(set(d[~good].tolist()))
    clash = {"mean", "pooled"} & set(kinds)
    if clash:
        raise DataError(f"defect types may not be named {sorted(clash)}")
    per = {}
    for k in kinds:
        chosen = good | (d == k)
        per[k] = float(roc_auc_score((d[chosen] != "good").astype(int), s[chosen]))
    out = {"mean": float(np.mean(list(per.values())))}
    out["pooled"] = float(roc_auc_score((~good).astype(int), s))
    out.update(per)
    return out


def roc_curve_points(
    scores: Sequence[float] | np.ndarray, defects: Sequence[str]
) -> tuple[np.ndarray, np.ndarray]:
    """ROC curve (FPR, TPR) of all defective images pooled against the good ones."""
    from sklearn.metrics import roc_curve

    s, _, good = _labels(scores, defects)
    fpr, tpr, _ = roc_curve((~good).astype(int), s, drop_intermediate=False)
    return fpr, tpr
