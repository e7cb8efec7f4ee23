"""The stage-1 technical report and slide deck, rebuilt from a results folder by one command.

    python benchmarks/build_docs.py --results runs/figures/stage1-photo-pretrained/stage1
    python benchmarks/build_docs.py --results RESULTS --out docs     # publish in place

RESULTS is the folder of a `fedpatch experiment --preset stage1` run (it holds
`<run>/results.json` for centralized, federated-iid, federated-noniid, local-only and the
two oversampling runs). The command

1. reads every value of RESULTS as figure set `stage1-photo-pretrained` (the reader of
   `benchmarks/figures.py`); the other sets the documents quote come from the measurements
   kept in `benchmarks/results/`;
2. writes `technical-report/README.md` and `presentation/slides.md` under OUT with every
   marked figure and generated table rewritten from those values, then checks them: an
   unknown or missing value, or a set that is archived or not measured, stops the build;
3. draws the results plot (`technical-report/figures/stage1-results.png`);
4. renders the report to HTML (pandoc) and an A4 PDF (headless Chromium), and the deck to
   HTML and PDF with speaker notes (Marp CLI); diagrams are the SVGs rendered from
   `docs/assets/*.mmd` (`--diagrams` renders them again with mermaid-cli);
5. checks the report's page count (3-4), the deck's slide count (10-12) and the report's
   main-text words (at most 2,000), and prints them.

OUT (default `build/docs`) mirrors `docs/`: with `--out docs` the committed sources are
rewritten in place and the renderings land beside them. Exit status 1 with the reason on
a failed check, 2 when a renderer is missing (see docs_render.TOOLS).
"""

from __future__ import annotations

import argparse
import logging
import re
import shutil
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import docs_render as render  # noqa: E402
from docs_plots import results_plot  # noqa: E402
from figure_markers import check, parse, rewrite  # noqa: E402
from figure_sets import SETS, Values  # noqa: E402
from figure_tables import ABLATION_RUNS, STAGE1_RUNS, read_experiment  # noqa: E402
from figures import measured_values  # noqa: E402

log = logging.getLogger("build_docs")

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
RESULTS_SET = "stage1-photo-pretrained"
REPORT = Path("technical-report/README.md")
DECK = Path("presentation/slides.md")
CSS = Path("technical-report/report.css")
PLOT = Path("technical-report/figures/stage1-results.png")
ASSETS = Path("assets")
REPORT_PAGES = (3, 4)
DECK_SLIDES = (10, 12)
MAX_WORDS = 2000
REQUIRED_RUNS = tuple(
    dict.fromkeys([run for _, run in STAGE1_RUNS] + [r for _, r in ABLATION_RUNS])
)
FIGURE_MARKER = re.compile(r"<!--\s*(?:fig:\S+|figures:\S+|/figures)\s*-->\n?")


class BuildError(RuntimeError):
    """A check of the build failed; the message says which and why."""


def load_results(folder: Path) -> Values:
    """The values of a stage-1 experiment folder; every run the documents quote must be there."""
    if not folder.is_dir():
        raise BuildError(f"--results {folder}: no such folder")
    absent = [run for run in REQUIRED_RUNS if not (folder / run / "results.json").is_file()]
    if absent:
        raise BuildError(
            f"--results {folder}: no results.json for {', '.join(absent)} (expected the "
            "folder of `fedpatch experiment --preset stage1`, which writes every run)"
        )
    return read_experiment(folder)


def values_source(results: Values) -> Callable[[str], Values | None]:
    """The values of each figure set: the results folder's for the stage-1 set, the kept
    measurements for the others."""
    cache: dict[str, Values | None] = {RESULTS_SET: results}

    def values_of(name: str) -> Values | None:
        if name not in cache:
            cache[name] = measured_values(name, SETS) if name in SETS else None
        return cache[name]

    return values_of


def generate(doc: Path, out: Path, values_of: Callable[[str], Values | None]) -> str:
    """`docs/<doc>` with its figures written from the values, checked, saved as `out/<doc>`."""
    text = (DOCS / doc).read_text(encoding="utf-8")
    current = [name for name, s in SETS.items() if not s.archived]
    new, _ = rewrite(text, str(doc), values_of, current, SETS)
    diffs, unmeasured = check({str(doc): new}, values_of, SETS)
    problems = [f"line {d.line}: {d.figure}: {d.measured}" for d in diffs if d.kind != "timing"]
    problems += [f"set {name} is not measured" for name in sorted(unmeasured)]
    figures, blocks = parse(new, str(doc))
    used = sorted({item.set for item in [*figures, *blocks]})
    problems += [f"set {name} is archived" for name in used if SETS[name].archived]
    if problems:
        raise BuildError(f"docs/{doc}: " + "; ".join(problems))
    target = out / doc
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(new, encoding="utf-8")
    return new


