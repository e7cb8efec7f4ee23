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
from fedpatch_app.metrics.evaluate import evaluate_category
from fedpatch_app.metrics.map_scaling import fit_scaling
from fedpatch_app.results.official_maps import write_category_maps
from fedpatch_app.results.schema import LIMIT_KEYS, load_curves, load_results

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


def _three_level_maps(category) -> list[np.ndarray]:
    """Maps whose every score is 0, 0.5 or 1: of each region a quarter at 1, a quarter at
    0.5, the rest at 0; normal pixels at 1 (good image 0, FPR about 0.005) and at 0.5 (good
    image 1 and defective image 0, FPR about 0.03), so that the FPR limits fall inside
    sloped segments; the regions of the last defective image wholly at 0.5 (its score
    ties good image 1's)."""
    width, height = category.size
    good = [i for i, s in enumerate(category.test) if s.is_good]
    defective = [i for i, s in enumerate(category.test) if not s.is_good]
    maps = []
    for i, sample in enumerate(category.test):
        m = np.zeros((height, width), dtype=np.float32)
        if i == good[0]:
            m[:80, :80] = 1.0
        if i == good[1]:
            m[-190:, -200:] = 0.5
        normal = np.ones((height, width), dtype=bool)
        for region in category.load_regions(sample):
            normal &= ~region.mask
            pixels = np.flatnonzero(region.mask)
            if i == defective[-1]:
                m.flat[pixels] = 0.5
            else:
                m.flat[pixels[: len(pixels) // 2]] = 0.5
                m.flat[pixels[: len(pixels) // 4]] = 1.0
        if i == defective[0]:
            m.flat[np.flatnonzero(normal)[:300]] = 0.5
        maps.append(m)
    return maps


def _area_to(points: list[tuple[float, float]], limit: float) -> float:
    """Trapezoidal area under a polyline of (FPR, sPRO) points from FPR 0 to `limit`,
    the last point linearly interpolated, divided by `limit`."""
    area = 0.0
    for (x0, y0), (x1, y1) in zip(points, points[1:], strict=False):
        if x1 <= limit:
            area += (x1 - x0) * (y0 + y1) / 2
            continue
        if x0 < limit:
            y_at = y0 + (y1 - y0) * (limit - x0) / (x1 - x0)
            area += (limit - x0) * (y0 + y_at) / 2
        break
    return area / limit


def _expected_auc_spro(category, maps, defect: str | None = None) -> dict[str, float]:
    """AUC-sPRO by brute force: between the levels 0, 0.5 and 1 the curve has only the
    points at thresholds 0.75 and 0.25, plus (0, 0) and (1, 1). With `defect`: the good
    images and those showing that defect; sPRO over that defect's regions only."""
    fp = {0.75: 0, 0.25: 0}
    covered: dict[float, list[float]] = {0.75: [], 0.25: []}
    n_normal = 0
    for sample, m in zip(category.test, maps, strict=True):
        regions = category.load_regions(sample)
        if defect is not None and regions and defect not in {r.defect for r in regions}:
            continue
        normal = np.ones(m.shape, dtype=bool)
        for r in regions:
            normal &= ~r.mask
        n_normal += int(normal.sum())
        for t in fp:
            fp[t] += int((normal & (m > t)).sum())
            for r in regions:
                if defect is None or r.defect == defect:
                    covered[t].append(min(int((r.mask & (m > t)).sum()) / r.saturation_area, 1))
    points = [(0.0, 0.0)] + [(fp[t] / n_normal, float(np.mean(covered[t]))) for t in fp]
    points.append((1.0, 1.0))
    return {k: _area_to(points, float(k)) for k in LIMIT_KEYS}


def _mann_whitney(pos: list[float], neg: list[float]) -> float:
    return float(np.mean([1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg]))


def test_cli_scores_exported_maps_as_computed_by_hand(tiny_root: Path, tmp_path: Path) -> None:
    """`fedpatch evaluate` on exported 16-bit maps of three score levels against AUC-sPRO
    and image AUROC computed here by brute force from the maps and the ground truth."""
    category = load_category(tiny_root, "pipe_clip")
    maps = _three_level_maps(category)
    maps_root = tmp_path / "maps"
    write_category_maps(maps_root, category, category.test, maps, fit_scaling(maps), meta={})
    out = tmp_path / "eval"
    args = ["evaluate", "--data-root", str(tiny_root), "--maps", str(maps_root), "--out", str(out)]
    assert main([*args, "--categories", "pipe_clip"]) == 0
    got = json.loads((out / "results.json").read_text())["categories"]["pipe_clip"]

    expected = _expected_auc_spro(category, maps)
    assert got["auc_spro"] == pytest.approx(expected, abs=1e-12)
    assert 0.0 < expected["0.01"] < expected["0.05"] < expected["1.0"] < 1.0  # sloped segments
    assert set(got["auc_spro_per_defect"]) == set(category.defect_types)
    for defect in category.defect_types:
        want = _expected_auc_spro(category, maps, defect)
        assert got["auc_spro_per_defect"][defect] == pytest.approx(want, abs=1e-12)

    scores = {s.rel_path: float(m.max()) for s, m in zip(category.test, maps, strict=True)}
    good = [v for k, v in scores.items() if k.startswith("test/good/")]
    per = {
        d: _mann_whitney([v for k, v in scores.items() if k.startswith(f"test/{d}/")], good)
        for d in category.defect_types
    }
    assert 0.0 < min(per.values()) < 1.0  # the ties and the high good image count
    pooled = _mann_whitney([v for k, v in scores.items() if "/good/" not in k], good)
    assert got["image_auroc"] == pytest.approx(
        {**per, "mean": float(np.mean(list(per.values()))), "pooled": pooled}, abs=1e-12
    )


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
