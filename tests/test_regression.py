"""Same seed, same data, same figures: banks and metrics against values recorded earlier.

The data come from `tests/regression_data.py` (a fixed recipe, independent of the
project's synthetic generator). `tests/data/regression_figures.json` holds the bank
hashes and metrics the pipeline gave when the figures were recorded; a refactoring that
changes any of them fails here. A deliberate change of the pipeline updates that file in
the same commit and says why.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import regression_data
import torch

from fedpatch_app.centralized import run_centralized
from fedpatch_app.federated.inprocess import run_inprocess
from fedpatch_app.settings import from_names

FIGURES = Path(__file__).parent / "data" / "regression_figures.json"


def _bank_hash(path: Path) -> str:
    with np.load(path, allow_pickle=False) as data:
        features = np.ascontiguousarray(data["features"], dtype=np.float32)
    return hashlib.sha256(features.tobytes()).hexdigest()


def _figures(run_dir: Path, results: dict) -> dict:
    return {
        cat: {
            "auc_spro": block["auc_spro"],
            "image_auroc": block["image_auroc"]["mean"],
            "bank_sha256": _bank_hash(run_dir / "model" / "banks" / f"{cat}.npz"),
        }
        for cat, block in results["categories"].items()
    }


@pytest.fixture(scope="module")
def figures(tmp_path_factory: pytest.TempPathFactory) -> dict:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        root = regression_data.write(tmp_path_factory.mktemp("regression_data"))
        out = tmp_path_factory.mktemp("regression_runs")
        settings = from_names(
            {
                "data_root": str(root),
                "weights": "none",
                "image_size": 64,
                "device": "cpu",
                "calibration_fraction": 0.0,
            }
        )
        central = run_centralized(settings, out / "central")
        config = {
            "dataset": "autovi",
            "data-root": str(root),
            "partition": "iid",
            "num-clients": 3,
            "min-clients": 3,
            "weights": "none",
            "image-size": 64,
            "device": "cpu",
            "out-dir": str(out),
            "run-name": "fed",
            "wait-timeout": 0,
            "calibration-fraction": 0.0,
        }
        federated = run_inprocess(config)
    finally:
        torch.set_num_threads(threads)
    return {
        "centralized": _figures(out / "central", central),
        "federated": _figures(out / "fed", federated.results),
    }


@pytest.mark.parametrize("kind", ["centralized", "federated"])
def test_banks_and_metrics_match_the_recorded_figures(figures: dict, kind: str) -> None:
    recorded = json.loads(FIGURES.read_text(encoding="utf-8"))[kind]
    got = figures[kind]
    assert sorted(got) == sorted(recorded)
    for cat, want in recorded.items():
        assert got[cat]["bank_sha256"] == want["bank_sha256"], f"{kind} {cat}: bank changed"
        assert got[cat]["image_auroc"] == pytest.approx(want["image_auroc"], abs=1e-12)
        for limit, value in want["auc_spro"].items():
            assert got[cat]["auc_spro"][limit] == pytest.approx(value, abs=1e-12), (
                f"{kind} {cat}: AUC-sPRO@{limit} changed"
            )
