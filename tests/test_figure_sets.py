"""benchmarks/figures.py's registry (figure_sets.py, figure_tables.py): the tables it
renders, the values it reads from each command's output, and the docs' markers against
both (nothing is run: the sets' commands take minutes to hours)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from fedpatch_app.data.autovi import CATEGORIES
from fedpatch_app.metrics.fairness import fairness_block

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import figure_markers as fm  # noqa: E402
import figure_sets as fs  # noqa: E402
import figure_tables as ft  # noqa: E402

# ---------------------------------------------------------------------- renderers


def _stage1_values() -> fs.Values:
    values: fs.Values = {}
    for i, (_, run) in enumerate(ft.STAGE1_RUNS):
        for lim in ft.LIMITS:
            values[f"{run}/mean/auc_spro_{lim}"] = 0.8 - 0.008 * i
        values[f"{run}/mean/image_auroc"] = 0.9 - 0.015 * i
        values[f"{run}/pipe_clip/auc_spro_0.3"] = 0.5 + 0.1 * i
        values[f"{run}/pipe_clip/image_auroc"] = 0.7
    return values


def test_the_means_table_has_a_row_per_run_in_the_docs_layout() -> None:
    lines = ft.means_table()(_stage1_values())
    assert lines[0] == "| run | AUC-sPRO@0.01 | @0.05 | @0.1 | @0.3 | @1.0 | image AUROC |"
    assert lines[1] == "|---|---|---|---|---|---|---|"
    assert lines[3] == "| federated IID | 0.7920 | 0.7920 | 0.7920 | 0.7920 | 0.7920 | 0.8850 |"
    assert len(lines) == 6


def test_the_gap_table_marks_a_missed_target() -> None:
    lines = ft.gaps_table(_stage1_values())
    assert (
        lines[2]
        == "| federated non-IID | -0.0160 | **-0.0300** | AUC-sPRO yes, image AUROC **no** |"
    )
    assert lines[3] == "| federated IID | -0.0080 | -0.0150 | yes |"
    assert lines[4] == "| local-only | -0.0240 | -0.0450 | (the reason to federate) |"


def test_the_per_category_table_gives_gaps_to_centralized() -> None:
    lines = ft.metric_table("auc_spro_0.3")(_stage1_values())
    assert (
        lines[2]
        == "| pipe_clip | 0.5000 | 0.6000 (+0.1000) | 0.7000 (+0.2000) | 0.8000 (+0.3000) |"
    )
    assert lines[3].startswith("| **mean** | 0.8000 | 0.7920 (-0.0080) |")


# ---------------------------------------------------------------------- readers


def _results(auc: float, kind: str = "federated") -> dict:
    block = {"auc_spro": {"0.3": auc / 2}, "image_auroc": {"mean": 0.9}}
    out = {
        "run": {"kind": kind, "seconds": {"total": 12.5}},
        "mean": {"auc_spro": {"0.3": auc}, "image_auroc": 0.9},
        "categories": {"pipe_clip": block},
    }
    if kind == "federated":
        out["federated"] = {
            "bytes": {
                "train_up_total": 2_000_000,
                "query_up_total": 500_000,
                "train_down_total": 10,
            },
            "banks": {"pipe_clip": {"size": 45, "covering_radius": 7.5}},
        }
    return out


def test_an_experiment_folder_gives_each_runs_values_and_gaps(tmp_path: Path) -> None:
    for name, auc in (("centralized", 0.80), ("federated-iid", 0.78)):
        (tmp_path / name).mkdir()
        kind = "centralized" if name == "centralized" else "federated"
        (tmp_path / name / "results.json").write_text(json.dumps(_results(auc, kind)))
    v = ft.read_experiment(tmp_path)
    assert v["federated-iid/mean/auc_spro_0.3"] == 0.78
    assert v["federated-iid/gap/auc_spro_0.3"] == pytest.approx(-0.02)
    assert v["federated-iid/pipe_clip/gap/auc_spro_0.3"] == pytest.approx(-0.01)
    assert v["federated-iid/bytes_up_mb"] == 2.5
    assert v["federated-iid/pipe_clip/bank_radius"] == 7.5
    assert v["centralized/seconds"] == 12.5
    assert "centralized/gap/auc_spro_0.3" not in v


def test_a_runs_fairness_block_gives_worst_members_and_spreads(tmp_path: Path) -> None:
    from fedpatch_app.metrics.fairness import spread

    results = _results(0.78)
    cats = spread({"pipe_clip": 0.61, "tank_screw": 0.52})
    clients = {**spread({"client 0": 0.7, "client 3": 0.9}), "values": {}}
    results["fairness"] = {
        "categories": {"auc_spro_0.3": cats, "image_auroc": cats},
        "clients": {"auc_spro_0.3": clients},
    }
    (tmp_path / "federated-iid").mkdir()
    (tmp_path / "federated-iid" / "results.json").write_text(json.dumps(results))
    v = ft.read_experiment(tmp_path)
    key = "federated-iid/fairness"
    assert v[f"{key}/categories/auc_spro_0.3/worst/tank_screw"] == 0.52
    assert v[f"{key}/categories/auc_spro_0.3/std"] == pytest.approx(0.045)
    assert v[f"{key}/clients/auc_spro_0.3/worst/client-0"] == 0.7
    assert v[f"{key}/clients/auc_spro_0.3/gap"] == pytest.approx(0.2)
    lines = ft.fairness_table(v)
    assert lines[3] == (
        "| federated IID | tank_screw 0.5200 | tank_screw 0.5200 | 0.0450 | client-0 0.7000 | 0.1000 |"
    )
    assert lines[2] == "| centralized | - | - | - | - | - |"


def test_a_poisoning_json_gives_per_scenario_and_category_values(tmp_path: Path) -> None:
    check = {"attacker_gain": 0.194, "honest_gain_max": 0.05, "flagged": [0]}
    cat = {
        "auc_spro_0.3": 0.115,
        "image_auroc": 0.667,
        "quarantined_attacker": 358,
        "quarantined_honest": 0,
        "rows_honest": 1485,
        "source_check": check,
    }
    data = {
        "poison-on": {
            "categories": {"pipe_staple": cat},
            "flagged": ["x"],
            "dropped": [],
            "seconds": 20.1,
        },
        "steal-off": {"failed": "boom", "seconds": 3.0},
    }
    path = tmp_path / "p.json"
    path.write_text(json.dumps(data))
    v = ft.read_poisoning(path)
    assert v["poison-on/pipe_staple/auc"] == 0.115
    assert v["poison-on/pipe_staple/left_out"] == 358
    assert v["poison-on/pipe_staple/honest_rows"] == 1485
    assert v["poison-on/pipe_staple/gain"] == 0.194
    assert v["poison-on/pipe_staple/flagged"] == 1
    assert (v["poison-on/failed"], v["steal-off/failed"]) == (0.0, 1.0)


def test_printed_speed_figures_are_read() -> None:
    text = (
        "ours vs reference: 9.4x faster; vs plain: 5.6x faster\n"
        "bare forward :    1.90 images/s (best of 2)\n"
        "predict      :    1.40 images/s (best of 2)\n"
        "predict torch:    1.10 images/s (best of 2)\n"
        "ratio predict / bare forward: 2.71x (target)\n"
        "predict's time: extraction 9.00 s (75%), kNN 1.00 s (8%), maps 2.00 s (17%)\n"
        "HTTP overhead, 1 client : p50 1.01x the library"
    )
    assert ft.read_printed(text) == {
        "ours_vs_reference": 9.4,
        "bare_forward_images_s": 1.9,
        "predict_images_s": 1.4,
        "predict_vs_forward": 2.71,
        "extraction_share": 75.0,
        "knn_share": 8.0,
        "http_p50_vs_library": 1.01,
    }
    table = (
        "| train images | x |\n|---|\n"
        "| 52 | 160 | 100 | 0.62 | 1 | 2 | 172.2 | 3 | 4 | 5 | 6 | 7 | 1.00 |\n"
        "| 513 | 269 | 253 | 0.94 | 1 | 2 | 28.5 | 3 | 4 | 5 | 6 | 7 | 1.00 |\n"
        "| train images | run | seconds per phase |\n|---|---|---|\n"
        "| 513 | federated | train 200, merge 10 |\n"
        "server peak growth from 52 to 513 training images: 64 MiB = 2.8 x the largest bank"
    )
    assert ft.read_scale_table(table) == {
        "train_images": 513.0,
        "fed_vs_central_time": 0.94,
        "server_above_idle_vs_bank": 28.5,
        "coresets_vs_banks": 2.0,
        "server_growth_vs_bank": 2.8,
    }


# ---------------------------------------------------------------------- the docs


def test_every_marker_in_the_docs_names_a_registered_set_and_table() -> None:
    paths = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
    for path in paths:
        figures, blocks = fm.parse(path.read_text(encoding="utf-8"), path.name)
        for f in figures:
            assert f.set in fs.SETS, f"{path.name}:{f.line}: unknown figure set {f.set}"
        for b in blocks:
            assert b.set in fs.SETS, f"{path.name}:{b.first}: unknown figure set {b.set}"
            assert b.table in fs.SETS[b.set].tables, f"{path.name}:{b.first}: {b.table}?"


def test_every_derived_set_needs_registered_sets_and_every_set_can_be_read() -> None:
    for s in fs.SETS.values():
        assert all(n in fs.SETS for n in s.needs), s.name
        assert (s.derive is None) == (s.read is not None), s.name
        assert bool(s.commands) == (s.read is not None), s.name


# ---------------------------------------------------------------------- every marked key


EXPERIMENT_RUNS = (
    "centralized",
    "federated-iid",
    "federated-noniid",
    "local-only",
    "federated-category-oversample-1",
    "federated-category-oversample-4",
)


def _fake_results(run: str) -> dict:
    """A results.json of the form the runs write, every figure 0.5."""
    lims = dict.fromkeys(ft.LIMITS, 0.5)
    block = {"auc_spro": lims, "image_auroc": {"mean": 0.5}, "bank": {"size": 9, "radius": 1.0}}
    out = {
        "run": {"seconds": {"total": 1.0}},
        "mean": {"auc_spro": lims, "image_auroc": 0.5},
        "categories": dict.fromkeys(CATEGORIES, block),
    }
    if run.startswith("federated"):
        out["federated"] = {"bytes": {"train_up_total": 1, "train_down_total": 1}, "banks": {}}
    out["fairness"] = fairness_block(out)
    return out


#: benchmarks/poisoning.py's scenarios.
SCENARIOS = ("honest", "poison", "poison-own", "inflate", "extreme", "steal", "impersonate")


def _fake_poisoning(path: Path) -> None:
    """poisoning.py's --json for every scenario, with and without defences."""
    check = {"attacker_gain": 0.1, "honest_gain_max": 0.0, "flagged": []}
    cat = {
        "auc_spro_0.3": 0.5,
        "image_auroc": 0.5,
        "quarantined_attacker": 0,
        "quarantined_honest": 0,
        "rows_honest": 9,
        "source_check": check,
    }
    runs = {
        f"{s}-{d}": {"categories": {"pipe_clip": cat, "pipe_staple": cat}, "seconds": 1.0}
        for s in SCENARIOS
        for d in ("on", "off")
    }
    path.write_text(json.dumps(runs), encoding="utf-8")


