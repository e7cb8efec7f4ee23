"""An image as backbone input, without PyTorch: resized keeping the aspect ratio,
normalised as the backbone's checkpoint expects, never cropped (the whole field of view
is scored, and the patch grid maps back onto the native image without an offset).

The training loader (`backbones.images.ImageFolderDataset`) and the line's ONNX runtime
both call `backbone_input`, so both feed the network the same numbers.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from fedpatch_app.data.images import read_image, resize_rgb
from fedpatch_app.errors import DataError


def resized_size(width: int, height: int, image_size: int) -> tuple[int, int]:
    """(width, height) after resizing the shorter side to ``image_size``, aspect kept."""
    if width <= height:
        return image_size, max(1, round(height * image_size / width))
    return max(1, round(width * image_size / height)), image_size


def input_size(native_size: tuple[int, int], image_size: int) -> tuple[int, int]:
    """(height, width) of the backbone input for a (width, height) image."""
    width, height = resized_size(*native_size, image_size)
    return height, width


def backbone_input(
    path: str | os.PathLike,
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    native_size: tuple[int, int] | None = None,
) -> np.ndarray:
    """The image at `path` as float32 ``(3, H, W)``: first resized to `native_size` (the
    category's) when given and different, then so that the shorter side is `image_size`
    (bilinear, antialiased), then ``(x / 255 - mean) / std`` per channel."""
    path = Path(path)
    pixels = read_image(path)
    if native_size is not None:
        pixels = resize_rgb(pixels, native_size)
    try:
        img = Image.fromarray(pixels)
        size = resized_size(img.width, img.height, image_size)
        arr = np.asarray(img.resize(size, Image.Resampling.BILINEAR), dtype=np.float32)
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise DataError(f"cannot read image {str(path)!r}: {exc}") from exc
    arr = arr.transpose(2, 0, 1) / 255.0
    mean_ = np.asarray(mean, dtype=np.float32).reshape(3, 1, 1)
    std_ = np.asarray(std, dtype=np.float32).reshape(3, 1, 1)
    return np.ascontiguousarray((arr - mean_) / std_, dtype=np.float32)
