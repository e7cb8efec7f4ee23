"""Readers and tables of `benchmarks/figures.py`.

A reader turns what a set's commands left in its work folder into flat values, a
`{key: number}` dict (keys such as `centralized/mean/auc_spro_0.3`); a table renderer
turns those values into the Markdown lines of one table in the docs. Both are pure
functions of files and dicts, so the tables can be tested without running anything.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

Values = dict[str, float]
Table = Callable[[Values], list[str]]

#: The FPR limits of AUC-sPRO, as results.json spells them.
LIMITS = ("0.01", "0.05", "0.1", "0.3", "1.0")
#: The stage-1 runs, in the order of the docs' tables: (label in the report, run folder).
STAGE1_RUNS = (
    ("centralized", "centralized"),
    ("federated IID", "federated-iid"),
    ("federated non-IID", "federated-noniid"),
    ("local-only", "local-only"),
)
#: The runs of the oversampling ablation, by local-oversample value (2 is the default run).
ABLATION_RUNS = (
    (1.0, "federated-category-oversample-1"),
    (2.0, "federated-noniid"),
    (4.0, "federated-category-oversample-4"),
)
TARGET_GAP = 0.02


# ---------------------------------------------------------------------- readers


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _run_values(name: str, results: dict) -> Values:
    """One run's results.json: mean and per-category metrics, banks, bytes."""
    out: Values = {}
    for lim, value in results["mean"]["auc_spro"].items():
        out[f"{name}/mean/auc_spro_{lim}"] = value
    out[f"{name}/mean/image_auroc"] = results["mean"]["image_auroc"]
    banks = (results.get("federated") or {}).get("banks") or {}
    for cat, block in results["categories"].items():
        for lim, value in block["auc_spro"].items():
            out[f"{name}/{cat}/auc_spro_{lim}"] = value
        out[f"{name}/{cat}/image_auroc"] = block["image_auroc"]["mean"]
        bank = block.get("bank") or banks.get(cat) or {}
        if "size" in bank:
            out[f"{name}/{cat}/bank_size"] = bank["size"]
            out[f"{name}/{cat}/bank_radius"] = bank.get("radius", bank.get("covering_radius"))
    out.update(_fairness_values(name, results.get("fairness") or {}))
    counts = (results.get("federated") or {}).get("bytes") or {}
    if counts:
        up = sum(v for k, v in counts.items() if k.endswith("_up_total"))
        down = sum(v for k, v in counts.items() if k.endswith("_down_total"))
        out[f"{name}/bytes_up_mb"] = up / 1e6
        out[f"{name}/bytes_down_mb"] = down / 1e6
    return {k: float(v) for k, v in out.items() if _number(v)}


def _fairness_values(name: str, fairness: dict) -> Values:
    """A run's "fairness" block: per scope (categories, clients) and metric the worst
    value, the max-min gap and the standard deviation; the worst member's name is part
    of a key of its own (`<run>/fairness/<scope>/<metric>/worst/<member>`)."""
    out: Values = {}
    for scope in ("categories", "clients"):
        for metric, block in (fairness.get(scope) or {}).items():
            prefix = f"{name}/fairness/{scope}/{metric}"
            for stat in ("worst_value", "gap", "std"):
                if _number(block.get(stat)):
                    out[f"{prefix}/{stat}"] = block[stat]
            if block.get("worst") is not None and _number(block.get("worst_value")):
                member = str(block["worst"]).replace(" ", "-")
                out[f"{prefix}/worst/{member}"] = block["worst_value"]
    return out


#: The metrics whose gap to the centralized run is a value of its own.
GAP_METRICS = ("auc_spro_0.3", "image_auroc")


def _gaps(values: Values, runs: list[str]) -> Values:
    """`<run>/gap/<metric>` (mean) and `<run>/<category>/gap/<metric>`: run minus centralized."""
    out: Values = {}
    for run in runs:
        for key, value in values.items():
            head, _, metric = key.rpartition("/")
            if key.startswith(f"{run}/") and metric in GAP_METRICS:
                where = head.split("/", 1)[1]
                ref = values.get(f"centralized/{where}/{metric}")
                if ref is not None:
                    prefix = run if where == "mean" else head
                    out[f"{prefix}/gap/{metric}"] = value - ref
    return out


