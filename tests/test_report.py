"""`fedpatch report`: Markdown tables and PNG plots for one or more run folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedpatch_app.cli import main
from fedpatch_app.errors import DataError
from fedpatch_app.evaluation.report import write_report
from fedpatch_app.evaluation.results import (
    build_results,
    category_block,
    write_curves,
    write_results,
)

CATS = ("pipe_clip", "tank_screw")


def _make_run(
    folder: Path, kind: str, name: str, shift: float, *, curves: bool = True, **extra: object
) -> Path:
    blocks = {}
    all_curves = {}
    for i, cat in enumerate(CATS):
        base = 0.5 + 0.1 * i + shift
        blocks[cat] = category_block(
            auc_spro={
                k: base + 0.05 * j for j, k in enumerate(("0.01", "0.05", "0.1", "0.3", "1.0"))
            },
            image_auroc={"mean": base + 0.2, "pooled": base + 0.15, "missing": base + 0.2},
            counts={"train": 10 + i, "test_good": 4, "test_defective": 2},
            auc_spro_per_defect={
                "missing": {k: base for k in ("0.01", "0.05", "0.1", "0.3", "1.0")}
            },
            bank_size=100 + i,
        )
        fpr = np.concatenate([[0.0], np.geomspace(1e-4, 1.0, 30)])
        all_curves[cat] = {
            "spro_fpr": fpr,
            "spro": np.clip(fpr ** (0.3 - shift / 2), 0, 1),
            "roc_fpr": np.array([0.0, 0.0, 0.5, 1.0]),
            "roc_tpr": np.array([0.0, 0.5, 1.0, 1.0]),
        }
    results = build_results(
        kind,
        name,
        config={"seed": 0, "coreset_ratio": 0.1},
        weights="imagenet-v1",
        seconds={"total": 42.0, "fit": 30.0},
        categories=blocks,
        **extra,
    )
    write_results(folder, results)
    if curves:
        write_curves(folder, all_curves)
    return folder


def test_report_tables_and_plots(tmp_path: Path) -> None:
    fed = _make_run(
        tmp_path / "fed",
        "federated",
        "fed5",
        -0.05,
        warnings=["backbone weights unavailable: random weights used"],
        federated={
            "clients": 5,
            "rounds": 2,
            "per_client": {"c0": {"images": 3}, "c1": {"images": 4}},
        },
    )
    central = _make_run(tmp_path / "central", "centralized", "central", 0.0, curves=False)
    report = write_report([fed, central], tmp_path / "report")
    assert report == tmp_path / "report" / "report.md"
    text = report.read_text()

    # Runs and warnings shown first.
    assert "| 1 | fed5 (federated) | federated | imagenet-v1 |" in text
    assert text.index("**WARNING (fed5 (federated)):** backbone weights unavailable") < text.index(
        "## Comparison across runs"
    )
    # Per-run category table with the mean row.
    assert "| category | AUC-sPRO@0.01 | AUC-sPRO@0.05 | AUC-sPRO@0.1 | AUC-sPRO@0.3 |" in text
    assert (
        "| pipe_clip | 0.4500 | 0.5000 | 0.5500 | 0.6000 | 0.6500 | 0.6500 | 0.6000 | 10 | 4 | 2 |"
        in text
    )
    assert "| **mean** | **0.5000** |" in text
    # Comparison against the centralized run (not the first one).
    assert "Differences in brackets are to **central (centralized)**" in text
    assert "| pipe_clip | 0.5000 (-0.0500) | 0.5500 |" in text
    # Extra sections rendered as tables.
    assert "### federated (fed5 (federated))" in text
    assert "| clients | 5 |" in text
    assert "| c0 | 3 |" in text
    assert "| category | bank_size |" in text and "| pipe_clip | 100 |" in text
    # Curves missing for one run: said so.
    assert "central (centralized): curves not shown" in text
    # Heatmaps skipped with a note (no data root, no maps).
    assert "heatmaps skipped" in text

    plots = tmp_path / "report" / "plots"
    for name in ("bars.png", *(f"spro_{c}.png" for c in CATS), *(f"roc_{c}.png" for c in CATS)):
        assert (plots / name).stat().st_size > 1000, name
        assert f"plots/{name}" in text


def test_report_single_run_via_cli(tmp_path: Path) -> None:
    run = _make_run(tmp_path / "run", "local-only", "site-a", 0.0)
    assert main(["report", str(run), "--out", str(tmp_path / "out")]) == 0
    text = (tmp_path / "out" / "report.md").read_text()
    assert "## Comparison across runs" not in text
    assert "site-a (local-only)" in text
    assert (tmp_path / "out" / "plots" / "spro_pipe_clip.png").stat().st_size > 1000


def test_report_rejects_missing_results(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="results.json is missing"):
        write_report([tmp_path], tmp_path / "out")
    assert main(["report", str(tmp_path / "nope"), "--out", str(tmp_path / "out")]) == 2


def test_report_heatmaps_from_exported_maps(tiny_root: Path, tmp_path: Path) -> None:
    from fedpatch_app.data.autovi import load_category
    from fedpatch_app.evaluation.export import fit_scaling, write_category_maps

    category = load_category(tiny_root, "pipe_clip")
    width, height = category.size
    rng = np.random.default_rng(0)
    maps = []
    for sample in category.test:
        m = rng.uniform(0.0, 0.5, size=(height, width)).astype(np.float32)
        for region in category.load_regions(sample):
            m[region.mask] += 1.0
        maps.append(m)
    run = tmp_path / "run"
    write_category_maps(run / "maps", category, category.test, maps, fit_scaling(maps))
    args = ["--data-root", str(tiny_root), "--maps", str(run / "maps"), "--out", str(run)]
    assert main(["evaluate", *args]) == 0

    # The data root comes from results.json's config when --data-root is not given.
    report = write_report([run], tmp_path / "report")
    text = report.read_text()
    heatmap = tmp_path / "report" / "plots" / "heatmaps_1_pipe_clip.png"
    assert heatmap.stat().st_size > 10_000
    assert "plots/heatmaps_1_pipe_clip.png" in text
    assert "heatmaps skipped" not in text
    assert "| pipe_clip | 1.0000 | 1.0000 |" in text  # the regions stand out of the noise
