"""evaluate_category and `fedpatch evaluate` on tiny synthetic AutoVI data."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from fedpatch_app.cli import main
from fedpatch_app.data.autovi import load_category
from fedpatch_app.errors import ModelError
from fedpatch_app.evaluation.evaluate import evaluate_category
from fedpatch_app.evaluation.export import fit_scaling, read_category_maps, write_category_maps
from fedpatch_app.evaluation.results import LIMIT_KEYS, load_curves, load_results

CATS = ("pipe_clip", "pipe_staple")  # the two smallest (400x400) categories


def _gt_maps(category, noise: float = 0.0, seed: int = 0) -> list[np.ndarray]:
    """Maps equal to the ground truth (1 inside a region, 0 elsewhere), or with ``noise``
    a weak signal (0.02 inside regions) under uniform noise in [0, noise)."""
    rng = np.random.default_rng(seed)
    width, height = category.size
    maps = []
    for sample in category.test:
        m = np.zeros((height, width), dtype=np.float32)
        for region in category.load_regions(sample):
            m[region.mask] = 0.02 if noise else 1.0
        if noise:
            m += rng.uniform(0.0, noise, size=m.shape).astype(np.float32)
        maps.append(m)
    return maps


def test_perfect_maps_score_one(tiny_root: Path) -> None:
    category = load_category(tiny_root, "pipe_clip")
    block, curves = evaluate_category(category, _gt_maps(category))
    assert block["auc_spro"] == {k: pytest.approx(1.0) for k in LIMIT_KEYS}
    assert block["image_auroc"]["mean"] == pytest.approx(1.0)
    assert block["image_auroc"]["pooled"] == pytest.approx(1.0)
    for defect in category.defect_types:
        assert block["image_auroc"][defect] == pytest.approx(1.0)
        assert block["auc_spro_per_defect"][defect]["0.05"] == pytest.approx(1.0)
    good = sum(1 for s in category.test if s.is_good)
    assert block["counts"] == {
        "train": len(category.train),
        "test_good": good,
        "test_defective": len(category.test) - good,
    }
    assert good > 0 and block["counts"]["test_defective"] > 0
    assert set(curves) == {"spro_fpr", "spro", "roc_fpr", "roc_tpr"}
    assert curves["spro_fpr"].min() == pytest.approx(0.0)
    assert curves["spro_fpr"].max() == pytest.approx(1.0)
    assert curves["spro"].max() == pytest.approx(1.0)


def test_uninformative_maps_score_low(tiny_root: Path) -> None:
    category = load_category(tiny_root, "pipe_clip")
    width, height = category.size
    maps = [np.zeros((height, width), dtype=np.float32) for _ in category.test]
    block, _ = evaluate_category(category, maps)
    # A constant map jumps from (FPR 0, sPRO 0) to (1, 1): the straight line between them.
    assert block["auc_spro"]["0.05"] == pytest.approx(0.025)
    assert block["auc_spro"]["1.0"] == pytest.approx(0.5)
    assert block["image_auroc"]["mean"] == pytest.approx(0.5)


def test_rejects_wrong_maps(tiny_root: Path) -> None:
    category = load_category(tiny_root, "pipe_clip")
    maps = _gt_maps(category)
    with pytest.raises(ModelError, match="anomaly maps for"):
        evaluate_category(category, maps[:-1])
    maps[0] = np.zeros((10, 10))
    with pytest.raises(ModelError, match="expected \\(height, width\\)"):
        evaluate_category(category, maps)


def _export(tiny_root: Path, maps_root: Path, noise: float) -> dict[str, list[np.ndarray]]:
    out = {}
    for name in CATS:
        category = load_category(tiny_root, name)
        maps = _gt_maps(category, noise=noise)
        write_category_maps(
            maps_root, category, category.test, maps, fit_scaling(maps), meta={"weights": "none"}
        )
        out[name] = maps
    return out


def test_cli_on_exported_perfect_maps(tiny_root: Path, tmp_path: Path, capsys) -> None:
    maps_root = tmp_path / "maps"
    _export(tiny_root, maps_root, noise=0.0)
    out = tmp_path / "eval"
    code = main(
        ["evaluate", "--data-root", str(tiny_root), "--maps", str(maps_root), "--out", str(out)]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "pipe_clip" in printed and "mean" in printed

    results = load_results(out)
    assert results["run"]["kind"] == "evaluate"
    assert results["run"]["weights"] == "none"
    assert list(results["categories"]) == list(CATS)  # found from <maps>/<cat>/test
    for name in CATS:
        block = results["categories"][name]
        assert block["auc_spro"] == {k: pytest.approx(1.0) for k in LIMIT_KEYS}
        assert block["image_auroc"]["mean"] == pytest.approx(1.0)
    assert results["mean"]["auc_spro"]["0.3"] == pytest.approx(1.0)

    curves = load_curves(out)
    assert set(curves) == set(CATS)
    assert set(curves["pipe_clip"]) == {"spro_fpr", "spro", "roc_fpr", "roc_tpr"}
    category = load_category(tiny_root, "pipe_clip")
    with (out / "scores" / "pipe_clip.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [r["rel_path"] for r in rows] == [s.rel_path for s in category.test]
    assert {float(r["score"]) for r in rows if r["defect"] == "good"} == {0.0}
    assert {float(r["score"]) for r in rows if r["defect"] != "good"} == {65535.0}


def test_cli_matches_evaluate_category_on_levels(tiny_root: Path, tmp_path: Path) -> None:
    """Noisy maps: the CLI scores the 16-bit levels exactly as evaluate_category does."""
    maps_root = tmp_path / "maps"
    _export(tiny_root, maps_root, noise=1.0)
    out = tmp_path / "eval"
    args = ["evaluate", "--data-root", str(tiny_root), "--maps", str(maps_root)]
    assert main([*args, "--out", str(out), "--categories", "pipe_staple", "--seed", "3"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert list(results["categories"]) == ["pipe_staple"]
    category = load_category(tiny_root, "pipe_staple")
    levels, _ = read_category_maps(maps_root, category)
    block, _ = evaluate_category(category, levels, seed=3)
    got = results["categories"]["pipe_staple"]
    assert got["auc_spro"] == pytest.approx(block["auc_spro"])
    assert got["image_auroc"] == pytest.approx(block["image_auroc"])
    assert 0.0 < got["auc_spro"]["0.05"] < 1.0


def test_cli_errors(tiny_root: Path, tmp_path: Path, capsys) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    args = ["evaluate", "--data-root", str(tiny_root), "--out", str(tmp_path / "o")]
    assert main([*args, "--maps", str(empty)]) == 2
    assert "holds no <category>/test folder" in capsys.readouterr().err

    maps_root = tmp_path / "maps"
    _export(tiny_root, maps_root, noise=0.0)
    victim = next((maps_root / "pipe_clip" / "test" / "good").glob("*.png"))
    victim.unlink()
    assert main([*args, "--maps", str(maps_root), "--categories", "pipe_clip"]) == 2
    assert f"{victim.name} is missing" in capsys.readouterr().err
    assert main([*args, "--maps", str(maps_root), "--categories", "tank_screw"]) == 2
