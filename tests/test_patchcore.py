"""PatchCore pipeline: bank persistence, coreset merge, fit/predict on tiny synthetic data."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from fedpatch_app.data.autovi import load_category
from fedpatch_app.errors import ModelError
from fedpatch_app.model.embedding import FeatureSpec
from fedpatch_app.model.patchcore import (
    Bank,
    PatchCore,
    coreset_size,
    input_size,
    merge_coresets,
    smooth,
)

SPEC = FeatureSpec(weights="none", image_size=64, embed_dim=32, seed=0)


def _bank(n: int = 20, dim: int = 32, seed: int = 0, spec: FeatureSpec = SPEC) -> Bank:
    feats = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return Bank(features=feats, spec=spec, category="pipe_clip", radius=1.5, n_patches=200)


def test_coreset_size_rounds_and_clamps() -> None:
    assert coreset_size(1000, 0.1) == 100
    assert coreset_size(5, 0.01) == 1
    assert coreset_size(10, 4.0) == 10
    with pytest.raises(ModelError):
        coreset_size(0, 0.1)
    with pytest.raises(ModelError):
        coreset_size(10, 0.0)


def test_bank_round_trip(tmp_path) -> None:
    bank = _bank()
    path = bank.save(tmp_path / "banks" / "pipe_clip.npz")
    loaded = Bank.load(path, expected_spec=SPEC)
    np.testing.assert_array_equal(loaded.features, bank.features)
    assert loaded.spec == SPEC
    assert (loaded.category, loaded.radius, loaded.n_patches) == ("pipe_clip", 1.5, 200)
    assert loaded.query_clip == 0.0
    clipped = dataclasses.replace(bank, query_clip=2.5)
    assert Bank.load(clipped.save(tmp_path / "c.npz")).query_clip == 2.5
    with pytest.raises(ModelError, match="query clip"):
        dataclasses.replace(bank, query_clip=float("nan"))
    # The file is plain numpy: readable without pickle.
    with np.load(path, allow_pickle=False) as data:
        assert set(data.files) == {"features", "meta"}


def test_bank_refuses_other_feature_settings(tmp_path) -> None:
    path = _bank().save(tmp_path / "b.npz")
    other = dataclasses.replace(SPEC, image_size=128)
    with pytest.raises(ModelError, match="image_size"):
        Bank.load(path, expected_spec=other)


def test_bank_rejects_bad_files(tmp_path) -> None:
    with pytest.raises(ModelError, match="not found"):
        Bank.load(tmp_path / "missing.npz")
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip")
    with pytest.raises(ModelError, match="junk.npz"):
        Bank.load(junk)
    with pytest.raises(ModelError, match="dimension"):
        Bank(np.zeros((3, 7), np.float32), SPEC, "pipe_clip", 0.0, 3)


def _damaged(path, how: str) -> None:
    """Damage a bank file the ways a disk, a transfer or a hand can."""
    import json
    import zipfile

    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
        return
    with np.load(path, allow_pickle=False) as npz:
        features, meta = np.array(npz["features"]), json.loads(str(npz["meta"]))
    if how == "nan":
        features[3, 5] = np.nan
    elif how == "inf":
        features[0, 0] = np.inf
    elif how == "no meta field":
        del meta["category"]
    elif how == "no features":
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("meta.npy", b"")
        return
    np.savez(path, features=features, meta=np.array(json.dumps(meta)))


@pytest.mark.parametrize(
    ("how", "message"),
    [
        ("truncated", "not a readable fedpatch memory bank"),
        ("nan", "not a finite"),
        ("inf", "not a finite"),
        ("no meta field", "damaged bank metadata"),
        ("no features", "not a readable fedpatch memory bank"),
    ],
)
def test_damaged_bank_files_are_refused_by_name(tmp_path, how: str, message: str) -> None:
    path = _bank().save(tmp_path / "pipe_clip.npz")
    _damaged(path, how)
    with pytest.raises(ModelError, match=f"pipe_clip.npz.*{message}|{message}.*pipe_clip.npz"):
        Bank.load(path)


def _farthest_first_violations(pool: np.ndarray, picked: np.ndarray) -> list[int]:
    """Steps of a selection (rows of `pool`, in order) that did not take a point farthest
    from the points taken before it: brute force over every pool point, any start."""
    bad = []
    for step in range(1, len(picked)):
        dist = np.linalg.norm(pool[:, None, :] - picked[None, :step, :], axis=2).min(axis=1)
        chosen = np.linalg.norm(picked[:step] - picked[step], axis=1).min()
        if chosen < dist.max() - 1e-4:
            bad.append(step)
    return bad


def test_merge_is_greedy_over_the_union() -> None:
    """The merged bank against a brute-force check of farthest-first selection over the
    union of the parts (raw features: the spec has no projection)."""
    spec = dataclasses.replace(SPEC, projection_dim=None)
    rng = np.random.default_rng(1)
    a = rng.normal(size=(50, 32)).astype(np.float32)
    b = rng.normal(size=(30, 32)).astype(np.float32) + 3.0
    union = np.concatenate([a, b]).astype(np.float64)
    merged, radius, _ = merge_coresets([a, b], 20, spec)
    assert merged.shape == (20, 32)
    # every row is a row of the union, none twice
    rows = [int(np.flatnonzero((union == m).all(axis=1))[0]) for m in merged.astype(np.float64)]
    assert len(set(rows)) == 20
    assert _farthest_first_violations(union, merged.astype(np.float64)) == []
    # both parts are represented (b is 3 sigma away from a in every coordinate)
    assert any(r < 50 for r in rows) and any(r >= 50 for r in rows)
    # the radius is the covering radius of the union by the bank
    cover = np.linalg.norm(union[:, None, :] - merged[None].astype(np.float64), axis=2).min(axis=1)
    assert radius == pytest.approx(cover.max(), rel=1e-4)
    # Asking for more than the union holds keeps everything.
    everything, r0, _ = merge_coresets([a, b], 500, spec)
    assert everything.shape == (80, 32)
    assert sorted(map(tuple, everything)) == sorted(map(tuple, np.concatenate([a, b])))
    assert r0 == pytest.approx(0.0, abs=1e-5)
    with pytest.raises(ModelError):
        merge_coresets([], 5, spec)
    with pytest.raises(ModelError, match="dimension"):
        merge_coresets([np.zeros((4, 8), np.float32)], 2, spec)


def test_smoothing_keeps_mass_and_shape() -> None:
    import torch

    maps = torch.zeros(2, 40, 30)
    maps[0, 20, 15] = 1.0
    out = smooth(maps, 3.0)
    assert out.shape == maps.shape
    assert float(out[0].sum()) == pytest.approx(1.0, rel=1e-4)
    assert float(out[0, 20, 15]) == pytest.approx(float(out[0].max()))
    assert float(out[1].abs().max()) == 0.0


def test_predict_smooths_with_sigma_4_px_at_224(tmp_path, monkeypatch) -> None:
    """Two patches score 1 and 0.5 (one in the middle, one on the border), every other 0:
    the map predict returns must be that patch grid upsampled bilinearly to the backbone
    input and smoothed with a Gaussian of sigma 4 px x (input size / 224), here 112 px ->
    sigma 2, reflecting at the borders, as scipy computes it."""
    import scipy.ndimage
    import torch
    import torch.nn.functional as F
    from PIL import Image

    from fedpatch_app.model import patchcore

    class OnePatch:
        def __init__(self, features: np.ndarray, device: object = None) -> None:
            pass

        def patch_scores(self, queries: np.ndarray) -> np.ndarray:
            scores = np.zeros(len(queries), dtype=np.float32)
            scores[7 * 14 + 7] = 1.0  # row 7, column 7 of the 14x14 grid
            scores[1] = 0.5  # row 0, column 1
            return scores

    monkeypatch.setattr(
        patchcore, "bank_index", lambda features, device, search: OnePatch(features)
    )
    spec = FeatureSpec(weights="none", image_size=112)
    path = tmp_path / "img.png"
    Image.new("RGB", (112, 112), (90, 120, 150)).save(path)
    model = PatchCore(spec, device="cpu", batch_size=1)
    bank = Bank(np.zeros((1, 1024), np.float32), spec, "pipe_clip", 0.0, 1)
    got = model.predict(bank, [path], (112, 112)).maps[0]

    grid = torch.zeros(1, 1, 14, 14)
    grid[0, 0, 7, 7] = 1.0
    grid[0, 0, 0, 1] = 0.5
    up = F.interpolate(grid, size=(112, 112), mode="bilinear", align_corners=False)[0, 0]
    expected = scipy.ndimage.gaussian_filter(up.numpy().astype(np.float64), 2.0, mode="mirror")
    np.testing.assert_allclose(got, expected, atol=1e-6 * expected.max())
    # the check can tell sigmas apart: the unscaled 4 px is far off
    wrong = scipy.ndimage.gaussian_filter(up.numpy().astype(np.float64), 4.0, mode="mirror")
    assert np.abs(got - wrong).max() > 0.1 * expected.max()


def test_input_size_keeps_aspect_ratio() -> None:
    assert input_size((1000, 750), 256) == (256, 341)
    assert input_size((400, 400), 256) == (256, 256)


@pytest.mark.slow
def test_fit_predict_scores_defects_higher(tiny_root) -> None:
    category = load_category(tiny_root, "pipe_staple")
    model = PatchCore(FeatureSpec(weights="none", image_size=96), device="cpu", batch_size=4)
    bank = model.fit(list(category.train), category.name, coreset_ratio=0.1)
    assert bank.features.shape[1] == 1024
    assert bank.size == coreset_size(bank.n_patches, 0.1)
    pred = model.predict(bank, [s.path for s in category.test], category.size)
    width, height = category.size
    assert len(pred.maps) == len(category.test)
    assert all(m.shape == (height, width) and m.dtype == np.float32 for m in pred.maps)
    np.testing.assert_allclose(pred.image_scores, [m.max() for m in pred.maps], rtol=1e-6)
    good = [s for s, x in zip(category.test, pred.image_scores, strict=True) if s.is_good]
    assert good
    is_good = np.array([s.is_good for s in category.test])
    assert pred.image_scores[~is_good].mean() > pred.image_scores[is_good].mean()
    # Same seed and data give the same bank and the same maps.
    again = PatchCore(FeatureSpec(weights="none", image_size=96), device="cpu", batch_size=4)
    bank2 = again.fit(list(category.train), category.name, coreset_ratio=0.1)
    np.testing.assert_array_equal(bank.features, bank2.features)
    # A bank from other settings is refused by predict.
    other = PatchCore(FeatureSpec(weights="none", image_size=64), device="cpu")
    with pytest.raises(ModelError, match="other feature settings"):
        other.predict(bank, [category.test[0].path], category.size)


def test_predict_clips_queries_of_a_clipped_bank(tiny_root, monkeypatch) -> None:
    from fedpatch_app.model import memory_bank

    category = load_category(tiny_root, "pipe_staple")
    model = PatchCore(FeatureSpec(weights="none", image_size=64), device="cpu", batch_size=4)
    paths = [s.path for s in category.test[:2]]
    feats = model.features(paths).reshape(-1, 1024)
    norms = np.linalg.norm(feats, axis=1)
    clip = float(np.median(norms))
    seen: list[np.ndarray] = []
    original = memory_bank.MemoryBank.patch_scores

    def spy(self, queries):
        seen.append(np.asarray(queries))
        return original(self, queries)

    monkeypatch.setattr(memory_bank.MemoryBank, "patch_scores", spy)
    bank = Bank(feats[:10], model.spec, "pipe_staple", 0.0, len(feats), query_clip=clip)
    model.predict(bank, paths, category.size)
    got = np.concatenate(seen)
    assert got.shape == feats.shape
    assert np.linalg.norm(got, axis=1).max() <= clip * (1 + 1e-5)
    # Rows below the clip are left as they are, rows above are scaled onto the sphere.
    small = norms < clip
    np.testing.assert_allclose(got[small], feats[small], rtol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(got[~small], axis=1), clip, rtol=1e-5)
    seen.clear()
    model.predict(dataclasses.replace(bank, query_clip=0.0), paths, category.size)
    np.testing.assert_array_equal(np.concatenate(seen), feats)


def test_fit_without_images_is_an_error() -> None:
    model = PatchCore(FeatureSpec(weights="none", image_size=64), device="cpu")
    with pytest.raises(ModelError, match="no training images"):
        model.fit([], "pipe_clip", 0.1)
