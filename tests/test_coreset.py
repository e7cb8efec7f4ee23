"""Greedy k-center coreset: equals a brute-force greedy, covers within its radius, validates."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedpatch_app.errors import ModelError
from fedpatch_app.model import coreset as coreset_mod
from fedpatch_app.model.coreset import greedy_coreset, random_projection


def brute_force_greedy(
    points: np.ndarray, k: int, start: int | None, initial: np.ndarray | None = None
) -> tuple[list[int], float]:
    """Plain greedy k-center on already projected points (float64, distances recomputed)."""
    pts = points.astype(np.float64)
    mind = np.full(len(pts), np.inf)
    if initial is not None:
        for centre in initial.astype(np.float64):
            mind = np.minimum(mind, ((pts - centre) ** 2).sum(axis=1))
        start = int(np.argmax(mind))
    chosen = [start]
    for _ in range(k):
        current = chosen[-1]
        mind = np.minimum(mind, ((pts - pts[current]) ** 2).sum(axis=1))
        mind[current] = -np.inf
        if len(chosen) < k:
            chosen.append(int(np.argmax(mind)))
    return chosen, float(np.sqrt(max(mind.max(), 0.0)))


def project(x: np.ndarray, dim: int | None, seed: int) -> np.ndarray:
    if dim is None or dim >= x.shape[1]:
        return x.astype(np.float64)
    return x.astype(np.float64) @ random_projection(x.shape[1], dim, seed).numpy().astype(
        np.float64
    )


@pytest.fixture
def points() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((400, 48)).astype(np.float32)


@pytest.mark.parametrize("projection_dim", [None, 16, 48, 1000])
def test_equals_brute_force(points: np.ndarray, projection_dim: int | None) -> None:
    result = greedy_coreset(points, 40, projection_dim=projection_dim, seed=3)
    proj = project(points, projection_dim, 3)
    expected, radius = brute_force_greedy(proj, 40, int(result.indices[0]))
    assert result.indices.dtype == np.int64
    assert result.indices.tolist() == expected
    assert result.radius == pytest.approx(radius, rel=1e-5)


def test_every_point_within_radius(points: np.ndarray) -> None:
    result = greedy_coreset(points, 25, projection_dim=8, seed=1)
    proj = project(points, 8, 1)
    centres = proj[result.indices]
    nearest = np.sqrt(((proj[:, None, :] - centres[None]) ** 2).sum(-1)).min(axis=1)
    assert nearest.max() <= result.radius * (1 + 1e-5)
    assert nearest.max() == pytest.approx(result.radius, rel=1e-5)
    assert len(set(result.indices.tolist())) == 25


def test_deterministic_and_seeded(points: np.ndarray) -> None:
    a = greedy_coreset(points, 30, seed=7)
    b = greedy_coreset(torch.from_numpy(points), 30, seed=7)
    c = greedy_coreset(points, 30, seed=8)
    assert np.array_equal(a.indices, b.indices) and a.radius == b.radius
    assert not np.array_equal(a.indices, c.indices)


def test_initial_equals_brute_force_with_preselected_centres(points: np.ndarray) -> None:
    initial = np.random.default_rng(5).standard_normal((12, 48)).astype(np.float32)
    result = greedy_coreset(points, 30, projection_dim=16, seed=2, initial=initial)
    expected, radius = brute_force_greedy(
        project(points, 16, 2), 30, None, initial=project(initial, 16, 2)
    )
    assert result.indices.tolist() == expected
    assert result.radius == pytest.approx(radius, rel=1e-5)


def test_initial_continues_the_same_order(points: np.ndarray) -> None:
    full = greedy_coreset(points, 50, projection_dim=16, seed=4)
    head = full.indices[:20]
    rest = greedy_coreset(points, 30, projection_dim=16, seed=4, initial=points[head])
    assert rest.indices.tolist() == full.indices[20:].tolist()
    assert rest.radius == pytest.approx(full.radius, rel=1e-5)


def test_chunked_projection_and_initial_blocks(points: np.ndarray, monkeypatch) -> None:
    reference = greedy_coreset(points, 20, seed=0, initial=points[:9])
    monkeypatch.setattr(coreset_mod, "PROJECT_CHUNK_ROWS", 7)
    monkeypatch.setattr(coreset_mod, "INITIAL_BLOCK_ELEMENTS", 20)
    chunked = greedy_coreset(points, 20, seed=0, initial=points[:9])
    assert chunked.indices.tolist() == reference.indices.tolist()


def test_float16_and_float64_inputs(points: np.ndarray) -> None:
    half = points.astype(np.float16)
    a = greedy_coreset(half, 20, seed=0)
    b = greedy_coreset(half.astype(np.float32), 20, seed=0)
    c = greedy_coreset(points.astype(np.float64), 20, seed=0)
    d = greedy_coreset(points, 20, seed=0)
    assert a.indices.tolist() == b.indices.tolist()
    assert c.indices.tolist() == d.indices.tolist()


def test_k_equals_n_selects_every_point_once() -> None:
    x = np.random.default_rng(1).standard_normal((30, 4)).astype(np.float32)
    x[5] = x[6]  # duplicates must not be selected twice
    result = greedy_coreset(x, 30, projection_dim=None)
    assert sorted(result.indices.tolist()) == list(range(30))
    assert result.radius == 0.0


def test_large_n_scaled_down() -> None:
    """A scaled-down version of the 1,000,000-point case: many points, chunked projection."""
    x = np.random.default_rng(2).standard_normal((150_000, 64)).astype(np.float32)
    result = greedy_coreset(x, 20, projection_dim=16, seed=0)
    assert len(np.unique(result.indices)) == 20
    proj = torch.from_numpy(x) @ random_projection(64, 16, 0)
    nearest = torch.cdist(proj, proj[torch.from_numpy(result.indices)]).min(dim=1).values
    assert float(nearest.max()) == pytest.approx(result.radius, rel=1e-4)


@pytest.mark.parametrize(
    ("features", "k", "kwargs", "message"),
    [
        (np.zeros((10, 4), np.float32), 0, {}, "k must be >= 1"),
        (np.zeros((10, 4), np.float32), 11, {}, "k = 11"),
        (np.zeros((10,), np.float32), 1, {}, "2-D"),
        (np.zeros((0, 4), np.float32), 1, {}, "empty"),
        (np.zeros((10, 4), np.int64), 1, {}, "floats"),
        (
            np.zeros((10, 4), np.float32),
            2,
            {"initial": np.zeros((3, 5), np.float32)},
            "5 dimensions",
        ),
        (np.zeros((10, 4), np.float32), 2, {"initial": np.zeros(4, np.float32)}, "initial"),
        (np.zeros((10, 4), np.float32), 2, {"projection_dim": 0}, "projection_dim"),
    ],
)
def test_invalid_input(features, k, kwargs, message) -> None:
    with pytest.raises(ModelError, match=message):
        greedy_coreset(features, k, **kwargs)


def test_k_above_n_names_both_numbers() -> None:
    with pytest.raises(ModelError, match=r"k = 11 .* N = 10"):
        greedy_coreset(np.zeros((10, 4), np.float32), 11)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_features_rejected(bad: float) -> None:
    x = np.ones((10, 4), np.float32)
    x[6, 2] = bad
    with pytest.raises(ModelError, match="row 6"):
        greedy_coreset(x, 2)
    with pytest.raises(ModelError, match="initial row 0"):
        greedy_coreset(np.ones((10, 4), np.float32), 2, initial=x[6:7])
