"""benchmarks/build_docs.py: the stage-1 report and slide deck rebuilt from a results folder.

The render test builds both from a small made-up results folder (every figure drawn at
random, so a number left over from the committed measurements cannot pass for one of
its own) and checks the page and slide counts and that every number of the rendered
results tables and every marked figure comes from that folder. It needs pandoc, Chromium,
Marp CLI and pdfinfo (`.ci/run` installs them as root) and skips, naming what is
missing, without them. The other tests need nothing but Python.
"""

from __future__ import annotations

import json
import random
import re
import shutil
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

from fedpatch_app.data.autovi import CATEGORIES
from fedpatch_app.metrics.fairness import fairness_block

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import build_docs as bd  # noqa: E402
import docs_render as render  # noqa: E402
import figure_markers as fm  # noqa: E402
import figures  # noqa: E402

LIMITS = ("0.01", "0.05", "0.1", "0.3", "1.0")
LABELS = {
    "centralized": "centralized",
    "federated IID": "federated-iid",
    "federated non-IID": "federated-noniid",
    "local-only": "local-only",
}
CURRENT_SETS = {"stage1-photo-pretrained", "main-job", "honest-grid"}

# ---------------------------------------------------------------------- a results folder


def _run(rng: random.Random, name: str) -> dict:
    """One results.json as the runs write it (the parts the documents read), made up."""
    cats = {}
    for cat in CATEGORIES:
        cats[cat] = {
            "auc_spro": {lim: rng.uniform(0.2, 0.99) for lim in LIMITS},
            "image_auroc": {"mean": rng.uniform(0.5, 0.99)},
            "bank": {"size": rng.randint(100, 999), "radius": rng.uniform(1, 9)},
        }
    mean = {
        "auc_spro": {lim: sum(c["auc_spro"][lim] for c in cats.values()) / 6 for lim in LIMITS},
        "image_auroc": sum(c["image_auroc"]["mean"] for c in cats.values()) / 6,
    }
    out = {"run": {"seconds": {"total": rng.uniform(10, 900)}}, "mean": mean, "categories": cats}
    if name.startswith("federated"):
        clients = [
            {
                "partition_id": i,
                "local_metrics": {
                    f"{cat}.{m}": rng.uniform(0.3, 0.99)
                    for cat in CATEGORIES[i : i + 2]
                    for m in ("auc_spro.0.3", "image_auroc")
                },
            }
            for i in range(5)
        ]
        volume = {"train_up_total": rng.randint(10**7, 10**8), "query_up_total": 10**6}
        volume["train_down_total"] = rng.randint(10**7, 10**8)
        out["federated"] = {"clients": clients, "bytes": volume, "banks": {}}
    out["fairness"] = fairness_block(out)
    return out


@pytest.fixture(scope="module")
def results_folder(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, dict]]:
    folder = tmp_path_factory.mktemp("stage1")
    rng = random.Random(20261207)
    runs = {name: _run(rng, name) for name in bd.REQUIRED_RUNS}
    for name, results in runs.items():
        (folder / name).mkdir()
        (folder / name / "results.json").write_text(json.dumps(results), encoding="utf-8")
    return folder, runs


def expected(runs: dict[str, dict], key: str) -> float:
    """The value a stage-1 key names, read straight from the made-up results."""
    run, *rest = key.split("/")
    results = runs[run]
    if rest == ["seconds"]:
        return results["run"]["seconds"]["total"]
    if rest[0] == "fairness":
        scope, metric, stat = rest[1:4]
        block = results["fairness"][scope][metric]
        return block["worst_value"] if stat == "worst" else block[stat]
    if rest[0].startswith("bytes_"):
        ending = "_up_total" if rest[0] == "bytes_up_mb" else "_down_total"
        return sum(v for k, v in results["federated"]["bytes"].items() if k.endswith(ending)) / 1e6
    where, metric = rest
    block = results["mean"] if where == "mean" else results["categories"][where]
    if metric == "image_auroc":
        return block["image_auroc"] if where == "mean" else block["image_auroc"]["mean"]
    return block["auc_spro"][metric.removeprefix("auc_spro_")]


# ---------------------------------------------------------------------- without renderers


