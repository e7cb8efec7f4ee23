"""The metrics give the very same figures as the single-module implementation they came from.

The expected values (``data/metrics_figures.json``) were recorded from the metrics before they
were split into several modules (``python tests/test_metrics_figures.py`` prints them). Every
float is compared exactly, and every curve by the SHA-256 of its float64 bytes: a refactoring
that changes the order of a sum shows up here even where the tolerances of the other metric
tests hide it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedpatch_app import metrics


@dataclass
class Reg:
    """The three fields the metrics read from a ground-truth region."""

    mask: np.ndarray
    defect: str
    saturation_area: int


def _case(seed: int) -> tuple[list[np.ndarray], list[list[Reg]]]:
    """Eight 16-bit maps, five of them with regions of two defect types (some overlapping)."""
    rng = np.random.default_rng(seed)
    maps: list[np.ndarray] = []
    regions: list[list[Reg]] = []
    for i in range(8):
        m = rng.integers(0, 3000, size=(24, 28)).astype(np.uint16)
        regs: list[Reg] = []
        for k in range(i % 3 if i >= 3 else 0):
            mask = np.zeros(m.shape, dtype=bool)
            mask[3 + 7 * k : 9 + 7 * k, i : i + 10] = True
            m[mask] += rng.integers(0, 1200, size=int(mask.sum())).astype(np.uint16)
            name = ("crack", "dent")[k % 2]
            regs.append(Reg(mask, name, max(1, int(mask.sum()) // (2 + k))))
        maps.append(m)
        regions.append(regs)
    return maps, regions


def _digest(array: np.ndarray) -> str:
    data = np.ascontiguousarray(np.asarray(array, dtype=np.float64))
    return hashlib.sha256(data.tobytes()).hexdigest()[:16]


def _summary(res: metrics.SproResult) -> dict[str, Any]:
    return {
        "auc": res.auc,
        "per_defect": res.per_defect,
        "points": int(res.fpr.size),
        "fpr": _digest(res.fpr),
        "spro": _digest(res.spro),
        "thresholds": _digest(res.thresholds),
    }


def figures() -> dict[str, Any]:
    """Every public metric on fixed inputs: level maps, float maps, statistics, image level."""
    maps, regions = _case(0)
    floats = [m.astype(np.float64) / 7000.0 for m in maps]
    edges = metrics.level_edges()
    half = len(maps) // 2
    merged = metrics.spro_statistics(maps[:half], regions[:half], edges).merge(
        metrics.spro_statistics(maps[half:], regions[half:], edges)
    )
    coarse = metrics.spro_statistics(floats, regions, metrics.uniform_edges(0.0, 1.0, 64))
    rng = np.random.default_rng(1)
    scores = np.concatenate([metrics.image_scores(maps), rng.integers(0, 6, size=40) * 700.0])
    defects = ["good" if not r else r[0].defect for r in regions]
    defects += rng.choice(["good", "crack", "dent"], size=40).tolist()
    fpr, tpr = metrics.roc_curve_points(scores, defects)
    return {
        "uint16": _summary(metrics.auc_spro(maps, regions)),
        "float64": _summary(metrics.auc_spro(floats, regions)),
        "float32": _summary(metrics.auc_spro([f.astype(np.float32) for f in floats], regions)),
        "subsampled": _summary(metrics.auc_spro(floats, regions, max_samples=800, seed=3)),
        "merged_statistics": _summary(metrics.auc_spro_from_statistics(merged)),
        "coarse_statistics": _summary(metrics.auc_spro_from_statistics(coarse)),
        "image_auroc": metrics.image_auroc(scores, defects),
        "roc": {"fpr": _digest(fpr), "tpr": _digest(tpr), "points": int(fpr.size)},
    }


#: Recorded from the single-module metrics (``python tests/test_metrics_figures.py``).
FIGURES_FILE = Path(__file__).parent / "data" / "metrics_figures.json"
EXPECTED: dict[str, Any] = json.loads(FIGURES_FILE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def computed() -> dict[str, Any]:
    return figures()


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_figures_equal_the_recorded_ones(computed: dict[str, Any], name: str) -> None:
    assert computed[name] == EXPECTED[name]


if __name__ == "__main__":
    print(json.dumps(figures(), indent=2, sort_keys=True))