def strip_markers(text: str) -> str:
    """The text without figure markers (Marp would show them as speaker notes)."""
    return FIGURE_MARKER.sub("", text)


def main_text_words(markdown: str) -> int:
    """Words of running text: no tables, code blocks, comments, images or link targets."""
    text = re.sub(r"<!--.*?-->", "", markdown, flags=re.DOTALL)
    text = re.sub(r"^```.*?^```", "", text, flags=re.DOTALL | re.MULTILINE)
    lines = [ln for ln in text.splitlines() if not ln.lstrip().startswith(("|", "!["))]
    text = re.sub(r"\]\([^)]*\)", "]", "\n".join(lines))
    return len(re.findall(r"[\w@][\w.,@%+/'-]*", text))


def _copy(source: Path, target: Path) -> None:
    if source.resolve() != target.resolve():
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)


def _diagrams(out: Path, again: bool) -> None:
    """Render the diagrams again (`--diagrams`) or check them; copy them under OUT."""
    if again:
        for source in sorted((DOCS / ASSETS).glob("*.mmd")):
            render.render_diagram(source)
    stale = render.stale_diagrams(DOCS / ASSETS)
    if stale:
        raise BuildError("docs/assets: " + "; ".join(stale) + " (rebuild with --diagrams)")
    for svg in sorted((DOCS / ASSETS).glob("*.svg")):
        _copy(svg, out / ASSETS / svg.name)


def build_report(out: Path, values_of: Callable[[str], Values | None]) -> dict:
    """The report's Markdown, plot, HTML and PDF under OUT; its words and pages."""
    text = generate(REPORT, out, values_of)
    results = values_of(RESULTS_SET)
    assert results is not None
    results_plot(results, out / PLOT)
    _copy(DOCS / CSS, out / CSS)
    html = (out / REPORT).with_name("technical-report.html")
    pdf = html.with_suffix(".pdf")
    title = "fedpatch: federated PatchCore, stage 1 technical report"
    render.markdown_to_html(out / REPORT, html, CSS.name, title)
    render.html_to_pdf(html, pdf)
    return {"words": main_text_words(text), "pages": render.pdf_pages(pdf), "pdf": str(pdf)}


def build_deck(out: Path, values_of: Callable[[str], Values | None]) -> dict:
    """The deck's Markdown, HTML and PDF (speaker notes as PDF notes) under OUT; its slides."""
    text = generate(DECK, out, values_of)
    source = (out / DECK).with_name(".slides-build.md")
    source.write_text(strip_markers(text), encoding="utf-8")
    html = (out / DECK).with_suffix(".html")
    pdf = html.with_suffix(".pdf")
    try:
        render.marp(source, html, pdf=False)
        render.marp(source, pdf, pdf=True)
    finally:
        source.unlink()
    return {"slides": render.pdf_pages(pdf), "html": str(html), "pdf": str(pdf)}


def _within(what: str, value: int, bounds: tuple[int, int]) -> str | None:
    low, high = bounds
    return None if low <= value <= high else f"{what}: {value}, expected {low} to {high}"


def build(results: Path, out: Path, diagrams: bool = False) -> dict:
    """Everything; the facts (words, pages, slides, outputs). BuildError when a check fails."""
    values_of = values_source(load_results(results))
    out.mkdir(parents=True, exist_ok=True)
    _diagrams(out, diagrams)
    facts = {"results": str(results), "report": build_report(out, values_of)}
    facts["deck"] = build_deck(out, values_of)
    failed = [
        _within("report pages", facts["report"]["pages"], REPORT_PAGES),
        _within("deck slides", facts["deck"]["slides"], DECK_SLIDES),
        _within("report main-text words", facts["report"]["words"], (0, MAX_WORDS)),
    ]
    if any(failed):
        raise BuildError("; ".join(f for f in failed if f))
    return facts


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--results", type=Path, required=True, help="a stage-1 experiment folder")
    p.add_argument("--out", type=Path, default=ROOT / "build" / "docs", help="output folder")
    p.add_argument("--diagrams", action="store_true", help="render docs/assets/*.mmd again")
    args = p.parse_args(argv)
    try:
        facts = build(args.results, args.out, args.diagrams)
    except render.ToolMissing as exc:
        log.error("build_docs: %s", exc)
        return 2
    except (BuildError, render.RenderError) as exc:
        log.error("build_docs: %s", exc)
        return 1
    report, deck = facts["report"], facts["deck"]
    log.info("report: %s (%d pages, %d words)", report["pdf"], report["pages"], report["words"])
    log.info("deck: %s and %s (%d slides)", deck["html"], deck["pdf"], deck["slides"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
