"""Frozen WideResNet-50-2 feature backbone (layer2 + layer3), devices and image loading.

The network stops after ``layer3``: ``layer4``, the pooling and the classifier are
removed, so they are never run (and their weights never kept in memory).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import urllib.error
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import nn

from fedpatch_app.errors import ConfigError, DataError, WeightsError

logger = logging.getLogger(__name__)

#: ImageNet normalisation used by the torchvision weights.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: Channels and strides of the two returned layers.
LAYER_CHANNELS = {"layer2": 512, "layer3": 1024}
LAYER_STRIDES = {"layer2": 8, "layer3": 16}
#: Parameters (prefixes) of the full torchvision model that the truncated one drops.
_DROPPED_PREFIXES = ("layer4.", "fc.")


# --------------------------------------------------------------------------- devices


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """Turn a device setting into a ``torch.device``; ``auto`` = CUDA, then MPS, then CPU.

    Explicit names (``cpu``, ``cuda``, ``cuda:1``, ``mps``) are checked: asking for a
    device this machine lacks raises ``ConfigError``.
    """
    if isinstance(name, torch.device):
        name = str(name)
    text = str(name).strip().lower()
    if text == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(text)
    except RuntimeError as exc:
        raise ConfigError(
            f"device {name!r} is not a valid device (use auto, cpu, cuda, cuda:N or mps)"
        ) from exc
    if device.type == "cpu":
        return device
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {name!r} asked for, but CUDA is not available here")
        index = 0 if device.index is None else device.index
        if index >= torch.cuda.device_count():
            raise ConfigError(
                f"device {name!r} asked for, but only {torch.cuda.device_count()} CUDA device(s) exist"
            )
        return torch.device("cuda", index)
    if device.type == "mps":
        if not _mps_available():
            raise ConfigError(f"device {name!r} asked for, but MPS is not available here")
        return device
    raise ConfigError(f"device {name!r} is not supported (use auto, cpu, cuda, cuda:N or mps)")


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """The autocast dtype used for the backbone on ``device`` (None: full float32)."""
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


# --------------------------------------------------------------------------- weights


def _imagenet_weights():
    from torchvision.models import Wide_ResNet50_2_Weights

    return Wide_ResNet50_2_Weights.IMAGENET1K_V1


def imagenet_cache_path() -> Path:
    """Where torchvision keeps (and looks for) the ImageNet checkpoint."""
    url = _imagenet_weights().url
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)


@functools.lru_cache(maxsize=16)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def weights_id(weights: str | os.PathLike) -> str:
    """Identifier of a weights setting for fingerprints.

    ``"imagenet"`` -> ``"imagenet-v1"``, ``"none"`` -> ``"none"``, a file ->
    ``"file:<first 16 hex of its SHA-256>"``. Identifiers are returned unchanged, so
    a feature spec can carry the identifier instead of a local path.
    """
    text = str(weights)
    if text in ("imagenet", "imagenet-v1"):
        return "imagenet-v1"
    if text == "none":
        return "none"
    if text.startswith("file:") and not Path(text).exists():
        return text
    path = Path(text).expanduser()
    if not path.is_file():
        raise WeightsError(
            f"weights file {text!r} does not exist (use 'imagenet', 'none' or the path of a "
            "wide_resnet50_2 state dict saved with torch.save)"
        )
    stat = path.stat()
    return "file:" + _file_sha256(str(path.resolve()), stat.st_size, stat.st_mtime_ns)[:16]


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
            f"{cached.name}), or pass the path of a local state dict as the weights setting "
            "(or 'none' for random weights)."
        ) from exc


def _load_file_state(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise WeightsError(
            f"weights file {str(path)!r} does not exist (use 'imagenet', 'none' or the path "
            "of a wide_resnet50_2 state dict saved with torch.save)"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt or unsafe files
        raise WeightsError(
            f"weights file {str(path)!r} cannot be read as a state dict ({exc})"
        ) from exc
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"weights file {str(path)!r} does not hold a state dict of tensors")
    return {key.removeprefix("module."): value for key, value in state.items()}


# --------------------------------------------------------------------------- model


class Backbone(nn.Module):
    """Frozen WideResNet-50-2 up to ``layer3``; ``forward(x) -> (layer2, layer3)``.

    ``weights``: ``"imagenet"`` (torchvision's ``IMAGENET1K_V1``, from its cache or
    downloaded), a path to a state dict (``torch.load(weights_only=True)``), or
    ``"none"`` (random initialisation from ``seed``, for tests).
    """

    def __init__(self, weights: str | os.PathLike = "imagenet", *, seed: int = 0) -> None:
        super().__init__()
        from torchvision.models import wide_resnet50_2

        text = str(weights)
        state: dict[str, torch.Tensor] | None = None
        if text == "imagenet":
            state, source = _load_imagenet_state(), "the ImageNet checkpoint"
        elif text != "none":
            path = Path(text).expanduser()
            state, source = _load_file_state(path), f"weights file {str(path)!r}"

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
            self._load(state, source)
            self.weights_id = "imagenet-v1" if text == "imagenet" else weights_id(path)
        self.eval()
        for param in self.parameters():
            param.requires_grad_(False)
        logger.debug("backbone wide_resnet50_2 (to layer3), weights %s", self.weights_id)

    def _load(self, state: dict[str, torch.Tensor], source: str) -> None:
        own = self.state_dict()
        renamed: dict[str, torch.Tensor] = {}
        unexpected = []
        for key, value in state.items():
            if key.startswith(_DROPPED_PREFIXES):
                continue
            if key not in own:
                unexpected.append(key)
                continue
            renamed[key] = value
        for key in own:  # BatchNorm counters are unused in eval mode; old checkpoints lack them
            if key.endswith("num_batches_tracked") and key not in renamed:
                renamed[key] = torch.zeros((), dtype=torch.long)
        missing = [key for key in own if key not in renamed]
        if missing or unexpected:
            raise WeightsError(
                f"{source} is not a wide_resnet50_2 state dict: "
                f"{len(missing)} missing key(s) {missing[:3]}, "
                f"{len(unexpected)} unexpected key(s) {unexpected[:3]}"
            )
        for key, value in renamed.items():
            if own[key].shape != value.shape:
                raise WeightsError(
                    f"{source} does not fit wide_resnet50_2: {key} has shape "
                    f"{tuple(value.shape)}, expected {tuple(own[key].shape)}"
                )
        self.load_state_dict(renamed, strict=True)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer1(x)
        layer2 = self.layer2(x)
        layer3 = self.layer3(layer2)
        return layer2, layer3


def save_state_dict(backbone: Backbone, path: str | os.PathLike) -> None:
    """Save ``backbone``'s weights (torchvision parameter names), loadable as a weights file."""
    torch.save(backbone.state_dict(), path)