def test_the_documents_quote_only_sets_measured_with_the_current_code() -> None:
    for doc in (bd.REPORT, bd.DECK):
        figures_, blocks = fm.parse((bd.DOCS / doc).read_text(encoding="utf-8"), str(doc))
        used = {item.set for item in [*figures_, *blocks]}
        assert used and used <= CURRENT_SETS, (doc, used - CURRENT_SETS)
        for name in used:
            assert figures.load_store(name) is not None, f"{doc}: {name} is not measured"


def test_the_reports_main_text_stays_under_2000_words() -> None:
    words = bd.main_text_words((bd.DOCS / bd.REPORT).read_text(encoding="utf-8"))
    assert 1000 < words <= bd.MAX_WORDS


def test_words_leave_out_tables_code_comments_and_link_targets() -> None:
    text = "One two.\n\n| a | b |\n|---|---|\n```\ncode here\n```\n<!-- x -->[three](a/b.md)\n"
    assert bd.main_text_words(text) == 3


def test_every_slide_has_speaker_notes() -> None:
    text = bd.strip_markers((bd.DOCS / bd.DECK).read_text(encoding="utf-8"))
    slides = re.split(r"^---$", text, flags=re.MULTILINE)[2:]  # after the front matter
    assert 10 <= len(slides) <= 12
    for i, slide in enumerate(slides, start=1):
        notes = [c for c in re.findall(r"<!--(.*?)-->", slide, re.DOTALL) if " " in c.strip()]
        assert notes and len(notes[-1].split()) >= 20, f"slide {i} has no speaker notes"


def test_the_committed_diagrams_are_rendered_from_their_current_sources(tmp_path: Path) -> None:
    sources = sorted((bd.DOCS / bd.ASSETS).glob("*.mmd"))
    assert sources
    assert render.stale_diagrams(bd.DOCS / bd.ASSETS) == []
    shutil.copy(sources[0], tmp_path)
    shutil.copy(sources[0].with_suffix(".svg"), tmp_path)
    edited = tmp_path / sources[0].name
    edited.write_text(edited.read_text(encoding="utf-8") + "    Note over S: new\n")
    assert render.stale_diagrams(tmp_path) == [
        f"{edited.with_suffix('.svg').name}: not rendered from the current {edited.name}"
    ]


def test_links_to_repository_files_are_printed_as_text() -> None:
    html = '<a href="../privacy.md">privacy</a>, <a href="https://flower.ai">Flower</a>'
    assert render.unlink_local(html) == 'privacy, <a href="https://flower.ai">Flower</a>'


def test_a_folder_without_every_run_is_refused_naming_what_is_missing(
    results_folder: tuple[Path, dict], tmp_path: Path
) -> None:
    folder, _ = results_folder
    partial = tmp_path / "partial"
    shutil.copytree(folder, partial)
    shutil.rmtree(partial / "local-only")
    with pytest.raises(bd.BuildError, match="no results.json for local-only"):
        bd.load_results(partial)


