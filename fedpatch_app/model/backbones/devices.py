"""Where the heavy steps run: one device setting turned into a ``torch.device``, and the
autocast dtype used for the backbone there.

Chosen once per run (``auto``: CUDA, then MPS, then CPU) so that the backbone, the coreset
and the kNN search all run on the same device.
"""

from __future__ import annotations

import torch

from fedpatch_app.errors import ConfigError


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
