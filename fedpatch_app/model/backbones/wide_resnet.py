"""Frozen WideResNet-50-2 (torchvision) up to ``layer3``: PatchCore's reference backbone.

``layer2`` (512 channels, stride 8) and ``layer3`` (1024 channels, stride 16) are the
feature maps PatchCore uses. The network stops after ``layer3``: ``layer4``, the pooling
and the classifier are removed, so they never run (and their weights are never kept).
ImageNet weights come from torchvision's download and cache (hash checked).
"""

from __future__ import annotations

import logging
import os
import urllib.error
from pathlib import Path

import torch
from torch import nn

from fedpatch_app.errors import WeightsError
from fedpatch_app.model.backbones.checkpoints import (
    fit_state,
    freeze,
    load_file_state,
    weights_identifier,
)
from fedpatch_app.model.backbones.images import IMAGENET_MEAN, IMAGENET_STD

logger = logging.getLogger(__name__)

NAME = "wide_resnet50_2"
LAYERS = ("layer2", "layer3")
#: Channels and strides of the two returned layers.
LAYER_CHANNELS = {"layer2": 512, "layer3": 1024}
LAYER_STRIDES = {"layer2": 8, "layer3": 16}
IMAGENET_ID = "imagenet-v1"
#: Parameters (prefixes) of the full torchvision model that the truncated one drops.
_DROPPED_PREFIXES = ("layer4.", "fc.")


def _imagenet_weights():
    from torchvision.models import Wide_ResNet50_2_Weights

    return Wide_ResNet50_2_Weights.IMAGENET1K_V1


def imagenet_cache_path() -> Path:
    """Where torchvision keeps (and looks for) the ImageNet checkpoint."""
    url = _imagenet_weights().url
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)


def weights_id(weights: str | os.PathLike) -> str:
    """``imagenet`` -> ``imagenet-v1``, ``none`` -> ``none``, a file -> ``file:<sha256>``;
    identifiers are returned unchanged."""
    return weights_identifier(weights, IMAGENET_ID, NAME)


def _load_imagenet_state() -> dict[str, torch.Tensor]:
    weights = _imagenet_weights()
    cached = imagenet_cache_path()
    try:
        return torch.hub.load_state_dict_from_url(
            weights.url, progress=True, check_hash=True, weights_only=True, map_location="cpu"
        )
    except (urllib.error.URLError, OSError, ConnectionError, TimeoutError) as exc:
        raise WeightsError(
            "cannot load the ImageNet weights of wide_resnet50_2: the file is not in "
            f"torchvision's cache and downloading {weights.url} failed ({exc}). "
            f"Put the file at {cached} (torchvision's cache: $TORCH_HOME/hub/checkpoints/"
            f"{cached.name}), or pass the path of a local state dict as the weights setting, "
            "or use the backbone efficientnet_lite0, whose ImageNet weights install with "
            "fedpatch (or 'none' for random weights)."
        ) from exc


class WideResNetBackbone(nn.Module):
    """Frozen WideResNet-50-2 up to ``layer3``; ``forward(x) -> (layer2, layer3)``.

    ``weights``: ``"imagenet"`` (torchvision's ``IMAGENET1K_V1``, from its cache or
    downloaded), a path to a state dict (``torch.load(weights_only=True)``), or
    ``"none"`` (random initialisation from ``seed``).
    """

    name = NAME
    layers = LAYERS
    channels = (LAYER_CHANNELS["layer2"], LAYER_CHANNELS["layer3"])
    strides = (LAYER_STRIDES["layer2"], LAYER_STRIDES["layer3"])
    input_mean = IMAGENET_MEAN
    input_std = IMAGENET_STD

    def __init__(self, weights: str | os.PathLike = "imagenet", *, seed: int = 0) -> None:
        super().__init__()
        from torchvision.models import wide_resnet50_2

        text = str(weights)
        state: dict[str, torch.Tensor] | None = None
        if text == "imagenet":
            state, source = _load_imagenet_state(), "the ImageNet checkpoint"
        elif text != "none":
            path = Path(text).expanduser()
            state, source = load_file_state(path, NAME), f"weights file {str(path)!r}"

        if state is None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                net = wide_resnet50_2(weights=None)
        else:  # no random initialisation: the weights overwrite every parameter
            with torch.device("meta"):
                net = wide_resnet50_2(weights=None)
        # Truncate: layer4 and the head are removed, so they can never run.
        del net.layer4, net.avgpool, net.fc
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1 = net.layer1
        self.layer2 = net.layer2
        self.layer3 = net.layer3

        if state is None:
            self.weights_id = "none"
        else:
            self.to_empty(device="cpu")
            fit_state(self, state, lambda key: key.startswith(_DROPPED_PREFIXES), source, NAME)
            self.weights_id = IMAGENET_ID if text == "imagenet" else weights_id(path)
        freeze(self)
        logger.debug("backbone %s (to layer3), weights %s", NAME, self.weights_id)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer1(x)
        layer2 = self.layer2(x)
        layer3 = self.layer3(layer2)
        return layer2, layer3


class WideResNet50_2:
    """WideResNet-50-2 in the backbone registry (`registry.Backbone`)."""

    name = NAME
    layers = LAYERS
    channels = WideResNetBackbone.channels
    strides = WideResNetBackbone.strides
    imagenet_id = IMAGENET_ID
    weights_note = "ImageNet weights from torchvision's cache or download"
    #: Offline on synthetic data: EfficientNet-Lite0, whose ImageNet weights install with fedpatch.
    stand_in = "efficientnet_lite0"

    def build(self, weights: str | os.PathLike, *, seed: int) -> WideResNetBackbone:
        return WideResNetBackbone(weights, seed=seed)

    def weights_id(self, weights: str | os.PathLike) -> str:
        return weights_id(weights)

    def imagenet_weights_path(self) -> Path | None:
        path = imagenet_cache_path()
        return path if path.is_file() else None

    def imagenet_missing(self) -> str:
        return f"{imagenet_cache_path()} is missing"

    def imagenet_fix(self) -> str:
        return (
            f"put torchvision's checkpoint at {imagenet_cache_path()} (run once on a connected "
            "machine, or copy the file) or pass its path as the weights setting (weights=PATH)"
        )


BACKBONE = WideResNet50_2()
