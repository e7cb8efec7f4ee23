"""The report's plots: sPRO-vs-FPR and ROC curves per category, and the metric bar charts.

Figures are made outside pyplot (no global state, no display: the Agg canvas), one colour per
run in every plot. Legends sit where they hide no curve and no label: the sPRO legend below
both axes (the FPR-limit labels stand at the foot of the linear axis), the bar-chart legend
above the bars.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fedpatch_app.reports.markdown import fmt
from fedpatch_app.reports.runs import Run

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

#: Colours of the runs in every plot (colour-blind friendly order).
COLOURS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000")
#: FPR limits marked and labelled on the linear sPRO axis (it ends at 0.3).
LABELLED_LIMITS = (0.01, 0.05, 0.1)


def colour(run: Run) -> str:
    """The run's colour in every plot."""
    return COLOURS[run.index % len(COLOURS)]


def new_figure(width: float, height: float, *, constrained: bool = False) -> Figure:
    """A figure outside pyplot (no global state, no display needed: the Agg canvas)."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained" if constrained else None)


def save(fig: Figure, path: Path) -> Path:
    """Write ``fig`` as PNG to ``path`` (parents created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


def _sorted_curve(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(x, kind="stable")
    return x[order], y[order]


def _spro_curves(category: str, runs: Sequence[Run], ax_lin: Axes, ax_log: Axes) -> float | None:
    """Draw each run's sPRO curve on both axes; the smallest positive FPR drawn, or None
    when no run has a curve for ``category``."""
    drawn = False
    min_positive = 1.0
    for run in runs:
        curve = run.curves.get(category)
        if not curve or "spro_fpr" not in curve or "spro" not in curve:
            continue
        fpr, spro = _sorted_curve(curve["spro_fpr"], curve["spro"])
        auc = run.categories.get(category, {}).get("auc_spro", {})
        label = f"{run.label}: @0.05 {fmt(auc.get('0.05'), 3)}, @0.3 {fmt(auc.get('0.3'), 3)}"
        ax_lin.plot(fpr, spro, color=colour(run), label=label, linewidth=1.8)
        ax_log.plot(fpr, spro, color=colour(run), linewidth=1.8)
        if np.any(fpr > 0):
            min_positive = min(min_positive, float(fpr[fpr > 0].min()))
        drawn = True
    return min_positive if drawn else None


def plot_spro(category: str, runs: Sequence[Run], path: Path) -> Figure | None:
    """sPRO vs FPR (linear up to 0.3, and log-x), runs overlaid; None when no run has a
    curve for ``category``. The legend goes below both axes, clear of the limit labels."""
    fig = new_figure(12, 5.0 + 0.18 * len(runs), constrained=True)
    ax_lin, ax_log = fig.subplots(1, 2)
    min_positive = _spro_curves(category, runs, ax_lin, ax_log)
    if min_positive is None:
        return None
    for limit in LABELLED_LIMITS:
        ax_lin.axvline(limit, color="grey", linestyle=":", linewidth=1)
        ax_lin.text(
            limit + 0.002,
            0.01,
            f"FPR {limit:g}",
            color="grey",
            rotation=90,
            fontsize=8,
            va="bottom",
        )
    for limit in (*LABELLED_LIMITS, 0.3):
        ax_log.axvline(limit, color="grey", linestyle=":", linewidth=1)
    ax_lin.set_xlim(0, 0.3)
    ax_lin.set_xlabel("false positive rate (pixels of all test images)")
    ax_lin.set_ylabel("sPRO (mean over defect regions)")
    ax_lin.set_title(f"{category}: sPRO vs FPR, FPR up to 0.3")
    ax_log.set_xscale("log")
    ax_log.set_xlim(max(min(min_positive, 1e-3), 1e-6), 1.0)
    ax_log.set_xlabel("false positive rate (log scale)")
    ax_log.set_title(f"{category}: sPRO vs FPR, log scale")
    for ax in (ax_lin, ax_log):
        ax.set_ylim(0, 1.05)
        ax.grid(alpha=0.3)
    fig.legend(
        loc="outside lower center",
        ncols=min(len(runs), 2),
        fontsize=8,
        title="AUC-sPRO",
        title_fontsize=8,
        frameon=False,
    )
    save(fig, path)
    return fig


def plot_roc(category: str, runs: Sequence[Run], path: Path) -> bool:
    """Image-level ROC curves per run for ``category``; False when no run has one."""
    fig = new_figure(5.6, 5.4)
    fig.subplots_adjust(left=0.13, right=0.97, bottom=0.1, top=0.93)
    ax = fig.subplots()
    drawn = False
    for run in runs:
        curve = run.curves.get(category)
        if not curve or "roc_fpr" not in curve or "roc_tpr" not in curve:
            continue
        auroc = run.categories.get(category, {}).get("image_auroc", {})
        label = f"{run.label}: pooled {fmt(auroc.get('pooled'), 3)}"
        ax.plot(curve["roc_fpr"], curve["roc_tpr"], color=colour(run), label=label, linewidth=1.8)
        drawn = True
    if not drawn:
        return False
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="chance")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("false positive rate (good images)")
    ax.set_ylabel("true positive rate (defective images)")
    ax.set_title(f"{category}: image-level ROC")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8, title="image AUROC", title_fontsize=8)
    save(fig, path)
    return True


