"""Patch embedding, feature spec fingerprints and the feature extractor."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from fedpatch_app.errors import ConfigError, DataError, ModelError
from fedpatch_app.model.backbone import Backbone
from fedpatch_app.model.embedding import FeatureExtractor, FeatureSpec, embed, layer_widths


def test_fingerprint_is_sha256_of_canonical_json(tmp_path: Path) -> None:
    """Against the canonical JSON written out by hand (sorted keys, no spaces), so that a
    change of any field's name or form, of the key order or of the hash breaks it: banks
    of earlier versions would then silently stop matching."""
    spec = FeatureSpec(weights="none", image_size=64)
    canonical = (
        '{"backbone":"wide_resnet50_2","embed_dim":1024,"image_size":64,'
        '"layers":["layer2","layer3"],"neighbourhood":3,"projection_dim":128,"seed":0,'
        '"weights":"none"}'
    )
    assert spec.fingerprint() == hashlib.sha256(canonical.encode()).hexdigest()[:16]
    # A weights file enters as "file:" + the first 16 hex of the SHA-256 of its bytes.
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"some weights")
    file_id = "file:" + hashlib.sha256(b"some weights").hexdigest()[:16]
    with_file = FeatureSpec(weights=str(weights), image_size=64)
    text = canonical.replace('"none"', json.dumps(file_id))
    assert with_file.fingerprint() == hashlib.sha256(text.encode()).hexdigest()[:16]


def test_fingerprint_round_trip_and_sensitivity() -> None:
    spec = FeatureSpec(weights="imagenet")
    again = FeatureSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    assert again == spec and again.fingerprint() == spec.fingerprint()
    assert FeatureSpec(weights="imagenet-v1").fingerprint() == spec.fingerprint()
    for change in ({"image_size": 320}, {"embed_dim": 512}, {"seed": 1}, {"projection_dim": None}):
        assert FeatureSpec(weights="imagenet", **change).fingerprint() != spec.fingerprint()


def test_fingerprint_of_a_weights_file_uses_its_hash(tmp_path: Path) -> None:
    a, b = tmp_path / "a.pt", tmp_path / "b.pt"
    a.write_bytes(b"same bytes")
    b.write_bytes(b"same bytes")
    spec_a, spec_b = FeatureSpec(weights=str(a)), FeatureSpec(weights=str(b))
    assert spec_a.fingerprint() == spec_b.fingerprint()
    assert spec_a.with_weights_id().weights.startswith("file:")
    assert spec_a.with_weights_id().fingerprint() == spec_a.fingerprint()


def test_spec_validation() -> None:
    with pytest.raises(ConfigError, match="backbone"):
        FeatureSpec(backbone="resnet18")
    with pytest.raises(ConfigError, match="neighbourhood"):
        FeatureSpec(neighbourhood=2)
    with pytest.raises(ConfigError, match="image_size"):
        FeatureSpec(image_size=8)
    with pytest.raises(ModelError, match="colour"):
        FeatureSpec.from_dict({"weights": "none", "colour": "red"})


def reference_style_embedding(layer2: torch.Tensor, layer3: torch.Tensor) -> torch.Tensor:
    """Two-stage pooling as the reference implementation does it: each layer's vector to
    1024, the concatenation to 1024 (after the 3x3 average and the upsampling)."""
    l2 = F.avg_pool2d(layer2, 3, stride=1, padding=1, count_include_pad=False)
    l3 = F.avg_pool2d(layer3, 3, stride=1, padding=1, count_include_pad=False)
    l3 = F.interpolate(l3, size=l2.shape[-2:], mode="bilinear", align_corners=False)
    b, _, h, w = l2.shape
    rows = []
    for layer in (l2, l3):
        flat = layer.permute(0, 2, 3, 1).reshape(b * h * w, 1, -1)
        rows.append(F.adaptive_avg_pool1d(flat, 1024))
    both = F.adaptive_avg_pool1d(torch.cat(rows, dim=2), 1024)
    return both.reshape(b, h, w, 1024)


def test_embed_matches_reference_two_stage_pooling() -> None:
    gen = torch.Generator().manual_seed(0)
    layer2 = torch.randn(2, 512, 6, 5, generator=gen)
    layer3 = torch.randn(2, 1024, 3, 3, generator=gen)
    out = embed(layer2, layer3, 1024)
    assert out.shape == (2, 6, 5, 1024) and out.dtype == torch.float32
    torch.testing.assert_close(out, reference_style_embedding(layer2, layer3), rtol=1e-5, atol=1e-5)


def test_embed_neighbourhood_and_dims() -> None:
    layer2 = torch.zeros(1, 512, 4, 4)
    layer2[0, 0, 0, 0] = 9.0
    layer3 = torch.zeros(1, 1024, 2, 2)
    out = embed(layer2, layer3, 1024)
    # the corner window holds 4 existing pixels: their mean; the pixel 2 steps away is untouched
    assert out[0, 0, 0, 0] == pytest.approx(9.0 / 4)
    assert out[0, 1, 1, 0] == pytest.approx(9.0 / 9)
    assert out[0, 2, 2, 0] == 0.0
    assert embed(layer2, layer3, 300).shape == (1, 4, 4, 300)
    with pytest.raises(ModelError, match="B, C, H, W"):
        embed(layer2[0], layer3, 1024)


@pytest.fixture(scope="module")
def extractor() -> FeatureExtractor:
    spec = FeatureSpec(weights="none", image_size=32)
    return FeatureExtractor(spec, device="cpu", batch_size=2, backbone=Backbone("none"))


def write_images(folder: Path, count: int, size: tuple[int, int] = (40, 32)) -> list[Path]:
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        path = folder / f"{i:03d}.png"
        Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def test_extract_shapes_and_batches(extractor: FeatureExtractor, tmp_path: Path) -> None:
    paths = write_images(tmp_path, 3)
    feats = extractor.extract(paths, desc="test")
    assert feats.shape == (3, 4, 5, 1024) and feats.dtype == np.float32  # 40x32 -> grid 5x4
    assert np.isfinite(feats).all()
    one_by_one = FeatureExtractor(extractor.spec, "cpu", batch_size=1, backbone=extractor.backbone)
    np.testing.assert_allclose(one_by_one.extract(paths[1:]), feats[1:], rtol=1e-4, atol=1e-4)


def test_extract_rejects_mixed_sizes_and_empty(extractor: FeatureExtractor, tmp_path: Path) -> None:
    paths = write_images(tmp_path, 2)
    odd = tmp_path / "odd_one.png"
    Image.new("RGB", (60, 32)).save(odd)
    batches = extractor.extract_iter([*paths, odd])
    assert next(batches)[0] == 0
    with pytest.raises(DataError, match="odd_one.png"):
        next(batches)  # the second batch has another size
    with pytest.raises(DataError, match="odd_one.png"):
        extractor.extract([paths[0], odd])  # in the same batch
    with pytest.raises(DataError, match="no images"):
        extractor.extract([])


def test_wide_resnet_fingerprints_are_unchanged() -> None:
    """Specs that existed before the backbone choice keep their fingerprints (recorded)."""
    assert FeatureSpec(weights="imagenet").fingerprint() == "f6a311fa7648521f"
    assert FeatureSpec(weights="none", image_size=64).fingerprint() == "71d784d8d4ecbd52"
    spec = FeatureSpec(weights="none", image_size=96, embed_dim=32)
    assert spec.fingerprint() == "6a8c4ee141bff0da"
    assert spec.layers == ("layer2", "layer3")


def test_efficientnet_spec() -> None:
    spec = FeatureSpec(weights="imagenet", backbone="efficientnet_lite0")
    assert spec.layers == ("blocks.4", "blocks.10")
    assert spec.embed_dim == 40 + 112  # never pooled up: the width is the channels' sum
    assert FeatureSpec(backbone="efficientnet_lite0", embed_dim=64).embed_dim == 64
    assert spec.with_weights_id().weights == "imagenet-lite0-57934424"
    assert FeatureSpec.from_dict(spec.to_dict()) == spec
    wrn = FeatureSpec(weights="imagenet", embed_dim=152)
    assert spec.fingerprint() != wrn.fingerprint()
    with pytest.raises(ConfigError, match="layer2"):
        FeatureSpec(backbone="efficientnet_lite0", layers=("layer2", "layer3"))


def test_layer_widths_never_pool_up() -> None:
    assert layer_widths(512, 1024, 1024) == (512, 512)  # WideResNet, as before
    assert layer_widths(512, 1024, 32) == (16, 16)
    assert layer_widths(40, 112, 1024) == (40, 112)
    assert layer_widths(40, 112, 128) == (40, 88)
    assert layer_widths(40, 112, 64) == (32, 32)
    out = embed(torch.ones(1, 40, 4, 4), torch.ones(1, 112, 2, 2), 1024)
    assert out.shape == (1, 4, 4, 152)


def test_extractor_with_efficientnet(tmp_path: Path) -> None:
    pytest.importorskip("efficientnet_lite_pytorch")
    spec = FeatureSpec(weights="none", image_size=32, backbone="efficientnet_lite0")
    extractor = FeatureExtractor(spec, device="cpu", batch_size=2)
    assert extractor.backbone.name == "efficientnet_lite0"
    feats = extractor.extract(write_images(tmp_path, 2))
    assert feats.shape == (2, 4, 5, 152) and np.isfinite(feats).all()
    with pytest.raises(ConfigError, match="feature spec says 'wide_resnet50_2'"):
        FeatureExtractor(FeatureSpec(weights="none"), "cpu", backbone=extractor.backbone)
