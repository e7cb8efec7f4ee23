"""`fedpatch report`: Markdown tables and PNG plots for one or more run folders."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedpatch_app.cli import main
from fedpatch_app.data.autovi import CATEGORIES
from fedpatch_app.errors import ConfigError, DataError
from fedpatch_app.reports.report import write_report
from fedpatch_app.results.schema import build_results, category_block, write_curves, write_results

CATS = ("pipe_clip", "tank_screw")
LIMITS = ("0.01", "0.05", "0.1", "0.3", "1.0")


def _blocks(shift: float, cats=CATS, good: int = 4, defective: int = 2) -> dict[str, Any]:
    blocks = {}
    for i, cat in enumerate(cats):
        base = 0.5 + 0.1 * i + shift
        blocks[cat] = category_block(
            auc_spro={k: base + 0.05 * j for j, k in enumerate(LIMITS)},
            image_auroc={"mean": base + 0.2, "pooled": base + 0.15, "missing": base + 0.2},
            counts={"train": 10 + i, "test_good": good, "test_defective": defective},
            auc_spro_per_defect={"missing": dict.fromkeys(LIMITS, base)},
            bank_size=100 + i,
        )
    return blocks


def _curves(shift: float, cats=CATS) -> dict[str, Any]:
    fpr = np.concatenate([[0.0], np.geomspace(1e-4, 1.0, 30)])
    return {
        cat: {
            "spro_fpr": fpr,
            "spro": np.clip(fpr ** (0.3 - shift / 2), 0, 1),
            "roc_fpr": np.array([0.0, 0.0, 0.5, 1.0]),
            "roc_tpr": np.array([0.0, 0.5, 1.0, 1.0]),
        }
        for cat in cats
    }


def _make_run(
    folder: Path,
    kind: str,
    name: str,
    shift: float,
    *,
    curves: bool = True,
    used: dict[str, Any] | None = None,
    blocks: dict[str, Any] | None = None,
    config: dict[str, Any] | None = None,
    **extra: object,
) -> Path:
    """A run folder; ``used`` adds the newer ``run`` keys (features, data, status...)."""
    results = build_results(
        kind,
        name,
        config=config or {"seed": 0, "coreset_ratio": 0.1},
        weights="imagenet-v1",
        seconds={"total": 42.0, "fit": 30.0},
        categories=blocks or _blocks(shift),
        **extra,
    )
    results["run"].update(used or {})
    write_results(folder, results)
    if curves:
        write_curves(folder, _curves(shift))
    return folder


def _used(fingerprint: str, *, weights: str = "imagenet-v1", data: str = "autovi") -> dict:
    """The ``run`` keys a current run records: what it used."""
    return {
        "features": {
            "backbone": "wide_resnet50_2",
            "weights": weights,
            "random_weights": weights == "none",
            "fingerprint": fingerprint,
            "spec": {"backbone": "wide_resnet50_2", "weights": weights, "image_size": 128},
        },
        "data": {
            "kind": data,
            "synthetic": {"kind": "drawn", "scale": "tiny", "seed": 0}
            if data == "synthetic"
            else None,
            "root": "data/autovi",
            "categories": list(CATS),
        },
        "status": "completed",
    }


def _table_widths(text: str) -> list[int]:
    """Columns of every Markdown table (from its separator line)."""
    return [line.count("---") for line in text.splitlines() if line.startswith("|---")]


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

    # Runs (what each used) and warnings shown first.
    assert (
        "| 1 | fed5 (federated) | federated | not recorded | imagenet-v1 | not recorded |" in text
    )
    assert text.index("**WARNING (fed5 (federated)):** backbone weights unavailable") < text.index(
        "## Comparison across runs"
    )
    # Per-run category table with the mean row.
    assert "| category | AUC-sPRO@0.01 | AUC-sPRO@0.05 | AUC-sPRO@0.1 | AUC-sPRO@0.3 |" in text
    assert (
        "| pipe_clip † | 0.4500 | 0.5000 | 0.5500 | 0.6000 | 0.6500 | 0.6500 | 0.6000 "
        "| 10 | 4 | 2 |" in text
    )
    assert "| **mean** | **0.5000** |" in text
    # Comparison against the centralized run (not the first one).
    assert "Differences in brackets are to **central (centralized)**" in text
    assert "| pipe_clip † | 0.5000 (-0.0500) | 0.5500 |" in text
    # Extra sections rendered as tables.
    assert "### federated (fed5 (federated))" in text
    assert "| clients | 5 |" in text
    assert "| c0 | 3 |" in text
    assert "| category | bank_size |" in text and "| pipe_clip | 100 |" in text
    # What was used, for a file that predates the record of data and features.
    assert "| data | not recorded |" in text
    assert "| weights loaded | imagenet-v1 |" in text
    assert "| coreset_ratio | 0.1000 |" in text  # the settings as given
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


# --------------------------------------------------------------------------- features


def test_runs_of_different_features_are_refused(tmp_path: Path, capsys) -> None:
    central = _make_run(tmp_path / "c", "centralized", "c", 0.0, curves=False, used=_used("aa11"))
    fed = _make_run(tmp_path / "f", "federated", "f", 0.0, curves=False, used=_used("bb22"))
    with pytest.raises(ConfigError, match="different patch features") as err:
        write_report([central, fed], tmp_path / "out")
    message = str(err.value)
    assert "aa11" in message and "bb22" in message and "--allow-mixed" in message
    assert str(central) in message and str(fed) in message
    assert not (tmp_path / "out" / "report.md").exists()
    assert main(["report", str(central), str(fed), "--out", str(tmp_path / "cli")]) == 2
    assert "--allow-mixed" in capsys.readouterr().err


def test_allow_mixed_marks_the_features_in_every_table(tmp_path: Path) -> None:
    central = _make_run(tmp_path / "c", "centralized", "c", 0.0, curves=False, used=_used("aa11"))
    fed = _make_run(tmp_path / "f", "federated", "f", -0.1, curves=False, used=_used("bb22"))
    args = ["report", str(central), str(fed), "--out", str(tmp_path / "out"), "--allow-mixed"]
    assert main(args) == 0
    text = (tmp_path / "out" / "report.md").read_text()
    a, b = "c (centralized) [features A]", "f (federated) [features B]"
    assert "> **MIXED FEATURES:**" in text
    assert "| A | fingerprint aa11: wide_resnet50_2, weights imagenet-v1, 128 px | 1 |" in text
    assert f"| 1 | {a} |" in text and f"| 2 | {b} |" in text  # the runs table
    comparison = text[text.index("## Comparison across runs") : text.index("## Bar charts")]
    assert comparison.count(f"| category | {a} | {b} |") == 3  # every comparison table
    assert comparison.count("Runs of different features side by side") == 3
    assert f"## Run 1: {a}" in text and f"### Metrics per category ({b})" in text


def test_same_or_unrecorded_features_are_not_refused(tmp_path: Path) -> None:
    one = _make_run(tmp_path / "1", "centralized", "one", 0.0, curves=False, used=_used("aa11"))
    two = _make_run(tmp_path / "2", "federated", "two", 0.0, curves=False, used=_used("aa11"))
    old = _make_run(tmp_path / "3", "evaluate", "old", 0.0, curves=False)
    text = write_report([one, two], tmp_path / "same").read_text()
    assert "[features" not in text and "MIXED FEATURES" not in text
    # A run that recorded no fingerprint cannot be checked: shown, tagged "?".
    text = write_report([one, old], tmp_path / "unknown").read_text()
    assert "old (evaluate) [features ?]" in text and "one (centralized) [features A]" in text


# --------------------------------------------------------------------------- flags


@pytest.mark.parametrize("kind", ["centralized", "federated", "local-only", "evaluate"])
def test_synthetic_data_and_random_weights_are_flagged(tmp_path: Path, kind: str) -> None:
    synthetic = _make_run(
        tmp_path / "s", kind, "syn", 0.0, curves=False, used=_used("aa11", data="synthetic")
    )
    random = _make_run(
        tmp_path / "r",
        kind,
        "rnd",
        0.0,
        curves=False,
        used=_used("bb22", weights="none"),
        config={"weights": "imagenet", "seed": 0},
    )
    text = write_report([synthetic, random], tmp_path / "out", allow_mixed=True).read_text()
    first = text.splitlines()[0]
    assert first.startswith("> **WARNING: SYNTHETIC DATA, NOT AUTOVI in run 1;")
    assert "RANDOM BACKBONE WEIGHTS in run 2" in first
    section_1 = text[text.index("## Run 1:") : text.index("## Run 2:")]
    section_2 = text[text.index("## Run 2:") : text.index("## Heatmaps")]
    assert section_1.splitlines()[2].startswith("> **SYNTHETIC DATA:** ")
    assert "drawn, scale tiny, seed 0" in section_1 and "RANDOM WEIGHTS" not in section_1
    assert section_2.splitlines()[2].startswith("> **RANDOM WEIGHTS:** ")
    assert "| weights loaded | none (RANDOM) |" in section_2
    assert "| weights asked for | imagenet-v1 |" in section_2
    assert "| data | AutoVI |" in section_2 and "SYNTHETIC DATA" not in section_2


def test_older_results_are_flagged_too(tmp_path: Path) -> None:
    """A federated results file written before ``run.data``/``run.features`` existed."""
    config = {"weights": "imagenet", "dataset": "auto", "dataset_used": "synthetic", "seed": 0}
    run = _make_run(tmp_path / "old", "federated", "old", 0.0, curves=False, config=config)
    results = (run / "results.json").read_text().replace('"imagenet-v1"', '"none"')
    (run / "results.json").write_text(results)
    text = write_report([run], tmp_path / "out").read_text()
    assert text.startswith("> **WARNING: SYNTHETIC DATA, NOT AUTOVI in run 1; RANDOM BACKBONE")


def test_real_data_and_trained_weights_raise_no_flag(tmp_path: Path) -> None:
    run = _make_run(tmp_path / "ok", "centralized", "ok", 0.0, curves=False, used=_used("aa11"))
    text = write_report([run], tmp_path / "out").read_text()
    assert text.startswith("# fedpatch report")
    assert "SYNTHETIC" not in text and "RANDOM" not in text


# --------------------------------------------------------------------------- clients


ALL_CATS = CATEGORIES  # all six


def _client(pid: int) -> dict[str, Any]:
    """A client's record as the federated strategy writes it (six categories)."""
    per_cat = {c: 10 + pid + i for i, c in enumerate(ALL_CATS)}
    local: dict[str, float] = {}
    for c in ALL_CATS:
        local.update({f"{c}.auc_spro.{k}": 0.5 for k in LIMITS})
        local[f"{c}.image_auroc"] = 0.75
    return {
        "node_id": 1000 + pid,
        "partition_id": pid,
        "status": "evaluated",
        "dropped_in": None,
        "reason": None,
        "categories": list(ALL_CATS),
        "train_images": per_cat,
        "train_patches": {c: 64 * n for c, n in per_cat.items()},
        "coreset_rows": {c: 6 * n for c, n in per_cat.items()},
        "local_radius": {c: 1.5 for c in ALL_CATS},
        "test_images": {c: 4 for c in ALL_CATS},
        "bytes_up": {"train": 100, "evaluate": 10, "query": 1000},
        "bytes_down": {"train": 5, "evaluate": 500, "query": 6},
        "seconds": {"train_client": 2.0},
        "device": "cpu",
        "local_metrics": local,
    }


