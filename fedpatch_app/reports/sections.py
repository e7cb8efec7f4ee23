"""One run's section of the report: its flags, what it used, its figures, and its extras.

The section opens with what must not be missed: synthetic data, random backbone weights, a run
that did not complete, then the run's own warnings. The configuration is shown as what was
*used* (backbone, the weights actually loaded, the data read), read through ``run_facts`` so
that old and new results files give the same table; the settings as given follow. Then the
figures per category (categories with few test images marked), per defect type, other facts,
the spread across categories and clients, and every other block of results.json as tables
(a federated run's clients in one table per topic).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fedpatch_app.reports.clients import clients_tables
from fedpatch_app.reports.markdown import fmt, is_scalar, render_value, table
from fedpatch_app.reports.runs import FEW_MARK, Run, describe_features, few_images, few_images_note
from fedpatch_app.results import run_facts
from fedpatch_app.results.schema import LIMIT_KEYS
from fedpatch_app.run_status import describe

#: Top-level results keys rendered by dedicated sections (everything else is an "extra").
SCHEMA_KEYS = ("schema", "run", "categories", "mean", "warnings", "fairness", "dataset")
#: Category-block keys rendered by dedicated columns.
BLOCK_KEYS = ("auc_spro", "image_auroc", "counts", "auc_spro_per_defect")
#: Settings shown in the "used" table (from what the run recorded it used), not again.
USED_SETTINGS = (
    "weights",
    "feature_spec",
    "fingerprint",
    "dataset_used",
    "data_root_used",
    "categories_used",
    "data_root",
    "categories",
    "maps",
)


def flags(run: Run) -> list[str]:
    """What must not be missed about a run, one short phrase each (empty when none)."""
    out = []
    if run.data.is_synthetic:
        out.append("synthetic data, not AutoVI")
    if run.features.random_weights:
        out.append("random backbone weights")
    status = run_status(run)
    if status not in (None, "completed"):
        out.append(f"status {status}")
    return out


def run_status(run: Run) -> str | None:
    """How the run ended: failed or interrupted when its status.json says so, else what
    its results say."""
    if run.stopped is not None:
        return str(run.stopped.get("status"))
    return run_facts.status(run.results)


def flag_lines(run: Run) -> list[str]:
    """The warning lines at the top of a run's section."""
    lines = []
    data, feats = run.data, run.features
    if data.is_synthetic:
        what = data.synthetic.describe() if data.synthetic else "details not recorded"
        lines += [
            f"> **SYNTHETIC DATA:** this run read the built-in synthetic AutoVI-format data "
            f"({what}), not AutoVI: its figures say nothing about AutoVI.",
            "",
        ]
    elif data.kind == "unknown":
        lines += [
            "> Data not recorded: this results file does not say whether the run read AutoVI "
            "or synthetic data.",
            "",
        ]
    if feats.random_weights:
        lines += [
            f"> **RANDOM WEIGHTS:** the {feats.backbone} backbone had random weights "
            f"(`{feats.weights}`), not trained ones: its figures say nothing about PatchCore "
            "with a trained backbone.",
            "",
        ]
    status = run_status(run)
    if status not in (None, "completed"):
        lines += [
            f"> **STATUS {status}:** the run did not complete; its figures may be partial.",
            "",
        ]
        if run.stopped is not None:
            lines += [f"> status.json: {describe(run.stopped)}.", ""]
    return lines


def data_text(run: Run) -> str:
    """``AutoVI``, ``parts (mvtec layout)``, ``SYNTHETIC (drawn, scale tiny, seed 0)`` or
    ``not recorded``."""
    data = run.data
    if data.name and not data.is_synthetic:
        return data.name
    kind = {"autovi": "AutoVI", "synthetic": "SYNTHETIC", "unknown": "not recorded"}
    text = kind.get(data.kind, data.kind)
    return text + (f" ({data.synthetic.describe()})" if data.synthetic else "")


def weights_text(run: Run) -> str:
    """The weights identifier loaded, ``(RANDOM)`` added for random weights."""
    feats = run.features
    return feats.weights + (" (RANDOM)" if feats.random_weights else "")