Metric = tuple[str, Callable[[Mapping[str, Any]], Any], Callable[[Run], Any]]
"""A headline metric: its title, its value in a category block, its mean over a run."""

#: The headline metrics of the comparison tables and the bar charts.
METRICS: tuple[Metric, ...] = (
    (
        "AUC-sPRO@0.05",
        lambda b: b["auc_spro"].get("0.05"),
        lambda r: r.results["mean"]["auc_spro"].get("0.05"),
    ),
    (
        "AUC-sPRO@0.3",
        lambda b: b["auc_spro"].get("0.3"),
        lambda r: r.results["mean"]["auc_spro"].get("0.3"),
    ),
    (
        "image AUROC (mean over defect types)",
        lambda b: b["image_auroc"].get("mean"),
        lambda r: r.results["mean"].get("image_auroc"),
    ),
)


def plot_bars(categories: Sequence[str], runs: Sequence[Run], path: Path) -> None:
    """The headline metrics per category and their means, one bar per run."""
    groups = [*categories, "mean"]
    width_in = max(8.0, 1.2 + len(groups) * (0.35 + 0.28 * len(runs)))
    height_in = 3.2 * len(METRICS) + 1.0
    fig = new_figure(width_in, height_in)
    fig.subplots_adjust(
        left=0.8 / width_in,
        right=0.98,
        bottom=0.7 / height_in,
        top=1 - 0.8 / height_in,
        hspace=0.45,
    )
    axes = fig.subplots(len(METRICS), 1, squeeze=False)[:, 0]
    bar = 0.8 / len(runs)
    x = np.arange(len(groups))
    for ax, (title, of_block, of_mean) in zip(axes, METRICS, strict=True):
        for run in runs:
            values = [
                of_block(run.categories[c]) if c in run.categories else None for c in categories
            ]
            values.append(of_mean(run))
            heights = [v if v is not None else 0.0 for v in values]
            pos = x - 0.4 + bar * (run.index + 0.5)
            ax.bar(pos, heights, width=bar * 0.92, color=colour(run), label=run.label)
            for px, v in zip(pos, values, strict=True):
                text = "n/a" if v is None else f"{v:.3f}"
                ax.text(
                    px,
                    (v or 0.0) + 0.01,
                    text,
                    ha="center",
                    va="bottom",
                    fontsize=7,
                    rotation=90 if len(runs) > 2 else 0,
                )
        ax.set_xticks(x, groups, rotation=15 if len(groups) > 4 else 0)
        ax.set_ylim(0, 1.18)
        ax.set_ylabel(title.split(" (")[0])
        ax.set_title(title)
        ax.grid(axis="y", alpha=0.3)
    # Above the plots, where it hides no bar or label.
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(
        handles, labels, loc="upper center", fontsize=8, ncols=min(len(runs), 4), frameon=False
    )
    save(fig, path)
