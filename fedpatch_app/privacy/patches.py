"""The image patches behind patch features: what an inversion tries to recover.

A patch feature of the stride-s grid at (i, j) is centred on the backbone input near
pixel (s i + s/2, s j + s/2); its "centre patch" is the `size` x `size` window of the
backbone input (after the backbone's own resizing, before its normalisation) around that
point, reflected at the borders.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from fedpatch_app.model.backbone import backbone_info
from fedpatch_app.model.backbones.images import ImageFolderDataset
from fedpatch_app.model.embedding import FeatureSpec


def input_pixels(spec: FeatureSpec, backbone, paths: Sequence[Path]) -> np.ndarray:
    """The backbone inputs of `paths` as float32 (n, H, W, 3) in [0, 1]."""
    data = ImageFolderDataset(paths, spec.image_size, backbone.input_mean, backbone.input_std)
    mean = np.asarray(backbone.input_mean, dtype=np.float32).reshape(3, 1, 1)
    std = np.asarray(backbone.input_std, dtype=np.float32).reshape(3, 1, 1)
    out = []
    for i in range(len(data)):
        x = data[i][0].numpy() * std + mean
        out.append(np.clip(x, 0, 1).transpose(1, 2, 0))
    return np.stack(out).astype(np.float32)


def patches_at(
    pixels: np.ndarray, positions: np.ndarray, spec: FeatureSpec, size: int
) -> np.ndarray:
    """Centre patches (k, size, size, 3) at `positions` (k, 3): image, grid row, column."""
    stride = backbone_info(spec.backbone).strides[0]
    pad = size
    out = np.empty((len(positions), size, size, 3), dtype=np.float32)
    padded: dict[int, np.ndarray] = {}
    for n, (img, i, j) in enumerate(np.asarray(positions, dtype=np.int64)):
        if img not in padded:
            padded[img] = np.pad(pixels[img], ((pad, pad), (pad, pad), (0, 0)), mode="reflect")
        y0 = stride * i + stride // 2 - size // 2 + pad
        x0 = stride * j + stride // 2 - size // 2 + pad
        out[n] = padded[img][y0 : y0 + size, x0 : x0 + size]
    return out
