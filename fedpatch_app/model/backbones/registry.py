"""What a backbone is (`Backbone`) and the one registry of backbones.

A backbone is one module that defines ``BACKBONE``, an object satisfying `Backbone`, and
one line in `_REGISTRY` below that names that module. Everything else derives from the
registry: the settings schema's choices for ``backbone`` (validated against `names()`),
the ``--backbone`` option and the settings table, the feature spec's layers and channels,
the stride of the patch grid, weights identifiers and the offline stand-in rule.

The registry names modules rather than importing them, so the settings schema and
``fedpatch --help`` know the names without importing torch; a module is imported the first
time its backbone is asked for (`get`).

PatchCore uses two feature maps per image, a finer and a coarser one (WideResNet's
``layer2`` and ``layer3``): a backbone declares both, and `get` refuses one that does not
(two layers, two channel counts, the finer stride first and dividing the coarser).
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from fedpatch_app.errors import ConfigError

if TYPE_CHECKING:
    import torch

#: The backbone of a run that names none.
DEFAULT = "wide_resnet50_2"

#: Every backbone: its name -> the module defining it (``BACKBONE``), or the object itself.
_REGISTRY: dict[str, str | Backbone] = {
    "wide_resnet50_2": "fedpatch_app.model.backbones.wide_resnet",
    "efficientnet_lite0": "fedpatch_app.model.backbones.efficientnet_lite",
}


@runtime_checkable
class FeatureNetwork(Protocol):
    """A built backbone: a frozen torch module; ``network(x)`` on a normalised batch
    ``(B, 3, H, W)`` returns the finer and the coarser feature map ``(B, C, h, w)``."""

    name: str
    #: Identifier of the weights it holds (`Backbone.weights_id`).
    weights_id: str
    #: Per-channel normalisation its weights expect, on values in [0, 1].
    input_mean: tuple[float, float, float]
    input_std: tuple[float, float, float]

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...


@runtime_checkable
class Backbone(Protocol):
    """What a backbone provides, known without building it."""

    #: The name of the ``backbone`` setting.
    name: str
    #: Names of the two returned feature maps, their channels and strides (finer first).
    layers: tuple[str, str]
    channels: tuple[int, int]
    strides: tuple[int, int]
    #: Identifier of its ImageNet weights, recorded in feature specs and model folders.
    imagenet_id: str
    #: Where its ImageNet weights come from, in a few words (for messages).
    weights_note: str
    #: The backbone a run on synthetic data uses instead when this one's ImageNet weights
    #: are not on this machine (None: no stand-in, the run stops).
    stand_in: str | None

    def build(self, weights: str | os.PathLike, *, seed: int) -> FeatureNetwork:
        """The frozen network with ``weights`` (``imagenet``, ``none``: random from
        ``seed``, or a state-dict file)."""
        ...

    def weights_id(self, weights: str | os.PathLike) -> str:
        """``imagenet`` -> `imagenet_id`, ``none`` -> ``none``, a file -> ``file:<sha256>``;
        identifiers unchanged."""
        ...

    def imagenet_weights_path(self) -> Path | None:
        """The local file of its ImageNet weights, or None (nothing is downloaded here)."""
        ...

    def imagenet_missing(self) -> str:
        """Why its ImageNet weights are not at hand ("<path> is missing")."""
        ...

    def imagenet_fix(self) -> str:
        """How to get its ImageNet weights onto this machine."""
        ...


def names() -> tuple[str, ...]:
    """The registered backbones, in registration order."""
    return tuple(_REGISTRY)


def get(name: str) -> Backbone:
    """The backbone ``name``; a ``ConfigError`` naming the choices when there is none."""
    entry = _REGISTRY.get(name)
    if entry is None:
        raise ConfigError(f"backbone {name!r} is not supported (choose one of {list(names())})")
    if isinstance(entry, str):
        entry = importlib.import_module(entry).BACKBONE
        _check(entry, name)
        _REGISTRY[name] = entry
    return entry


def register(backbone: Backbone) -> None:
    """Add ``backbone`` under its name (checked as `get` checks a module's)."""
    if backbone.name in _REGISTRY:
        raise ConfigError(f"backbone {backbone.name!r} is already registered")
    _check(backbone, backbone.name)
    _REGISTRY[backbone.name] = backbone


def unregister(name: str) -> None:
    """Remove a backbone `register` added."""
    _REGISTRY.pop(name, None)


def _check(backbone: object, name: str) -> None:
    """A clear error for a backbone that breaks the protocol or the two-map rule."""
    where = f"backbone {name!r}"
    if not isinstance(backbone, Backbone):
        raise ConfigError(f"{where}: does not provide the `Backbone` protocol's members")
    if backbone.name != name:
        raise ConfigError(
            f"{where}: registered under another name than its own ({backbone.name!r})"
        )
    shapes = (len(backbone.layers), len(backbone.channels), len(backbone.strides))
    if shapes != (2, 2, 2):
        raise ConfigError(f"{where}: needs two layers, channels and strides, got {shapes}")
    fine, coarse = backbone.strides
    if not (0 < fine < coarse and coarse % fine == 0) or min(backbone.channels) < 1:
        raise ConfigError(
            f"{where}: strides {backbone.strides} must be finer first, the coarser a multiple "
            f"of the finer; channels {backbone.channels} positive"
        )