def read_experiment(folder: Path) -> Values:
    """Every run of a `fedpatch experiment` folder (its `<run>/results.json`), and each
    run's gaps to the centralized one."""
    values: Values = {}
    runs = []
    for path in sorted(folder.glob("*/results.json")):
        results = json.loads(path.read_text(encoding="utf-8"))
        runs.append(path.parent.name)
        values.update(_run_values(path.parent.name, results))
        total = (results["run"].get("seconds") or {}).get("total")
        if _number(total):
            values[f"{path.parent.name}/seconds"] = float(total)
    if not values:
        raise FileNotFoundError(f"{folder}: no <run>/results.json (did the experiment finish?)")
    return {**values, **_gaps(values, [r for r in runs if r != "centralized"])}


def _gain_values(prefix: str, check: dict) -> Values:
    out: Values = {}
    if check.get("attacker_gain") is not None:
        out[f"{prefix}/gain"] = check["attacker_gain"]
    if check.get("honest_gain_max") is not None:
        out[f"{prefix}/honest_gain"] = check["honest_gain_max"]
    if "flagged" in check:
        out[f"{prefix}/flagged"] = len(check["flagged"])
    return out


def read_poisoning(path: Path) -> Values:
    """`benchmarks/poisoning.py --json`: per scenario (`poison-on`, ...) and category."""
    data = json.loads(path.read_text(encoding="utf-8"))
    values: Values = {}
    for scenario, out in data.items():
        values[f"{scenario}/seconds"] = out.get("seconds", math.nan)
        values[f"{scenario}/failed"] = float("failed" in out)
        values[f"{scenario}/flags"] = len(out.get("flagged", []))
        values[f"{scenario}/dropped"] = len(out.get("dropped", []))
        for cat, m in out.get("categories", {}).items():
            key = f"{scenario}/{cat}"
            values[f"{key}/auc"] = m["auc_spro_0.3"]
            values[f"{key}/auroc"] = m["image_auroc"]
            values[f"{key}/left_out"] = m["quarantined_attacker"]
            values[f"{key}/honest_left_out"] = m["quarantined_honest"]
            values[f"{key}/honest_rows"] = m["rows_honest"]
            values.update(_gain_values(key, m.get("source_check") or {}))
    return {k: float(v) for k, v in values.items() if _number(v)}


def read_honest_grid(folder: Path) -> Values:
    """`benchmarks/honest_grid.py --out DIR`: every finished cell in DIR/cells/."""
    values: Values = {}
    worst = {"auc_spro_0.3": 0.0, "image_auroc": 0.0}
    flagged_runs = whole = 0
    cells = sorted((folder / "cells").glob("*.json"))
    for path in cells:
        cell = json.loads(path.read_text(encoding="utf-8"))
        name, flagged = cell["cell"], False
        values[f"{name}/seconds"] = cell["on"].get("seconds", math.nan)
        for cat, block in cell["on"]["categories"].items():
            support = block["support"]
            values[f"{name}/{cat}/left_out"] = support["left_out"]
            values[f"{name}/{cat}/rows"] = support["rows"]
            values[f"{name}/{cat}/flagged"] = len(block["source_check_flagged"])
            flagged = flagged or bool(block["source_check_flagged"])
            whole += sum(
                1
                for v in support["clients"].values()
                if v["rows"] and v["quarantined"] == v["rows"]
            )
            for metric, change in cell["change"][cat].items():
                values[f"{name}/{cat}/change/{metric}"] = change
                worst[metric] = min(worst.get(metric, 0.0), change)
        flagged_runs += flagged
    values.update({f"worst_change/{m}": v for m, v in worst.items()})
    values.update(cells=len(cells), runs_flagged=flagged_runs, whole_categories_left_out=whole)
    return {k: float(v) for k, v in values.items() if _number(v)}


#: What the speed benchmarks print, and the value each line gives.
PRINTED = {
    "ours_vs_reference": r"ours vs reference: ([\d.]+)x",
    "predict_vs_forward": r"ratio predict / bare forward: ([\d.]+)x",
    "bare_forward_images_s": r"bare forward\s*:\s*([\d.]+) images/s",
    "predict_images_s": r"predict\s+:\s*([\d.]+) images/s",
    "extraction_share": r"predict's time: extraction [\d.]+ s \((\d+)%\)",
    "knn_share": r"kNN [\d.]+ s \((\d+)%\)",
    "http_p50_vs_library": r"HTTP overhead, 1 client\s*: p50 ([\d.]+)x",
}


