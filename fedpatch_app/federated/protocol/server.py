"""The ServerApp's work: settings, dataset, waiting for clients, the strategy, the results.

`run_server(grid, context)` is what `server_app.py`'s `main` calls. It writes
`<out-dir>/<run-name>/` (see `server_outputs`). The folder always says how the run
ended: status.json is written as phases finish, the merged banks and the model folder are
written as soon as the merge is done, and a failure leaves status.json and a report.md
whose first line gives the reason, next to whatever was already kept.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from flwr.app import Context
from flwr.serverapp.grid import Grid

from fedpatch_app.errors import ConfigError, ModelError, WeightsError
from fedpatch_app.federated import messages as M
from fedpatch_app.federated.data import DatasetChoice, resolve_dataset
from fedpatch_app.federated.protocol.outputs import ServerRun, banks_written, write_outputs
from fedpatch_app.federated.protocol.federation import FederationError, PatchCoreStrategy
from fedpatch_app.model.embedding import FeatureSpec
from fedpatch_app.outputs import prepare_output
from fedpatch_app.run_status import write_failure, write_status
from fedpatch_app.settings import RunSettings, from_run_config

log = logging.getLogger(__name__)


@dataclass
class ServerOutcome:
    """What a finished run produced (for callers and tests)."""

    run_dir: Path
    results: dict[str, Any]
    strategy: PatchCoreStrategy


def wait_for_clients(grid: Grid, min_clients: int, timeout: float, poll: float = 1.0) -> list[int]:
    """Poll the grid until `min_clients` nodes are connected; FederationError after `timeout`."""
    deadline = time.monotonic() + timeout
    last = -1
    while True:
        nodes = sorted(grid.get_node_ids())
        if len(nodes) >= min_clients:
            log.info("%d client(s) connected (min-clients %d)", len(nodes), min_clients)
            return nodes
        if len(nodes) != last:
            log.info("waiting for clients: %d of %d connected", len(nodes), min_clients)
            last = len(nodes)
        if time.monotonic() >= deadline:
            raise FederationError(
                f"only {len(nodes)} client(s) connected within {timeout:.0f} s, min-clients is "
                f"{min_clients}: start more SuperNodes (in a simulation: "
                f'--federation-config "num-supernodes={min_clients}"), or lower min-clients'
            )
        time.sleep(min(poll, max(0.0, deadline - time.monotonic())) or 0.01)


def resolve_features(
    settings: RunSettings, dataset: DatasetChoice
) -> tuple[FeatureSpec, tuple[str, ...]]:
    """The features every client computes (`feature_choice.choose_features`: a pretrained
    stand-in only on synthetic data, random only with weights=none) and the warnings to
    record. On real data a server without WideResNet's ImageNet file does not stop the run:
    the clients load the weights, and a client that cannot is dropped with the reason."""
    from fedpatch_app.model.feature_choice import feature_spec

    synthetic = dataset.dataset == "synthetic" or dataset.synthetic is not None
    try:
        return feature_spec(settings, synthetic_data=synthetic)
    except WeightsError:
        if synthetic or settings.weights != "imagenet":
            raise
    log.info("the backbone's ImageNet weights are not on the server: the clients must have them")
    spec = FeatureSpec(
        weights="imagenet", backbone=settings.backbone, image_size=settings.image_size,
        seed=settings.seed,
    )  # fmt: skip
    return spec, ()


def make_plan(
    settings: RunSettings, dataset: DatasetChoice, spec: FeatureSpec, run_key: str, run_dir: Path
) -> M.Plan:
    return M.Plan(
        settings=settings,
        spec=spec,
        dataset=dataset.dataset,
        data_root=str(dataset.data_root),
        categories=dataset.categories,
        run_key=run_key,
        maps_dir=str((run_dir / "maps").resolve()),
        sizes=dict(dataset.sizes),
    )


def _parent(settings: RunSettings, spec: FeatureSpec):
    """The model new clients join (`init-model`), checked against this run's features."""
    if not settings.init_model:
        return None
    from fedpatch_app.inspection.model_folder import load_model

    try:
        parent = load_model(settings.init_model)
    except ModelError as exc:
        raise ConfigError(f"run config 'init-model': {exc}") from None
    if parent.fingerprint != spec.fingerprint():
        raise ConfigError(
            f"run config 'init-model': {settings.init_model} was built with other features "
            f"(fingerprint {parent.fingerprint}, this run's is {spec.fingerprint()}): a new "
            "line can only join a model of the same backbone, weights and image size"
        )
    return parent