def _fake_outputs(s: fs.FigureSet, work: Path) -> None:
    """What the set's commands leave in its work folder, in the form they write it."""
    for run in EXPERIMENT_RUNS:
        (work / "stage1" / run).mkdir(parents=True)
        (work / "stage1" / run / "results.json").write_text(json.dumps(_fake_results(run)))
    for run in ("centralized", "federated-iid", "federated-noniid", "federated-iid-oversample-4"):
        (work / "experiment" / run).mkdir(parents=True)
        (work / "experiment" / run / "results.json").write_text(json.dumps(_fake_results(run)))
    runs = ("centralized", "federated-iid", "federated-noniid")
    per_run = {run: {"radius": 1.0, "good_p99": 0.9} for run in runs}
    (work / "radii.json").write_text(json.dumps(dict.fromkeys(CATEGORIES, per_run)))
    for name in ("poisoning.json", "on.json", "off.json"):
        _fake_poisoning(work / name)
    printed = (
        "ours vs reference: 9.4x\n"
        "bare forward :    3.51 images/s (best of 2)\n"
        "predict      :    2.09 images/s (best of 2)\n"
        "ratio predict / bare forward: 2.7x\n"
        "predict's time: extraction 5.13 s (67%), kNN 0.87 s (11%), maps 1.65 s (22%)\n"
        "HTTP overhead, 1 client : p50 1.01x"
    )
    fs.command_log(work, 1).write_text(printed, encoding="utf-8")
    row = "| 513 | 269 | 253 | 0.94 | 1 | 2 | 28.5 | 3 | 4 | 5 | 6 | 7 | 1.00 |"
    fs.command_log(work, 2).write_text(row, encoding="utf-8")
    (work / "seconds.json").write_text(json.dumps({"1": 55.0}), encoding="utf-8")


