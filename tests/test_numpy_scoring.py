"""The line's numpy scoring equals the torch path it replaces: embedding, nearest-bank
distances and anomaly maps, on random inputs of the shapes both backbones give."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedpatch_app.model import numpy_scoring
from fedpatch_app.model.backbone import (
    BACKBONES,
    DEFAULT_BACKBONE,
    backbone_info,
)
from fedpatch_app.model.backbone_facts import DEFAULT_BACKBONE as FACTS_DEFAULT
from fedpatch_app.model.backbone_facts import backbone_facts
from fedpatch_app.model.backbone_input import input_size
from fedpatch_app.model.backbones.efficientnet_lite import EfficientNetLite0Backbone
from fedpatch_app.model.backbones.wide_resnet import WideResNetBackbone
from fedpatch_app.model.embedding import FeatureSpec, embed
from fedpatch_app.model.feature_spec import FeatureSpec as LineFeatureSpec
from fedpatch_app.model.memory_bank import MemoryBank
from fedpatch_app.model.patchcore import Bank, PatchCore


class NoNetwork(torch.nn.Module):
    """Stands in for the backbone where only the maps are computed."""

    name = "efficientnet_lite0"


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))


@pytest.mark.parametrize(
    ("c2", "c3", "embed_dim", "n", "grid"),
    [
        (512, 1024, 1024, 3, (32, 43)),  # WideResNet-50-2: layer3 pooled to pair means
        (40, 112, 1024, 3, (32, 32)),  # EfficientNet-Lite0: all channels kept
        (40, 112, 100, 5, (9, 7)),  # uneven adaptive pooling bins, odd grid
        (24, 36, 50, 1, (8, 8)),  # no neighbourhood averaging
    ],
)
def test_embed_matches_torch(c2: int, c3: int, embed_dim: int, n: int, grid) -> None:
    rng = np.random.default_rng(0)
    h, w = grid
    layer2 = rng.standard_normal((2, c2, h, w), dtype=np.float32)
    layer3 = rng.standard_normal((2, c3, -(-h // 2), -(-w // 2)), dtype=np.float32)
    ours = numpy_scoring.embed(layer2, layer3, embed_dim, n)
    theirs = embed(torch.from_numpy(layer2), torch.from_numpy(layer3), embed_dim, n).numpy()
    assert ours.shape == theirs.shape
    assert rel_err(ours, theirs) < 1e-5


def test_nearest_bank_matches_the_memory_bank() -> None:
    rng = np.random.default_rng(1)
    bank = rng.standard_normal((700, 64), dtype=np.float32)
    queries = np.concatenate([rng.standard_normal((300, 64), dtype=np.float32), bank[:20]])
    ours = numpy_scoring.NearestBank(bank).patch_scores(queries)
    theirs = MemoryBank(bank, device="cpu").patch_scores(queries)
    np.testing.assert_allclose(ours[:300], theirs[:300], rtol=1e-5)
    assert np.all(ours[300:] == 0.0)  # a bank row's own distance is exactly 0


def test_nearest_bank_in_small_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(2)
    bank = rng.standard_normal((50, 8), dtype=np.float32)
    queries = rng.standard_normal((37, 8), dtype=np.float32)
    whole = numpy_scoring.NearestBank(bank).patch_scores(queries)
    monkeypatch.setattr(numpy_scoring, "BLOCK_BYTES", 4 * 50 * 3)  # 3 queries a block
    assert np.array_equal(numpy_scoring.NearestBank(bank).patch_scores(queries), whole)


@pytest.mark.parametrize(
    ("native", "image_size"),
    [((400, 300), 64), ((300, 400), 64), ((96, 96), 64), ((70, 50), 32)],
)
def test_anomaly_maps_match_patchcore(native: tuple[int, int], image_size: int) -> None:
    """`PatchCore.maps_of` (bilinear up, Gaussian smoothing, bilinear to native) against
    the numpy matrices, including a map small enough for replicate padding."""
    spec = FeatureSpec(weights="none", image_size=image_size, backbone="efficientnet_lite0")
    model = PatchCore(spec, device="cpu", backbone=NoNetwork())  # maps_of needs no network
    rng = np.random.default_rng(3)
    in_h, in_w = input_size(native, image_size)
    h, w = -(-in_h // 8), -(-in_w // 8)
    feats = rng.standard_normal((2, h, w, spec.embed_dim), dtype=np.float32)
    bank_rows = rng.standard_normal((40, spec.embed_dim), dtype=np.float32)
    bank = Bank(bank_rows, spec, "c", 0.0, 40)
    theirs = model.maps_of(bank, MemoryBank(bank_rows, device="cpu"), feats, native)
    patch = numpy_scoring.NearestBank(bank_rows).patch_scores(feats.reshape(-1, feats.shape[-1]))
    ours = numpy_scoring.anomaly_maps(patch.reshape(2, h, w), (in_h, in_w), native, image_size)
    assert ours.shape == theirs.shape == (2, native[1], native[0])
    assert rel_err(ours, theirs) < 1e-5
    assert np.allclose(ours.max(axis=(1, 2)), theirs.max(axis=(1, 2)), rtol=1e-5)


@pytest.mark.parametrize("name", BACKBONES)
def test_backbone_facts_agree_with_the_registry(name: str) -> None:
    """The torch-free table the feature spec and the line use says what the backbone
    classes say."""
    facts, info = backbone_facts(name), backbone_info(name)
    assert (facts.layers, facts.channels, facts.strides) == (
        info.layers,
        info.channels,
        info.strides,
    )
    assert facts.imagenet_id == info.imagenet_id
    cls = {"wide_resnet50_2": WideResNetBackbone, "efficientnet_lite0": EfficientNetLite0Backbone}
    assert (facts.input_mean, facts.input_std) == (cls[name].input_mean, cls[name].input_std)
    assert FACTS_DEFAULT == DEFAULT_BACKBONE
    assert LineFeatureSpec is FeatureSpec