def read_printed(text: str) -> Values:
    """The first figure of each kind in a benchmark's printed output (see PRINTED)."""
    values: Values = {}
    for key, pattern in PRINTED.items():
        match = re.search(pattern, text)
        if match:
            values[key] = float(match.group(1))
    return values


def read_scale_table(text: str) -> Values:
    """The last row (the largest fraction) of `benchmarks/scale.py`'s printed table."""
    # the cost table's rows (its second cell a number, or "-" with --federated-only);
    # the phase table's rows name their run there
    rows = [line for line in text.splitlines() if re.match(r"\|\s*\d+\s*\|\s*[\d.-]+\s*\|", line)]
    if not rows:
        return {}
    cells = [
        float("nan") if c.strip() == "-" else float(c)
        for c in rows[-1].strip().strip("|").split("|")
    ]
    values = {
        "train_images": cells[0],
        "fed_vs_central_time": cells[3],
        "server_above_idle_vs_bank": cells[6],
        "coresets_vs_banks": 2.0 * cells[12],
    }
    growth = re.search(r"server peak growth .*?= ([\d.]+) x the largest bank", text)
    if growth:
        values["server_growth_vs_bank"] = float(growth.group(1))
    return values


# ---------------------------------------------------------------------- tables


def fmt(value: float | None, digits: int = 4, sign: bool = False) -> str:
    """A number as the docs write it; "-" when there is none."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:{'+' if sign else ''}.{digits}f}"


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _sep(n: int) -> str:
    return "|" + "---|" * n


def means_table(runs: Sequence[tuple[str, str]] = STAGE1_RUNS, first: str = "run") -> Table:
    """Mean AUC-sPRO at every limit and mean image AUROC, a row per run."""

    def table(v: Values) -> list[str]:
        head = [first, "AUC-sPRO@0.01"] + [f"@{lim}" for lim in LIMITS[1:]] + ["image AUROC"]
        lines = [_row(head), _sep(len(head))]
        for label, run in runs:
            cells = [fmt(v.get(f"{run}/mean/auc_spro_{lim}")) for lim in LIMITS]
            lines.append(_row([label, *cells, fmt(v.get(f"{run}/mean/image_auroc"))]))
        return lines

    return table


def _verdict(label: str, gaps: tuple[float, float]) -> tuple[list[str], str]:
    met = [g >= -TARGET_GAP for g in gaps]
    if label == "local-only":
        return [fmt(g, sign=True) for g in gaps], "(the reason to federate)"
    cells = [
        fmt(g, sign=True) if ok else f"**{fmt(g, sign=True)}**"
        for g, ok in zip(gaps, met, strict=True)
    ]
    if all(met):
        return cells, "yes"
    if not any(met):
        return cells, "**no**"
    names = ("AUC-sPRO", "image AUROC")
    return cells, ", ".join(
        f"{n} {'yes' if ok else '**no**'}" for n, ok in zip(names, met, strict=True)
    )


def gaps_table(v: Values) -> list[str]:
    """The stage-1 target: each run's gap to centralized on mean AUC-sPRO@0.3 and AUROC."""
    lines = [_row(["run", "AUC-sPRO@0.3 gap", "image AUROC gap", "target met"]), _sep(4)]
    order = (STAGE1_RUNS[2], STAGE1_RUNS[1], STAGE1_RUNS[3])
    for label, run in order:
        gaps = tuple(
            v[f"{run}/mean/{key}"] - v[f"centralized/mean/{key}"]
            for key in ("auc_spro_0.3", "image_auroc")
        )
        cells, met = _verdict(label, gaps)
        lines.append(_row([label, *cells, met]))
    return lines


def _metric(v: Values, run: str, cat: str, metric: str) -> float | None:
    return v.get(f"{run}/{cat}/{metric}")


def categories(v: Values, run: str = "centralized") -> list[str]:
    """The categories a run has values of, sorted."""
    cats = {k.split("/")[1] for k in v if k.startswith(f"{run}/") and k.endswith("/image_auroc")}
    return sorted(cats - {"mean"})


def metric_table(metric: str) -> Table:
    """experiment.md's table of one metric: a row per category, a column per run, gaps."""

    def table(v: Values) -> list[str]:
        runs = [run for _, run in STAGE1_RUNS]
        lines = [_row(["category", *runs]), _sep(len(runs) + 1)]
        for cat in [*categories(v), "mean"]:
            ref = _metric(v, "centralized", cat, metric)
            cells = [fmt(ref)]
            for run in runs[1:]:
                value = _metric(v, run, cat, metric)
                gap = "" if ref is None or value is None else f" ({value - ref:+.4f})"
                cells.append(fmt(value) + gap)
            lines.append(_row(["**mean**" if cat == "mean" else cat, *cells]))
        return lines

    return table


