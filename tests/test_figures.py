"""benchmarks/figures.py's pure parts: the markers in the docs, the comparison of a doc's
figure with a measurement, rewriting the docs, the tables and the readers (no command is
run here: the sets' commands take minutes to hours)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import figure_markers as fm  # noqa: E402
import figure_sets as fs  # noqa: E402
import figure_tables as ft  # noqa: E402

# ---------------------------------------------------------------------- markers


def test_inline_figures_are_found_with_their_set_key_and_place() -> None:
    text = (
        "intro\n"
        "mean <!-- fig:s1/centralized/mean/auc_spro_0.3 -->0.8468 and "
        "<!-- fig:s2/rows -->**1,484** rows, gain <!-- fig:s2/gain -->+0.194.\n"
    )
    figures, blocks = fm.parse(text, "doc.md")
    assert blocks == []
    assert [(f.line, f.set, f.key, f.text) for f in figures] == [
        (2, "s1", "centralized/mean/auc_spro_0.3", "0.8468"),
        (2, "s2", "rows", "1,484"),
        (2, "s2", "gain", "+0.194"),
    ]
    line = text.splitlines()[1]
    assert [line[f.start : f.end] for f in figures] == ["0.8468", "1,484", "+0.194"]


def test_markers_in_code_are_examples_not_figures() -> None:
    text = "write `<!-- fig:s/k -->0.5` before a figure\n```\n<!-- fig:s/k -->0.7\n```\n"
    assert fm.parse(text, "doc.md") == ([], [])


def test_a_figure_marker_without_a_number_is_an_error_naming_the_line() -> None:
    with pytest.raises(fm.MarkerError, match="doc.md:2"):
        fm.parse("ok\nsee <!-- fig:s/k --> 0.5\n", "doc.md")


def test_a_table_block_keeps_its_table_lines_and_their_first_line_number() -> None:
    text = "title\n<!-- figures:s/means -->\n\n| a | b |\n|---|---|\n| x | 1.0 |\n\n<!-- /figures -->\n"
    _, blocks = fm.parse(text, "doc.md")
    assert len(blocks) == 1
    block = blocks[0]
    assert (block.set, block.table, block.first) == ("s", "means", 4)
    assert block.body == ("| a | b |", "|---|---|", "| x | 1.0 |")


@pytest.mark.parametrize(
    "text",
    [
        "<!-- figures:s/t -->\n| a |\n",
        "| a |\n<!-- /figures -->\n",
        "<!-- figures:s/t -->\n<!-- figures:s/u -->\n<!-- /figures -->\n",
    ],
)
def test_unbalanced_table_markers_are_errors(text: str) -> None:
    with pytest.raises(fm.MarkerError):
        fm.parse(text, "doc.md")


# ---------------------------------------------------------------------- numbers


def test_a_figure_differs_beyond_0_0005_or_its_own_rounding() -> None:
    assert not fm.differs("0.8468", 0.8471)
    assert fm.differs("0.8468", 0.8474)
    assert fm.differs("0.8468", 0.8462)
    assert not fm.differs("0.806", 0.8056)  # 3 decimals: rounding of 0.8056
    assert not fm.differs("64.7", 64.74)  # 64.7 MB stands for 64.65 to 64.75
    assert fm.differs("64.7", 64.76)
    assert fm.differs("1,484", 1485)
    assert not fm.differs("1,484", 1484)
    assert fm.differs("0.5", float("nan"))


def test_timings_differ_only_beyond_30_percent() -> None:
    assert not fm.differs("55", 70.0, timing=True)
    assert fm.differs("55", 80.0, timing=True)
    assert fm.differs("55", 70.0)


@pytest.mark.parametrize(
    ("value", "text", "expected"),
    [
        (-0.00312, "+0.0028", "-0.0031"),
        (0.00312, "+0.0028", "+0.0031"),
        (0.2234, "0.22", "0.22"),
        (1500.0, "1,484", "1,500"),
        (54.6, "55", "55"),
    ],
)
def test_a_new_value_is_written_as_the_doc_wrote_the_old(value, text, expected) -> None:
    assert fm.format_like(value, text) == expected


# ---------------------------------------------------------------------- tables


TABLE = ["| run | AUC | verdict |", "|---|---|---|", "| central | 0.8468 (+0.0010) | yes |"]


def test_a_table_equal_to_its_rendering_has_no_difference() -> None:
    assert fm.compare_table(TABLE, TABLE) == []
    close = [*TABLE[:2], "| central | 0.8470 (+0.0012) | yes |"]
    assert fm.compare_table(TABLE, close) == []


def test_a_changed_table_figure_is_named_by_row_and_column() -> None:
    new = [*TABLE[:2], "| central | 0.8468 (+0.0020) | yes |"]
    assert fm.compare_table(TABLE, new) == [(2, "central | AUC", "+0.0010", "+0.0020")]


def test_a_changed_text_or_a_missing_row_is_a_difference() -> None:
    new = [*TABLE[:2], "| central | 0.8468 (+0.0010) | **no** |"]
    assert fm.compare_table(TABLE, new) == [(2, "central | verdict", "yes", "**no**")]
    assert fm.compare_table(TABLE, TABLE[:2]) == [(2, "line", TABLE[2], "(no line)")]


# ---------------------------------------------------------------------- check and write


def _sets() -> dict[str, fs.FigureSet]:
    def table(v: fs.Values) -> list[str]:
        return ["| run | AUC |", "|---|---|", f"| central | {v['auc']:.4f} |"]

    return {
        "exp": fs.FigureSet("exp", "x", tables={"t": table}),
        "speed": fs.FigureSet("speed", "x", timing=("*_s",)),
        "old": fs.FigureSet("old", "x", archived="an earlier version"),
        "later": fs.FigureSet("later", "x"),
    }


VALUES = {"exp": {"auc": 0.8500}, "speed": {"wall_s": 90.0}, "old": {"auc": 0.1}}
DOC = (
    "AUC <!-- fig:exp/auc -->0.8468, time <!-- fig:speed/wall_s -->55 s,\n"
    "old <!-- fig:old/auc -->0.9, later <!-- fig:later/auc -->0.7\n"
    "<!-- figures:exp/t -->\n\n| run | AUC |\n|---|---|\n| central | 0.8468 |\n\n<!-- /figures -->\n"
)


def test_check_reports_each_difference_with_doc_line_figure_and_values() -> None:
    diffs, unmeasured = fm.check({"d.md": DOC}, VALUES.get, _sets())
    found = {(d.line, d.figure, d.doc_text, d.measured, d.kind) for d in diffs}
    assert found == {
        (1, "exp/auc", "0.8468", "0.85", "figure"),
        (1, "speed/wall_s", "55", "90", "timing"),
        (2, "old/auc", "0.9", "0.1", "archived"),
        (7, "exp/t: central | AUC", "0.8468", "0.8500", "figure"),
    }
    assert unmeasured == {"later": {"d.md"}}


def test_check_flags_unknown_sets_keys_and_tables() -> None:
    doc = "<!-- fig:nope/a -->1 <!-- fig:exp/missing -->2\n<!-- figures:exp/x -->\n<!-- /figures -->\n"
    diffs, _ = fm.check({"d.md": doc}, VALUES.get, _sets())
    assert sorted(d.measured for d in diffs) == [
        "no such figure set",
        "no such table in the set",
        "no such value measured",
    ]
    assert {d.kind for d in diffs} == {"error"}


def test_rewrite_writes_the_chosen_sets_and_leaves_the_rest() -> None:
    new, changed = fm.rewrite(DOC, "d.md", VALUES.get, ["exp", "speed"], _sets())
    lines = new.splitlines()
    assert lines[0] == "AUC <!-- fig:exp/auc -->0.8500, time <!-- fig:speed/wall_s -->90 s,"
    assert lines[1] == DOC.splitlines()[1]  # "old" was not chosen, "later" not measured
    assert lines[6] == "| central | 0.8500 |"
    assert changed == 2
    diffs, _ = fm.check({"d.md": new}, VALUES.get, _sets())
    assert [d.figure for d in diffs] == ["old/auc"]


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
    block = {"auc_spro": {"0.3": auc}, "image_auroc": {"mean": 0.9}}
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
    assert v["federated-iid/pipe_clip/gap/auc_spro_0.3"] == pytest.approx(-0.02)
    assert v["federated-iid/bytes_up_mb"] == 2.5
    assert v["federated-iid/pipe_clip/bank_radius"] == 7.5
    assert v["centralized/seconds"] == 12.5
    assert "centralized/gap/auc_spro_0.3" not in v


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
    text = "ours vs reference: 9.4x faster; vs plain: 5.6x faster\nratio predict / bare forward: 2.71x (target)\nHTTP overhead, 1 client : p50 1.01x the library"
    assert ft.read_printed(text) == {
        "ours_vs_reference": 9.4,
        "predict_vs_forward": 2.71,
        "http_p50_vs_library": 1.01,
    }
    table = "| train images | x |\n|---|\n| 52 | 160 | 100 | 0.62 | 1 | 2 | 172.2 | 3 | 4 | 5 | 6 | 7 | 1.00 |\n| 513 | 269 | 253 | 0.94 | 1 | 2 | 28.5 | 3 | 4 | 5 | 6 | 7 | 1.00 |"
    assert ft.read_scale_table(table) == {
        "train_images": 513.0,
        "fed_vs_central_time": 0.94,
        "server_above_idle_vs_bank": 28.5,
        "coresets_vs_banks": 2.0,
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
