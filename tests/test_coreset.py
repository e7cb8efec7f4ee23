"""Greedy k-center coreset: equal to an independent brute force, exact under pruning,
the same whatever the thread count, and strict about its inputs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from fedpatch_app.errors import ModelError
from fedpatch_app.model import coreset_exact, coreset_projection, coreset_search
from fedpatch_app.model.coreset import greedy_coreset, project_features, random_projection
from fedpatch_app.model.coreset_projection import project_rows

REPO = Path(__file__).resolve().parents[1]


def brute_force_greedy(
    points: np.ndarray, k: int, start: int | None, initial: np.ndarray | None = None
) -> tuple[list[int], float]:
    """Plain greedy k-center, float64, every distance recomputed from the coordinates."""
    pts = points.astype(np.float64)
    mind = np.full(len(pts), np.inf)
    if initial is not None:
        for centre in initial.astype(np.float64):
            mind = np.minimum(mind, ((pts - centre) ** 2).sum(axis=1))
        start = int(np.argmax(mind))
    chosen = [start]
    while True:
        current = chosen[-1]
        mind = np.minimum(mind, ((pts - pts[current]) ** 2).sum(axis=1))
        mind[chosen] = -np.inf
        if len(chosen) == k:
            return chosen, float(np.sqrt(max(mind.max(), 0.0)))
        chosen.append(int(np.argmax(mind)))


def projected(x: np.ndarray, dim: int | None, seed: int) -> np.ndarray:
    """The coordinates the selection works in (the projection is tested on its own)."""
    return project_features(x, dim, seed)[0].numpy()


def seeded_start(n: int, seed: int) -> int:
    """The documented start rule: torch.randint(n) from a CPU generator seeded seed + 1."""
    return int(torch.randint(n, (1,), generator=torch.Generator().manual_seed(seed + 1)))


def clustered(n: int, d: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((12, d)) * 4.0
    labels = rng.integers(0, 12, n)
    spread = rng.uniform(0.2, 1.0, 12)[labels, None]
    return (centres[labels] + spread * rng.standard_normal((n, d)) + 3.0).astype(np.float32)


def duplicated(n: int, d: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.standard_normal((n // 4, d)).astype(np.float32)
    return base[rng.integers(0, len(base), n)]


def lattice(n: int, d: int, seed: int) -> np.ndarray:
    """Small integers: every distance exact in any order, so ties are real ties."""
    return np.random.default_rng(seed).integers(0, 3, (n, d)).astype(np.float32)


DATA = {
    "gaussian": lambda n, d, s: np.random.default_rng(s).standard_normal((n, d)).astype(np.float32),
    "clustered": clustered,
    "duplicates": duplicated,
    "lattice": lattice,
}
METHODS = ("pruned", "masked", "plain")


@pytest.mark.parametrize("kind", sorted(DATA))
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("projection_dim", [None, 16])
def test_equals_brute_force(kind: str, method: str, projection_dim: int | None) -> None:
    x = DATA[kind](500, 24, 1)
    result = greedy_coreset(x, 60, projection_dim=projection_dim, seed=3, method=method)
    expected, radius = brute_force_greedy(projected(x, projection_dim, 3), 60, seeded_start(500, 3))
    assert result.indices.dtype == np.int64
    assert result.indices.tolist() == expected
    assert result.radius == pytest.approx(radius, rel=1e-12)


@pytest.mark.parametrize("kind", sorted(DATA))
@pytest.mark.parametrize("method", METHODS)
def test_initial_centres_equal_brute_force(kind: str, method: str) -> None:
    x = DATA[kind](400, 20, 2)
    initial = DATA[kind](15, 20, 9)
    result = greedy_coreset(x, 50, projection_dim=8, seed=2, initial=initial, method=method)
    pts, centres = project_features(x, 8, 2, initial=initial)
    expected, radius = brute_force_greedy(pts.numpy(), 50, None, initial=centres.numpy())
    assert result.indices.tolist() == expected
    assert result.radius == pytest.approx(radius, rel=1e-12)


def test_lattice_ties_go_to_the_lowest_index() -> None:
    """Four corners of a square, listed twice: the brute force's argmax takes the first."""
    square = np.array([[0, 0], [0, 2], [2, 0], [2, 2]], dtype=np.float32)
    x = np.concatenate([square, square])
    result = greedy_coreset(x, 8, projection_dim=None, seed=0)
    first = seeded_start(8, 0)
    # the farthest point from a corner is the opposite one, duplicates come later
    assert result.indices[1] == 3 - (first % 4)
    assert sorted(result.indices.tolist()) == list(range(8))
    assert result.indices.tolist() == brute_force_greedy(x, 8, first)[0]


