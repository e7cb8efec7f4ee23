"""`fedpatch experiment`: the runs of a preset on the same data and settings, one report.

Preset `stage1` (conf/experiments/stage1.yaml): centralized; federated IID (5 clients);
federated non-IID (category partition, 5 clients); local-only (each client's own bank on
its own test split); and the `local-oversample` ablation of the non-IID federation.
The federated runs go through Flower (`flwr run` simulation with five SuperNodes).

Preset `privacy` (conf/experiments/privacy.yaml): a `sweep` of one run-config key
(`dp-epsilon`) over federated runs, reported as a table and a plot of utility against
epsilon; and a `budget_study` of `bank-budget` on data where one category keeps only a
fraction of its training images (a view of the data root made of links).
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Any

import yaml

from fedpatch_app.centralized import run_centralized
from fedpatch_app.data.autovi import available_categories
from fedpatch_app.data.partition import make_partition
from fedpatch_app.errors import ConfigError, DataError
from fedpatch_app.evaluation.report import write_report
from fedpatch_app.evaluation.results import load_results
from fedpatch_app.local_only import run_local_only

log = logging.getLogger(__name__)

PRESET_DIR = Path(__file__).resolve().parents[1] / "conf" / "experiments"
SETTING_KEYS = {
    "weights": str,
    "device": str,
    "image_size": int,
    "coreset_ratio": float,
    "local_oversample": float,
    "num_clients": int,
    "seed": int,
    "batch_size": int,
}
RUN_KINDS = ("centralized", "federated", "local-only")


def load_preset(name_or_path: str) -> dict[str, Any]:
    """A preset by name (conf/experiments/<name>.yaml) or path, validated."""
    path = Path(name_or_path)
    if not path.suffix:
        path = PRESET_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in PRESET_DIR.glob("*.yaml")) if PRESET_DIR.is_dir() else []
        raise ConfigError(f"experiment preset {name_or_path!r} not found ({path}); known: {known}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("runs"), list):
        raise ConfigError(f"{path}: a preset needs a 'runs' list")
    settings = data.get("settings") or {}
    for key, value in settings.items():
        if key not in SETTING_KEYS:
            raise ConfigError(f"{path}: unknown setting {key!r} (known: {sorted(SETTING_KEYS)})")
        try:
            settings[key] = SETTING_KEYS[key](value)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{path}: setting {key!r}: {exc}") from exc
    names = set()
    for i, run in enumerate(data["runs"]):
        if not isinstance(run, dict) or run.get("kind") not in RUN_KINDS:
            raise ConfigError(f"{path}: runs[{i}] needs a kind among {RUN_KINDS}")
        run.setdefault("name", run["kind"])
        if run["name"] in names:
            raise ConfigError(f"{path}: two runs are named {run['name']!r}")
        names.add(run["name"])
        if run["kind"] != "centralized" and run.get("partition") not in (
            "iid",
            "category",
            "dirichlet",
        ):
            raise ConfigError(f"{path}: runs[{i}] ({run['name']}) needs a partition")
    sweep = data.get("sweep")
    if sweep is not None:
        if (
            not isinstance(sweep, dict)
            or not isinstance(sweep.get("key"), str)
            or not isinstance(sweep.get("values"), list)
            or not sweep["values"]
            or sweep.get("partition") not in ("iid", "category", "dirichlet")
        ):
            raise ConfigError(
                f"{path}: sweep needs a run-config 'key', a non-empty 'values' list and a "
                "'partition'"
            )
        sweep.setdefault("run_config", {})
    study = data.get("budget_study")
    if study is not None:
        budgets = study.get("budgets") if isinstance(study, dict) else None
        if (
            not isinstance(budgets, list)
            or not budgets
            or any(b not in ("volume", "equal", "sqrt") for b in budgets)
            or study.get("partition") not in ("iid", "category", "dirichlet")
        ):
            raise ConfigError(
                f"{path}: budget_study needs 'budgets' among volume, equal, sqrt and a 'partition'"
            )
        fraction = float(study.get("smallest_fraction", 0.25))
        if not 0 < fraction <= 1:
            raise ConfigError(f"{path}: budget_study.smallest_fraction must be in (0, 1]")
        study["smallest_fraction"] = fraction
    ablation = data.get("ablation")
    if ablation is not None:
        values = ablation.get("local_oversample")
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{path}: ablation.local_oversample must be a non-empty list")
        ablation["local_oversample"] = [float(v) for v in values]
    data["settings"] = settings
    data["path"] = str(path)
    return data


def federated_run_config(
    settings: dict, data_root: Path, out: Path, name: str, partition: str, **extra
) -> dict:
    """The Flower run config of one federated run of the experiment."""
    config = {
        "dataset": "autovi",
        "data-root": str(data_root),
        "partition": partition,
        "num-clients": settings["num_clients"],
        "min-clients": settings["num_clients"],
        "weights": settings["weights"],
        "coreset-ratio": settings["coreset_ratio"],
        "local-oversample": settings["local_oversample"],
        "image-size": settings["image_size"],
        "seed": settings["seed"],
        "device": settings["device"],
        "batch-size": settings["batch_size"],
        "out-dir": str(out),
        "run-name": name,
    }
    config.update(extra)
    return config


def run_experiment(
    preset_name: str,
    data_root: Path,
    out: Path,
    *,
    weights: str | None = None,
    device: str | None = None,
    image_size: int | None = None,
    engine: str = "simulation",
) -> Path:
    """Run every run of the preset into `out/<run name>/`, then the comparison report.

    `engine` "simulation" (the default; CLI `--engine`) runs every federated run as a
    real `flwr run` simulation; "inprocess" drives the same ServerApp and ClientApp code
    through `InProcessGrid` in this process (no Ray, no SuperLink port: for machines
    where a simulation cannot start, e.g. while another one holds the port).
    """
    if engine not in ("simulation", "inprocess"):
        raise ConfigError(f"experiment engine must be simulation or inprocess, got {engine!r}")
    from fedpatch_app.federated.simulation import run_simulation

    preset = load_preset(preset_name)
    settings = {
        "weights": "imagenet",
        "device": "auto",
        "image_size": 256,
        "coreset_ratio": 0.1,
        "local_oversample": 2.0,
        "num_clients": 5,
        "seed": 0,
        "batch_size": 8,
        **preset["settings"],
    }
    if weights is not None:
        settings["weights"] = weights
    if device is not None:
        settings["device"] = device
    if image_size is not None:
        settings["image_size"] = int(image_size)
    data_root, out = Path(data_root).resolve(), Path(out).resolve()
    categories = available_categories(data_root) if data_root.is_dir() else []
    if not categories:
        raise DataError(
            f"no AutoVI category under {data_root}: download AutoVI (fedpatch download-autovi) "
            "or make synthetic data (fedpatch synth --scale small)"
        )
    out.mkdir(parents=True, exist_ok=True)
    flwr_home = out / ".flwr"
    run_dirs: list[Path] = []
    ablation_dirs: dict[float, Path] = {}
    timings: dict[str, float] = {}

    def federated(name: str, partition: str, root: Path | None = None, **extra) -> Path:
        config = federated_run_config(settings, root or data_root, out, name, partition, **extra)
        if engine == "inprocess":
            t0 = time.perf_counter()
            _run_inprocess(config, settings["num_clients"])
            timings[name] = time.perf_counter() - t0
            return out / name
        sim = run_simulation(
            config, flwr_home=flwr_home, num_supernodes=settings["num_clients"],
            log_file=out / name / "flwr-run.log",
        )  # fmt: skip
        timings[name] = sim.seconds
        return out / name

    # The settings the centralized and local-only runs share with the federated ones.
    model_settings = {
        key: settings[key]
        for key in ("weights", "coreset_ratio", "image_size", "seed", "device", "batch_size")
    }
    for run in preset["runs"]:
        name, kind = run["name"], run["kind"]
        log.info("experiment %s: run %s (%s)", preset_name, name, kind)
        t0 = time.perf_counter()
        if kind == "centralized":
            run_centralized(data_root, out / name, name=name, **model_settings)
            timings[name] = time.perf_counter() - t0
        elif kind == "local-only":
            partition = make_partition(
                data_root,
                run["partition"],
                num_clients=settings["num_clients"],
                seed=settings["seed"],
            )
            run_local_only(data_root, out / name, partition, name=name, **model_settings)
            timings[name] = time.perf_counter() - t0
        else:
            federated(name, run["partition"])
            if run["partition"] == (preset.get("ablation") or {}).get("partition"):
                ablation_dirs[settings["local_oversample"]] = out / name
        run_dirs.append(out / name)

    ablation = preset.get("ablation")
    if ablation:
        for value in ablation["local_oversample"]:
            if value in ablation_dirs:
                continue
            name = f"federated-{ablation['partition']}-oversample-{value:g}"
            ablation_dirs[value] = federated(
                name, ablation["partition"], **{"local-oversample": value}
            )

    sweep_dirs: dict[float, Path] = {}
    sweep = preset.get("sweep")
    if sweep:
        for value in sweep["values"]:
            label = f"{value:g}" if float(value) > 0 else "off"
            name = f"federated-{sweep['partition']}-{sweep['key']}-{label}"
            sweep_dirs[float(value)] = federated(
                name, sweep["partition"], **{**sweep["run_config"], sweep["key"]: value}
            )
    budget_dirs: dict[str, Path] = {}
    study = preset.get("budget_study")
    if study:
        view, smallest = unequal_view(data_root, out / "data-unequal", study["smallest_fraction"])
        for budget in study["budgets"]:
            budget_dirs[budget] = federated(
                f"federated-{study['partition']}-budget-{budget}",
                study["partition"],
                root=view,
                **{"bank-budget": budget},
            )
        study["smallest"] = smallest

    report_dir = out / "report"
    write_report(
        run_dirs + list(sweep_dirs.values()) + list(budget_dirs.values()),
        report_dir,
        data_root=data_root,
    )
    summary = write_summary(
        out, preset, settings, data_root,
        run_dirs + list(sweep_dirs.values()) + list(budget_dirs.values()),
        ablation_dirs, timings,
        sweep_dirs=sweep_dirs, budget_dirs=budget_dirs,
    )  # fmt: skip
    log.info("experiment report: %s and %s", report_dir / "report.md", summary)
    return summary


def _fmt(value: Any, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _gap(value: Any, ref: Any) -> str:
    if value is None or ref is None:
        return "-"
    return f"{value - ref:+.4f}"


def write_summary(
    out: Path,
    preset: dict,
    settings: dict,
    data_root: Path,
    run_dirs: list[Path],
    ablation_dirs: dict[float, Path],
    timings: dict[str, float],
    *,
    sweep_dirs: dict[float, Path] | None = None,
    budget_dirs: dict[str, Path] | None = None,
) -> Path:
    """experiment.md: the comparison the study asks for, from the runs' results.json."""
    runs = [(d.name, load_results(d / "results.json")) for d in run_dirs]
    central = next((r for n, r in runs if r["run"]["kind"] == "centralized"), None)
    cats = sorted({c for _, r in runs for c in r["categories"]})
    lines = [
        f"# Experiment `{Path(preset['path']).stem}`",
        "",
        f"Data: `{data_root}` ({', '.join(cats)}). Settings: "
        + ", ".join(f"{k}={v}" for k, v in sorted(settings.items()))
        + ".",
        "",
    ]
    warnings = sorted({w for _, r in runs for w in r.get("warnings", [])})
    if warnings:
        lines += ["**Warnings**", ""] + [f"- {w}" for w in warnings] + [""]

    def metric(r: dict, cat: str, key: str) -> Any:
        block = r["categories"].get(cat)
        if block is None:
            return None
        if key == "auroc":
            return block["image_auroc"]["mean"]
        return block["auc_spro"][key]

    for key, title in (
        ("0.05", "AUC-sPRO@0.05"),
        ("0.3", "AUC-sPRO@0.3"),
        ("auroc", "image AUROC"),
    ):
        lines += [f"## {title} (gap to centralized in brackets)", ""]
        lines += ["| category | " + " | ".join(n for n, _ in runs) + " |"]
        lines += ["|---|" + "---|" * len(runs)]
        for cat in cats + ["mean"]:
            cells = []
            for _, r in runs:
                if cat == "mean":
                    v = r["mean"]["image_auroc"] if key == "auroc" else r["mean"]["auc_spro"][key]
                    ref = None
                    if central is not None:
                        ref = (
                            central["mean"]["image_auroc"]
                            if key == "auroc"
                            else central["mean"]["auc_spro"][key]
                        )
                else:
                    v = metric(r, cat, key)
                    ref = metric(central, cat, key) if central is not None else None
                cells.append(
                    _fmt(v) if r is central or ref is None else f"{_fmt(v)} ({_gap(v, ref)})"
                )
            label = "**mean**" if cat == "mean" else cat
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        lines.append("")

    lines += ["## Memory banks (size / covering radius in the projected space)", ""]
    lines += ["| category | " + " | ".join(n for n, _ in runs) + " |", "|---|" + "---|" * len(runs)]
    for cat in cats:
        cells = []
        for _, r in runs:
            bank = _bank_of(r, cat)
            cells.append("-" if bank is None else f"{bank[0]} / {_fmt(bank[1], 3)}")
        lines.append(f"| {cat} | " + " | ".join(cells) + " |")
    lines.append("")

    lines += ["## Communication and time", ""]
    lines += [
        "| run | bytes up | bytes down | wall time (s) | phases (s) |",
        "|---|---|---|---|---|",
    ]
    for name, r in runs:
        fed = r.get("federated") or {}
        up, down = _bytes(fed)
        phases = fed.get("seconds") or _phase_seconds(r["run"]["seconds"])
        phase_text = ", ".join(
            f"{k} {v:.1f}" for k, v in phases.items() if isinstance(v, int | float)
        )
        lines.append(
            f"| {name} | {up} | {down} | {timings.get(name, 0.0):.1f} | {phase_text or '-'} |"
        )
    lines.append("")

    if ablation_dirs:
        lines += ["## Ablation: local oversampling (federated, "
                  f"{preset['ablation']['partition']} partition)", ""]  # fmt: skip
        lines += [
            "| local-oversample | mean AUC-sPRO@0.05 | mean AUC-sPRO@0.3 | mean image AUROC | bytes up |"
        ]
        lines += ["|---|---|---|---|---|"]
        for value in sorted(ablation_dirs):
            r = load_results(ablation_dirs[value] / "results.json")
            up, _ = _bytes(r.get("federated") or {})
            lines.append(
                f"| {value:g} | {_fmt(r['mean']['auc_spro']['0.05'])} | {_fmt(r['mean']['auc_spro']['0.3'])} "
                f"| {_fmt(r['mean']['image_auroc'])} | {up} |"
            )
        lines.append("")
    if sweep_dirs:
        lines += privacy_section(out, preset["sweep"], sweep_dirs)
    if budget_dirs:
        lines += budget_section(preset["budget_study"], budget_dirs)
    lines += ["Full tables and plots: [report/report.md](report/report.md).", ""]
    path = out / "experiment.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def _run_inprocess(config: dict, num_clients: int) -> None:
    """One federated run through the real ServerApp/ClientApp code on an InProcessGrid."""
    import importlib

    from flwr.app import Context, RecordDict

    from fedpatch_app.federated.inprocess import InProcessGrid
    from fedpatch_app.federated.server import run_server

    client_app = importlib.import_module("client_app")
    nodes = [{"partition-id": i, "num-partitions": num_clients} for i in range(num_clients)]
    grid = InProcessGrid(client_app.app, nodes, config)
    context = Context(run_id=1, node_id=1, node_config={}, state=RecordDict(), run_config=config)
    run_server(grid, context)


