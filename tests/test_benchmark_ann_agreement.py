"""benchmarks/ann_agreement.py's summary: what it reports about the approximate search
against each reference (the measurement itself needs real features and minutes)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def agreement():
    sys.path.insert(0, str(REPO / "benchmarks"))
    path = REPO / "benchmarks/ann_agreement.py"
    spec = importlib.util.spec_from_file_location("ann_agreement_benchmark", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _kind(scores: list[float], threshold: float, auroc: float) -> dict:
    return {
        "scores": scores,
        "threshold": threshold,
        "image_auroc": [auroc],
        "auc_spro_0.05": [0.5],
        "auc_spro_0.3": [0.7],
        "search_seconds": 1.0,
    }


def test_summary_compares_the_approximate_search_with_each_reference(agreement) -> None:
    figures = [
        {
            "exact": _kind([1.0, 2.0, 3.0, 4.0], 2.5, 0.90),
            "remeasured": _kind([1.0, 2.0, 3.0, 4.0], 2.5, 0.91),
            "approximate": _kind([1.0, 2.0, 3.2, 4.0], 3.1, 0.88),
            "patches": 10,
            "patches_nearest_found": 9,
        }
    ]
    out = agreement.summary(figures)
    assert out["images"] == 4
    assert out["exact"]["scores_identical"] == 0.75
    assert out["exact"]["largest_relative_difference"] == pytest.approx(0.2 / 3.0)
    # 3.2 > 3.1 and 3.0 > 2.5: the same verdict; nothing else changes side
    assert out["exact"]["verdict_changes"] == 0
    # the approximate search's metric less the reference's, not the reference's own
    assert out["exact"]["mean_image_auroc_difference"] == pytest.approx(-0.02)
    assert out["remeasured"]["mean_image_auroc_difference"] == pytest.approx(-0.03)
    assert out["patches_nearest_found"] == 0.9