def used_table(run: Run) -> list[str]:
    """What the run used (not what it was asked for), and where it is."""
    info, data, feats = run.results["run"], run.data, run.features
    rows = [
        ["kind", fmt(info["kind"])],
        ["name", fmt(info["name"])],
        ["status", fmt(run_status(run) or "not recorded")],
        ["data", data_text(run)],
        ["data root", f"`{data.root}`" if data.root else "not recorded"],
        ["categories", fmt(data.categories)],
        ["backbone", feats.backbone],
        ["weights loaded", weights_text(run)],
    ]
    asked = run_facts.weights_asked(run.results)
    if asked and asked != feats.weights:
        rows.append(["weights asked for", fmt(asked)])
    rows += [
        ["image size", fmt(feats.image_size) if feats.image_size else "not recorded"],
        ["features", describe_features(run) + _tag(run)],
        ["folder", f"`{run.folder}`"],
        ["seconds (total)", fmt((info.get("seconds") or {}).get("total"), 1)],
    ]
    return [f"### Used ({run.label})", "", *table(["fact", "value"], rows)]


def _tag(run: Run) -> str:
    return f" [features {run.features_tag}]" if run.features_tag else ""


def _metrics_rows(run: Run) -> tuple[list[list[str]], list[tuple[str, tuple[int, int]]]]:
    """Category rows of the metrics table, and the categories with few test images."""
    rows, few = [], []
    for cat, block in run.categories.items():
        counts, auroc = block["counts"], block["image_auroc"]
        small = few_images(block)
        if small:
            few.append((cat, small))
        rows.append(
            [
                cat + (f" {FEW_MARK}" if small else ""),
                *(fmt(block["auc_spro"].get(k)) for k in LIMIT_KEYS),
                fmt(auroc.get("mean")),
                fmt(auroc.get("pooled")),
                *(fmt(counts.get(k)) for k in ("train", "test_good", "test_defective")),
            ]
        )
    return rows, few


def metrics_table(run: Run) -> list[str]:
    """Metrics per category with the mean row; categories with few test images marked."""
    header = [
        "category",
        *(f"AUC-sPRO@{k}" for k in LIMIT_KEYS),
        "image AUROC mean",
        "image AUROC pooled",
        "train",
        "test good",
        "test defective",
    ]
    rows, few = _metrics_rows(run)
    mean = run.results["mean"]
    sums = (
        fmt(sum(int(b["counts"].get(k, 0)) for b in run.categories.values()))
        for k in ("train", "test_good", "test_defective")
    )
    rows.append(
        [
            "**mean**",
            *(f"**{fmt(mean['auc_spro'].get(k))}**" for k in LIMIT_KEYS),
            f"**{fmt(mean.get('image_auroc'))}**",
            "",
            *sums,
        ]
    )
    lines = [f"### Metrics per category ({run.label})", "", *table(header, rows)]
    lines += [
        "AUC-sPRO@L: area under the sPRO curve up to a false positive rate L, divided by L "
        "(1.0 is perfect). Image AUROC mean: mean over defect types of each type against "
        "`good`; pooled: all defective images against `good`. The mean row of the counts "
        "holds their sums.",
        "",
    ]
    return lines + few_images_note(few)


def defect_table(run: Run) -> list[str]:
    """Image AUROC and AUC-sPRO of each defect type."""
    rows = []
    for cat, block in run.categories.items():
        per_defect = block.get("auc_spro_per_defect") or {}
        defects = [d for d in block["image_auroc"] if d not in ("mean", "pooled")]
        defects += [d for d in per_defect if d not in defects]
        for defect in defects:
            spro = per_defect.get(defect, {})
            auroc = fmt(block["image_auroc"].get(defect))
            rows.append([cat, defect, auroc, *(fmt(spro.get(k)) for k in ("0.05", "0.3"))])
    if not rows:
        return []
    header = ["category", "defect", "image AUROC", "AUC-sPRO@0.05", "AUC-sPRO@0.3"]
    return [f"### Per defect type ({run.label})", "", *table(header, rows)]