def unequal_view(data_root: Path, view: Path, fraction: float) -> tuple[Path, str]:
    """A data root of links where the LAST available category keeps only `fraction` of
    its training images (the first ones by name); the others are linked whole.
    Returns the view and the reduced category."""
    import math
    import shutil

    cats = available_categories(data_root)
    smallest = cats[-1]
    if view.exists():
        shutil.rmtree(view)
    view.mkdir(parents=True)
    for entry in sorted(data_root.iterdir()):
        if entry.name != smallest:
            (view / entry.name).symlink_to(entry.resolve())
    src = data_root / smallest
    dst = view / smallest
    dst.mkdir()
    for entry in sorted(src.iterdir()):
        if entry.name != "train":
            (dst / entry.name).symlink_to(entry.resolve())
    for folder in sorted(p for p in (src / "train").iterdir() if p.is_dir()):
        images = sorted(p for p in folder.iterdir() if p.is_file())
        keep = images[: max(1, math.ceil(fraction * len(images)))]
        (dst / "train" / folder.name).mkdir(parents=True)
        for image in keep:
            (dst / "train" / folder.name / image.name).symlink_to(image.resolve())
    log.info("data view %s: %s keeps %.0f%% of its training images", view, smallest, 100 * fraction)
    return view, smallest


def _mean_of(r: dict, key: str) -> Any:
    return r["mean"]["image_auroc"] if key == "auroc" else r["mean"]["auc_spro"][key]


