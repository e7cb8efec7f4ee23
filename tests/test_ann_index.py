"""The approximate search index: deterministic, exact re-rank, carried by the model folder."""

from __future__ import annotations

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from fedpatch_app.errors import ModelError
from fedpatch_app.model.ann_index import (
    IvfIndex,
    IvfParams,
    IvfSearch,
    built_index,
    search_params,
)
from fedpatch_app.model.memory_bank import MemoryBank
from fedpatch_app.settings import RunSettings


def clustered(rows: int, dim: int = 32, seed: int = 0) -> np.ndarray:
    """Rows around 40 centres (patch features are clustered, unlike white noise)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(40, dim)) * 4
    return (centres[rng.integers(0, 40, rows)] + rng.normal(size=(rows, dim))).astype(np.float32)


@pytest.fixture(scope="module")
def bank() -> np.ndarray:
    return clustered(2000)


@pytest.fixture(scope="module")
def queries() -> np.ndarray:
    return clustered(300, seed=1)


def test_index_bytes_and_scores_do_not_depend_on_threads(bank, queries):
    with threadpool_limits(limits=1):
        one = IvfIndex.build(bank, IvfParams(seed=3))
        d1, i1 = IvfSearch(one, bank).nearest(queries)
    with threadpool_limits(limits=2):
        two = IvfIndex.build(bank, IvfParams(seed=3))
        d2, i2 = IvfSearch(two, bank).nearest(queries)
    assert one.to_bytes() == two.to_bytes()
    assert IvfIndex.build(bank, IvfParams(seed=3)).to_bytes() == one.to_bytes()
    assert np.array_equal(d1, d2) and np.array_equal(i1, i2)
    assert IvfIndex.build(bank, IvfParams(seed=4)).to_bytes() != one.to_bytes()


def test_score_is_the_exact_distance_when_the_nearest_row_is_a_candidate(bank, queries):
    index = IvfIndex.build(bank, IvfParams(probe=2))
    dist, idx = IvfSearch(index, bank).nearest(queries)
    # The reference, in the test's own arithmetic: differences squared, summed in float64.
    diff = bank[None, :, :].astype(np.float64) - queries[:, None, :].astype(np.float64)
    whole = np.sqrt(np.einsum("nkd,nkd->nk", diff, diff))
    true_idx = np.argmin(whole, axis=1)
    true = whole[np.arange(len(queries)), true_idx].astype(np.float32)
    found = idx == true_idx
    assert 0.5 < found.mean() < 1.0  # two cells of 89: some nearest rows are missed
    assert np.array_equal(dist[found], true[found])  # bit for bit
    assert np.all(dist >= true)  # a missed row: the distance to another, never less
    missed = ~found
    assert np.array_equal(dist[missed], whole[missed, idx[missed]].astype(np.float32))


def test_all_cells_probed_matches_exact_search(bank, queries):
    index = IvfIndex.build(bank, IvfParams(probe=10_000))
    dist, idx = MemoryBank(bank, ann=index).search(queries, k=1)
    exact_dist, exact_idx = MemoryBank(bank).search(queries, k=1)
    assert np.array_equal(idx, exact_idx)
    np.testing.assert_allclose(dist, exact_dist, rtol=1e-5)  # float32 vs float64 arithmetic


def test_a_bank_searched_through_its_index_is_hashed_once_and_builds_no_exact_search(
    bank, queries, tmp_path, monkeypatch
):
    """The line's path: the bank checked against its index when loaded is not hashed
    again by the memory bank, and the exact search is built only when asked for (k > 1)."""
    import fedpatch_app.model.ann_index as ann_index

    path = IvfIndex.build(bank).save(tmp_path / "a.ivf.npz")
    loaded = bank.copy()
    index = IvfIndex.load(path, loaded)
    hashed = []
    monkeypatch.setattr(ann_index, "bank_digest", lambda f: hashed.append(1) or "x")
    searched = MemoryBank(loaded, ann=index)
    assert hashed == [] and searched._index is None and searched._bank_t is None
    near = searched.search(queries, k=1)
    assert searched._index is None and searched._bank_t is None
    assert np.array_equal(
        searched.search(queries, k=2)[1][:, :1], MemoryBank(bank).search(queries, k=2)[1][:, :1]
    )
    assert searched._index is not None or searched._bank_t is not None
    assert np.array_equal(near[0], MemoryBank(loaded, ann=index).search(queries, k=1)[0])
    # Another array (even with the same rows) is checked anew, and refused here by the
    # stand-in digest.
    with pytest.raises(ModelError, match="built for another bank"):
        MemoryBank(bank.copy(), ann=index)
    assert hashed == [1]


def test_index_of_another_bank_is_refused(bank, tmp_path):
    path = IvfIndex.build(bank).save(tmp_path / "a.ivf.npz")
    assert IvfIndex.load(path, bank).to_bytes() == path.read_bytes()
    other = bank.copy()
    other[0, 0] += 1.0
    with pytest.raises(ModelError, match="built for another bank"):
        IvfIndex.load(path, other)


def test_settings_choose_the_search():
    assert search_params(RunSettings(search="exact")) is None
    params = search_params(RunSettings(search="approximate", search_probe=3, seed=7))
    assert params == IvfParams(probe=3, seed=7)
    assert built_index(clustered(300), None) is None


def _folder_with_index(folder, rows: int = 300):
    from fedpatch_app.inspection.model_folder import CategoryModel, write_model
    from fedpatch_app.metrics.map_scaling import MapScaling
    from fedpatch_app.model.embedding import FeatureSpec
    from fedpatch_app.model.patchcore import Bank

    spec = FeatureSpec(weights="none", image_size=64, embed_dim=8, backbone="efficientnet_lite0")
    features = clustered(rows, dim=8)
    bank = Bank(features, spec, "pipe_clip", 1.5, rows * 10)
    thresholds = {"image": {"raw": 3.0}, "pixel": {"raw": 2.0}}
    index = IvfIndex.build(features)
    cat = CategoryModel(bank, (64, 64), MapScaling(0.5, 4.0), thresholds, 4, index)
    write_model(folder, spec, {"pipe_clip": cat}, {"run_name": "r", "run_kind": "centralized"})
    return folder, index


def test_model_folder_carries_the_index_under_its_hash(tmp_path):
    import json

    from fedpatch_app.inspection.model_folder import load_model

    folder, index = _folder_with_index(tmp_path / "model")
    entry = json.loads((folder / "model.json").read_text())["categories"]["pipe_clip"]
    assert entry["search_index"]["file"] == "banks/pipe_clip.ivf.npz"
    assert entry["search_index"]["probe"] == index.params.probe
    loaded = load_model(folder).category("pipe_clip").index
    assert loaded is not None and loaded.to_bytes() == index.to_bytes()


def test_a_changed_index_is_refused(tmp_path):
    import hashlib
    import json

    from fedpatch_app.inspection.model_folder import load_model

    folder, _ = _folder_with_index(tmp_path / "model")
    path = folder / "banks" / "pipe_clip.ivf.npz"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(ModelError, match=r"search index .*pipe_clip\.ivf\.npz has changed"):
        load_model(folder)
    # An index of another bank, its hash written into model.json: refused all the same.
    IvfIndex.build(clustered(300, dim=8, seed=5)).save(path)
    manifest = json.loads((folder / "model.json").read_text())
    entry = manifest["categories"]["pipe_clip"]["search_index"]
    entry["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    (folder / "model.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelError, match="built for another bank"):
        load_model(folder)
    entry["file"] = "../elsewhere.ivf.npz"
    (folder / "model.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelError, match="search_index.file"):
        load_model(folder)
    path.unlink()
    entry["file"] = "banks/pipe_clip.ivf.npz"
    (folder / "model.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelError, match="is missing"):
        load_model(folder)


def test_predictor_searches_as_the_setting_says(tmp_path):
    from fedpatch_app.inspection.model_folder import load_model
    from fedpatch_app.inspection.predictor import Predictor

    folder, _ = _folder_with_index(tmp_path / "model")
    model = load_model(folder)
    approximate = Predictor(model, device="cpu")._index("pipe_clip")
    exact = Predictor(model, device="cpu", search="exact")._index("pipe_clip")
    assert approximate.ann is not None and exact.ann is None
