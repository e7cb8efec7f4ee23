"""The metrics give the very same figures as the single-module implementation they came from.

The expected values below were recorded from the metrics before they were split into several
modules (``python tests/test_metrics_figures.py`` prints them). Every float is compared
exactly, and every curve by the SHA-256 of its float64 bytes: a refactoring that changes the
order of a sum shows up here even where the tolerances of the other metric tests hide it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from fedpatch_app.evaluation.metrics import (
    SproResult,
    auc_spro,
    auc_spro_from_statistics,
    image_auroc,
    image_scores,
    level_edges,
    roc_curve_points,
    spro_statistics,
    uniform_edges,
)


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


def _summary(res: SproResult) -> dict[str, Any]:
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
    edges = level_edges()
    half = len(maps) // 2
    merged = spro_statistics(maps[:half], regions[:half], edges).merge(
        spro_statistics(maps[half:], regions[half:], edges)
    )
    coarse = spro_statistics(floats, regions, uniform_edges(0.0, 1.0, 64))
    rng = np.random.default_rng(1)
    scores = np.concatenate([image_scores(maps), rng.integers(0, 6, size=40) * 700.0])
    defects = ["good" if not r else r[0].defect for r in regions]
    defects += rng.choice(["good", "crack", "dent"], size=40).tolist()
    fpr, tpr = roc_curve_points(scores, defects)
    return {
        "uint16": _summary(auc_spro(maps, regions)),
        "float64": _summary(auc_spro(floats, regions)),
        "float32": _summary(auc_spro([f.astype(np.float32) for f in floats], regions)),
        "subsampled": _summary(auc_spro(floats, regions, max_samples=800, seed=3)),
        "merged_statistics": _summary(auc_spro_from_statistics(merged)),
        "coarse_statistics": _summary(auc_spro_from_statistics(coarse)),
        "image_auroc": image_auroc(scores, defects),
        "roc": {"fpr": _digest(fpr), "tpr": _digest(tpr), "points": int(fpr.size)},
    }


EXPECTED: dict[str, Any] = {
    "coarse_statistics": {
        "auc": {
            "0.01": 0.34410714285714283,
            "0.05": 0.3895125318606627,
            "0.1": 0.43675236652928,
            "0.3": 0.6645027959596131,
            "1.0": 0.8980497144340602,
        },
        "fpr": "a38fee981cffa07b",
        "per_defect": {
            "crack": {
                "0.01": 0.28704761904761905,
                "0.05": 0.3387425658453695,
                "0.1": 0.378641789760463,
                "0.3": 0.6004594219579196,
                "1.0": 0.878402994115611,
            },
            "dent": {
                "0.01": 0.5139714285714285,
                "0.05": 0.5410531697341514,
                "0.1": 0.6136469552374461,
                "0.3": 0.858214042263122,
                "1.0": 0.9574642126789366,
            },
        },
        "points": 230,
        "spro": "63c9c98c3e80ecb8",
        "thresholds": "fdb4bc0896ca6316",
    },
    "float32": {
        "auc": {
            "0.01": 0.3625,
            "0.05": 0.3908748701973001,
            "0.1": 0.43828173676012455,
            "0.3": 0.6648896136206299,
            "1.0": 0.8982245424454829,
        },
        "fpr": "66e5d51c164b9fcb",
        "per_defect": {
            "crack": {
                "0.01": 0.3,
                "0.05": 0.33783316026306676,
                "0.1": 0.3783268431983385,
                "0.3": 0.6011212068766586,
                "1.0": 0.8786799065420562,
            },
            "dent": {
                "0.01": 0.55,
                "0.05": 0.5500000000000002,
                "0.1": 0.6192740286298568,
                "0.3": 0.8578306066802999,
                "1.0": 0.95734918200409,
            },
        },
        "points": 558,
        "spro": "173dd9155bd126f5",
        "thresholds": "cc36915de766a326",
    },
    "float64": {
        "auc": {
            "0.01": 0.3625,
            "0.05": 0.3908748701973001,
            "0.1": 0.43828173676012455,
            "0.3": 0.6648896136206299,
            "1.0": 0.8982245424454829,
        },
        "fpr": "3aad9f88e3218f33",
        "per_defect": {
            "crack": {
                "0.01": 0.3,
                "0.05": 0.33783316026306676,
                "0.1": 0.3783268431983385,
                "0.3": 0.6011212068766587,
                "1.0": 0.8786799065420562,
            },
            "dent": {
                "0.01": 0.55,
                "0.05": 0.5500000000000002,
                "0.1": 0.6192740286298568,
                "0.3": 0.8578306066802999,
                "1.0": 0.95734918200409,
            },
        },
        "points": 558,
        "spro": "173dd9155bd126f5",
        "thresholds": "30359fbb6a51da00",
    },
    "image_auroc": {
        "crack": 0.4673202614379085,
        "dent": 0.3504273504273505,
        "mean": 0.4088738059326295,
        "pooled": 0.4166666666666667,
    },
    "merged_statistics": {
        "auc": {
            "0.01": 0.3625,
            "0.05": 0.3908748701973001,
            "0.1": 0.43828173676012455,
            "0.3": 0.6648896136206299,
            "1.0": 0.8982245424454829,
        },
        "fpr": "b29c7045aeb1726c",
        "per_defect": {
            "crack": {
                "0.01": 0.3,
                "0.05": 0.33783316026306676,
                "0.1": 0.3783268431983385,
                "0.3": 0.6011212068766586,
                "1.0": 0.8786799065420562,
            },
            "dent": {
                "0.01": 0.55,
                "0.05": 0.5500000000000002,
                "0.1": 0.6192740286298568,
                "0.3": 0.8578306066802999,
                "1.0": 0.95734918200409,
            },
        },
        "points": 558,
        "spro": "173dd9155bd126f5",
        "thresholds": "16ec002efea763ba",
    },
    "roc": {"fpr": "9aa1433d931598b4", "points": 13, "tpr": "00eb7b94de5187b3"},
    "subsampled": {
        "auc": {
            "0.01": 0.3625,
            "0.05": 0.3908748701973001,
            "0.1": 0.43828173676012455,
            "0.3": 0.66488961362063,
            "1.0": 0.898224542445483,
        },
        "fpr": "dab6f1b16429d314",
        "per_defect": {
            "crack": {
                "0.01": 0.3,
                "0.05": 0.33783316026306687,
                "0.1": 0.3783268431983385,
                "0.3": 0.6011212068766585,
                "1.0": 0.8786799065420562,
            },
            "dent": {
                "0.01": 0.55,
                "0.05": 0.55,
                "0.1": 0.6192740286298568,
                "0.3": 0.8578306066802999,
                "1.0": 0.95734918200409,
            },
        },
        "points": 554,
        "spro": "44cacb406830a0d0",
        "thresholds": "bb68020cacbe1c4a",
    },
    "uint16": {
        "auc": {
            "0.01": 0.3625,
            "0.05": 0.3908748701973001,
            "0.1": 0.43828173676012455,
            "0.3": 0.6648896136206299,
            "1.0": 0.8982245424454829,
        },
        "fpr": "b29c7045aeb1726c",
        "per_defect": {
            "crack": {
                "0.01": 0.3,
                "0.05": 0.33783316026306676,
                "0.1": 0.3783268431983385,
                "0.3": 0.6011212068766586,
                "1.0": 0.8786799065420562,
            },
            "dent": {
                "0.01": 0.55,
                "0.05": 0.5500000000000002,
                "0.1": 0.6192740286298568,
                "0.3": 0.8578306066802999,
                "1.0": 0.95734918200409,
            },
        },
        "points": 558,
        "spro": "173dd9155bd126f5",
        "thresholds": "16ec002efea763ba",
    },
}


@pytest.fixture(scope="module")
def computed() -> dict[str, Any]:
    return figures()


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_figures_equal_the_recorded_ones(computed: dict[str, Any], name: str) -> None:
    assert computed[name] == EXPECTED[name]


if __name__ == "__main__":
    print(json.dumps(figures(), indent=2, sort_keys=True))
