"""Backbone: stops after layer3, channel counts and strides, weights handling, images, devices."""

from __future__ import annotations

import hashlib
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fedpatch_app.errors import ConfigError, DataError, WeightsError
from fedpatch_app.model.backbone import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Backbone,
    ImageFolderDataset,
    imagenet_cache_path,
    resized_size,
    resolve_device,
    save_state_dict,
    weights_id,
)


@pytest.fixture(scope="module")
def backbone() -> Backbone:
    return Backbone("none", seed=0)


def test_stops_after_layer3(backbone: Backbone) -> None:
    assert not hasattr(backbone, "layer4") and not hasattr(backbone, "fc")
    names = [name for name, _ in backbone.named_modules()]
    assert not any(name.startswith(("layer4", "fc", "avgpool")) for name in names)
    assert not any(p.requires_grad for p in backbone.parameters())
    assert not backbone.training


def test_channels_and_strides(backbone: Backbone) -> None:
    with torch.inference_mode():
        layer2, layer3 = backbone(torch.randn(1, 3, 32, 48))
    assert layer2.shape == (1, 512, 32 // 8, 48 // 8)
    assert layer3.shape == (1, 1024, 32 // 16, 48 // 16)
    assert torch.isfinite(layer2).all() and torch.isfinite(layer3).all()


def test_random_weights_are_seeded_and_offline(backbone: Backbone) -> None:
    assert backbone.weights_id == "none" == weights_id("none")
    again = Backbone("none", seed=0)
    assert torch.equal(again.conv1.weight, backbone.conv1.weight)
    assert torch.equal(again.layer3[0].conv1.weight, backbone.layer3[0].conv1.weight)


def test_weights_file_round_trip(backbone: Backbone, tmp_path: Path) -> None:
    path = tmp_path / "wrn.pt"
    save_state_dict(backbone, path)
    loaded = Backbone(str(path))
    assert loaded.weights_id == weights_id(path)
    assert loaded.weights_id.startswith("file:") and len(loaded.weights_id) == 5 + 16
    x = torch.randn(1, 3, 32, 32)
    with torch.inference_mode():
        for a, b in zip(backbone(x), loaded(x), strict=True):
            assert torch.equal(a, b)


def test_full_torchvision_state_dict_accepted(tmp_path: Path) -> None:
    """A checkpoint of the whole network (layer4, fc included, DataParallel's `module.`
    prefix) loads: the network then computes what the network it was saved from computes,
    not what a default initialisation would."""
    source = Backbone("none", seed=5)
    state = {f"module.{k}": v for k, v in source.state_dict().items()}
    state["module.layer4.0.conv1.weight"] = torch.zeros(1)
    state["module.fc.weight"] = torch.zeros(1)
    path = tmp_path / "full.pth"
    torch.save(state, path)
    loaded = Backbone(path)
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        expected = source(x)
        got = loaded(x)
        default = Backbone("none", seed=0)(x)
    for a, b, c in zip(got, expected, default, strict=True):
        assert torch.equal(a, b)
        assert not torch.allclose(a, c)
    assert loaded.weights_id == "file:" + hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def test_missing_weights_file(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.pth"
    with pytest.raises(WeightsError, match="nowhere.pth.*does not exist"):
        Backbone(str(missing))
    with pytest.raises(WeightsError, match="does not exist"):
        weights_id(missing)


def test_wrong_keys_and_garbage_files(tmp_path: Path) -> None:
    wrong = tmp_path / "wrong.pt"
    torch.save({"encoder.weight": torch.zeros(3)}, wrong)
    with pytest.raises(WeightsError, match="wrong.pt.*not a wide_resnet50_2 state dict"):
        Backbone(wrong)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(
        WeightsError, match="garbage.pt.*is not a PyTorch state dict saved with torch.save"
    ):
        Backbone(garbage)


def test_imagenet_offline_says_where_to_put_the_file(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("network unreachable")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    expected = tmp_path / "hub" / "checkpoints" / "wide_resnet50_2-95faca4d.pth"
    assert imagenet_cache_path() == expected
    with pytest.raises(WeightsError) as info:
        Backbone("imagenet")
    assert str(expected) in str(info.value)
    assert "path of a local state dict" in str(info.value)
    assert weights_id("imagenet") == "imagenet-v1"


def test_resolve_device() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    auto = resolve_device("auto")
    if torch.cuda.is_available():
        assert auto.type == "cuda"
    else:
        assert auto.type in ("mps", "cpu")
        with pytest.raises(ConfigError, match="CUDA is not available"):
            resolve_device("cuda:1")
    with pytest.raises(ConfigError, match="tpu9"):
        resolve_device("tpu9")


def test_resized_size_keeps_aspect_ratio() -> None:
    assert resized_size(1000, 750, 256) == (341, 256)
    assert resized_size(750, 1000, 256) == (256, 341)
    assert resized_size(400, 400, 256) == (256, 256)


def test_dataset_keeps_whole_field_of_view(tmp_path: Path) -> None:
    arr = np.full((75, 100, 3), 128, dtype=np.uint8)
    arr[:, :10] = (255, 0, 0)  # red left strip
    arr[:, -10:] = (0, 0, 255)  # blue right strip
    path = tmp_path / "wide.png"
    Image.fromarray(arr).save(path)
    image, index = ImageFolderDataset([path], image_size=64)[0]
    assert index == 0
    assert image.shape == (3, 64, 85)  # 100x75 -> round(85.33) x 64, no crop
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1)
    rgb = image * std.view(3, 1, 1) + mean.view(3, 1, 1)
    assert torch.allclose(rgb[:, 32, 0], torch.tensor([1.0, 0.0, 0.0]), atol=0.02)
    assert torch.allclose(rgb[:, 32, -1], torch.tensor([0.0, 0.0, 1.0]), atol=0.02)
    assert torch.allclose(rgb[:, 32, 42], torch.full((3,), 128 / 255), atol=0.02)


def test_dataset_errors(tmp_path: Path) -> None:
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"no image")
    with pytest.raises(DataError, match="broken.png"):
        ImageFolderDataset([bad], 64)[0]
    small = tmp_path / "small.png"
    large = tmp_path / "large.png"
    Image.new("RGB", (64, 64)).save(small)
    Image.new("RGB", (128, 64)).save(large)
    dataset = ImageFolderDataset([small, large], 64)
    with pytest.raises(DataError, match="large.png"):
        dataset.collate([dataset[0], dataset[1]])
    with pytest.raises(ConfigError, match="image_size"):
        ImageFolderDataset([small], 8)
