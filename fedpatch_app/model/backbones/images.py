"""Images as backbone input: resized keeping the aspect ratio, normalised as the backbone's
checkpoint expects, never cropped (the whole field of view is scored, and the patch grid
maps back onto the native image without an offset).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from fedpatch_app.data.images import read_image, resize_rgb
from fedpatch_app.errors import ConfigError, DataError
from fedpatch_app.settings.schema import MIN_IMAGE_SIZE

#: ImageNet normalisation used by the torchvision weights.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def resized_size(width: int, height: int, image_size: int) -> tuple[int, int]:
    """(width, height) after resizing the shorter side to ``image_size``, aspect kept."""
    if width <= height:
        return image_size, max(1, round(height * image_size / width))
    return max(1, round(width * image_size / height)), image_size


class ImageFolderDataset(torch.utils.data.Dataset):
    """Images from ``paths`` as normalised tensors ``(3, H, W)``, with their index.

    Resizes so the shorter side is ``image_size``, keeping the aspect ratio (1000x750 at
    256 -> 341x256), bilinear with antialiasing; then ``(x - mean) / std`` per channel on
    values in [0, 1] (ImageNet's statistics unless the backbone says otherwise); no crop.
    """

    def __init__(
        self,
        paths: Sequence[str | os.PathLike],
        image_size: int,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        native_size: tuple[int, int] | None = None,
    ) -> None:
        if int(image_size) < MIN_IMAGE_SIZE:
            raise ConfigError(
                f"image_size must be at least {MIN_IMAGE_SIZE} pixels, got {image_size}"
            )
        self.paths = [Path(p) for p in paths]
        self.image_size = int(image_size)
        #: The category's size: an image of another size is resized to it first.
        self.native_size = native_size
        self._mean = np.asarray(mean, dtype=np.float32).reshape(3, 1, 1)
        self._std = np.asarray(std, dtype=np.float32).reshape(3, 1, 1)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path = self.paths[index]
        pixels = read_image(path)
        if self.native_size is not None:
            pixels = resize_rgb(pixels, self.native_size)
        try:
            img = Image.fromarray(pixels)
            size = resized_size(img.width, img.height, self.image_size)
            arr = np.asarray(img.resize(size, Image.Resampling.BILINEAR), dtype=np.float32)
        except (OSError, UnidentifiedImageError, ValueError) as exc:
            raise DataError(f"cannot read image {str(path)!r}: {exc}") from exc
        arr = arr.transpose(2, 0, 1) / 255.0
        arr = (arr - self._mean) / self._std
        return torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32)), index

    def collate(self, items: list[tuple[torch.Tensor, int]]) -> tuple[torch.Tensor, list[int]]:
        """Stack a batch; an image whose size differs from the first is a ``DataError``."""
        first = items[0][0].shape
        for tensor, index in items:
            if tensor.shape != first:
                raise DataError(
                    f"image {str(self.paths[index])!r} has size {tuple(tensor.shape[1:])} after "
                    f"resizing, but {str(self.paths[items[0][1]])!r} has {tuple(first[1:])}: all "
                    "images of one category must share one size"
                )
        return torch.stack([t for t, _ in items]), [i for _, i in items]
