"""Benchmark: vectorised AUC-sPRO against a straightforward per-threshold loop.

Builds one synthetic category of 16-bit anomaly maps with ground-truth regions, runs
``auc_spro`` once, then evaluates the same final thresholds the plain way (for each threshold,
compare every map with it and count), and prints the time of both, their ratio and the largest
difference between the two curves and between the AUCs computed from them.

    python benchmarks/metrics.py            # 600 maps of 400x400 (like engine_wiring)
    python benchmarks/metrics.py --quick    # 60 maps of 200x200

The loop is given the final thresholds for free (it does not make the refinement decisions), so
its time is a lower bound for a loop-based implementation.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

import numpy as np

from fedpatch_app.metrics import FPR_LIMITS, auc_spro, capped_auc, limit_key


@dataclass
class Region:
    mask: np.ndarray
    defect: str
    saturation_area: int


def make_category(n_maps: int, size: int, seed: int):
    """Smooth noisy 16-bit maps; every third image has 1-3 round regions with raised scores."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    maps, regions = [], []
    for i in range(n_maps):
        base = 18000 + 6000 * np.sin(xx / 29.0 + i) * np.cos(yy / 37.0)
        m = base + rng.normal(0, 2500, (size, size))
        regs = []
        if i % 3 == 0:
            for k in range(1 + i % 3):
                cy, cx = rng.integers(size // 8, size - size // 8, 2)
                r = int(rng.integers(size // 40 + 2, size // 10 + 3))
                mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
                m[mask] += rng.normal(9000, 4000, int(mask.sum()))
                area = int(mask.sum())
                defect = ("missing", "fastening")[k % 2]
                sat = area // 2 if defect == "missing" else min(300, area)
                regs.append(Region(mask, defect, sat))
        maps.append(np.clip(m, 0, 65535).astype(np.uint16))
        regions.append(regs)
    return maps, regions


def loop_curve(maps, regions, thresholds):
    """For each threshold: threshold every map with numpy and count (no sorting, no histograms)."""
    stack = np.stack(maps)
    normal = np.ones(stack.shape, dtype=bool)
    region_list = []
    for i, regs in enumerate(regions):
        for r in regs:
            normal[i] &= ~r.mask
            region_list.append((i, r))
    n_normal = int(normal.sum())
    fpr = np.empty(len(thresholds))
    spro = np.empty(len(thresholds))
    for j, t in enumerate(thresholds):
        positive = stack > t
        fpr[j] = np.count_nonzero(positive & normal) / n_normal
        per_region = [
            min(np.count_nonzero(positive[i][r.mask]) / r.saturation_area, 1.0)
            for i, r in region_list
        ]
        spro[j] = np.mean(per_region)
    return fpr, spro


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="60 maps of 200x200")
    parser.add_argument("--maps", type=int, default=None, help="number of maps (default 600)")
    parser.add_argument("--size", type=int, default=None, help="map side (default 400)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    n_maps = args.maps or (60 if args.quick else 600)
    size = args.size or (200 if args.quick else 400)

    maps, regions = make_category(n_maps, size, args.seed)
    n_regions = sum(len(r) for r in regions)
    print(f"{n_maps} maps of {size}x{size} (uint16), {n_regions} regions")

    t0 = time.perf_counter()
    res = auc_spro(maps, regions)
    t_ours = time.perf_counter() - t0
    print(f"auc_spro (vectorised): {t_ours:.2f} s, {res.thresholds.size} thresholds")

    t0 = time.perf_counter()
    fpr, spro = loop_curve(maps, regions, res.thresholds)
    t_loop = time.perf_counter() - t0
    print(f"per-threshold loop on the same thresholds: {t_loop:.2f} s")
    print(f"speed ratio loop / vectorised: {t_loop / t_ours:.1f}x")

    print(f"max |fpr difference|:  {np.max(np.abs(fpr - res.fpr)):.2e}")
    print(f"max |sPRO difference|: {np.max(np.abs(spro - res.spro)):.2e}")
    worst = 0.0
    for limit in FPR_LIMITS:
        key = limit_key(limit)
        loop_auc = capped_auc(fpr, spro, limit)
        worst = max(worst, abs(loop_auc - res.auc[key]))
        print(f"  AUC-sPRO@{key:<4}  vectorised {res.auc[key]:.10f}  loop {loop_auc:.10f}")
    print(f"max |AUC difference|: {worst:.2e}")
    return 0 if worst < 1e-9 else 1


if __name__ == "__main__":
    raise SystemExit(main())