def test_a_figure_the_results_do_not_hold_stops_the_build(
    results_folder: tuple[Path, dict], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    docs = tmp_path / "docs"
    (docs / "technical-report").mkdir(parents=True)
    doc = Path("technical-report/README.md")
    key = "stage1-photo-pretrained/federated-iid/no_such_category/image_auroc"
    (docs / doc).write_text(f"Gap <!-- fig:{key} -->0.123.\n", encoding="utf-8")
    monkeypatch.setattr(bd, "DOCS", docs)
    values_of = bd.values_source(bd.load_results(results_folder[0]))
    with pytest.raises(bd.BuildError, match="no such value measured"):
        bd.generate(doc, tmp_path / "out", values_of)


def test_a_missing_renderer_exits_2_naming_it_and_how_to_install_it(
    results_folder: tuple[Path, dict],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("PANDOC", str(tmp_path / "no-pandoc"))
    code = bd.main(["--results", str(results_folder[0]), "--out", str(tmp_path / "out")])
    assert code == 2
    assert "pandoc" in caplog.text and "apt-get install pandoc" in caplog.text


def test_generated_figures_come_from_the_results_and_markers_leave_the_deck(
    results_folder: tuple[Path, dict], tmp_path: Path
) -> None:
    folder, runs = results_folder
    text = bd.generate(bd.DECK, tmp_path, bd.values_source(bd.load_results(folder)))
    found, _ = fm.parse(text, "slides.md")
    for f in found:
        if f.set == "stage1-photo-pretrained":
            assert not fm.differs(f.text, expected(runs, f.key)), f
    assert "fig:" not in bd.strip_markers(text) and "figures:" not in bd.strip_markers(text)
    assert "<!-- _class: title -->" in bd.strip_markers(text)


# ---------------------------------------------------------------------- rendered


class Tables(HTMLParser):
    """The text of every table cell of an HTML page, table by table and row by row."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append(" ".join("".join(self._cell).split()))
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def tables_of(html: Path) -> dict[str, list[list[str]]]:
    parser = Tables()
    parser.feed(html.read_text(encoding="utf-8"))
    return {" | ".join(t[0]): t[1:] for t in parser.tables if t}


def check_tables(tables: dict[str, list[list[str]]], runs: dict[str, dict]) -> None:
    """The means, gap and fairness tables, cell by cell, against the made-up results."""

    def mean(run: str, metric: str) -> float:
        return expected(runs, f"{run}/mean/{metric}")

    means = next(rows for head, rows in tables.items() if head.startswith("run | AUC-sPRO@0.01"))
    for label, *cells in means:
        run = LABELS[label]
        wanted = [mean(run, f"auc_spro_{lim}") for lim in LIMITS] + [mean(run, "image_auroc")]
        assert cells == [f"{v:.4f}" for v in wanted], label
    gaps = next(rows for head, rows in tables.items() if head.startswith("run | AUC-sPRO@0.3 gap"))
    assert len(gaps) == 3
    for label, auc, auroc, _ in gaps:
        run = LABELS[label]
        for cell, metric in ((auc, "auc_spro_0.3"), (auroc, "image_auroc")):
            assert cell.strip("*") == f"{mean(run, metric) - mean('centralized', metric):+.4f}"
    fair = next(rows for head, rows in tables.items() if "worst category" in head)
    for label, worst_auc, worst_auroc, std, worst_client, _ in fair:
        block = runs[LABELS[label]]["fairness"]
        cats = block["categories"]
        assert (
            worst_auc
            == f"{cats['auc_spro_0.3']['worst']} {cats['auc_spro_0.3']['worst_value']:.4f}"
        )
        assert worst_auroc.endswith(f"{cats['image_auroc']['worst_value']:.4f}")
        assert std == f"{cats['auc_spro_0.3']['std']:.4f}"
        clients = (block["clients"] or {}).get("auc_spro_0.3")
        assert worst_client == (
            "-"
            if clients is None
            else f"{clients['worst'].replace(' ', '-')} {clients['worst_value']:.4f}"
        )


def check_figures(markdown: str, runs: dict[str, dict]) -> None:
    """Every marked figure: the results folder's value, or a current kept measurement."""
    found, _ = fm.parse(markdown, "generated")
    assert found
    for f in found:
        if f.set == "stage1-photo-pretrained":
            value = expected(runs, f.key)
        else:
            value = figures.load_store(f.set)["values"][f.key]
        assert not fm.differs(f.text, value), f"{f.set}/{f.key}: {f.text} against {value}"


NEEDED = ("pandoc", "chromium", "marp", "pdfinfo")


@pytest.mark.skipif(bool(render.missing(NEEDED)), reason="; ".join(render.missing(NEEDED)))
def test_report_and_deck_are_rendered_from_the_results_they_are_given(
    results_folder: tuple[Path, dict], tmp_path: Path
) -> None:
    folder, runs = results_folder
    facts = bd.build(folder, tmp_path)
    assert 3 <= facts["report"]["pages"] <= 4
    assert 10 <= facts["deck"]["slides"] <= 12
    assert render.pdf_pages(Path(facts["report"]["pdf"])) == facts["report"]["pages"]
    report_html = tmp_path / "technical-report" / "technical-report.html"
    deck_html = tmp_path / "presentation" / "slides.html"
    check_tables(tables_of(report_html), runs)
    check_tables(tables_of(deck_html), runs)
    check_figures((tmp_path / bd.REPORT).read_text(encoding="utf-8"), runs)
    check_figures((tmp_path / bd.DECK).read_text(encoding="utf-8"), runs)
    deck = deck_html.read_text(encoding="utf-8")
    assert len(re.findall(r"<section\b", deck)) == facts["deck"]["slides"]
    assert "fig:stage1" not in deck  # markers are not speaker notes
    assert b"file:" not in Path(facts["report"]["pdf"]).read_bytes()  # no machine's paths
    assert (tmp_path / bd.PLOT).stat().st_size > 10_000
    assert (tmp_path / "assets" / "federated-protocol.svg").is_file()
