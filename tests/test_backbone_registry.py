"""A new backbone is one module and one registry line: a tiny backbone defined here,
registered at run time, is a valid `backbone` setting, gives patch features and fits a
centralized model, without any other file knowing it."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import nn

from fedpatch_app.errors import ConfigError
from fedpatch_app.model.backbones import registry
from fedpatch_app.settings import from_names
from fedpatch_app.settings.fields import BY_NAME

NAME = "tiny_test_net"


class TinyNet(nn.Module):
    """Two strided convolutions: 6 channels at stride 8, 10 at stride 16."""

    name = NAME
    input_mean = (0.5, 0.5, 0.5)
    input_std = (0.25, 0.25, 0.25)

    def __init__(self, seed: int) -> None:
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.fine = nn.Conv2d(3, 6, kernel_size=8, stride=8)
            self.coarse = nn.Conv2d(6, 10, kernel_size=2, stride=2)
        self.weights_id = "none"
        self.eval()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        fine = torch.relu(self.fine(x))
        return fine, torch.relu(self.coarse(fine))


class Tiny:
    """The module's `BACKBONE`: what the registry needs to know."""

    name = NAME
    layers = ("fine", "coarse")
    channels = (6, 10)
    strides = (8, 16)
    imagenet_id = "imagenet-tiny"
    weights_note = "no ImageNet weights"
    stand_in = None

    def build(self, weights: str | os.PathLike, *, seed: int) -> TinyNet:
        assert str(weights) == "none"
        return TinyNet(seed)

    def weights_id(self, weights: str | os.PathLike) -> str:
        return "none" if str(weights) == "none" else self.imagenet_id

    def imagenet_weights_path(self) -> Path | None:
        return None

    def imagenet_missing(self) -> str:
        return "it has none"

    def imagenet_fix(self) -> str:
        return "use weights=none"


@pytest.fixture
def tiny() -> Iterator[None]:
    registry.register(Tiny())
    try:
        yield
    finally:
        registry.unregister(NAME)


def test_registered_backbone_is_a_setting_choice(tiny: None) -> None:
    assert NAME in BY_NAME["backbone"].choices
    assert from_names({"backbone": NAME.upper()}).backbone == NAME
    registry.unregister(NAME)
    with pytest.raises(ConfigError, match=f"'backbone': expected one of .*got '{NAME}'"):
        from_names({"backbone": NAME})


def test_registry_refuses_a_backbone_that_breaks_the_protocol() -> None:
    class ThreeMaps(Tiny):
        name = "three_maps"
        layers = ("a", "b", "c")

    class NoBuild:
        name = "no_build"

    with pytest.raises(ConfigError, match="three_maps.*two layers"):
        registry.register(ThreeMaps())
    with pytest.raises(ConfigError, match="no_build.*protocol"):
        registry.register(NoBuild())  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="already registered"):
        registry.register(registry.get("wide_resnet50_2"))
    assert "three_maps" not in registry.names() and "no_build" not in registry.names()


def test_features_and_a_centralized_fit(tiny: None, tmp_path: Path) -> None:
    from fedpatch_app.data.synthetic import generate
    from fedpatch_app.inspection.model_folder import load_model
    from fedpatch_app.model.embedding import FeatureExtractor, FeatureSpec
    from fedpatch_app.runs.centralized import run_centralized

    spec = FeatureSpec(weights="none", backbone=NAME, image_size=64)
    assert spec.embed_dim == 16  # the two maps' channels, from the registry
    extractor = FeatureExtractor(spec, device="cpu", batch_size=2)
    assert isinstance(extractor.backbone, TinyNet)
    feats = extractor.features(torch.zeros(1, 3, 64, 96))
    assert feats.shape == (1, 8, 12, 16)

    data = tmp_path / "data"
    generate(data, scale="tiny", seed=0, categories=["pipe_clip"], kind="drawn")
    settings = from_names(
        {"data_root": str(data), "backbone": NAME, "weights": "none", "image_size": 64}
    )
    results = run_centralized(settings, tmp_path / "run")
    assert results["run"]["features"]["backbone"] == NAME
    assert 0.0 <= results["categories"]["pipe_clip"]["auc_spro"]["0.3"] <= 1.0
    model = load_model(tmp_path / "run" / "model")
    assert (model.spec.backbone, model.spec.embed_dim) == (NAME, 16)
    recorded = json.loads((tmp_path / "run" / "model" / "model.json").read_text())
    assert recorded["feature_spec"]["backbone"] == NAME
