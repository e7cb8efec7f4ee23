"""Images as backbone input: resized keeping the aspect ratio, normalised as the backbone's
checkpoint expects, never cropped (the whole field of view is scored, and the patch grid
maps back onto the native image without an offset).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch

from fedpatch_app.errors import ConfigError, DataError
from fedpatch_app.model.backbone_facts import IMAGENET_MEAN, IMAGENET_STD
from fedpatch_app.model.backbone_input import backbone_input, resized_size
from fedpatch_app.settings.schema import MIN_IMAGE_SIZE

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "ImageFolderDataset", "resized_size"]


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
        self._mean = tuple(mean)
        self._std = tuple(std)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        arr = backbone_input(
            self.paths[index], self.image_size, self._mean, self._std, self.native_size
        )
        return torch.from_numpy(arr), index

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
