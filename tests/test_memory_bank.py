"""Memory bank: exact kNN (FAISS and torch), PatchCore scores, Eq. 7 reweighting, validation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fedpatch_app.errors import ModelError
from fedpatch_app.model import memory_bank as mb
from fedpatch_app.model.memory_bank import MemoryBank


@pytest.fixture
def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return (
        rng.standard_normal((300, 32)).astype(np.float32),
        rng.standard_normal((70, 32)).astype(np.float32),
    )


def brute_distances(queries: np.ndarray, bank: np.ndarray) -> np.ndarray:
    diff = queries[:, None, :].astype(np.float64) - bank[None].astype(np.float64)
    return np.sqrt((diff**2).sum(-1))


@pytest.mark.parametrize("backend", ["faiss", "torch"])
@pytest.mark.parametrize("k", [1, 5])
def test_search_equals_brute_force(data, backend: str, k: int) -> None:
    bank, queries = data
    dist, idx = MemoryBank(bank, backend=backend).search(queries, k=k)
    full = brute_distances(queries, bank)
    expected = np.argsort(full, axis=1)[:, :k]
    assert dist.dtype == np.float32 and idx.dtype == np.int64
    assert dist.shape == idx.shape == (70, k)
    assert np.array_equal(idx, expected)
    np.testing.assert_allclose(dist, np.take_along_axis(full, expected, 1), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend", ["faiss", "torch"])
def test_chunked_queries_give_the_same_answer(data, backend: str, monkeypatch) -> None:
    bank, queries = data
    reference = MemoryBank(bank, backend=backend).search(queries, k=3)
    monkeypatch.setattr(mb, "FAISS_CHUNK_ROWS", 8)
    monkeypatch.setattr(mb, "TORCH_BLOCK_BYTES", 4 * 300 * 9)  # 9 queries per block
    chunked = MemoryBank(bank, backend=backend).search(queries, k=3)
    assert np.array_equal(reference[1], chunked[1])
    np.testing.assert_allclose(reference[0], chunked[0], rtol=1e-6)


def test_auto_backend_on_cpu_is_faiss(data) -> None:
    assert MemoryBank(data[0]).backend == "faiss"
    assert MemoryBank(data[0], device="cpu", backend="torch").backend == "torch"


def test_self_distance_is_zero_not_nan(data) -> None:
    bank, _ = data
    dist, idx = MemoryBank(bank * 100).search(bank * 100, k=1)
    assert np.array_equal(idx[:, 0], np.arange(len(bank)))
    assert np.isfinite(dist).all() and (dist >= 0).all()
    assert dist.max() < 1e-1  # sqrt of tiny rounding errors of ||x||^2 scale 1e5


def test_patch_and_image_scores(data) -> None:
    bank, queries = data
    memory = MemoryBank(torch.from_numpy(bank))
    scores = memory.patch_scores(queries)
    np.testing.assert_allclose(scores, brute_distances(queries, bank).min(axis=1), rtol=1e-5)
    assert memory.image_score(queries) == pytest.approx(float(scores.max()), rel=1e-6)


@pytest.mark.parametrize("b", [1, 3, 9])
def test_reweighted_image_score_follows_eq7(data, b: int) -> None:
    bank, queries = data
    memory = MemoryBank(bank)
    full = brute_distances(queries, bank)
    worst = int(np.argmax(full.min(axis=1)))
    s_star = full[worst].min()
    m_star = int(np.argmin(full[worst]))
    support = np.argsort(brute_distances(bank[m_star : m_star + 1], bank)[0])[:b]
    assert support[0] == m_star
    exps = np.exp(full[worst, support])
    expected = (1.0 - exps[0] / exps.sum()) * s_star
    assert memory.image_score(queries, reweight=True, b=b) == pytest.approx(expected, rel=1e-5)


def test_reweighting_is_stable_for_large_distances(data) -> None:
    bank, queries = data
    score = MemoryBank(bank * 1000).image_score(queries * 1000, reweight=True)
    assert np.isfinite(score) and score >= 0


@pytest.mark.parametrize(
    ("bank", "queries", "message"),
    [
        (np.zeros((0, 4), np.float32), np.zeros((1, 4), np.float32), "empty"),
        (np.zeros((5,), np.float32), np.zeros((1, 4), np.float32), "2-D"),
        (np.zeros((5, 4), np.float32), np.zeros((1, 3), np.float32), "3 dimensions"),
        (np.full((5, 4), np.nan, np.float32), np.zeros((1, 4), np.float32), "bank features row 0"),
        (
            np.zeros((5, 4), np.float32),
            np.array([[0, 0, 0, 0], [0, np.inf, 0, 0]], np.float32),
            "queries row 1",
        ),
    ],
)
def test_invalid_input(bank, queries, message) -> None:
    with pytest.raises(ModelError, match=message):
        MemoryBank(bank).search(queries)


def test_invalid_k_backend_and_b(data) -> None:
    bank, queries = data
    with pytest.raises(ModelError, match="between 1 and the bank size 300"):
        MemoryBank(bank).search(queries, k=301)
    with pytest.raises(ModelError, match="backend"):
        MemoryBank(bank, backend="annoy")
    with pytest.raises(ModelError, match="b must be"):
        MemoryBank(bank).image_score(queries, reweight=True, b=0)
    with pytest.raises(ModelError, match="no patch features"):
        MemoryBank(bank).image_score(queries[:0])


@pytest.mark.parametrize(
    ("scale", "b"), [(1.0, 3), (1000.0, 3), (1e4, 3), (1000.0, 2), (1000.0, 1)]
)
def test_reweighting_hand_computed_also_where_a_naive_softmax_overflows(
    scale: float, b: int
) -> None:
    """Bank rows m* = (0, 0), (-0.5, 0), (-1, 0); the worst patch lies at (scale, 0), so
    its distances to N_b(m*) are scale, scale + 0.5, scale + 1. Eq. 7 gives
    w = exp(scale) / sum_k exp(scale + k/2) = 1 / sum_k exp(k/2) over the b rows and the
    score (1 - w) * scale: at scale 1000 exp(scale) overflows float64 (a naive softmax
    gives inf / inf), but the weight depends only on the distance gaps."""
    bank = np.array([[0.0, 0.0], [-0.5, 0.0], [-1.0, 0.0]], dtype=np.float32)
    patches = np.array([[0.1, 0.0], [scale, 0.0], [-0.6, 0.0]], dtype=np.float32)
    weight = 1.0 / sum(math.exp(0.5 * k) for k in range(b))
    expected = (1.0 - weight) * scale
    score = MemoryBank(bank).image_score(patches, reweight=True, b=b)
    assert score == pytest.approx(expected, rel=1e-6, abs=1e-9)
    if b == 3:  # written out: 1 - 1 / (1 + e^0.5 + e^1) = 1 - 1 / 5.36700 = 0.81367
        assert score == pytest.approx(0.81367 * scale, rel=1e-5)
