"""`fedpatch experiment`: the runs of a preset on the same data and settings, one report.

Preset `stage1` (conf/experiments/stage1.yaml): centralized; federated IID (5 clients);
federated non-IID (category partition, 5 clients); local-only (each client's own bank on
its own test split); and the `local-oversample` ablation of the non-IID federation.
The federated runs go through Flower (`flwr run` simulation with five SuperNodes), or
through the same ServerApp/ClientApp code in this process (`--engine inprocess`).

Preset `privacy` (conf/experiments/privacy.yaml): a `sweep` of one setting (`dp_epsilon`)
over federated runs, reported as a table and a plot of utility against epsilon; and a
`budget_study` of `bank_budget` on data where one category keeps only a fraction of its
training images (a view of the data root made of links).

Every precondition (data, weights, the output folder) is checked
before the first run starts, so a preset never fails half-way for a reason known at once.
The experiment folder has its own status.json (beating while the experiment runs, listing
the runs finished), next to each run's own: an interrupted experiment says so.
"""

from __future__ import annotations

import argparse
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedpatch_app.data.partition import make_partition
from fedpatch_app.errors import ConfigError
from fedpatch_app.experiment.presets import Preset, load_preset
from fedpatch_app.experiment.summary import write_summary
from fedpatch_app.experiment.views import unequal_view
from fedpatch_app.outputs import prepare_output
from fedpatch_app.reports.report import write_report
from fedpatch_app.run_status import final_state, write_status
from fedpatch_app.runs.centralized import make_model, resolve_categories, run_centralized
from fedpatch_app.runs.local_only import run_local_only
from fedpatch_app.settings import RunSettings, replace, to_run_config
from fedpatch_app.settings.options import given

log = logging.getLogger(__name__)

ENGINES = ("simulation", "inprocess")


@dataclass
class Experiment:
    """One experiment in progress: its settings, output folder and engine."""

    preset: Preset
    settings: RunSettings
    out: Path
    engine: str
    timings: dict[str, float] = field(default_factory=dict)

    def _done(self, name: str, since: float) -> None:
        self.timings[name] = time.perf_counter() - since
        finished, kept = self.progress()
        write_status(self.out, "running", finished_phases=finished, kept=kept)

    def progress(self) -> tuple[list[str], list[str]]:
        """The runs finished so far, and their folders."""
        return list(self.timings), [f"{name}/" for name in self.timings]

    def centralized(self, name: str) -> Path:
        t0 = time.perf_counter()
        run_centralized(self.settings, self.out / name, name=name)
        self._done(name, t0)
        return self.out / name

    def local_only(self, name: str, partition: str) -> Path:
        s = replace(self.settings, partition=partition)
        split = make_partition(
            s.data_root,
            partition,
            num_clients=s.num_clients,
            alpha=s.dirichlet_alpha,
            seed=s.seed,
            categories=s.categories,
            layout=s.layout,
        )
        t0 = time.perf_counter()
        run_local_only(s, self.out / name, split, name=name)
        self._done(name, t0)
        return self.out / name

    def federated(self, name: str, partition: str, root: Path | None = None, **changes) -> Path:
        """One federated run with the experiment's settings and `changes` (snake_case)."""
        s = replace(
            self.settings,
            dataset="autovi",
            data_root=root or self.settings.data_root,
            partition=partition,
            min_clients=self.settings.num_clients,
            out_dir=self.out,
            run_name=name,
            **changes,
        )
        t0 = time.perf_counter()
        if self.engine == "inprocess":
            from fedpatch_app.federated.inprocess import run_inprocess

            run_inprocess(to_run_config(s))
        else:
            from fedpatch_app.federated.simulation import run_simulation

            run_simulation(
                to_run_config(s),
                flwr_home=self.out / ".flwr",
                num_supernodes=s.num_clients,
                log_file=self.out / name / "flwr-run.log",
            )
        self._done(name, t0)
        return self.out / name


