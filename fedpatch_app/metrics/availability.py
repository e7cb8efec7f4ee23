"""Which metrics a category's test data allow, and why not when they do not.

Users' data are often thin: good images only, or defective images without masks. A
metric the data cannot give is reported as not available (null in results.json) with
the reason in `results["categories"][cat]["not_available"]`, never as 0 or NaN.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

#: The reason when a category has no test image at all.
NO_TEST = "no test images: nothing to evaluate (the model and its thresholds are built)"


def has_pixel_truth(sample: Any) -> bool:
    """Whether every pixel of a test sample is known good or defective: a good image, or
    a defective one with a ground-truth mask."""
    return bool(sample.is_good or sample.mask_paths)


def _split(test: Sequence[Any]) -> tuple[list[Any], list[Any]]:
    good = [s for s in test if s.is_good]
    return good, [s for s in test if not s.is_good]


def spro_unavailable(test: Sequence[Any]) -> str | None:
    """Why AUC-sPRO cannot be computed on these test samples (None: it can)."""
    if not test:
        return NO_TEST
    good, defective = _split(test)
    if not defective:
        return "no defective test images"
    missing = [s for s in defective if not s.mask_paths]
    if missing:
        return (
            f"{len(missing)} of {len(defective)} defective test images have no ground-truth "
            f"mask (e.g. {missing[0].rel_path}): AUC-sPRO needs one for every defective image"
        )
    if not good:
        return "no good test images"
    return None


def auroc_unavailable(test: Sequence[Any]) -> str | None:
    """Why the image AUROC cannot be computed on these test samples (None: it can)."""
    if not test:
        return NO_TEST
    good, defective = _split(test)
    if not good:
        return "no good test images (the AUROC compares good and defective images)"
    if not defective:
        return "no defective test images (the AUROC compares good and defective images)"
    return None


def not_available(test: Sequence[Any]) -> dict[str, str]:
    """{metric: reason} of the metrics these test samples cannot give."""
    out = {}
    for metric, reason in (
        ("auc_spro", spro_unavailable(test)),
        ("image_auroc", auroc_unavailable(test)),
    ):
        if reason is not None:
            out[metric] = reason
    return out