def banks_table(v: Values) -> list[str]:
    """experiment.md's memory banks: size / covering radius per category and run."""
    runs = [run for _, run in STAGE1_RUNS]
    lines = [_row(["category", *runs]), _sep(len(runs) + 1)]
    for cat in categories(v):
        cells = []
        for run in runs:
            size = v.get(f"{run}/{cat}/bank_size")
            radius = v.get(f"{run}/{cat}/bank_radius")
            cells.append("-" if size is None else f"{size:.0f} / {fmt(radius, 3)}")
        lines.append(_row([cat, *cells]))
    return lines


def ablation_table(default_label: str = "", reference: bool = False) -> Table:
    """The local-oversample ablation; `default_label` marks the default's row (" (default)"),
    `reference` adds the centralized run's row."""

    def table(v: Values) -> list[str]:
        head = ["local-oversample", "mean AUC-sPRO@0.05", "mean AUC-sPRO@0.3"]
        lines = [_row([*head, "mean image AUROC", "bytes up"]), _sep(5)]
        for value, run in ABLATION_RUNS:
            up = v.get(f"{run}/bytes_up_mb")
            label = f"{value:g}" + (default_label if value == 2.0 else "")
            cells = [fmt(v.get(f"{run}/mean/{k}")) for k in ("auc_spro_0.05", "auc_spro_0.3")]
            cells.append(fmt(v.get(f"{run}/mean/image_auroc")))
            lines.append(_row([label, *cells, "-" if up is None else f"{up:.1f} MB"]))
        if reference:
            keys = ("auc_spro_0.05", "auc_spro_0.3", "image_auroc")
            cells = [fmt(v.get(f"centralized/mean/{k}")) for k in keys]
            lines.append(_row(["centralized, for reference", *cells, "-"]))
        return lines

    return table


def pair_table(v: Values) -> list[str]:
    """AUC-sPRO@0.3 / image AUROC per category and run, three decimals."""
    labels = [label for label, _ in STAGE1_RUNS]
    lines = [_row(["category", *labels]), _sep(len(labels) + 1)]
    for cat in categories(v):
        cells = [
            f"{fmt(_metric(v, run, cat, 'auc_spro_0.3'), 3)} / "
            f"{fmt(_metric(v, run, cat, 'image_auroc'), 3)}"
            for _, run in STAGE1_RUNS
        ]
        lines.append(_row([cat, *cells]))
    return lines


def _worst(v: Values, run: str, scope: str, metric: str) -> str:
    """ "<member> <value>" of a run's worst category or client; "-" when there is none."""
    prefix = f"{run}/fairness/{scope}/{metric}/worst/"
    found = [(k[len(prefix) :], x) for k, x in v.items() if k.startswith(prefix)]
    return f"{found[0][0]} {fmt(found[0][1])}" if len(found) == 1 else "-"


def fairness_table(v: Values) -> list[str]:
    """Equity across categories and clients per run: the worst member of each metric and
    the standard deviation across them (clients: federated runs only)."""
    head = ["run", "worst category, AUC-sPRO@0.3", "worst category, image AUROC"]
    head += ["std across categories, AUC-sPRO@0.3", "worst client, AUC-sPRO@0.3"]
    head += ["std across clients, AUC-sPRO@0.3"]
    lines = [_row(head), _sep(len(head))]
    for label, run in STAGE1_RUNS:
        cells = [_worst(v, run, "categories", m) for m in GAP_METRICS]
        cells.append(fmt(v.get(f"{run}/fairness/categories/auc_spro_0.3/std")))
        cells.append(_worst(v, run, "clients", "auc_spro_0.3"))
        cells.append(fmt(v.get(f"{run}/fairness/clients/auc_spro_0.3/std")))
        lines.append(_row([label, *cells]))
    return lines


def experiment_tables(default_label: str = "") -> dict[str, Table]:
    """The tables of a stage-1 experiment's summary (experiment.md), by marker name."""
    return {
        "metric-0.05": metric_table("auc_spro_0.05"),
        "metric-0.3": metric_table("auc_spro_0.3"),
        "metric-auroc": metric_table("image_auroc"),
        "banks": banks_table,
        "ablation": ablation_table(default_label),
    }
