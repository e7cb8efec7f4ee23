"""Backbone weights from files: read safely, identified by content, fitted onto a truncated
network.

Weights files are read with ``torch.load(weights_only=True)`` only: a checkpoint is never
unpickled. A file is identified by its SHA-256 (``file:<first 16 hex>``), so two machines
holding the same file under different paths agree on the feature-spec fingerprint. Every
backbone is truncated after the layers it returns, so the keys of the dropped layers in a
full checkpoint are skipped; any other mismatch names the file and the keys at fault.
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from fedpatch_app.errors import WeightsError


@functools.lru_cache(maxsize=16)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 (hex) of a file, cached while its size and modification time stay the same."""
    path = Path(path)
    stat = path.stat()
    return _file_sha256(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


def file_id(path: str | os.PathLike, arch: str) -> str:
    """``file:<first 16 hex of the SHA-256>`` of a weights file for ``arch``."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise WeightsError(
            f"weights file {str(path)!r} does not exist (use 'imagenet', 'none' or the path of "
            f"a {arch} state dict saved with torch.save)"
        )
    return "file:" + file_sha256(path)[:16]


def weights_identifier(weights: str | os.PathLike, imagenet_id: str, arch: str) -> str:
    """Identifier of a weights setting of ``arch``: ``imagenet`` -> ``imagenet_id``,
    ``none`` -> ``none``, a file -> ``file:<sha256 prefix>``; identifiers are returned
    unchanged, so a feature spec can carry the identifier instead of a local path."""
    text = str(weights)
    if text in ("imagenet", imagenet_id):
        return imagenet_id
    if text == "none":
        return "none"
    if text.startswith("file:") and not Path(text).exists():
        return text
    return file_id(text, arch)


def load_file_state(path: str | os.PathLike, arch: str) -> dict[str, torch.Tensor]:
    """The state dict in a weights file (a ``state_dict`` wrapper and ``module.`` prefixes
    are unwrapped); ``WeightsError`` naming the file when it is missing or not one."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise WeightsError(
            f"weights file {str(path)!r} does not exist (use 'imagenet', 'none' or the path "
            f"of a {arch} state dict saved with torch.save)"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt or unsafe files
        detail = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        raise WeightsError(
            f"weights file {str(path)!r} is not a PyTorch state dict saved with torch.save "
            f"(truncated, or another format?): {type(exc).__name__}: {detail}"
        ) from exc
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"weights file {str(path)!r} does not hold a state dict of tensors")
    return {key.removeprefix("module."): value for key, value in state.items()}


def fit_state(
    module: nn.Module,
    state: dict[str, torch.Tensor],
    dropped: Callable[[str], bool],
    source: str,
    arch: str,
) -> None:
    """Load ``state`` into the truncated ``module``; keys for which ``dropped(key)`` is true
    (layers the truncation removed) are skipped. Missing, unexpected or misshaped keys are
    a ``WeightsError`` that names ``source``."""
    own = module.state_dict()
    kept: dict[str, torch.Tensor] = {}
    unexpected = []
    for key, value in state.items():
        if dropped(key):
            continue
        if key not in own:
            unexpected.append(key)
            continue
        kept[key] = value
    for key in own:  # BatchNorm counters are unused in eval mode; old checkpoints lack them
        if key.endswith("num_batches_tracked") and key not in kept:
            kept[key] = torch.zeros((), dtype=torch.long)
    missing = [key for key in own if key not in kept]
    if missing or unexpected:
        raise WeightsError(
            f"{source} is not a {arch} state dict: "
            f"{len(missing)} missing key(s) {missing[:3]}, "
            f"{len(unexpected)} unexpected key(s) {unexpected[:3]}"
        )
    for key, value in kept.items():
        if own[key].shape != value.shape:
            raise WeightsError(
                f"{source} does not fit {arch}: {key} has shape "
                f"{tuple(value.shape)}, expected {tuple(own[key].shape)}"
            )
    module.load_state_dict(kept, strict=True)


def freeze(module: nn.Module) -> None:
    """Evaluation mode, no gradients: the backbone is a fixed feature extractor."""
    module.eval()
    for param in module.parameters():
        param.requires_grad_(False)