def test_clients_of_a_federated_run_in_one_table_per_topic(tmp_path: Path) -> None:
    run = _make_run(
        tmp_path / "fed",
        "federated",
        "fed",
        0.0,
        curves=False,
        blocks=_blocks(0.0, ALL_CATS),
        federated={"fingerprint": "aa11", "clients": [_client(p) for p in range(5)]},
    )
    text = write_report([run], tmp_path / "out").read_text()
    assert max(_table_widths(text)) <= 12  # was about 90 columns in one table
    for topic in (
        "Clients: status",
        "Clients: images per category (train / test)",
        "Clients: coreset per category (rows sent / training patches)",
        "Clients: local covering radius per category",
        "Clients: traffic and time",
        "Clients: own metrics on own test images",
    ):
        assert f"#### {topic} (fed (federated))" in text, topic
    assert "| client 0 (node 1000) | 10 / 4 | 11 / 4 | 12 / 4 |" in text
    assert "| client 4 (node 1004) | 84 / 896 |" in text
    assert "| client 2 (node 1002) | 100 | 10 | 1000 | 5 | 500 | 6 | 2.0000 |" in text
    assert "| client 1 (node 1001) | tank_screw | 4 | 0.5000 |" in text
    assert text.count("| client 3 (node 1003) | ") == 5 + 6  # five topic tables + six categories
    assert "local_metrics." not in text and "train_images." not in text


