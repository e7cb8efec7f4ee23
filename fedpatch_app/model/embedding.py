"""Locally aware patch features (PatchCore's embedding) and the feature specification.

The backbone returns two feature maps, at stride 8 and stride 16 (WideResNet-50-2's
``layer2``/``layer3``, 512 + 1024 channels; EfficientNet-Lite0's blocks 4/10, 40 + 112
channels). Per patch of the stride-8 grid:

1. each map's channels are averaged down to its share of ``embed_dim`` (adaptive average
   pooling over the channel axis). The shares: half of ``embed_dim`` each, but a map is
   never pooled *up* (repeating channels adds no information and only reweights them), so
   a map with fewer channels than its half keeps them all and the other map may use the
   rest, up to its own channel count. ``embed_dim`` is therefore the patch width, at most
   the sum of the two maps' channels: WideResNet at the default 1024 keeps layer2's 512
   channels and pools layer3's 1024 to 512 pair means (as before); EfficientNet-Lite0 at
   1024 keeps all 40 + 112 = 152 channels, and the feature spec records 152;
2. each map is averaged over a ``neighbourhood x neighbourhood`` window (stride 1,
   padding, border windows averaged over the pixels that exist);
3. the stride-16 map is bilinearly upsampled onto the stride-8 grid;
4. the two parts are concatenated: ``embed_dim`` values per patch.

All three operations are linear and act on separate axes, so their order does not
change the result; pooling channels first makes the rest cheaper. For WideResNet at
``embed_dim = 1024`` the projection equals the reference implementation's two-stage
adaptive average pooling (each layer to 1024, then the concatenation to 1024), which also
gives each layer half of the dimensions. See docs/phases/phase-2-baseline-model.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from fedpatch_app.errors import ConfigError, DataError, ModelError
from fedpatch_app.model.backbone import (
    ImageFolderDataset,
    autocast_dtype,
    build_backbone,
    resolve_device,
)
from fedpatch_app.model.feature_spec import FeatureSpec

__all__ = ["FeatureExtractor", "FeatureSpec", "embed", "layer_widths"]

logger = logging.getLogger(__name__)


def _pool_channels(x: torch.Tensor, size: int) -> torch.Tensor:
    """Adaptive average pooling over the channel axis of ``(B, C, H, W)``."""
    b, c, h, w = x.shape
    if size == c:
        return x
    flat = x.permute(0, 2, 3, 1).reshape(b * h * w, 1, c)
    pooled = F.adaptive_avg_pool1d(flat, size)
    return pooled.reshape(b, h, w, size).permute(0, 3, 1, 2)


def layer_widths(channels2: int, channels3: int, embed_dim: int) -> tuple[int, int]:
    """How many of the ``embed_dim`` values each map gets: half each, no map pooled up, the
    rest of a narrow map's half given to the other (see the module docstring)."""
    width2 = min(channels2, embed_dim // 2)
    return width2, min(channels3, embed_dim - width2)


def embed(
    layer2: torch.Tensor,
    layer3: torch.Tensor,
    embed_dim: int = 1024,
    neighbourhood: int = 3,
) -> torch.Tensor:
    """Patch features ``(B, h, w, D)`` float32 on the stride-8 grid ``(h, w)``;
    ``D = embed_dim`` unless the two maps have fewer channels together (then their sum)."""
    if layer2.ndim != 4 or layer3.ndim != 4 or layer2.shape[0] != layer3.shape[0]:
        raise ModelError(
            f"embed: expected two (B, C, H, W) maps with the same B, got {tuple(layer2.shape)} "
            f"and {tuple(layer3.shape)}"
        )
    widths = layer_widths(layer2.shape[1], layer3.shape[1], embed_dim)
    pad = neighbourhood // 2
    parts = []
    for layer, size in zip((layer2, layer3), widths, strict=True):
        x = _pool_channels(layer.float(), size)
        if neighbourhood > 1:
            x = F.avg_pool2d(x, neighbourhood, stride=1, padding=pad, count_include_pad=False)
        parts.append(x)
    h, w = layer2.shape[-2:]
    if parts[1].shape[-2:] != (h, w):
        parts[1] = F.interpolate(parts[1], size=(h, w), mode="bilinear", align_corners=False)
    out = torch.cat(parts, dim=1)  # (B, E, h, w)
    return out.permute(0, 2, 3, 1).contiguous()


class FeatureExtractor:
    """Images -> patch features with the backbone and :func:`embed`, batched on ``device``."""

    def __init__(
        self,
        spec: FeatureSpec,
        device: str | torch.device = "auto",
        batch_size: int = 8,
        num_workers: int = 0,
        backbone: torch.nn.Module | None = None,
    ) -> None:
        if int(batch_size) < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        if int(num_workers) < 0:
            raise ConfigError(f"num_workers must be >= 0, got {num_workers}")
        self.spec = spec
        self.device = resolve_device(device)
        self.batch_size = int(batch_size)
        self.num_workers = int(num_workers)
        if backbone is None:
            backbone = build_backbone(spec.backbone, spec.weights, seed=spec.seed)
        elif getattr(backbone, "name", None) != spec.backbone:
            raise ConfigError(
                f"the backbone given is {getattr(backbone, 'name', type(backbone).__name__)!r} "
                f"but the feature spec says {spec.backbone!r}"
            )
        net = backbone
        if self.device.type == "cuda":
            net = net.to(self.device, memory_format=torch.channels_last)
        else:
            net = net.to(self.device)
        self.backbone = net
        self._amp = autocast_dtype(self.device)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Patch features ``(B, h, w, embed_dim)`` float32 (on the device) of a batch."""
        x = images.to(self.device, non_blocking=True)
        if self.device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            if self._amp is not None:
                with torch.autocast(device_type="cuda", dtype=self._amp):
                    layer2, layer3 = self.backbone(x)
            else:
                layer2, layer3 = self.backbone(x)
            return embed(layer2, layer3, self.spec.embed_dim, self.spec.neighbourhood)

    def _loader(
        self, paths: Sequence[str | os.PathLike], native_size: tuple[int, int] | None = None
    ) -> torch.utils.data.DataLoader:
        dataset = ImageFolderDataset(
            paths,
            self.spec.image_size,
            self.backbone.input_mean,
            self.backbone.input_std,
            native_size=native_size,
        )
        return torch.utils.data.DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=False,
            num_workers=self.num_workers,
            collate_fn=dataset.collate,
            pin_memory=self.device.type == "cuda",
        )

    def extract_iter(
        self,
        paths: Sequence[str | os.PathLike],
        desc: str = "features",
        native_size: tuple[int, int] | None = None,
    ) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(first image index, float32 (B, h, w, embed_dim))`` batch by batch;
        with `native_size` (the category's), images of another size are resized to it.

        Every image must give the same grid as the first; otherwise ``DataError``.
        """
        paths = list(paths)
        if not paths:
            raise DataError(f"{desc}: no images to extract features from")
        first_size: tuple[int, int] | None = None
        with tqdm(total=len(paths), desc=desc, unit="img", disable=None) as bar:
            for images, indices in self._loader(paths, native_size):
                size = (int(images.shape[-2]), int(images.shape[-1]))
                if first_size is None:
                    first_size = size
                elif size != first_size:
                    raise DataError(
                        f"image {str(paths[indices[0]])!r} has size {size} (H, W) after resizing "
                        f"but {str(paths[0])!r} has {first_size}: all images of one category "
                        "must share one size"
                    )
                feats = self.features(images)
                yield indices[0], feats.cpu().numpy()
                bar.update(len(indices))

    def extract(
        self,
        paths: Sequence[str | os.PathLike],
        desc: str = "features",
        native_size: tuple[int, int] | None = None,
    ) -> np.ndarray:
        """Features of all images, float32 ``(n_images, h, w, embed_dim)``.

        Written into one array allocated once the first batch shows the grid size, so
        the peak memory stays near the size of the features themselves.
        """
        paths = list(paths)
        out: np.ndarray | None = None
        for start, feats in self.extract_iter(paths, desc, native_size):
            if out is None:
                out = np.empty((len(paths), *feats.shape[1:]), dtype=np.float32)
                logger.debug(
                    "%s: %d images, grid %dx%d, %.1f MiB of features",
                    desc,
                    len(paths),
                    feats.shape[1],
                    feats.shape[2],
                    out.nbytes / 2**20,
                )
            out[start : start + len(feats)] = feats
        assert out is not None  # extract_iter raises on an empty list
        return out