def other_facts_table(run: Run) -> list[str]:
    """The category blocks' extra facts (bank size, radius, map scaling...), one row each."""
    columns: list[str] = []
    values: dict[str, dict[str, Any]] = {}
    for cat, block in run.categories.items():
        flat: dict[str, Any] = {}
        for key, value in block.items():
            if key in BLOCK_KEYS:
                continue
            if isinstance(value, Mapping):
                flat.update({f"{key}.{sub}": v for sub, v in value.items() if is_scalar(v)})
            elif is_scalar(value):
                flat[key] = value
        values[cat] = flat
        columns += [c for c in flat if c not in columns]
    if not columns:
        return []
    rows = [[cat, *(fmt(v.get(c)) for c in columns)] for cat, v in values.items()]
    return [f"### Other facts per category ({run.label})", "", *table(["category", *columns], rows)]


def fairness_section(run: Run) -> list[str]:
    """Spread across categories and clients (results' "fairness" block, or computed from
    the categories for results written before it existed)."""
    from fedpatch_app.metrics.fairness import METRICS, fairness_block

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
                    fmt(item.get("n")),
                    f"{item.get('worst')} ({fmt(item.get('worst_value'))})",
                    f"{item.get('best')} ({fmt(item.get('best_value'))})",
                    fmt(item.get("gap")),
                    fmt(item.get("std")),
                    fmt(item.get("mean")),
                ]
            )
    if not rows:
        return []
    header = ["across", "metric", "n", "worst", "best", "max-min gap", "std", "mean"]
    lines = [f"### Fairness: spread across categories and clients ({run.label})", ""]
    lines += table(header, rows)
    lines += [
        "Clients: each client's own metrics on its own test images, averaged over the "
        "categories it evaluated. std: population standard deviation.",
        "",
    ]
    return lines


#: The phases of `run.phases`, in the order a run goes through them.
PHASES = (
    ("extraction", "feature extraction (slowest client)"),
    ("local_coreset", "local coreset (slowest client)"),
    ("upload", "upload of the coresets (transfer and waiting)"),
    ("merge", "merge on the server"),
    ("broadcast", "broadcast of the banks (transfer and waiting)"),
    ("scoring", "scoring of test and calibration images (slowest client)"),
    ("statistics", "evaluation statistics"),
    ("pooling", "pooled metrics on the server"),
)


def phases_table(run: Run) -> list[str]:
    """Where the run's time went, phase by phase, so a user sees what to scale."""
    phases = run.results["run"].get("phases")
    if not isinstance(phases, Mapping):
        return []
    total = sum(v for v in phases.values() if isinstance(v, int | float)) or 1.0
    rows = [
        f"| {label} | {fmt(phases[key], 2)} | {100 * phases[key] / total:.0f}% |"
        for key, label in PHASES
        if isinstance(phases.get(key), int | float)
    ]
    head = [f"### Where the time goes ({run.label})", "", "| phase | seconds | share |"]
    return [*head, "|---|---|---|", *rows, ""]


def extras(run: Run) -> list[str]:
    """Seconds, the settings as given, and every other top-level block as tables."""
    lines: list[str] = []
    seconds = run.results["run"].get("seconds") or {}
    if seconds:
        lines += render_value(f"Seconds ({run.label})", seconds, 3, "seconds")
    settings = {k: v for k, v in run_facts.config(run.results).items() if k not in USED_SETTINGS}
    if settings:
        lines += render_value(f"Settings as given ({run.label})", settings, 3, "config")
    for key, value in run.results.items():
        if key in SCHEMA_KEYS:
            continue
        if (
            key == "federated"
            and isinstance(value, Mapping)
            and isinstance(value.get("clients"), list)
        ):
            rest = {k: v for k, v in value.items() if k != "clients"}
            lines += render_value(f"{key} ({run.label})", rest, 3, key)
            lines += clients_tables(value["clients"], list(run.categories), run.label)
            continue
        lines += render_value(f"{key} ({run.label})", value, 3, key)
    return lines


def run_section(run: Run) -> list[str]:
    """The whole section of one run."""
    lines = [f"## Run {run.index + 1}: {run.label}", "", *flag_lines(run)]
    for warning in run.results.get("warnings", []):
        lines += [f"> **WARNING:** {fmt(warning)}", ""]
    lines += used_table(run)
    lines += metrics_table(run)
    lines += defect_table(run)
    lines += other_facts_table(run)
    lines += phases_table(run)
    lines += fairness_section(run)
    lines += extras(run)
    return lines