def check_preconditions(settings: RunSettings, engine: str) -> None:
    """Everything that can be known to fail before the first run starts."""
    if engine not in ENGINES:
        raise ConfigError(f"experiment engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    resolve_categories(Path(settings.data_root), settings.categories)
    make_model(settings)  # weights present and loadable, device available


def _plain_runs(exp: Experiment) -> tuple[list[Path], dict[float, Path]]:
    run_dirs: list[Path] = []
    ablation: dict[float, Path] = {}
    for run in exp.preset.runs:
        log.info("experiment %s: run %s (%s)", exp.preset.name, run.name, run.kind)
        if run.kind == "centralized":
            run_dirs.append(exp.centralized(run.name))
        elif run.kind == "local-only":
            run_dirs.append(exp.local_only(run.name, run.partition or "category"))
        else:
            run_dirs.append(exp.federated(run.name, run.partition or "category"))
            if run.partition == exp.preset.ablation_partition:
                ablation[exp.settings.local_oversample] = run_dirs[-1]
    return run_dirs, ablation


def _ablation(exp: Experiment, dirs: dict[float, Path]) -> dict[float, Path]:
    partition = exp.preset.ablation_partition
    for value in exp.preset.ablation_oversample:
        if value not in dirs and partition is not None:
            name = f"federated-{partition}-oversample-{value:g}"
            dirs[value] = exp.federated(name, partition, local_oversample=value)
    return dirs


def _sweep(exp: Experiment) -> dict[Any, Path]:
    sweep = exp.preset.sweep
    if sweep is None:
        return {}
    dirs: dict[Any, Path] = {}
    for value in sweep.values:
        label = f"{value:g}" if float(value) > 0 else "off"
        name = f"federated-{sweep.partition}-{sweep.key.replace('_', '-')}-{label}"
        dirs[value] = exp.federated(name, sweep.partition, **{**sweep.settings, sweep.key: value})
    return dirs


def _budget_study(exp: Experiment) -> tuple[dict[str, Path], str | None]:
    study = exp.preset.budget_study
    if study is None:
        return {}, None
    view, smallest = unequal_view(
        Path(exp.settings.data_root), exp.out / "data-unequal", study.smallest_fraction
    )
    dirs = {
        budget: exp.federated(
            f"federated-{study.partition}-budget-{budget}",
            study.partition,
            root=view,
            bank_budget=budget,
        )
        for budget in study.budgets
    }
    return dirs, smallest


def run_experiment(
    preset_name: str,
    data_root: Path,
    out: Path,
    *,
    changes: dict[str, Any] | None = None,
    engine: str = "simulation",
    overwrite: bool = False,
) -> Path:
    """Run every run of the preset into `out/<run name>/`, then the comparison report.

    `changes` are settings (snake_case) that override the preset's."""
    preset = load_preset(preset_name)
    data_root = Path(data_root).resolve()
    settings = replace(preset.settings, data_root=data_root, **(changes or {}))
    check_preconditions(settings, engine)
    out = prepare_output(Path(out).resolve(), overwrite=overwrite)
    exp = Experiment(preset, settings, out, engine)
    write_status(out, "running", finished_phases=[], kept=[])
    with final_state(out, f"experiment {preset.name}", exp.progress):
        run_dirs, ablation = _plain_runs(exp)
        ablation = _ablation(exp, ablation)
        sweep_dirs = _sweep(exp)
        budget_dirs, smallest = _budget_study(exp)
        every = run_dirs + list(sweep_dirs.values()) + list(budget_dirs.values())
        write_report(every, out / "report", data_root=data_root)
        dirs = {"ablation_dirs": ablation, "sweep_dirs": sweep_dirs, "budget_dirs": budget_dirs}
        summary = write_summary(
            out, preset, settings, every, exp.timings, **dirs, smallest=smallest
        )
    write_status(out, "completed", finished_phases=[*exp.progress()[0], "report"])
    log.info("experiment report: %s and %s", out / "report" / "report.md", summary)
    return summary


def _signing(path: str | None) -> None:
    """Sign every model the experiment writes: in this process (centralized, local-only)
    and, through the environment, in the ServerApp of its federated runs."""
    import os

    from fedpatch_app.inspection.signing import ENV_KEY, use_signing_key

    if path:
        use_signing_key(path)  # a bad key stops the experiment before any work
        os.environ[ENV_KEY] = str(Path(path).resolve())


def run_cli(args: argparse.Namespace) -> int:
    _signing(getattr(args, "signing_key", None))
    changes = given(args)
    changes.pop("data_root", None)
    summary = run_experiment(
        args.preset,
        Path(args.data_root),
        Path(args.out),
        changes=changes,
        engine=args.engine,
        overwrite=bool(getattr(args, "overwrite", False)),
    )
    print(summary.read_text(encoding="utf-8"))
    print(f"summary: {summary}")
    return 0