# --------------------------------------------------------------------------- images


def resized_size(width: int, height: int, image_size: int) -> tuple[int, int]:
    """(width, height) after resizing the shorter side to ``image_size``, aspect kept."""
    if width <= height:
        return image_size, max(1, round(height * image_size / width))
    return max(1, round(width * image_size / height)), image_size


class ImageFolderDataset(torch.utils.data.Dataset):
    """Images from ``paths`` as normalised tensors ``(3, H, W)``, with their index.

    Resizes so the shorter side is ``image_size``, keeping the aspect ratio (1000x750 at
    256 -> 341x256), bilinear with antialiasing; ImageNet mean/std; no crop, so the
    whole field of view is kept.
    """

    def __init__(self, paths: Sequence[str | os.PathLike], image_size: int) -> None:
        if int(image_size) < 32:
            raise ConfigError(f"image_size must be at least 32 pixels, got {image_size}")
        self.paths = [Path(p) for p in paths]
        self.image_size = int(image_size)
        self._mean = np.asarray(IMAGENET_MEAN, dtype=np.float32).reshape(3, 1, 1)
        self._std = np.asarray(IMAGENET_STD, dtype=np.float32).reshape(3, 1, 1)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path = self.paths[index]
        try:
            with Image.open(path) as img:
                img = img.convert("RGB")
                size = resized_size(img.width, img.height, self.image_size)
                img = img.resize(size, Image.Resampling.BILINEAR)
                arr = np.asarray(img, dtype=np.float32)
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
