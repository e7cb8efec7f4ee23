"""Benchmark: fedpatch's greedy k-center coreset against a straightforward one.

Prints, all measured in the same run:

* the memory bandwidth of this machine (a large torch sum: a pure read, like the
  coreset's matrix-vector products) and the lower bound ``k * N * d' * 4 B / bandwidth``;
* our time, our time / bound;
* a straightforward greedy k-center (numpy, every step recomputes ``((P - c) ** 2).sum``
  over the projected points) from the same projection and start point: same indices?
  and the speed ratio (for long runs it is timed on its first steps and the per-step
  time extrapolated; the output says so);
* the covering radius of our coreset against a random subset of the same size.

Usage::

    .venv/bin/python benchmarks/coreset.py                 # N = 100,000, D = 1024, 1% and 10%
    .venv/bin/python benchmarks/coreset.py --quick         # N = 20,000
    .venv/bin/python benchmarks/coreset.py --n 1000000 --ratios 0.001 --naive-steps 10 --no-radius
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch

from fedpatch_app.model import coreset as coreset_mod
from fedpatch_app.model.coreset import greedy_coreset, random_projection


def make_features(n: int, d: int, seed: int) -> np.ndarray:
    """Clustered float32 features (a mixture of Gaussians with varied spreads)."""
    rng = np.random.default_rng(seed)
    clusters = 64
    centres = rng.standard_normal((clusters, d), dtype=np.float32) * 2.0
    scales = rng.uniform(0.3, 1.5, clusters).astype(np.float32)
    labels = rng.integers(0, clusters, n)
    out = np.empty((n, d), dtype=np.float32)
    step = 50_000
    for start in range(0, n, step):
        stop = min(n, start + step)
        lab = labels[start:stop]
        out[start:stop] = rng.standard_normal((stop - start, d), dtype=np.float32)
        out[start:stop] *= scales[lab, None]
        out[start:stop] += centres[lab]
    return out


def read_bandwidth() -> float:
    """Bytes per second of a large read (torch sum over 400 MB, all threads)."""
    data = torch.ones(100_000_000, dtype=torch.float32)
    data.sum()
    best = math.inf
    for _ in range(5):
        t0 = time.perf_counter()
        data.sum()
        best = min(best, time.perf_counter() - t0)
    return data.numel() * 4 / best


def naive_greedy(
    points: np.ndarray, start: int, steps: int, ours: np.ndarray
) -> tuple[list[int], float, int, float]:
    """Straightforward greedy k-center in float64 (every step recomputes all distances).

    Returns its first ``steps`` indices, the time, and how ours compares: the number of
    steps where our pick differs, and the largest relative gap between the naive pick's
    distance and ours at those steps (rounding-level gaps mean float32 near-ties). After
    a differing step it follows our pick, so later steps stay comparable.
    """
    t0 = time.perf_counter()
    mind = np.full(len(points), np.inf)
    chosen = [start]
    current = start
    differ, worst_gap = 0, 0.0
    for step in range(1, steps):
        dist = ((points - points[current]) ** 2).sum(axis=1)
        np.minimum(mind, dist, out=mind)
        mind[current] = -np.inf
        pick = int(np.argmax(mind))
        chosen.append(pick)
        current = pick
        if pick != int(ours[step]):
            differ += 1
            worst_gap = max(worst_gap, float((mind[pick] - mind[ours[step]]) / mind[pick]))
            current = int(ours[step])
    return chosen, time.perf_counter() - t0, differ, worst_gap


def covering_radius(pt: torch.Tensor, sqn: torch.Tensor, centres: np.ndarray) -> float:
    mind = coreset_mod._initial_min_dist(pt, sqn, pt[:, torch.from_numpy(centres)])
    return math.sqrt(float(mind.max()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--d", type=int, default=1024)
    parser.add_argument("--projection-dim", type=int, default=128)
    parser.add_argument("--ratios", default="0.01,0.1", help="coreset sizes as fractions of N")
    parser.add_argument("--naive-steps", type=int, default=500, help="most naive steps timed")
    parser.add_argument("--no-radius", action="store_true", help="skip the random-subset radius")
    parser.add_argument("--quick", action="store_true", help="N = 20,000 and 200 naive steps")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.quick:
        args.n, args.naive_steps = 20_000, 200

    n, d, dp = args.n, args.d, min(args.projection_dim, args.d)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    t0 = time.perf_counter()
    features = make_features(n, d, args.seed)
    print(
        f"features: N = {n:,}, D = {d}, {features.nbytes / 2**20:.0f} MiB (made in {time.perf_counter() - t0:.1f} s)"
    )
    bandwidth = read_bandwidth()
    print(f"memory bandwidth (torch sum, read): {bandwidth / 1e9:.1f} GB/s")

    proj = random_projection(d, dp, args.seed)
    t0 = time.perf_counter()
    pt = coreset_mod._project(features, proj if dp < d else None, torch.device("cpu"), "features")
    t_project = time.perf_counter() - t0
    print(f"projection to d' = {dp}: {t_project:.2f} s")
    points = np.ascontiguousarray(pt.t().numpy())  # (N, d') row-major for the naive version
    sqn = (pt * pt).sum(dim=0)

    for ratio in [float(r) for r in args.ratios.split(",")]:
        k = max(1, round(ratio * n))
        print(f"\n== coreset {ratio:.1%}: k = {k:,} ==")
        t0 = time.perf_counter()
        ours = greedy_coreset(features, k, projection_dim=dp, seed=args.seed)
        t_ours = time.perf_counter() - t0
        t_loop = max(t_ours - t_project, 1e-9)
        bound = k * n * dp * 4 / bandwidth
        print(f"ours: {t_ours:.2f} s in all, {t_loop:.2f} s without the projection")
        print(
            f"bound k*N*d'*4B/bandwidth: {bound:.2f} s; ours (without projection) / bound: {t_loop / bound:.2f}x"
        )

        steps = min(k, args.naive_steps)
        naive, t_naive, differ, gap = naive_greedy(
            points.astype(np.float64), int(ours.indices[0]), steps, ours.indices
        )
        same = naive == ours.indices[:steps].tolist()
        t_naive_full = t_naive / steps * k
        how = "measured" if steps == k else f"extrapolated from {steps:,} steps"
        print(f"naive (float64): {t_naive_full:.1f} s ({how})")
        print(
            f"same indices as naive: {same} (first {steps:,} steps); steps where ours picks "
            f"another point: {differ}, largest relative distance gap there: {gap:.1e}"
        )
        print(f"speed-up over naive: {t_naive_full / t_ours:.1f}x")

        if not args.no_radius:
            rng = np.random.default_rng(args.seed + 1)
            random_centres = rng.choice(n, size=k, replace=False)
            r_random = covering_radius(pt, sqn, random_centres)
            print(
                f"covering radius: ours {ours.radius:.3f}, random subset {r_random:.3f}, "
                f"ours / random = {ours.radius / r_random:.2f}"
            )


if __name__ == "__main__":
    main()
