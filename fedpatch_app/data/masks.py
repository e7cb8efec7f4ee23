"""Ground truth as the MVTec AD layout and plain folders keep it: one binary mask per
defective image (any image format the loader reads; a pixel is defective where any
channel is non-zero).

Each connected region of a mask (8-neighbourhood) is one defect region of the image's
defect type, and it counts as fully found once all of it is covered: relative saturation
1.0 in AutoVI's terms, which makes AUC-sPRO the per-region overlap (PRO) curve's area.
A mask of another size than the category's is resized to it (nearest neighbour), as its
image is.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from fedpatch_app.errors import DataError

if TYPE_CHECKING:
    from fedpatch_app.data.autovi import Region, TestSample

#: Suffixes a mask file may carry after the image's stem (MVTec AD writes `_mask`).
MASK_SUFFIXES: tuple[str, ...] = ("_mask", "")


def find_mask(gt_dir: Path, stem: str) -> Path | None:
    """The mask of image `stem` in `gt_dir` (`<stem>_mask.<ext>` or `<stem>.<ext>`)."""
    from fedpatch_app.data.images import IMAGE_SUFFIXES

    if not gt_dir.is_dir():
        return None
    for tail in MASK_SUFFIXES:
        for suffix in sorted(IMAGE_SUFFIXES):
            for candidate in (
                gt_dir / f"{stem}{tail}{suffix}",
                gt_dir / f"{stem}{tail}{suffix.upper()}",
            ):
                if candidate.is_file():
                    return candidate
    return None


def read_binary_mask(path: Path, size: tuple[int, int]) -> np.ndarray:
    """bool (H, W) of a mask at the category's `size` (width, height)."""
    from fedpatch_app.data.images import read_image

    rgb = read_image(path)
    mask = rgb.max(axis=2) > 0
    if (mask.shape[1], mask.shape[0]) != tuple(size):
        img = Image.fromarray(mask.astype(np.uint8) * 255)
        mask = np.asarray(img.resize(tuple(size), Image.Resampling.NEAREST)) > 0
    return mask


def binary_regions(sample: TestSample, size: tuple[int, int]) -> list[Region]:
    """The defect regions of one defective test image from its binary mask(s)."""
    from scipy import ndimage

    from fedpatch_app.data.autovi import Region

    regions: list[Region] = []
    for path in sample.mask_paths:
        mask = read_binary_mask(path, size)
        labels, count = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
        if count == 0:
            raise DataError(
                f"ground-truth mask {path} of defective image {sample.path} marks no pixel"
            )
        for index in range(1, count + 1):
            region = labels == index
            area = int(np.count_nonzero(region))
            regions.append(Region(region, sample.defect, area, path))
    return regions
