"""The head of the report: its first-line warning, the runs, their features, the comparison.

The report's first line says what makes its figures meaningless for AutoVI whenever any run
has it (synthetic data, random backbone weights, a run that did not complete), so that nobody
reads the numbers below without knowing. The runs table then shows what each run used. When
runs of different features stand side by side (allowed on purpose), a features table gives
each fingerprint its tag and every comparison table says so again under it.
"""

from __future__ import annotations

from collections.abc import Sequence

from fedpatch_app.reports.markdown import delta, fmt, table
from fedpatch_app.reports.plots import METRICS, Metric
from fedpatch_app.reports.runs import FEW_MARK, Run, describe_features, few_images, few_images_note
from fedpatch_app.reports.sections import data_text, flags, weights_text

INTRO = (
    "Metrics as the official AutoVI evaluator computes them: AUC-sPRO at FPR limits "
    "0.01, 0.05, 0.1, 0.3 and 1.0 (normalised to 1.0 = perfect), and image-level AUROC "
    "with the image score being the maximum of its anomaly map."
)


def first_line(runs: Sequence[Run]) -> list[str]:
    """The report's opening warning (empty when no run has a flag)."""
    by_flag: dict[str, list[str]] = {}
    for run in runs:
        for flag in flags(run):
            by_flag.setdefault(flag, []).append(f"run {run.index + 1}")
    if not by_flag:
        return []
    parts = [f"{flag.upper()} in {', '.join(which)}" for flag, which in by_flag.items()]
    return [
        f"> **WARNING: {'; '.join(parts)}.** These figures say nothing about AutoVI or about "
        "PatchCore with a trained backbone; see each run's section.",
        "",
    ]


def runs_table(runs: Sequence[Run]) -> list[str]:
    """One row per run: what it used and its mean figures."""
    rows = []
    for run in runs:
        feats, mean = run.features, run.results["mean"]
        fingerprint = (feats.fingerprint or "not recorded") + (
            f" [{run.features_tag}]" if run.features_tag else ""
        )
        rows.append(
            [
                str(run.index + 1),
                run.label,
                fmt(run.kind),
                data_text(run),
                weights_text(run),
                fingerprint,
                str(len(run.categories)),
                fmt((run.results["run"].get("seconds") or {}).get("total"), 1),
                fmt(mean["auc_spro"].get("0.05")),
                fmt(mean["auc_spro"].get("0.3")),
                fmt(mean.get("image_auroc")),
                f"`{run.folder}`",
            ]
        )
    header = [
        "#",
        "run",
        "kind",
        "data",
        "weights loaded",
        "features",
        "categories",
        "seconds",
        "mean AUC-sPRO@0.05",
        "mean AUC-sPRO@0.3",
        "mean image AUROC",
        "folder",
    ]
    return ["## Runs", "", *table(header, rows)]


def features_section(runs: Sequence[Run]) -> list[str]:
    """When runs of different features are shown together: which tag is which features."""
    if not any(run.features_tag for run in runs):
        return []
    by_tag: dict[str, list[Run]] = {}
    for run in runs:
        by_tag.setdefault(str(run.features_tag), []).append(run)
    rows = [
        [tag, describe_features(members[0]), ", ".join(str(r.index + 1) for r in members)]
        for tag, members in by_tag.items()
    ]
    lines = [
        "## Features differ between runs",
        "",
        "> **MIXED FEATURES:** these runs did not all compute the same patch features "
        "(shown together on purpose). Every run's label carries its features tag; a "
        "difference between runs of different tags is not the effect of the training alone. "
        "Tag `?`: the run recorded no fingerprint, so its features could not be checked.",
        "",
    ]
    return lines + table(["tag", "features", "runs"], rows)


def warnings_section(runs: Sequence[Run]) -> list[str]:
    """Every run's own warnings, before any figure."""
    warned = [(run, w) for run in runs for w in run.results.get("warnings", [])]
    if not warned:
        return []
    lines = ["## Warnings", ""]
    for run, warning in warned:
        lines += [f"> **WARNING ({run.label}):** {fmt(warning)}", ""]
    return lines


def _few_in(cat: str, runs: Sequence[Run]) -> list[tuple[str, tuple[int, int]]]:
    """Note entries for ``cat`` when any run has few test images in it: the category once
    when the runs share its counts, else once per run that has few."""
    few = [
        (run, small)
        for run in runs
        if cat in run.categories and (small := few_images(run.categories[cat]))
    ]
    counts = {
        (b["counts"].get("test_good"), b["counts"].get("test_defective"))
        for run in runs
        if (b := run.categories.get(cat))
    }
    if len(counts) <= 1:
        return [(cat, few[0][1])] if few else []
    return [(f"{cat} in run {run.index + 1}", small) for run, small in few]


def _metric_rows(
    metric: Metric, categories: Sequence[str], runs: Sequence[Run], base: Run
) -> list[list[str]]:
    """Rows of one comparison table: per category, then the means."""
    _, of_block, of_mean = metric
    rows = []
    for cat in categories:
        base_value = of_block(base.categories[cat]) if cat in base.categories else None
        row = [cat + (f" {FEW_MARK}" if _few_in(cat, runs) else "")]
        for run in runs:
            if cat not in run.categories:
                row.append("-")
                continue
            value = of_block(run.categories[cat])
            row.append(fmt(value) if run is base else delta(value, base_value))
        rows.append(row)
    row = ["**mean**"]
    for run in runs:
        value = of_mean(run)
        row.append(fmt(value) if run is base else delta(value, of_mean(base)))
    return [*rows, row]


def comparison(categories: Sequence[str], runs: Sequence[Run], base: Run) -> list[str]:
    """The metrics of every run side by side, differences in brackets to ``base``."""
    which = " (the centralized run)." if base.kind == "centralized" else " (the first run)."
    lines = [
        "## Comparison across runs",
        "",
        f"Differences in brackets are to **{base.label}**{which}",
        "",
    ]
    mixed = any(run.features_tag for run in runs)
    for metric in METRICS:
        lines += [f"### {metric[0]}", ""]
        rows = _metric_rows(metric, categories, runs, base)
        lines += table(["category", *(r.label for r in runs)], rows)
        if mixed:
            lines += [
                "Runs of different features side by side: see each label's `[features …]` "
                "tag and the features table above.",
                "",
            ]
    few = [entry for cat in categories for entry in _few_in(cat, runs)]
    return lines + few_images_note(few)
