"""A Markdown report with PNG plots for one or more run folders.

``write_report(run_dirs, out_dir, data_root=None)`` reads each run's results.json (and,
when present, curves.npz, scores/ and maps/) and writes ``<out_dir>/report.md`` and
``<out_dir>/plots/*.png``:

- a table of the runs and their warnings, shown first;
- a comparison across runs (AUC-sPRO@0.05, @0.3, image AUROC; differences to the
  centralized run if there is one, else to the first run) and bar charts;
- sPRO-vs-FPR curves (linear up to FPR 0.3, and log-x) and ROC curves per category,
  runs overlaid;
- per run: the category table with the mean row, per-defect metrics, run facts,
  and any extra top-level section of results.json (e.g. ``federated``) as tables;
- heatmap overlays (image, map, ground-truth contour) of the 3 most and 3 least
  anomalous test images per category, when the images and the maps are available.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fedpatch_app.errors import DataError, FedpatchError
from fedpatch_app.evaluation.results import (
    CURVES_FILE,
    LIMIT_KEYS,
    load_curves,
    load_results,
    load_scores,
    results_path,
)

log = logging.getLogger(__name__)

#: Top-level results keys rendered by dedicated sections (everything else is an "extra").
SCHEMA_KEYS = ("schema", "run", "categories", "mean", "warnings")
#: Category-block keys rendered by dedicated columns.
BLOCK_KEYS = ("auc_spro", "image_auroc", "counts", "auc_spro_per_defect")
#: How many most / least anomalous images the heatmaps show per category.
HEATMAP_COUNT = 3
#: Colours of the runs in every plot (colour-blind friendly order).
COLOURS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000")


@dataclass
class Run:
    """One run folder as the report sees it."""

    index: int
    folder: Path
    results: dict[str, Any]
    label: str = ""
    curves: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    curves_note: str | None = None

    @property
    def kind(self) -> str:
        return str(self.results["run"]["kind"])

    @property
    def categories(self) -> dict[str, dict[str, Any]]:
        return self.results["categories"]


# --------------------------------------------------------------------------- formatting


def _fmt(value: Any, digits: int = 4) -> str:
    """A table cell for any plain value."""
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return "n/a"
        if value == 0 or 1e-3 <= abs(value) < 1e5:
            return f"{value:.{digits}f}"
        return f"{value:.{digits}g}"
    if isinstance(value, list | tuple):
        if all(not isinstance(v, Mapping | list | tuple) for v in value):
            return ", ".join(_fmt(v, digits) for v in value) or "(none)"
        return f"`{json.dumps(value)[:200]}`"
    if isinstance(value, Mapping):
        return f"`{json.dumps(value, sort_keys=True)[:200]}`"
    return str(value).replace("|", "\\|").replace("\n", " ")


def _delta(value: Any, base: Any) -> str:
    if value is None or base is None:
        return _fmt(value)
    return f"{_fmt(value)} ({value - base:+.4f})"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return [*lines, ""]


def _is_scalar(value: Any) -> bool:
    return not isinstance(value, Mapping | list | tuple) or (
        isinstance(value, list | tuple)
        and all(not isinstance(v, Mapping | list | tuple) for v in value)
    )


def _flatten_one_level(item: Mapping[str, Any]) -> dict[str, Any]:
    """``{"a": 1, "m": {"x": 2}}`` -> ``{"a": 1, "m.x": 2}`` (deeper values stay as they are)."""
    out: dict[str, Any] = {}
    for key, value in item.items():
        if isinstance(value, Mapping) and value:
            for sub, v in value.items():
                out[f"{key}.{sub}"] = v
        else:
            out[str(key)] = value
    return out


def _render_value(title: str, value: Any, level: int, name: str | None = None) -> list[str]:
    """Render any JSON value as Markdown tables (generic, for extra sections).

    ``title`` is the heading; ``name`` the value's own key (used for nested headings
    and the first column of a table of per-item dicts, e.g. per-client metrics).
    """
    name = title if name is None else name
    heading = "#" * min(level, 6)
    lines = [f"{heading} {title}", ""]
    if isinstance(value, Mapping):
        if not value:
            return [*lines, "(empty)", ""]
        scalars = {k: v for k, v in value.items() if _is_scalar(v)}
        nested = {k: v for k, v in value.items() if not _is_scalar(v)}
        if scalars:
            lines += _table(["key", "value"], [[str(k), _fmt(v)] for k, v in scalars.items()])
        # Flat dicts with the same keys (e.g. per-client or per-category facts) read best
        # as one table, one row each; other dicts get their own key/value table below.
        groups: dict[tuple[str, ...], list[str]] = {}
        for key, child in nested.items():
            if isinstance(child, Mapping) and child and all(_is_scalar(x) for x in child.values()):
                groups.setdefault(tuple(str(c) for c in child), []).append(key)
        for columns, keys in groups.items():
            if len(keys) < 2 and len(nested) > 1:
                continue
            rows = [[str(k), *(_fmt(nested[k].get(c)) for c in columns)] for k in keys]
            lines += _table([name.rsplit(".", 1)[-1], *columns], rows)
            nested = {k: v for k, v in nested.items() if k not in keys}
        for key, child in nested.items():
            sub = f"{name}.{key}"
            if level >= 6:
                lines += [f"{sub}:", "", "```json", json.dumps(child, indent=2)[:4000], "```", ""]
            else:
                lines += _render_value(sub, child, level + 1, sub)
        return lines
    if isinstance(value, list):
        if value and all(isinstance(v, Mapping) for v in value):
            items = [_flatten_one_level(item) for item in value]
            columns = []
            for item in items:
                columns += [c for c in item if c not in columns]
            rows = [[_fmt(item.get(c)) for c in columns] for item in items]
            return [*lines, *_table(columns, rows)]
        return [*lines, "```json", json.dumps(value, indent=2)[:4000], "```", ""]
    return [*lines, _fmt(value), ""]


# --------------------------------------------------------------------------- loading


def _load_runs(run_dirs: Sequence[str | Path]) -> list[Run]:
    if not run_dirs:
        raise DataError("the report needs at least one run folder")
    runs: list[Run] = []
    seen: dict[str, int] = {}
    for index, item in enumerate(run_dirs):
        path = results_path(item)
        results = load_results(path)
        run = Run(index=index, folder=path.parent, results=results)
        base = f"{results['run']['name']} ({run.kind})"
        seen[base] = seen.get(base, 0) + 1
        run.label = base if seen[base] == 1 else f"{base} #{seen[base]}"
        if (run.folder / CURVES_FILE).is_file():
            try:
                run.curves = load_curves(run.folder)
            except DataError as exc:
                run.curves_note = str(exc)
        else:
            run.curves_note = f"no {CURVES_FILE} in {run.folder}"
        runs.append(run)
    return runs


def _baseline(runs: Sequence[Run]) -> Run:
    for run in runs:
        if run.kind == "centralized":
            return run
    return runs[0]


# --------------------------------------------------------------------------- plots


def _new_figure(width: float, height: float, *, constrained: bool = False) -> Any:
    """A figure outside pyplot (no global state, no display needed: the Agg canvas)."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained" if constrained else None)


