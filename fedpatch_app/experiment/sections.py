"""The privacy preset's parts of experiment.md: utility against epsilon, bank budgets."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from fedpatch_app.experiment.presets import BudgetStudy, Sweep
from fedpatch_app.experiment.values import fmt, mean_of
from fedpatch_app.results.schema import load_results

#: Fewer test images than this of either kind (good, defective) in a category, and the
#: differences between the runs' figures are mostly noise: the summary says so.
FEW_TEST_IMAGES = 20


def _dp_sum(banks: dict, key: str) -> int | None:
    """Sum of a DP merge fact over the categories (None without DP)."""
    values = [b["dp"][key] for b in banks.values() if isinstance(b.get("dp"), dict)]
    return int(sum(values)) if values else None


def _sweep_row(value: Any, results: dict) -> dict[str, Any]:
    spent = ((results.get("privacy") or {}).get("spent")) or {}
    banks = (results.get("federated") or {}).get("banks") or {}
    return {
        "value": value,
        "label": f"{value:g}" if value > 0 else "no DP",
        "spent": spent.get("epsilon"),
        "exact": spent.get("epsilon_exact"),
        "delta": spent.get("delta"),
        "spro": mean_of(results, "0.3"),
        "auroc": mean_of(results, "auroc"),
        "bank": sum(int(b.get("size", 0)) for b in banks.values()),
        "kept": _dp_sum(banks, "clusters_kept"),
        "public": _dp_sum(banks, "public_centres"),
    }


def few_images_note(results: dict) -> list[str]:
    """A warning when the test split is too small for differences to mean much."""
    counts = [
        min(b["counts"]["test_good"], b["counts"]["test_defective"])
        for b in results["categories"].values()
    ]
    if not counts or min(counts) >= FEW_TEST_IMAGES:
        return []
    return [
        f"**Few test images**: the smallest category has {min(counts)} good or defective "
        f"test images (fewer than {FEW_TEST_IMAGES}); one image more or less ranked "
        "differently moves a figure by several hundredths, so small differences between "
        "these rows are noise.",
        "",
    ]


def privacy_section(out: Path, sweep: Sweep, dirs: dict[Any, Path]) -> list[str]:
    """Utility against epsilon: a table and plots/privacy_utility.png."""
    ordered = sorted(dirs, key=lambda v: (v <= 0, v))
    results = {v: load_results(dirs[v] / "results.json") for v in ordered}
    rows = [_sweep_row(v, results[v]) for v in ordered]
    lines = [
        f"## Utility against privacy ({sweep.key}, {sweep.partition} partition)",
        "",
        "| target epsilon | epsilon spent (zCDP) | epsilon spent (exact Gaussian) | delta "
        "| mean AUC-sPRO@0.3 | mean image AUROC | bank rows (all categories) "
        "| rows from private data / public centres |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        origin = "-" if row["kept"] is None else f"{row['kept']} / {row['public']}"
        delta = "-" if row["delta"] is None else format(row["delta"], "g")
        lines.append(
            f"| {row['label']} | {fmt(row['spent'])} | {fmt(row['exact'])} | {delta} "
            f"| {fmt(row['spro'])} | {fmt(row['auroc'])} | {row['bank']} | {origin} |"
        )
    lines += [
        "",
        "Privacy unit: one training image of a client; epsilon per category and client, "
        "composed in parallel (disjoint images). See docs/privacy.md.",
        "",
        "Under DP the rows the server merges into a bank are the public centres (from the "
        "public reference images only) and the noisy means of the clusters whose noisy "
        "count passed the threshold (the only rows shaped by private data), before the "
        "greedy reduction to the bank size. A row with 0 rows from private data measures "
        "the public reference alone.",
        "",
    ]
    lines += few_images_note(results[ordered[0]])
    plot = out / "plots" / "privacy_utility.png"
    if _plot_privacy(rows, plot):
        lines += [f"![utility against epsilon](plots/{plot.name})", ""]
    return lines


def _plot_privacy(rows: list[dict], path: Path) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    private = [r for r in rows if r["value"] > 0]
    baseline = next((r for r in rows if r["value"] <= 0), None)
    if not private:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    xs = [r["value"] for r in private]
    for key, label, colour in (
        ("spro", "mean AUC-sPRO@0.3", "#0072B2"),
        ("auroc", "mean image AUROC", "#D55E00"),
    ):
        ys = [math.nan if r[key] is None else r[key] for r in private]
        ax.plot(xs, ys, "o-", color=colour, label=label)
        if baseline is not None and baseline[key] is not None:
            ax.axhline(baseline[key], color=colour, linestyle="--", label=f"{label}, no DP")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("epsilon (per image, delta fixed)")
    ax.set_ylabel("metric")
    ax.set_ylim(0.0, 1.02)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("Utility against privacy (federated, DP cluster summaries)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def _budget_rows(budget: str, results: dict, smallest: str | None) -> list[str]:
    banks = (results.get("federated") or {}).get("banks") or {}
    lines = []
    for cat, block in sorted(results["categories"].items()):
        label = f"**{cat}**" if cat == smallest else cat
        lines.append(
            f"| {budget} | {label} | {(banks.get(cat) or {}).get('size', '-')} | "
            f"{fmt(block['auc_spro']['0.3'])} | {fmt(block['image_auroc']['mean'])} |"
        )
    return lines


def _spread_row(budget: str, results: dict) -> str:
    fair = ((results.get("fairness") or {}).get("categories") or {}).get("auc_spro_0.3") or {}
    return (
        f"| {budget} | {fair.get('worst', '-')} ({fmt(fair.get('worst_value'))}) | "
        f"{fmt(fair.get('gap'))} | {fmt(fair.get('std'))} | {fmt(mean_of(results, '0.3'))} |"
    )


def budget_section(study: BudgetStudy, smallest: str | None, dirs: dict[str, Path]) -> list[str]:
    """Effect of `bank-budget` on the reduced category (and on the others)."""
    lines = [
        f"## Bank budget (federated, {study.partition} partition; {smallest} keeps "
        f"{100 * study.smallest_fraction:.0f}% of its training images)",
        "",
        "| bank-budget | category | bank rows | AUC-sPRO@0.3 | image AUROC |",
        "|---|---|---|---|---|",
    ]
    spread = []
    for budget, folder in dirs.items():
        results = load_results(folder / "results.json")
        lines += _budget_rows(budget, results, smallest)
        spread.append(_spread_row(budget, results))
    return [
        *lines,
        "",
        "| bank-budget | worst category (AUC-sPRO@0.3) | max-min gap | std | mean |",
        "|---|---|---|---|---|",
        *spread,
        "",
    ]
