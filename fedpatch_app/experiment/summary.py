"""experiment.md: the comparison an experiment asks for, from its runs' results.json."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fedpatch_app.experiment.presets import Preset
from fedpatch_app.experiment.sections import budget_section, privacy_section
from fedpatch_app.experiment.values import fmt, mean_of
from fedpatch_app.results.schema import load_results
from fedpatch_app.settings import RunSettings, to_names

#: (key, title) of the metric tables.
METRICS = (("0.05", "AUC-sPRO@0.05"), ("0.3", "AUC-sPRO@0.3"), ("auroc", "image AUROC"))

Runs = list[tuple[str, dict]]


def _metric(results: dict | None, cat: str, key: str) -> Any:
    if results is None:
        return None
    if cat == "mean":
        return mean_of(results, key)
    block = results["categories"].get(cat)
    if block is None:
        return None
    return block["image_auroc"]["mean"] if key == "auroc" else block["auc_spro"][key]


#: Settings the summary's header leaves out: where files go, not what was measured.
PLACES = ("data_root", "out_dir", "run_name", "dataset", "synthetic_scale", "synthetic_kind")


def _header(preset: Preset, settings: RunSettings, runs: Runs) -> list[str]:
    cats = sorted({c for _, r in runs for c in r["categories"]})
    shown = {
        k: v for k, v in to_names(settings).items() if not k.startswith("dp_") and k not in PLACES
    }
    data_root = settings.data_root
    lines = [
        f"# Experiment `{preset.name}`",
        "",
        f"Data: `{data_root}` ({', '.join(cats)}). Settings: "
        + ", ".join(f"{k}={v}" for k, v in sorted(shown.items()))
        + ".",
        "",
    ]
    warnings = sorted({w for _, r in runs for w in r.get("warnings", [])})
    if warnings:
        lines += ["**Warnings**", ""] + [f"- {w}" for w in warnings] + [""]
    return lines


def _metric_table(runs: Runs, cats: list[str], key: str, title: str) -> list[str]:
    central = next((r for _, r in runs if r["run"]["kind"] == "centralized"), None)
    note = " (gap to centralized in brackets)" if central is not None else ""
    lines = [f"## {title}{note}", "", "| category | " + " | ".join(n for n, _ in runs) + " |"]
    lines.append("|---|" + "---|" * len(runs))
    for cat in [*cats, "mean"]:
        ref = _metric(central, cat, key)
        cells = []
        for _, r in runs:
            value = _metric(r, cat, key)
            gap = "" if r is central or ref is None or value is None else f" ({value - ref:+.4f})"
            cells.append(fmt(value) + gap)
        label = "**mean**" if cat == "mean" else cat
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return [*lines, "", *_unavailable(runs, cats, key)]


def _unavailable(runs: Runs, cats: list[str], key: str) -> list[str]:
    """Why a metric is missing (`-`) for a category, as its runs recorded it."""
    metric = "image_auroc" if key == "auroc" else "auc_spro"
    reasons = {}
    for cat in cats:
        for _, r in runs:
            reason = ((r or {}).get("categories", {}).get(cat) or {}).get("not_available") or {}
            if metric in reason:
                reasons.setdefault(cat, reason[metric])
    lines = [f"- {cat}: not available: {why}" for cat, why in reasons.items()]
    return [*lines, ""] if lines else []


def bank_of(results: dict, cat: str) -> tuple[int, float] | None:
    """(size, covering radius) of a run's bank of `cat`, centralized or federated."""
    candidates = [
        (results["categories"].get(cat) or {}).get("bank"),
        ((results.get("federated") or {}).get("banks") or {}).get(cat),
    ]
    for bank in candidates:
        if isinstance(bank, dict) and "size" in bank:
            radius = bank.get("radius", bank.get("covering_radius"))
            return int(bank["size"]), float(radius or 0.0)
    return None


