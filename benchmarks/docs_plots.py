"""The report's and the deck's results plot, drawn from a results folder's values.

One figure, two panels (AUC-sPRO@0.3 and image AUROC), a group of bars per category and
the mean, one bar per stage-1 run: the same values as the report's tables (the keys of
`figure_tables.read_experiment`), so the plot cannot disagree with them.
"""

from __future__ import annotations

import math
from pathlib import Path

import figure_tables as t

#: One colour per run (colour-blind friendly), in the order of figure_tables.STAGE1_RUNS.
COLOURS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7")
PANELS = (("auc_spro_0.3", "AUC-sPRO@0.3"), ("image_auroc", "image AUROC"))


def results_plot(values: t.Values, path: Path) -> Path:
    """The two-panel bar chart of every category and the mean, written to `path` (PNG)."""
    from matplotlib.figure import Figure

    groups = [*t.categories(values), "mean"]
    fig = Figure(figsize=(7.2, 2.6), dpi=150, layout="constrained")
    axes = fig.subplots(1, 2)
    width = 0.8 / len(t.STAGE1_RUNS)
    metrics = tuple(f"/{m}" for m, _ in PANELS)
    shown = [v for k, v in values.items() if k.endswith(metrics) and "/gap/" not in k]
    bottom = min([0.4, *(math.floor(v * 10) / 10 for v in shown if math.isfinite(v))])
    for ax, (metric, title) in zip(axes, PANELS, strict=True):
        for i, (label, run) in enumerate(t.STAGE1_RUNS):
            heights = [values.get(f"{run}/{g}/{metric}", float("nan")) for g in groups]
            xs = [g + (i - 1.5) * width for g in range(len(groups))]
            ax.bar(xs, heights, width, label=label, color=COLOURS[i])
        ax.set_title(title, fontsize=9)
        ax.set_xticks(range(len(groups)))
        ax.set_xticklabels(groups, fontsize=7, rotation=30, ha="right")
        ax.set_ylim(max(bottom, 0.0), 1.0)
        ax.tick_params(axis="y", labelsize=7)
        ax.grid(axis="y", alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=7, ncols=4, loc="outside upper center", frameon=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, metadata={"Software": None})
    return path