def test_pruning_skips_most_points_on_clustered_data() -> None:
    """The exact answer alone would also come from no pruning at all: count the work."""
    x = clustered(3000, 32, 4)
    pruned = greedy_coreset(x, 150, projection_dim=16, seed=0, method="pruned")
    masked = greedy_coreset(x, 150, projection_dim=16, seed=0, method="masked")
    plain = greedy_coreset(x, 150, projection_dim=16, seed=0, method="plain")
    assert pruned.indices.tolist() == masked.indices.tolist() == plain.indices.tolist()
    assert plain.measured == 149 * 3000  # every point at every step after the start
    assert pruned.measured < 0.25 * plain.measured
    assert masked.measured < 0.25 * plain.measured


def test_every_point_within_radius() -> None:
    x = clustered(600, 40, 5)
    result = greedy_coreset(x, 25, projection_dim=8, seed=1)
    proj = projected(x, 8, 1).astype(np.float64)
    centres = proj[result.indices]
    nearest = np.sqrt(((proj[:, None, :] - centres[None]) ** 2).sum(-1)).min(axis=1)
    assert nearest.max() == pytest.approx(result.radius, rel=1e-12)
    assert len(set(result.indices.tolist())) == 25


def test_projection_is_x_times_the_seeded_matrix_minus_the_mean() -> None:
    x = clustered(9000, 64, 6)  # several blocks of PROJECT_CHUNK_ROWS
    proj = random_projection(64, 16, 5)
    expected = x.astype(np.float64) @ proj.numpy().astype(np.float64)
    got = project_rows(x, proj, torch.device("cpu")).numpy()
    scale = np.abs(x).astype(np.float64) @ np.abs(proj.numpy()).astype(np.float64)
    assert np.all(np.abs(got - expected) <= 64 * 2.0**-23 * scale)
    assert proj.std().item() == pytest.approx(1 / 4, rel=0.05)  # N(0, 1/d')
    centred = project_features(x, 16, 5)[0].numpy()
    assert np.allclose(centred, expected - expected.mean(axis=0), atol=1e-4)
    assert np.abs(centred.mean(axis=0)).max() < 1e-5


def test_exact_distances_are_exact_on_integers_and_order_free() -> None:
    pts = lattice(50, 37, 0)
    centre = pts[7]
    want = ((pts.astype(np.int64) - centre.astype(np.int64)) ** 2).sum(axis=1)
    assert coreset_exact.exact_sq_dist(pts, centre).tolist() == want.tolist()
    wide = np.random.default_rng(0).standard_normal((300, 100)).astype(np.float32)
    a = coreset_exact.exact_sq_dist(wide, wide[3])
    b = coreset_exact.exact_sq_dist(torch.from_numpy(wide), torch.from_numpy(wide[3])).numpy()
    assert np.array_equal(a, b)  # numpy and torch CPU tensors: the same bits
    tree = coreset_exact._tree_sq_dist(torch.from_numpy(wide), torch.from_numpy(wide[3])).numpy()
    assert np.allclose(tree, a, rtol=1e-14)  # the device form: the same values to rounding


def test_estimate_slack_covers_the_float32_error() -> None:
    rng = np.random.default_rng(3)
    a = (rng.standard_normal((2000, 128)) * 0.01 + 30.0).astype(np.float32)  # cancellation
    c = a[0] + np.float32(0.001)
    exact = ((a.astype(np.float64) - c.astype(np.float64)) ** 2).sum(axis=1)
    sqn = (a.astype(np.float64) ** 2).sum(axis=1).astype(np.float32)
    csq = np.float32((c.astype(np.float64) ** 2).sum())
    est = (sqn + csq - 2.0 * (a @ c)).astype(np.float64)
    norms = np.sqrt(sqn.astype(np.float64))
    slack = coreset_exact.estimate_slack(norms, float(np.sqrt(csq)), 128)
    assert np.all(np.abs(est - exact) <= slack)
    assert np.abs(est - exact).max() > 0.001 * slack.max()  # errors of the size it bounds


def test_deterministic_and_seeded() -> None:
    x = clustered(400, 48, 7)
    a = greedy_coreset(x, 30, seed=7)
    b = greedy_coreset(torch.from_numpy(x), 30, seed=7)
    c = greedy_coreset(x, 30, seed=8)
    assert np.array_equal(a.indices, b.indices) and a.radius == b.radius
    assert not np.array_equal(a.indices, c.indices)
    assert a.indices[0] == seeded_start(400, 7) and c.indices[0] == seeded_start(400, 8)


