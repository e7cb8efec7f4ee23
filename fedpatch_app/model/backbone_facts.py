"""What each backbone returns and expects, known without PyTorch.

The feature spec (layers, channels) and the line's ONNX runtime (input normalisation)
need these facts on machines without torch; the backbone classes in
`fedpatch_app.model.backbones` carry the same values as class attributes, and a test
keeps the two in agreement (`tests/test_onnx_line.py`). A backbone registered without an
entry here (`registry.register`) is described from its registry object, which may import
torch: only the built-in backbones run on a line PC.
"""

from __future__ import annotations

from dataclasses import dataclass

from fedpatch_app.errors import ConfigError
from fedpatch_app.model.backbones import registry

DEFAULT_BACKBONE = registry.DEFAULT
#: ImageNet normalisation used by the torchvision weights.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class BackboneFacts:
    """The two feature maps a backbone returns, its ImageNet weights identifier and the
    normalisation its input takes (``(x / 255 - mean) / std`` per channel)."""

    name: str
    layers: tuple[str, str]
    channels: tuple[int, int]
    strides: tuple[int, int]
    imagenet_id: str
    input_mean: tuple[float, float, float]
    input_std: tuple[float, float, float]


FACTS: dict[str, BackboneFacts] = {
    "wide_resnet50_2": BackboneFacts(
        "wide_resnet50_2",
        ("layer2", "layer3"),
        (512, 1024),
        (8, 16),
        "imagenet-v1",
        IMAGENET_MEAN,
        IMAGENET_STD,
    ),
    "efficientnet_lite0": BackboneFacts(
        "efficientnet_lite0",
        ("blocks.4", "blocks.10"),
        (40, 112),
        (8, 16),
        "imagenet-lite0-57934424",
        (127.0 / 255.0,) * 3,
        (128.0 / 255.0,) * 3,
    ),
}


def backbone_facts(name: str) -> BackboneFacts:
    """The facts of backbone `name`; ConfigError naming the supported ones otherwise."""
    if name in FACTS:
        return FACTS[name]
    if name not in registry.names():
        raise ConfigError(
            f"backbone {name!r} is not supported (choose one of {list(registry.names())})"
        )
    return _registered_facts(registry.get(name))


def _registered_facts(backbone: registry.Backbone) -> BackboneFacts:
    """Facts of a backbone registered at run time, read from its registry object; the input
    normalisation is ImageNet's unless the object says otherwise (`input_mean`, `input_std`)."""
    return BackboneFacts(
        backbone.name,
        tuple(backbone.layers),
        tuple(backbone.channels),
        tuple(backbone.strides),
        backbone.imagenet_id,
        tuple(getattr(backbone, "input_mean", IMAGENET_MEAN)),
        tuple(getattr(backbone, "input_std", IMAGENET_STD)),
    )


def weights_identifier(weights: str, backbone: str) -> str:
    """`weights_id` without PyTorch for what a model folder records (``imagenet``, the
    ImageNet identifier, ``none``, ``file:<hash>``); a local weights file is hashed by
    the backbone registry (which needs torch)."""
    text = str(weights)
    facts = backbone_facts(backbone)
    if text in ("imagenet", facts.imagenet_id):
        return facts.imagenet_id
    if text == "none":
        return text
    from pathlib import Path

    if text.startswith("file:") and not Path(text).exists():
        return text
    from fedpatch_app.model.backbone import weights_id

    return weights_id(text, backbone)