def _run_folder(settings: RunSettings) -> tuple[str, Path]:
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    name = settings.resolved_run_name(stamp)
    run_dir = prepare_output(
        (Path(settings.out_dir) / name).resolve(), overwrite=settings.overwrite, option="run folder"
    )
    write_status(run_dir, "running", finished_phases=[])
    return name, run_dir


def _prepare(settings: RunSettings, name: str, run_dir: Path) -> ServerRun:
    """Dataset and feature spec: everything decided before any client works."""
    t0 = time.perf_counter()
    if settings.calibration_folds >= 2:
        raise ConfigError(
            "run config 'calibration-folds': cross-fitted calibration is built for "
            "centralized and local-only runs; a federated run calibrates on the held-out "
            "calibration-fraction (set calibration-folds=0)"
        )
    dataset = resolve_dataset(settings)
    spec, warnings = resolve_features(settings, dataset)
    run = ServerRun(run_dir, name, settings, dataset, spec, _parent(settings, spec))
    run.warnings += [*dataset.warnings, *warnings]
    run.phase_done("prepare_data", t0)
    log.info(
        "dataset %s at %s, categories %s; feature spec %s (fingerprint %s)",
        dataset.dataset, dataset.data_root, ", ".join(dataset.categories),
        spec.to_dict(), spec.fingerprint(),
    )  # fmt: skip
    return run


def _federate(run: ServerRun, grid: Grid, context: Context) -> PatchCoreStrategy:
    from fedpatch_app.model.backbone import resolve_device

    plan = make_plan(
        run.settings, run.dataset, run.spec, f"{run.name}-{context.run_id}", run.run_dir
    )
    t0 = time.perf_counter()
    wait_for_clients(grid, run.settings.min_clients, run.settings.wait_timeout)
    run.phase_done("wait_clients", t0)
    strategy = PatchCoreStrategy(
        plan, merge_device=resolve_device(run.settings.device), parent=run.parent
    )
    strategy.on_banks = lambda banks: banks_written(run, strategy)
    t0 = time.perf_counter()
    strategy.start(grid)
    run.phase_done("federation", t0)
    if not strategy.outcomes:
        raise FederationError("no category could be evaluated: no metrics to report")
    return strategy


def run_server(grid: Grid, context: Context) -> ServerOutcome:
    """The whole federated run on the server side (see module doc)."""
    settings = from_run_config(dict(context.run_config))
    name, run_dir = _run_folder(settings)
    run: ServerRun | None = None
    try:
        run = _prepare(settings, name, run_dir)
        strategy = _federate(run, grid, context)
        results = write_outputs(run, strategy)
    except BaseException as exc:
        finished = run.finished if run is not None else []
        kept = run.kept if run is not None else []
        if isinstance(exc, KeyboardInterrupt):
            reason = "stopped by the user (Ctrl-C)"
            write_status(run_dir, "interrupted", reason=reason, finished_phases=finished, kept=kept)
        else:
            write_failure(run_dir, name, str(exc) or type(exc).__name__, finished, kept)
        log.error("run %s failed: %s (status in %s)", name, exc, run_dir / "status.json")
        raise
    log.info("results in %s", run_dir)
    return ServerOutcome(run_dir, results, strategy)
