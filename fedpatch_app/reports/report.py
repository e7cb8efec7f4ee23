"""A Markdown report with PNG plots for one or more run folders.

``write_report(run_dirs, out_dir, data_root=None, allow_mixed=False)`` reads each run's
results.json (and, when present, curves.npz, scores/ and maps/) and writes
``<out_dir>/report.md`` and ``<out_dir>/plots/*.png``:

- first, a warning line when any run read synthetic data, had random backbone weights or did
  not complete; then the runs (what each used) and their warnings;
- a comparison across runs (AUC-sPRO@0.05, @0.3, image AUROC; differences to the
  centralized run if there is one, else to the first run) and bar charts;
- sPRO-vs-FPR curves (linear up to FPR 0.3, and log-x) and ROC curves per category,
  runs overlaid;
- per run: its flags, what it used, the category table with the mean row, per-defect
  metrics, run facts, the settings as given, and any extra top-level section of
  results.json (e.g. ``federated``, its clients one table per topic);
- heatmap overlays (image, map, ground-truth contour) of the 3 most and 3 least
  anomalous test images per category, when the images and the maps are available.

Runs whose patch features differ (feature-spec fingerprints) are refused unless
``allow_mixed``; then each is tagged with its features everywhere. Categories with fewer than
``MIN_TEST_IMAGES`` good or defective test images are marked with a note.

The work is split by what it does: ``runs`` (loading, labels, comparability),
``results.run_facts`` (what a run used, for every results layout), ``markdown`` (tables),
``overview`` (the head and the comparison), ``sections`` (one run), ``clients`` (a federated
run's clients), ``plots`` and ``heatmaps``.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

from fedpatch_app.reports.heatmaps import heatmaps_section, slug
from fedpatch_app.reports.overview import (
    INTRO,
    comparison,
    features_section,
    first_line,
    runs_table,
    warnings_section,
)
from fedpatch_app.reports.plots import plot_bars, plot_roc, plot_spro
from fedpatch_app.reports.runs import MIN_TEST_IMAGES, Run, baseline, few_images, load_runs
from fedpatch_app.reports.sections import run_section

__all__ = ["MIN_TEST_IMAGES", "run_cli", "write_report"]

log = logging.getLogger(__name__)


def _curves_section(categories: Sequence[str], runs: Sequence[Run], plots: Path) -> list[str]:
    """sPRO and ROC plots per category, with a note where test images are few."""
    lines = ["## Curves per category", ""]
    for run in runs:
        if run.curves_note:
            lines += [f"- {run.label}: curves not shown ({run.curves_note}).", ""]
    for cat in categories:
        lines += [f"### {cat}", ""]
        for run in runs:
            small = few_images(run.categories[cat]) if cat in run.categories else None
            if small:
                lines += [
                    f"Few test images in {run.number}: {small[0]} good, {small[1]} defective "
                    f"(below {MIN_TEST_IMAGES} of either, the curves are noisy).",
                    "",
                ]
        spro_path = plots / f"spro_{slug(cat)}.png"
        roc_path = plots / f"roc_{slug(cat)}.png"
        have_spro = plot_spro(cat, runs, spro_path) is not None
        have_roc = plot_roc(cat, runs, roc_path)
        if have_spro:
            lines += [f"![sPRO vs FPR, {cat}](plots/{spro_path.name})", ""]
        if have_roc:
            lines += [f"![image ROC, {cat}](plots/{roc_path.name})", ""]
        if not (have_spro or have_roc):
            lines += ["(no curves stored for this category)", ""]
    return lines


def write_report(
    run_dirs: Sequence[str | Path],
    out_dir: str | Path,
    data_root: str | Path | None = None,
    *,
    allow_mixed: bool = False,
) -> Path:
    """Write ``<out_dir>/report.md`` and ``<out_dir>/plots/*.png``; return the report's path.

    ConfigError when the runs computed different patch features, unless ``allow_mixed``.
    """
    runs = load_runs(run_dirs, allow_mixed=allow_mixed)
    out = Path(out_dir)
    plots = out / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    categories = sorted({c for run in runs for c in run.categories})

    lines = [*first_line(runs), "# fedpatch report", "", INTRO, ""]
    lines += runs_table(runs)
    lines += features_section(runs)
    lines += warnings_section(runs)
    if len(runs) > 1:
        lines += comparison(categories, runs, baseline(runs))
    plot_bars(categories, runs, plots / "bars.png")
    lines += ["## Bar charts", "", "![metrics per category and run](plots/bars.png)", ""]
    lines += _curves_section(categories, runs, plots)
    for run in runs:
        lines += run_section(run)
    lines += heatmaps_section(runs, plots, data_root)

    report = out / "report.md"
    report.write_text("\n".join(lines).rstrip() + "\n", encoding="utf-8")
    log.info("wrote %s", report)
    return report


def run_cli(args: argparse.Namespace) -> int:
    """``fedpatch report RUN_DIR... --out DIR [--data-root DIR] [--allow-mixed]``."""
    report = write_report(
        args.runs,
        args.out,
        data_root=args.data_root,
        allow_mixed=bool(getattr(args, "allow_mixed", False)),
    )
    print(f"report: {report}")
    return 0