# --------------------------------------------------------------------------- small counts


def test_categories_with_few_test_images_carry_a_note(tmp_path: Path) -> None:
    blocks = _blocks(0.0)
    blocks["tank_screw"]["counts"].update(test_good=12, test_defective=10)
    run = _make_run(
        tmp_path / "r", "centralized", "r", 0.0, curves=False, blocks=blocks, used=_used("aa11")
    )
    text = write_report([run, run], tmp_path / "out").read_text()
    note = "† Few test images: pipe_clip (4 good, 2 defective). Below 10 good or 10 defective"
    assert text.count(note) == 3  # the comparison and each run's own table
    assert "| pipe_clip † |" in text and "| tank_screw † |" not in text
    assert "| tank_screw |" in text
    assert "Few test images in run 1 (r (centralized)): 4 good, 2 defective" in text


# --------------------------------------------------------------------------- sPRO legend


def test_spro_legend_does_not_cover_the_limit_labels(tmp_path: Path) -> None:
    from fedpatch_app.reports.plots import LABELLED_LIMITS, plot_spro
    from fedpatch_app.reports.runs import load_runs

    folders = [
        _make_run(tmp_path / f"r{i}", "federated", f"a-rather-long-run-name-{i}", -0.05 * i)
        for i in range(4)
    ]
    runs = load_runs(folders)
    fig = plot_spro("pipe_clip", runs, tmp_path / "spro.png")
    assert fig is not None and (tmp_path / "spro.png").stat().st_size > 1000
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()  # the layout of the saved PNG
    renderer = canvas.get_renderer()
    ax_lin = fig.axes[0]
    labels = [t for t in ax_lin.texts if re.fullmatch(r"FPR [\d.]+", t.get_text())]
    assert len(labels) == len(LABELLED_LIMITS)
    legends = [*fig.legends, *(ax.get_legend() for ax in fig.axes if ax.get_legend())]
    assert len(legends) == 1
    box = legends[0].get_window_extent(renderer)
    assert len(legends[0].get_texts()) == 4
    for label in labels:
        assert not box.overlaps(label.get_window_extent(renderer)), label.get_text()
    for ax in fig.axes:  # nor does it hide any curve
        assert not box.overlaps(ax.get_window_extent(renderer))


def test_report_heatmaps_from_exported_maps(tiny_root: Path, tmp_path: Path) -> None:
    from fedpatch_app.data.autovi import load_category
    from fedpatch_app.metrics.map_scaling import fit_scaling
    from fedpatch_app.results.official_maps import write_category_maps

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
    assert "| pipe_clip † | 1.0000 | 1.0000 |" in text  # the regions stand out of the noise
