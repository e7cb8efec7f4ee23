"""The ServerApp's work: settings, dataset, waiting for clients, the protocol's phases, the files.

`run_server(grid, context)` is what `server_app.py`'s `main` calls. It writes
`<out-dir>/<run-name>/` (see `outputs`). The folder always says how the run
ended: status.json is written as phases finish, the merged banks and the model folder are
written as soon as the merge is done, and a failure leaves status.json and a report.md
whose first line gives the reason, next to whatever was already kept.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from flwr.app import Context
from flwr.serverapp.grid import Grid

from fedpatch_app.errors import ConfigError, ModelError, WeightsError
from fedpatch_app.federated import messages as M
from fedpatch_app.federated.data import DatasetChoice, resolve_dataset
from fedpatch_app.federated.protocol.federation import Federation
from fedpatch_app.federated.protocol.link import GridLink
from fedpatch_app.federated.protocol.merge_rule import MergeRule, RobustKCenter
from fedpatch_app.federated.protocol.outputs import ServerRun, banks_written, write_outputs
from fedpatch_app.federated.protocol.results import FederationState, Trained
from fedpatch_app.federated.registry import ClientRegistry, FederationError
from fedpatch_app.model.embedding import FeatureSpec
from fedpatch_app.model.row_store import RowStore
from fedpatch_app.outputs import prepare_output
from fedpatch_app.run_status import write_failure, write_status
from fedpatch_app.settings import RunSettings, from_run_config

log = logging.getLogger(__name__)


@dataclass
class ServerOutcome:
    """What a finished run produced (for callers and tests)."""

    run_dir: Path
    results: dict[str, Any]
    federation: FederationState


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
    from fedpatch_app.settings.fields import feature_values

    return FeatureSpec(**{**feature_values(settings), "weights": "imagenet"}), ()


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
    if settings.calibration_folds >= 2 and settings.dp.enabled:
        raise ConfigError(
            "run config 'calibration-folds': cross-fitted calibration removes a client's own "
            "rows from the global bank, and a differentially private bank's rows mix every "
            "client's patches: set calibration-folds=0 (held-out calibration) or dp off"
        )
    dataset = resolve_dataset(settings)
    spec, warnings = resolve_features(settings, dataset)
    run = ServerRun(run_dir, name, settings, dataset, spec, _parent(settings, spec))
    run.warnings += [*dataset.warnings, *warnings]
    run.phase_done("prepare_data", t0)
    log.info(
        "dataset %s at %s, categories %s; feature spec %s (fingerprint %s)",
        dataset.dataset,
        dataset.data_root,
        ", ".join(dataset.categories),
        spec.to_dict(),
        spec.fingerprint(),
    )
    return run


#: Makes the run's merge rule from its settings, features, client registry, parent model
#: and merge device (`merge_rule.MergeRule`; default: `RobustKCenter`).
RuleFactory = Callable[[RunSettings, FeatureSpec, ClientRegistry, Any, Any], MergeRule]


def _connect(
    run: ServerRun, grid: Grid, context: Context, rule: RuleFactory
) -> tuple[Federation, GridLink]:
    """The protocol for this run, and its link to the nodes once enough are connected."""
    from fedpatch_app.model.backbone import resolve_device

    settings = run.settings
    plan = make_plan(settings, run.dataset, run.spec, f"{run.name}-{context.run_id}", run.run_dir)
    registry = ClientRegistry(settings.min_clients, settings.round_timeout)
    link = GridLink(grid, registry, settings.round_timeout)
    t0 = time.perf_counter()
    link.wait_for_clients(settings.min_clients, settings.wait_timeout)
    run.phase_done("wait_clients", t0)
    device = resolve_device(settings.device)
    merge_rule = rule(settings, run.spec, registry, run.parent, device)
    return Federation(plan, merge_rule, registry, parent=run.parent, store=run.store), link


def federate(
    run: ServerRun, grid: Grid, context: Context, rule: RuleFactory = RobustKCenter
) -> FederationState:
    """The protocol's phases in order; every file is written here, as phases finish."""
    fed, link = _connect(run, grid, context, rule)
    t0 = time.perf_counter()
    trained = fed.accept(fed.train(link))
    if run.settings.share_mode == "relay":
        return federate_relay(run, fed, link, trained, t0)
    merged = fed.merge(trained)
    state = FederationState(fed.registry, trained, merged)
    banks_written(run, state)
    scored = fed.evaluate(link, trained, merged)
    merged = merged.with_source_checks(fed.source_check(scored))
    scaled = fed.scale(merged, scored)
    remerged = fed.remerge(merged)
    if remerged is not None:
        merged = remerged
        banks_written(run, replace(state, merged=merged, scaled=scaled))
        scored = fed.evaluate(link, trained, merged, check=False)
        scaled = fed.scale(merged, scored, before=scaled)
    stats = fed.statistics(link, trained, merged, scored, scaled)
    pooled = fed.pool(merged, scored, scaled, stats)
    run.phase_done("federation", t0)
    if not pooled.outcomes:
        raise FederationError("no category could be evaluated: no metrics to report")
    return replace(state, merged=merged, scored=scored, scaled=scaled, pooled=pooled)


def federate_relay(
    run: ServerRun, fed: Federation, link: GridLink, trained: Trained, t0: float
) -> FederationState:
    """The relay mode's phases (`relay`): the clients merge, the server pools."""
    from fedpatch_app.federated.protocol.relay import relay_evaluate, relay_model

    scored, merged = relay_evaluate(fed, link, trained)
    run.record("merge (on the clients)")
    scaled = fed.scale(merged, scored)
    stats = fed.statistics(link, trained, merged, scored, scaled)
    pooled = fed.pool(merged, scored, scaled, stats)
    if not pooled.outcomes:
        raise FederationError("no category could be evaluated: no metrics to report")
    state = FederationState(fed.registry, trained, merged, scored, scaled, pooled)
    relay_model(link, run, state)
    run.phase_done("federation", t0)
    return state


def run_server(
    grid: Grid, context: Context, merge_rule: RuleFactory = RobustKCenter
) -> ServerOutcome:
    """The whole federated run on the server side (see module doc); `merge_rule` makes
    the rule that turns each category's accepted coresets into its bank."""
    settings = from_run_config(dict(context.run_config))
    name, run_dir = _run_folder(settings)
    run: ServerRun | None = None
    try:
        run = _prepare(settings, name, run_dir)
        run.store = RowStore(run_dir)
        state = federate(run, grid, context, merge_rule)
        results = write_outputs(run, state)
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
    finally:
        if run is not None and run.store is not None:
            run.store.close()
    log.info("results in %s", run_dir)
    return ServerOutcome(run_dir, results, state)
