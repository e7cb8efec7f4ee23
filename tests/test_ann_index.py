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
    exact_distances,
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
    whole = exact_distances(queries, np.broadcast_to(bank, (len(queries), *bank.shape)))
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


def test_index_of_another_bank_is_refused(bank, tmp_path):
    path = IvfIndex.build(bank).save(tmp_path / "a.ivf.npz")
    assert IvfIndex.load(path, bank).to_bytes() == path.read_bytes()
    other = bank.copy()
    other[0, 0] += 1.0
    with pytest.raises(ModelError, match="built for another bank"):
        IvfIndex.load(path, other)


def test_settings_choose_the_search():
    assert search_params(RunSettings(search="exact")) is None
    params = search_params(RunSettings(search_probe=3, seed=7))
    assert params == IvfParams(probe=3, seed=7)
    assert built_index(clustered(300), None) is None