def _save(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


def _sorted_curve(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(x, kind="stable")
    return x[order], y[order]


def _plot_spro(category: str, runs: Sequence[Run], path: Path) -> bool:
    fig = _new_figure(12, 4.6)
    fig.subplots_adjust(left=0.06, right=0.975, bottom=0.12, top=0.92, wspace=0.18)
    ax_lin, ax_log = fig.subplots(1, 2)
    drawn = False
    min_positive = 1.0
    for run in runs:
        curve = run.curves.get(category)
        if not curve or "spro_fpr" not in curve or "spro" not in curve:
            continue
        fpr, spro = _sorted_curve(curve["spro_fpr"], curve["spro"])
        auc = run.categories.get(category, {}).get("auc_spro", {})
        label = f"{run.label}: @0.05 {_fmt(auc.get('0.05'), 3)}, @0.3 {_fmt(auc.get('0.3'), 3)}"
        colour = COLOURS[run.index % len(COLOURS)]
        ax_lin.plot(fpr, spro, color=colour, label=label, linewidth=1.8)
        ax_log.plot(fpr, spro, color=colour, linewidth=1.8)
        if np.any(fpr > 0):
            min_positive = min(min_positive, float(fpr[fpr > 0].min()))
        drawn = True
    if not drawn:
        return False
    for limit in (0.01, 0.05, 0.1):
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
    for limit in (0.01, 0.05, 0.1, 0.3):
        ax_log.axvline(limit, color="grey", linestyle=":", linewidth=1)
    ax_lin.set_xlim(0, 0.3)
    ax_lin.set_ylim(0, 1.05)
    ax_lin.set_xlabel("false positive rate (pixels of all test images)")
    ax_lin.set_ylabel("sPRO (mean over defect regions)")
    ax_lin.set_title(f"{category}: sPRO vs FPR, FPR up to 0.3")
    ax_lin.grid(alpha=0.3)
    ax_lin.legend(loc="lower right", fontsize=8, title="AUC-sPRO", title_fontsize=8)
    ax_log.set_xscale("log")
    ax_log.set_xlim(max(min(min_positive, 1e-3), 1e-6), 1.0)
    ax_log.set_ylim(0, 1.05)
    ax_log.set_xlabel("false positive rate (log scale)")
    ax_log.set_title(f"{category}: sPRO vs FPR, log scale")
    ax_log.grid(alpha=0.3)
    _save(fig, path)
    return True


def _plot_roc(category: str, runs: Sequence[Run], path: Path) -> bool:
    fig = _new_figure(5.6, 5.4)
    fig.subplots_adjust(left=0.13, right=0.97, bottom=0.1, top=0.93)
    ax = fig.subplots()
    drawn = False
    for run in runs:
        curve = run.curves.get(category)
        if not curve or "roc_fpr" not in curve or "roc_tpr" not in curve:
            continue
        auroc = run.categories.get(category, {}).get("image_auroc", {})
        label = f"{run.label}: pooled {_fmt(auroc.get('pooled'), 3)}"
        colour = COLOURS[run.index % len(COLOURS)]
        ax.plot(curve["roc_fpr"], curve["roc_tpr"], color=colour, label=label, linewidth=1.8)
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
    _save(fig, path)
    return True


METRICS: tuple[tuple[str, Callable[[Mapping[str, Any]], Any], Callable[[Run], Any]], ...] = (
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


def _plot_bars(categories: Sequence[str], runs: Sequence[Run], path: Path) -> None:
    groups = [*categories, "mean"]
    width_in = max(8.0, 1.2 + len(groups) * (0.35 + 0.28 * len(runs)))
    height_in = 3.2 * len(METRICS) + 1.0
    fig = _new_figure(width_in, height_in)
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
            colour = COLOURS[run.index % len(COLOURS)]
            ax.bar(pos, heights, width=bar * 0.92, color=colour, label=run.label)
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
    _save(fig, path)


# --------------------------------------------------------------------------- heatmaps


def _run_data_root(run: Run, data_root: str | Path | None) -> Path | None:
    if data_root is not None:
        return Path(data_root)
    config = run.results["run"].get("config") or {}
    for key in ("data_root", "data_root_used", "data-root"):
        value = config.get(key)
        if value and Path(str(value)).is_dir():
            return Path(str(value))
    return None


def _run_maps_root(run: Run) -> Path | None:
    own = run.folder / "maps"
    if own.is_dir():
        return own
    value = run.results["run"].get("config", {}).get("maps")
    if value and Path(value).is_dir():
        return Path(value)
    return None


def _pick_extremes(scores: np.ndarray, count: int) -> tuple[list[int], list[int]]:
    order = np.argsort(-scores, kind="stable")
    most = [int(i) for i in order[:count]]
    least = [int(i) for i in order[::-1] if int(i) not in most][:count]
    return most, least


def _plot_heatmaps(
    run: Run, category_name: str, data_root: Path, maps_root: Path, path: Path
) -> str | None:
    """Draw the overlays; return None on success, else the reason they were skipped."""
    from fedpatch_app.data.autovi import load_category, read_image
    from fedpatch_app.evaluation.export import read_map_png, read_scaling

    try:
        scores = load_scores(run.folder, category_name)
        category = load_category(data_root, category_name)
        scaling, _ = read_scaling(maps_root, category_name)
    except FedpatchError as exc:
        return str(exc)
    if len(scores) == 0:
        return f"no image scores for {category_name}"
    by_rel = {s.rel_path: s for s in category.test}
    most, least = _pick_extremes(scores.scores, HEATMAP_COUNT)
    width, height = category.size
    panel_w = 4.2
    panel_h = panel_w * height / width + 0.55
    cols = max(len(most), len(least))
    fig = _new_figure(panel_w * cols + 1.0, panel_h * 2 + 0.5, constrained=True)
    axes = fig.subplots(2, cols, squeeze=False)
    image_artist = None
    for row, (picks, row_title) in enumerate(
        ((most, "most anomalous"), (least, "least anomalous"))
    ):
        for col in range(cols):
            ax = axes[row, col]
            ax.set_axis_off()
            if col >= len(picks):
                continue
            i = picks[col]
            rel = scores.rel_paths[i]
            sample = by_rel.get(rel)
            if sample is None:
                return f"{rel} of scores/{category_name}.csv is not a test image under {data_root}"
            try:
                image = read_image(sample.path)
                levels = read_map_png(maps_root / category_name / rel)
                regions = [] if sample.is_good else category.load_regions(sample)
            except FedpatchError as exc:
                return str(exc)
            raw = scaling.from_uint16(levels)
            h, w = image.shape[:2]
            ax.imshow(image)
            image_artist = ax.imshow(
                raw,
                cmap="inferno",
                alpha=0.5,
                vmin=scaling.low,
                vmax=scaling.high if scaling.high > scaling.low else scaling.low + 1,
                extent=(-0.5, w - 0.5, h - 0.5, -0.5),
                interpolation="bilinear",
            )
            for region in regions:
                mask = np.asarray(region.mask, dtype=np.float32)
                if mask.shape == (h, w) and mask.any():
                    ax.contour(mask, levels=[0.5], colors="#00FF66", linewidths=1.4)
            # The image score in the colour bar's units (the map's maximum).
            ax.set_title(
                f"{row_title} #{col + 1}\n{rel.removeprefix('test/')}  score {raw.max():.4g}",
                fontsize=9,
            )
    if image_artist is not None:
        bar = fig.colorbar(image_artist, ax=axes.ravel().tolist(), shrink=0.8)
        bar.set_label("anomaly score (one scale for the whole category)")
    fig.suptitle(f"{run.label}: {category_name} (green contour = ground-truth region)", fontsize=11)
    _save(fig, path)
    return None


# --------------------------------------------------------------------------- report


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in text)


def _run_section(run: Run) -> list[str]:
    res = run.results
    info = res["run"]
    lines = [f"## Run {run.index + 1}: {run.label}", ""]
    for warning in res.get("warnings", []):
        lines += [f"> **WARNING:** {_fmt(warning)}", ""]
    seconds = info.get("seconds") or {}
    facts = [
        ["kind", _fmt(info["kind"])],
        ["name", _fmt(info["name"])],
        ["weights", _fmt(info["weights"])],
        ["folder", f"`{run.folder}`"],
        ["seconds (total)", _fmt(seconds.get("total"), 1)],
    ]
    lines += _table(["fact", "value"], facts)

    header = [
        "category",
        *(f"AUC-sPRO@{k}" for k in LIMIT_KEYS),
        "image AUROC mean",
        "image AUROC pooled",
        "train",
        "test good",
        "test defective",
    ]
    rows = []
    for cat, block in run.categories.items():
        counts = block["counts"]
        rows.append(
            [
                cat,
                *(_fmt(block["auc_spro"].get(k)) for k in LIMIT_KEYS),
                _fmt(block["image_auroc"].get("mean")),
                _fmt(block["image_auroc"].get("pooled")),
                _fmt(counts.get("train")),
                _fmt(counts.get("test_good")),
                _fmt(counts.get("test_defective")),
            ]
        )
    mean = res["mean"]
    rows.append(
        [
            "**mean**",
            *(f"**{_fmt(mean['auc_spro'].get(k))}**" for k in LIMIT_KEYS),
            f"**{_fmt(mean.get('image_auroc'))}**",
            "",
            *(
                _fmt(sum(int(b["counts"].get(k, 0)) for b in run.categories.values()))
                for k in ("train", "test_good", "test_defective")
            ),
        ]
    )
    lines += [f"### Metrics per category ({run.label})", ""]
    lines += _table(header, rows)
    lines += [
        "AUC-sPRO@L: area under the sPRO curve up to a false positive rate L, divided by L "
        "(1.0 is perfect). Image AUROC mean: mean over defect types of each type against "
        "`good`; pooled: all defective images against `good`. The mean row of the counts "
        "holds their sums.",
        "",
    ]

    defect_rows = []
    for cat, block in run.categories.items():
        per_defect = block.get("auc_spro_per_defect") or {}
        defects = [d for d in block["image_auroc"] if d not in ("mean", "pooled")]
        defects += [d for d in per_defect if d not in defects]
        for defect in defects:
            spro = per_defect.get(defect, {})
            defect_rows.append(
                [
                    cat,
                    defect,
                    _fmt(block["image_auroc"].get(defect)),
                    *(_fmt(spro.get(k)) for k in ("0.05", "0.3")),
                ]
            )
    if defect_rows:
        lines += [f"### Per defect type ({run.label})", ""]
        lines += _table(
            ["category", "defect", "image AUROC", "AUC-sPRO@0.05", "AUC-sPRO@0.3"], defect_rows
        )

    extra_cols: list[str] = []
    extra_values: dict[str, dict[str, Any]] = {}
    for cat, block in run.categories.items():
        flat: dict[str, Any] = {}
        for key, value in block.items():
            if key in BLOCK_KEYS:
                continue
            if isinstance(value, Mapping):
                for sub, v in value.items():
                    if _is_scalar(v):
                        flat[f"{key}.{sub}"] = v
            elif _is_scalar(value):
                flat[key] = value
        extra_values[cat] = flat
        extra_cols += [c for c in flat if c not in extra_cols]
    if extra_cols:
        lines += [f"### Other facts per category ({run.label})", ""]
        lines += _table(
            ["category", *extra_cols],
            [[cat, *(_fmt(v.get(c)) for c in extra_cols)] for cat, v in extra_values.items()],
        )

    lines += _fairness_section(run)

    if seconds:
        lines += _render_value(f"Seconds ({run.label})", seconds, 3, "seconds")
    config = info.get("config") or {}
    if config:
        lines += _render_value(f"Configuration ({run.label})", config, 3, "config")
    for key, value in res.items():
        if key in SCHEMA_KEYS or key == "fairness":
            continue
        lines += _render_value(f"{key} ({run.label})", value, 3, key)
    return lines


def _fairness_section(run: Run) -> list[str]:
    """Spread across categories and clients (results' "fairness" block, or computed from
    the categories for results written before it existed)."""
    from fedpatch_app.evaluation.fairness import METRICS, fairness_block

    block = run.results.get("fairness") or fairness_block(run.results)
    rows = []
    for scope in ("categories", "clients"):
        for key, label, _, _ in METRICS:
            item = (block.get(scope) or {}).get(key)
            if not item or not item.get("n"):
                continue
            rows.append(
                [
                    scope,
                    label,
                    _fmt(item.get("n")),
                    f"{item.get('worst')} ({_fmt(item.get('worst_value'))})",
                    f"{item.get('best')} ({_fmt(item.get('best_value'))})",
                    _fmt(item.get("gap")),
                    _fmt(item.get("std")),
                    _fmt(item.get("mean")),
                ]
            )
    if not rows:
        return []
    lines = [f"### Fairness: spread across categories and clients ({run.label})", ""]
    lines += _table(["across", "metric", "n", "worst", "best", "max-min gap", "std", "mean"], rows)
    lines += [
        "Clients: each client's own metrics on its own test images, averaged over the "
        "categories it evaluated. std: population standard deviation.",
        "",
    ]
    return lines


def _comparison(categories: Sequence[str], runs: Sequence[Run], base: Run) -> list[str]:
    lines = [
        "## Comparison across runs",
        "",
        f"Differences in brackets are to **{base.label}**"
        + (" (the centralized run)." if base.kind == "centralized" else " (the first run)."),
        "",
    ]
    for title, of_block, of_mean in METRICS:
        rows = []
        for cat in categories:
            base_value = of_block(base.categories[cat]) if cat in base.categories else None
            row = [cat]
            for run in runs:
                if cat not in run.categories:
                    row.append("-")
                    continue
                value = of_block(run.categories[cat])
                row.append(_fmt(value) if run is base else _delta(value, base_value))
            rows.append(row)
        row = ["**mean**"]
        for run in runs:
            value = of_mean(run)
            row.append(_fmt(value) if run is base else _delta(value, of_mean(base)))
        rows.append(row)
        lines += [f"### {title}", ""]
        lines += _table(["category", *(r.label for r in runs)], rows)
    return lines


def write_report(
    run_dirs: Sequence[str | Path], out_dir: str | Path, data_root: str | Path | None = None
) -> Path:
    """Write ``<out_dir>/report.md`` and ``<out_dir>/plots/*.png``; return the report's path."""
    runs = _load_runs(run_dirs)
    out = Path(out_dir)
    plots = out / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    base = _baseline(runs)
    categories = sorted({c for run in runs for c in run.categories})

    lines = ["# fedpatch report", ""]
    lines += [
        "Metrics as the official AutoVI evaluator computes them: AUC-sPRO at FPR limits "
        "0.01, 0.05, 0.1, 0.3 and 1.0 (normalised to 1.0 = perfect), and image-level AUROC "
        "with the image score being the maximum of its anomaly map.",
        "",
        "## Runs",
        "",
    ]
    run_rows = []
    for run in runs:
        info = run.results["run"]
        run_rows.append(
            [
                str(run.index + 1),
                run.label,
                _fmt(info["kind"]),
                _fmt(info["weights"]),
                str(len(run.categories)),
                _fmt((info.get("seconds") or {}).get("total"), 1),
                _fmt(run.results["mean"]["auc_spro"].get("0.05")),
                _fmt(run.results["mean"]["auc_spro"].get("0.3")),
                _fmt(run.results["mean"].get("image_auroc")),
                f"`{run.folder}`",
            ]
        )
    lines += _table(
        [
            "#",
            "run",
            "kind",
            "weights",
            "categories",
            "seconds",
            "mean AUC-sPRO@0.05",
            "mean AUC-sPRO@0.3",
            "mean image AUROC",
            "folder",
        ],
        run_rows,
    )
    warned = [(run, w) for run in runs for w in run.results.get("warnings", [])]
    if warned:
        lines += ["## Warnings", ""]
        for run, warning in warned:
            lines += [f"> **WARNING ({run.label}):** {_fmt(warning)}", ""]

    if len(runs) > 1:
        lines += _comparison(categories, runs, base)
    _plot_bars(categories, runs, plots / "bars.png")
    lines += ["## Bar charts", "", "![metrics per category and run](plots/bars.png)", ""]

    lines += ["## Curves per category", ""]
    for run in runs:
        if run.curves_note:
            lines += [f"- {run.label}: curves not shown ({run.curves_note}).", ""]
    for cat in categories:
        spro_path = plots / f"spro_{_slug(cat)}.png"
        roc_path = plots / f"roc_{_slug(cat)}.png"
        lines += [f"### {cat}", ""]
        have_spro = _plot_spro(cat, runs, spro_path)
        have_roc = _plot_roc(cat, runs, roc_path)
        if have_spro:
            lines += [f"![sPRO vs FPR, {cat}](plots/{spro_path.name})", ""]
        if have_roc:
            lines += [f"![image ROC, {cat}](plots/{roc_path.name})", ""]
        if not (have_spro or have_roc):
            lines += ["(no curves stored for this category)", ""]

    for run in runs:
        lines += _run_section(run)

    lines += [
        "## Heatmaps",
        "",
        f"The {HEATMAP_COUNT} most and {HEATMAP_COUNT} least anomalous test images per "
        "category: image, anomaly map on one colour scale per category, ground-truth "
        "regions outlined in green.",
        "",
    ]
    for run in runs:
        root = _run_data_root(run, data_root)
        maps_root = _run_maps_root(run)
        if root is None or maps_root is None:
            missing = (
                "no dataset root: pass --data-root"
                if root is None
                else "no exported maps in the run folder"
            )
            lines += [f"- {run.label}: heatmaps skipped ({missing}).", ""]
            continue
        for cat in sorted(run.categories):
            path = plots / f"heatmaps_{run.index + 1}_{_slug(cat)}.png"
            if not (maps_root / cat / "test").is_dir():
                lines += [f"- {run.label}, {cat}: heatmaps skipped (no maps in {maps_root}).", ""]
                continue
            reason = _plot_heatmaps(run, cat, root, maps_root, path)
            if reason:
                lines += [f"- {run.label}, {cat}: heatmaps skipped ({reason}).", ""]
            else:
                lines += [f"### {run.label}: {cat}", "", f"![heatmaps](plots/{path.name})", ""]

    report = out / "report.md"
    report.write_text("\n".join(lines).rstrip() + "\n", encoding="utf-8")
    log.info("wrote %s", report)
    return report


def run_cli(args: argparse.Namespace) -> int:
    """``fedpatch report RUN_DIR... --out DIR [--data-root DIR]``."""
    report = write_report(args.runs, args.out, data_root=args.data_root)
    print(f"report: {report}")
    return 0