def test_every_marked_figure_is_a_value_its_set_reads(tmp_path: Path) -> None:
    """A typo in a marker's key would leave the figure unchecked until the set is run."""
    values: dict[str, fs.Values] = {}
    for name, s in fs.SETS.items():
        if s.read is not None and name != "honest-grid":
            work = tmp_path / name
            work.mkdir()
            _fake_outputs(s, work)
            values[name] = s.read(work)
    for name, s in fs.SETS.items():
        if s.derive is not None:
            values[name] = s.derive({n: values[n] for n in s.needs})
    docs = {
        p.name: p.read_text(encoding="utf-8")
        for p in [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
    }
    diffs, _ = fm.check(docs, values.get, fs.SETS)
    assert [d for d in diffs if d.kind == "error"] == []


def test_the_reports_tables_are_rendered_in_the_reports_own_layout() -> None:
    """The stage-1 means as the report gives them, rendered again: the same table, and the
    report's gap table follows from them (to its rounding)."""
    path = REPO / "docs/technical-report/README.md"
    _, blocks = fm.parse(path.read_text(encoding="utf-8"), path.name)
    found = {(b.set, b.table): b.body for b in blocks}
    means = found[("stage1-photo-pretrained", "means")]
    runs = dict(ft.STAGE1_RUNS)
    values: fs.Values = {}
    for line in means[2:]:
        label, *cells = fm.table_cells(line)
        for lim, cell in zip(ft.LIMITS, cells, strict=False):
            values[f"{runs[label]}/mean/auc_spro_{lim}"] = float(cell)
        values[f"{runs[label]}/mean/image_auroc"] = float(cells[-1])
    assert ft.means_table()(values) == list(means)
    gaps = found[("stage1-photo-pretrained", "gaps")]
    assert fm.compare_table(gaps, ft.gaps_table(values)) == []


def test_the_honest_grid_cells_give_changes_left_out_rows_and_flags(tmp_path: Path) -> None:
    """benchmarks/honest_grid.py's cells (OUT/cells/<cell>.json, as measure_cell writes them)."""
    clients = {
        "node 1001 (partition 0)": {"rows": 10, "quarantined": 10},
        "node 1002 (partition 1)": {"rows": 20, "quarantined": 0},
    }
    block = {
        "auc_spro_0.3": 0.8,
        "image_auroc": 0.9,
        "source_check_flagged": ["1"],
        "support": {"checked": True, "clients": clients, "left_out": 10, "rows": 30},
    }
    cell = {
        "cell": "iid_photo_128_effnet_s0",
        "on": {"seconds": 5.0, "categories": {"pipe_clip": block}},
        "off": {},
        "change": {"pipe_clip": {"auc_spro_0.3": -0.004, "image_auroc": 0.0}},
    }
    (tmp_path / "cells").mkdir()
    (tmp_path / "cells" / "iid_photo_128_effnet_s0.json").write_text(json.dumps(cell))
    v = ft.read_honest_grid(tmp_path)
    assert v["iid_photo_128_effnet_s0/pipe_clip/change/auc_spro_0.3"] == -0.004
    assert v["iid_photo_128_effnet_s0/pipe_clip/left_out"] == 10
    assert v["worst_change/auc_spro_0.3"] == -0.004
    assert (v["cells"], v["runs_flagged"], v["whole_categories_left_out"]) == (1, 1, 1)
