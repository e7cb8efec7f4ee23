"""Fairness numbers (spread across categories and clients) against hand computation,
bank budgets by need, the report's fairness table, and the privacy preset's summary."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from fedpatch_app.defences.bank_size import bank_budget
from fedpatch_app.errors import ConfigError
from fedpatch_app.metrics.fairness import fairness_block, spread
from fedpatch_app.results.schema import build_results, category_block, write_results


def _block(spro03: float, auroc: float) -> dict[str, Any]:
    return category_block(
        auc_spro={"0.01": 0.1, "0.05": 0.2, "0.1": 0.3, "0.3": spro03, "1.0": 0.9},
        image_auroc={"mean": auroc, "pooled": auroc},
        counts={"train": 10, "test_good": 4, "test_defective": 4},
    )


CATS = {
    "pipe_clip": _block(0.5, 0.9),
    "pipe_staple": _block(0.8, 0.7),
    "tank_screw": _block(0.2, 1.0),
}
CLIENTS = [
    {
        "node_id": 11,
        "partition_id": 0,
        "status": "evaluated",
        "local_metrics": {
            "pipe_clip.auc_spro.0.3": 0.4,
            "pipe_clip.auc_spro.0.05": 0.1,
            "pipe_staple.auc_spro.0.3": 0.6,
            "pipe_clip.image_auroc": 0.9,
        },
    },
    {
        "node_id": 12,
        "partition_id": 1,
        "status": "evaluated",
        "local_metrics": {"tank_screw.auc_spro.0.3": 0.1, "tank_screw.image_auroc": 0.5},
    },
    {"node_id": 13, "partition_id": 2, "status": "dropped", "local_metrics": {}},
]


def test_spread_matches_hand_computation() -> None:
    out = spread({"a": 0.5, "b": 0.8, "c": 0.2, "d": None, "e": float("nan")})
    mean = (0.5 + 0.8 + 0.2) / 3
    std = math.sqrt(((0.5 - mean) ** 2 + (0.8 - mean) ** 2 + (0.2 - mean) ** 2) / 3)
    assert out["n"] == 3
    assert (out["worst"], out["best"]) == ("c", "b")
    assert out["worst_value"] == 0.2 and out["best_value"] == 0.8
    assert out["gap"] == pytest.approx(0.6)
    assert out["mean"] == pytest.approx(mean)
    assert out["std"] == pytest.approx(std)
    assert spread({})["worst"] is None


def test_fairness_block_categories_and_clients() -> None:
    results = build_results(
        "federated",
        "t",
        config={},
        weights="none",
        seconds={},
        categories=CATS,
        federated={"clients": CLIENTS},
    )
    block = results["fairness"]
    spro = block["categories"]["auc_spro_0.3"]
    assert spro["worst"] == "tank_screw" and spro["gap"] == pytest.approx(0.6)
    auroc = block["categories"]["image_auroc"]
    assert auroc["worst"] == "pipe_staple" and auroc["gap"] == pytest.approx(0.3)
    assert auroc["std"] == pytest.approx(
        math.sqrt(((0.9 - 13 / 15) ** 2 + (0.7 - 13 / 15) ** 2 + (1.0 - 13 / 15) ** 2) / 3)
    )
    clients = block["clients"]["auc_spro_0.3"]
    # Client 0: mean of its two categories' AUC-sPRO@0.3 (0.4, 0.6); client 1: 0.1;
    # the dropped client counts for nothing.
    assert clients["values"] == {"client 0": pytest.approx(0.5), "client 1": pytest.approx(0.1)}
    assert clients["worst"] == "client 1" and clients["gap"] == pytest.approx(0.4)
    assert clients["std"] == pytest.approx(0.2)
    assert block["clients"]["image_auroc"]["values"] == {"client 0": 0.9, "client 1": 0.5}


def test_centralized_results_have_no_client_spread() -> None:
    results = build_results("centralized", "c", {}, "none", {}, CATS)
    block = results["fairness"]
    assert block["clients"] is None
    # AUC-sPRO@0.3: pipe_clip 0.5, pipe_staple 0.8, tank_screw 0.2; image AUROC 0.9, 0.7, 1.0.
    spro_std = math.sqrt((0.0**2 + 0.3**2 + 0.3**2) / 3)
    assert block["categories"]["auc_spro_0.3"] == {
        "n": 3,
        "worst": "tank_screw",
        "worst_value": 0.2,
        "best": "pipe_staple",
        "best_value": 0.8,
        "gap": pytest.approx(0.6),
        "std": pytest.approx(spro_std),
        "mean": pytest.approx(0.5),
    }
    auroc = block["categories"]["image_auroc"]
    assert (auroc["worst"], auroc["best"], auroc["n"]) == ("pipe_staple", "tank_screw", 3)
    assert auroc["gap"] == pytest.approx(0.3) and auroc["mean"] == pytest.approx(13 / 15)
    # A stored results.json without the block gets the same one from fairness_block.
    assert fairness_block({k: v for k, v in results.items() if k != "fairness"}) == block


def test_bank_budget_modes() -> None:
    patches = {"big": 9000, "mid": 4000, "small": 1000}
    volume = bank_budget(patches, 0.1, "volume")
    assert volume == {"big": 900, "mid": 400, "small": 100}
    equal = bank_budget(patches, 0.1, "equal")
    assert sum(equal.values()) == 1400
    assert sorted(equal.values()) == [466, 467, 467]
    root = bank_budget(patches, 0.1, "sqrt")
    assert sum(root.values()) == 1400
    # sqrt weights 3 : 2 : 1 (times sqrt(1000)): 700, 466.7, 233.3.
    assert root == {"big": 700, "mid": 467, "small": 233}
    assert volume["small"] < root["small"] < equal["small"]
    assert bank_budget({"only": 500}, 0.1, "equal") == {"only": 50}
    with pytest.raises(ConfigError):
        bank_budget(patches, 0.1, "lottery")


def test_report_shows_fairness(tmp_path: Path) -> None:
    from fedpatch_app.reports.report import write_report

    results = build_results(
        "federated",
        "t",
        config={},
        weights="none",
        seconds={},
        categories=CATS,
        federated={"clients": CLIENTS},
    )
    run = tmp_path / "run"
    write_results(run, results)
    report = write_report([run], tmp_path / "rep").read_text()
    assert "Fairness: spread across categories and clients" in report
    assert "tank_screw (0.2000)" in report
    assert "client 1 (0.1000)" in report


def test_privacy_preset_and_its_summary(tmp_path: Path) -> None:
    from fedpatch_app.experiment import load_preset
    from fedpatch_app.experiment.sections import privacy_section

    preset = load_preset("privacy")
    assert preset.sweep is not None and preset.budget_study is not None
    assert preset.sweep.key == "dp_epsilon"
    assert preset.sweep.values == (0.5, 1, 2, 4, 8, 16, 0)
    assert preset.budget_study.budgets == ("volume", "equal", "sqrt")
    dirs = {}
    for eps, spro in ((1.0, 0.2), (4.0, 0.4), (0.0, 0.6)):
        results = build_results(
            "federated",
            f"e{eps}",
            {},
            "none",
            {},
            {"pipe_clip": _block(spro, 0.8)},
            privacy={"spent": {"epsilon": eps, "epsilon_exact": eps / 2, "delta": 1e-5}}
            if eps
            else {"spent": None},
            federated={
                "banks": {
                    "pipe_clip": {
                        "size": 40,
                        **(
                            {"dp": {"clusters_kept": int(10 * eps), "public_centres": 30}}
                            if eps
                            else {}
                        ),
                    }
                }
            },
        )
        dirs[eps] = tmp_path / f"e{eps}"
        write_results(dirs[eps], results)
    lines = privacy_section(tmp_path, preset.sweep, dirs)
    table = [line for line in lines if line.startswith("| ")]
    assert table[1] == "| 1 | 1.0000 | 0.5000 | 1e-05 | 0.2000 | 0.8000 | 40 | 10 / 30 |"
    assert table[-1] == "| no DP | - | - | - | 0.6000 | 0.8000 | 40 | - |"
    assert (tmp_path / "plots" / "privacy_utility.png").stat().st_size > 1000


def test_unequal_view(tmp_path: Path) -> None:
    from fedpatch_app.data.synthetic import generate
    from fedpatch_app.experiment.views import unequal_view

    root = tmp_path / "data"
    generate(root, "tiny", 0, ["pipe_clip", "pipe_staple"], kind="drawn")
    view, smallest = unequal_view(root, tmp_path / "view", 0.25)
    assert smallest == "pipe_staple"
    full = len(list((root / "pipe_staple" / "train" / "good").iterdir()))
    kept = len(list((view / "pipe_staple" / "train" / "good").iterdir()))
    assert kept == math.ceil(0.25 * full) and kept < full
    assert len(list((view / "pipe_clip" / "train" / "good").iterdir())) == len(
        list((root / "pipe_clip" / "train" / "good").iterdir())
    )
    assert (view / "pipe_staple" / "test").is_dir()