def test_initial_continues_the_same_order() -> None:
    x = clustered(400, 48, 8)
    full = greedy_coreset(x, 50, projection_dim=16, seed=4)
    head = full.indices[:20]
    rest = greedy_coreset(x, 30, projection_dim=16, seed=4, initial=x[head])
    assert rest.indices.tolist() == full.indices[20:].tolist()
    assert rest.radius == full.radius


def test_small_blocks_give_the_same_selection(monkeypatch) -> None:
    x = clustered(500, 48, 9)
    reference = greedy_coreset(x, 20, seed=0, initial=x[:9])
    monkeypatch.setattr(coreset_projection, "PROJECT_CHUNK_ROWS", 7)
    monkeypatch.setattr(coreset_search, "INITIAL_BLOCK_ELEMENTS", 20)
    monkeypatch.setattr(coreset_exact, "EXACT_CHUNK_ROWS", 5)
    chunked = greedy_coreset(x, 20, seed=0, initial=x[:9])
    assert chunked.indices.tolist() == reference.indices.tolist()
    assert chunked.radius == pytest.approx(reference.radius, rel=1e-6)


def test_float16_and_float64_inputs() -> None:
    x = clustered(400, 48, 10)
    half = x.astype(np.float16)
    a = greedy_coreset(half, 20, seed=0)
    b = greedy_coreset(half.astype(np.float32), 20, seed=0)
    c = greedy_coreset(x.astype(np.float64), 20, seed=0)
    d = greedy_coreset(x, 20, seed=0)
    assert a.indices.tolist() == b.indices.tolist()
    assert c.indices.tolist() == d.indices.tolist()


@pytest.mark.parametrize("method", METHODS)
def test_k_equals_n_selects_every_point_once(method: str) -> None:
    x = np.random.default_rng(1).standard_normal((30, 4)).astype(np.float32)
    x[5] = x[6]  # duplicates must not be selected twice
    result = greedy_coreset(x, 30, projection_dim=None, method=method)
    assert sorted(result.indices.tolist()) == list(range(30))
    assert result.radius == 0.0


def test_large_n_scaled_down() -> None:
    """A scaled-down version of the 1,000,000-point case: many points, many blocks."""
    x = clustered(60_000, 32, 2)
    result = greedy_coreset(x, 20, projection_dim=16, seed=0)
    proj = torch.from_numpy(projected(x, 16, 0)).double()
    nearest = torch.cdist(proj, proj[torch.from_numpy(result.indices)]).min(dim=1).values
    assert float(nearest.max()) == pytest.approx(result.radius, rel=1e-9)
    assert (
        result.indices.tolist() == brute_force_greedy(proj.numpy(), 20, seeded_start(60_000, 0))[0]
    )


THREAD_SCRIPT = textwrap.dedent(
    """
    import hashlib, json, sys
    import numpy as np, torch
    torch.set_num_threads(int(sys.argv[1]))
    from fedpatch_app.model.coreset import greedy_coreset, random_projection
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((40, 1024)).astype(np.float32)
    x = centres[rng.integers(0, 40, 6000)] + rng.standard_normal((6000, 1024), np.float32)
    x += 5.0
    out = {}
    for method in ("pruned", "masked"):
        r = greedy_coreset(x, 200, seed=1, method=method)
        out[method] = [r.indices.tolist(), r.radius]
    r = greedy_coreset(x, 40, seed=1, initial=x[:100] * 1.01)
    out["initial"] = [r.indices.tolist(), r.radius]
    plain = torch.from_numpy(x) @ random_projection(1024, 128, 1)
    out["threaded_matmul"] = hashlib.sha256(plain.numpy().tobytes()).hexdigest()
    print(json.dumps(out))
    """
)


def test_selection_does_not_depend_on_the_thread_count() -> None:
    runs = {}
    for threads in (1, 2, 4):
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
        proc = subprocess.run(
            [sys.executable, "-c", THREAD_SCRIPT, str(threads)],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            check=True,
        )
        runs[threads] = json.loads(proc.stdout.strip().splitlines()[-1])
    for key in ("pruned", "masked", "initial"):
        assert runs[1][key] == runs[2][key] == runs[4][key], key
    assert runs[1]["pruned"] == runs[1]["masked"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_equals_brute_force_on_its_own_projection() -> None:
    x = clustered(5000, 64, 11)
    result = greedy_coreset(x, 100, projection_dim=16, seed=0, device="cuda")
    pts = project_features(x, 16, 0, torch.device("cuda"))[0].cpu().numpy()
    assert result.indices.tolist() == brute_force_greedy(pts, 100, seeded_start(5000, 0))[0]


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
        (np.zeros((10, 4), np.float32), 2, {"method": "fast"}, "method"),
        (np.eye(10, 4, dtype=np.float32) * 1e20, 2, {}, "rescale"),
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