def privacy_section(out: Path, sweep: dict, sweep_dirs: dict[float, Path]) -> list[str]:
    """Utility against epsilon: a table and plots/privacy_utility.png."""
    rows = []
    for value in sorted(sweep_dirs, key=lambda v: (v <= 0, v)):
        r = load_results(sweep_dirs[value] / "results.json")
        spent = ((r.get("privacy") or {}).get("spent")) or {}
        banks = (r.get("federated") or {}).get("banks") or {}
        rows.append(
            {
                "value": value,
                "label": f"{value:g}" if value > 0 else "no DP",
                "spent": spent.get("epsilon"),
                "exact": spent.get("epsilon_exact"),
                "delta": spent.get("delta"),
                "spro": _mean_of(r, "0.3"),
                "auroc": _mean_of(r, "auroc"),
                "bank": sum(int(b.get("size", 0)) for b in banks.values()),
                "kept": _dp_sum(banks, "clusters_kept"),
                "public": _dp_sum(banks, "public_centres"),
            }
        )
    lines = [
        f"## Utility against privacy ({sweep['key']}, {sweep['partition']} partition)",
        "",
        "| target epsilon | epsilon spent (zCDP) | epsilon spent (exact Gaussian) | delta "
        "| mean AUC-sPRO@0.3 | mean image AUROC | bank rows (all categories) "
        "| rows from private data / public centres |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        origin = "-" if row["kept"] is None else f"{row['kept']} / {row['public']}"
        lines.append(
            f"| {row['label']} | {_fmt(row['spent'])} | {_fmt(row['exact'])} | "
            f"{'-' if row['delta'] is None else format(row['delta'], 'g')} "
            f"| {_fmt(row['spro'])} | {_fmt(row['auroc'])} | {row['bank']} | {origin} |"
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
    plot = out / "plots" / "privacy_utility.png"
    if _plot_privacy(rows, plot):
        lines += [f"![utility against epsilon](plots/{plot.name})", ""]
    return lines


def _dp_sum(banks: dict, key: str) -> int | None:
    """Sum of a DP merge fact over the categories (None without DP)."""
    values = [b["dp"][key] for b in banks.values() if isinstance(b.get("dp"), dict)]
    return int(sum(values)) if values else None


def _plot_privacy(rows: list[dict], path: Path) -> bool:
    import math

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


def budget_section(study: dict, budget_dirs: dict[str, Path]) -> list[str]:
    """Effect of `bank-budget` on the reduced category (and on the others)."""
    smallest = study.get("smallest")
    lines = [
        f"## Bank budget (federated, {study['partition']} partition; {smallest} keeps "
        f"{100 * study['smallest_fraction']:.0f}% of its training images)",
        "",
        "| bank-budget | category | bank rows | AUC-sPRO@0.3 | image AUROC |",
        "|---|---|---|---|---|",
    ]
    spread_rows = []
    for budget, folder in budget_dirs.items():
        r = load_results(folder / "results.json")
        banks = (r.get("federated") or {}).get("banks") or {}
        for cat, block in sorted(r["categories"].items()):
            label = f"**{cat}**" if cat == smallest else cat
            lines.append(
                f"| {budget} | {label} | {(banks.get(cat) or {}).get('size', '-')} | "
                f"{_fmt(block['auc_spro']['0.3'])} | {_fmt(block['image_auroc']['mean'])} |"
            )
        fair = ((r.get("fairness") or {}).get("categories") or {}).get("auc_spro_0.3") or {}
        spread_rows.append(
            f"| {budget} | {fair.get('worst', '-')} ({_fmt(fair.get('worst_value'))}) | "
            f"{_fmt(fair.get('gap'))} | {_fmt(fair.get('std'))} | {_fmt(_mean_of(r, '0.3'))} |"
        )
    lines += [
        "",
        "| bank-budget | worst category (AUC-sPRO@0.3) | max-min gap | std | mean |",
        "|---|---|---|---|---|",
        *spread_rows,
        "",
    ]
    return lines


def _phase_seconds(seconds: dict) -> dict[str, float]:
    """Per-category timings ("<category>/fit") summed per phase ("fit")."""
    out: dict[str, float] = {}
    for key, value in seconds.items():
        if "/" in key and isinstance(value, int | float):
            phase = key.split("/", 1)[1]
            phase = "fit+predict" if phase.startswith("client-") else phase
            out[phase] = out.get(phase, 0.0) + float(value)
    return out


def _bank_of(results: dict, cat: str) -> tuple[int, float] | None:
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


def _bytes(fed: dict) -> tuple[str, str]:
    """Total bytes clients sent (up) and received (down) in a federated run."""
    traffic = fed.get("bytes") or {}
    if not traffic:
        return "-", "-"
    up = sum(v for k, v in traffic.items() if k.endswith("_up_total"))
    down = sum(v for k, v in traffic.items() if k.endswith("_down_total"))
    return f"{up / 1e6:.1f} MB", f"{down / 1e6:.1f} MB"


def run_cli(args: argparse.Namespace) -> int:
    summary = run_experiment(
        args.preset,
        Path(args.data_root),
        Path(args.out),
        weights=args.weights,
        device=args.device,
        image_size=args.image_size,
        engine=args.engine,
    )
    print(summary.read_text(encoding="utf-8"))
    print(f"summary: {summary}")
    return 0
