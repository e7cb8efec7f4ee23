"""benchmarks/figures.py's machinery: the markers in the docs, the comparison of a doc's
figure with a measurement, rewriting the docs, running a set (with `echo` for a command;
the registered sets' commands take minutes to hours)."""

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


# ---------------------------------------------------------------------- running a set


def _echo_set(text: str) -> fs.FigureSet:
    def read(work: Path) -> fs.Values:
        return ft.read_printed(fs.command_log(work, 1).read_text(encoding="utf-8"))

    command = fs.Command(f"{text} && touch {{work}}/done", creates="{work}/done")
    return fs.FigureSet("echo", "x", (command,), read=read, keep=("command-1.log",))


def test_a_set_runs_its_commands_once_and_stores_its_values(tmp_path: Path) -> None:
    import figures

    s = _echo_set("echo 'ratio predict / bare forward: 2.50x'")
    assert figures.run_set(s, tmp_path / "work", tmp_path / "results") == {
        "predict_vs_forward": 2.5
    }
    store = json.loads((tmp_path / "results" / "echo.json").read_text(encoding="utf-8"))
    assert store["values"] == {"predict_vs_forward": 2.5}
    assert store["commands"] == [
        f"echo 'ratio predict / bare forward: 2.50x' && touch {tmp_path / 'work' / 'echo'}/done"
    ]
    assert list(store["seconds"]) == ["1"]
    assert (tmp_path / "results" / "echo" / "command-1.log").is_file()
    # Run again: the command's output exists, so it is not run (its log is read as it is).
    fs.command_log(tmp_path / "work" / "echo", 1).write_text("ratio predict / bare forward: 3x")
    assert figures.run_set(s, tmp_path / "work", tmp_path / "results") == {
        "predict_vs_forward": 3.0
    }


def test_a_failing_command_stops_the_set_naming_it_and_runs_again_next_time(
    tmp_path: Path,
) -> None:
    import figures

    s = _echo_set("echo half-way; exit 3")
    with pytest.raises(RuntimeError, match="figure set echo: command 1 exited with 3"):
        figures.run_set(s, tmp_path / "work", tmp_path / "results")
    assert not fs.command_log(tmp_path / "work" / "echo", 1).exists()
    assert not (tmp_path / "results" / "echo.json").exists()


def test_the_check_fails_on_a_figure_or_a_marker_never_on_a_timing(capsys) -> None:
    import figures

    timing = fm.Difference("d.md", 1, "s/wall_s", "55", "90", "timing")
    assert figures.report([timing], {"later": {"d.md"}}) == 0
    assert "not measured yet: later (used by d.md)" in capsys.readouterr().out
    figure = fm.Difference("d.md", 3, "s/auc", "0.8468", "0.85", "figure")
    assert figures.report([timing, figure], {}) == 1
    assert "d.md:3: s/auc: doc 0.8468, measured 0.85" in capsys.readouterr().out