def _bank_table(runs: Runs, cats: list[str]) -> list[str]:
    lines = ["## Memory banks (size / covering radius in the projected space)", ""]
    lines += ["| category | " + " | ".join(n for n, _ in runs) + " |", "|---|" + "---|" * len(runs)]
    for cat in cats:
        cells = []
        for _, r in runs:
            bank = bank_of(r, cat)
            cells.append("-" if bank is None else f"{bank[0]} / {fmt(bank[1], 3)}")
        lines.append(f"| {cat} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def traffic(fed: dict) -> tuple[str, str]:
    """Total bytes clients sent (up) and received (down) in a federated run."""
    counts = fed.get("bytes") or {}
    if not counts:
        return "-", "-"
    up = sum(v for k, v in counts.items() if k.endswith("_up_total"))
    down = sum(v for k, v in counts.items() if k.endswith("_down_total"))
    return f"{up / 1e6:.1f} MB", f"{down / 1e6:.1f} MB"


def _phase_seconds(seconds: dict) -> dict[str, float]:
    """Per-category timings ("<category>/fit") summed per phase ("fit")."""
    out: dict[str, float] = {}
    for key, value in seconds.items():
        if "/" in key and isinstance(value, int | float):
            phase = key.split("/", 1)[1]
            phase = "fit+predict" if phase.startswith("client-") else phase
            out[phase] = out.get(phase, 0.0) + float(value)
    return out


def _time_table(runs: Runs, timings: dict[str, float]) -> list[str]:
    lines = ["## Communication and time", ""]
    lines += [
        "| run | bytes up | bytes down | wall time (s) | phases (s) |",
        "|---|---|---|---|---|",
    ]
    for name, r in runs:
        fed = r.get("federated") or {}
        up, down = traffic(fed)
        phases = fed.get("seconds") or _phase_seconds(r["run"]["seconds"])
        text = ", ".join(f"{k} {v:.1f}" for k, v in phases.items() if isinstance(v, int | float))
        lines.append(f"| {name} | {up} | {down} | {timings.get(name, 0.0):.1f} | {text or '-'} |")
    return [*lines, ""]


def _ablation_table(partition: str, dirs: dict[float, Path]) -> list[str]:
    lines = [f"## Ablation: local oversampling (federated, {partition} partition)", ""]
    lines += [
        "| local-oversample | mean AUC-sPRO@0.05 | mean AUC-sPRO@0.3 | mean image AUROC "
        "| bytes up |",
        "|---|---|---|---|---|",
    ]
    for value in sorted(dirs):
        r = load_results(dirs[value] / "results.json")
        up, _ = traffic(r.get("federated") or {})
        lines.append(
            f"| {value:g} | {fmt(mean_of(r, '0.05'))} | {fmt(mean_of(r, '0.3'))} "
            f"| {fmt(mean_of(r, 'auroc'))} | {up} |"
        )
    return [*lines, ""]


def write_summary(
    out: Path,
    preset: Preset,
    settings: RunSettings,
    run_dirs: Sequence[Path],
    timings: dict[str, float],
    *,
    ablation_dirs: dict[float, Path] | None = None,
    sweep_dirs: dict[Any, Path] | None = None,
    budget_dirs: dict[str, Path] | None = None,
    smallest: str | None = None,
) -> Path:
    """Write out/experiment.md and return its path."""
    runs = [(d.name, load_results(d / "results.json")) for d in run_dirs]
    cats = sorted({c for _, r in runs for c in r["categories"]})
    lines = _header(preset, settings, runs)
    for key, title in METRICS:
        lines += _metric_table(runs, cats, key, title)
    lines += _bank_table(runs, cats) + _time_table(runs, timings)
    if ablation_dirs:
        lines += _ablation_table(preset.ablation_partition or "", ablation_dirs)
    if sweep_dirs and preset.sweep is not None:
        lines += privacy_section(out, preset.sweep, sweep_dirs)
    if budget_dirs and preset.budget_study is not None:
        lines += budget_section(preset.budget_study, smallest, budget_dirs)
    lines += ["Full tables and plots: [report/report.md](report/report.md).", ""]
    path = out / "experiment.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path
