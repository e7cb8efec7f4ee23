"""The ServerApp's work: settings, dataset, waiting for clients, the strategy, the results.

`run_server(grid, context)` is what `server_app.py`'s `main` calls. It writes
`<out-dir>/<run-name>/`: results.json (shared schema + a "federated" block), curves.npz,
scores/<category>.csv, banks/<category>.npz (with their feature-spec fingerprint),
report.md and plots/.
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

from fedpatch_app.errors import ConfigError, WeightsError
from fedpatch_app.federated import messages as M
from fedpatch_app.federated.data import DatasetChoice, resolve_dataset
from fedpatch_app.federated.strategy import FederationError, PatchCoreStrategy
from fedpatch_app.settings import RunSettings, from_run_config, to_names

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
                f"{min_clients}: start more SuperNodes, or lower 'min-clients' in the run config"
            )
        time.sleep(min(poll, max(0.0, deadline - time.monotonic())) or 0.01)


def choose_weights(settings: RunSettings, dataset: DatasetChoice) -> tuple[str, list[str]]:
    """The weights every client uses. ImageNet weights missing here: with synthetic data,
    random weights and a loud warning; with AutoVI, never a fallback (the clients must
    have them, or they fail with a clear error)."""
    if settings.weights not in ("imagenet", "imagenet-v1"):
        return settings.weights, []
    from fedpatch_app.model.backbone import imagenet_cache_path

    cached = imagenet_cache_path()
    if cached.is_file():
        return settings.weights, []
    if dataset.dataset == "synthetic":
        message = (
            f"ImageNet weights are not available offline ({cached} is missing): this "
            "synthetic-data run uses RANDOM backbone weights ('none'); its metrics say "
            "little about a pretrained PatchCore"
        )
        log.warning("!" * 20 + " " + message + " " + "!" * 20)
        return "none", [message]
    log.info(
        "ImageNet weights are not in this server's cache (%s); the clients must have them",
        cached,
    )
    return settings.weights, []


def make_plan(
    settings: RunSettings, dataset: DatasetChoice, spec: Any, run_key: str, run_dir: Path
) -> M.Plan:
    return M.Plan(
        settings=settings,
        spec=spec,
        dataset=dataset.dataset,
        data_root=str(dataset.data_root),
        categories=dataset.categories,
        run_key=run_key,
        maps_dir=str((run_dir / "maps").resolve()),
    )


class _Sample:
    """Row of scores/<category>.csv."""

    def __init__(self, rel_path: str, defect: str) -> None:
        self.rel_path = rel_path
        self.defect = defect


def run_server(grid: Grid, context: Context) -> ServerOutcome:
    """The whole federated run on the server side (see module doc)."""
    from fedpatch_app.model.embedding import FeatureSpec

    t_start = time.perf_counter()
    settings = from_run_config(dict(context.run_config))
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    run_name = settings.resolved_run_name(stamp)
    run_dir = (Path(settings.out_dir) / run_name).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}
    warnings: list[str] = []

    t0 = time.perf_counter()
    dataset = resolve_dataset(settings)
    warnings += dataset.warnings
    seconds["prepare_data"] = round(time.perf_counter() - t0, 3)
    log.info(
        "dataset %s at %s, categories %s",
        dataset.dataset,
        dataset.data_root,
        ", ".join(dataset.categories),
    )
    weights, weight_warnings = choose_weights(settings, dataset)
    warnings += weight_warnings
    try:
        spec = FeatureSpec(weights=weights, image_size=settings.image_size, seed=settings.seed)
        fingerprint = spec.fingerprint()
    except WeightsError:
        raise
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"run config: cannot build the feature spec: {exc}") from None
    run_key = f"{run_name}-{context.run_id}"
    plan = make_plan(settings, dataset, spec, run_key, run_dir)
    log.info("feature spec %s (fingerprint %s)", spec.to_dict(), fingerprint)

    t0 = time.perf_counter()
    wait_for_clients(grid, settings.min_clients, settings.wait_timeout)
    seconds["wait_clients"] = round(time.perf_counter() - t0, 3)

    strategy = PatchCoreStrategy(
        plan,
        merge_device=_merge_device(settings.device),
        on_banks=lambda banks: save_banks(run_dir, banks),
    )
    t0 = time.perf_counter()
    strategy.start(grid)
    seconds["federation"] = round(time.perf_counter() - t0, 3)
    if not strategy.outcomes:
        raise FederationError("no category could be evaluated: no metrics to report")

    t0 = time.perf_counter()
    results = write_outputs(
        run_dir, run_name, settings, dataset, weights, spec, strategy, warnings, seconds, t_start
    )
    seconds["write"] = round(time.perf_counter() - t0, 3)
    log.info("results in %s", run_dir)
    return ServerOutcome(run_dir, results, strategy)


def save_banks(run_dir: Path, banks: dict[str, Any]) -> None:
    """Write the global banks as soon as the merge is done: a later failure keeps them."""
    for cat, bank in banks.items():
        bank.save(run_dir / "banks" / f"{cat}.npz")
    log.info("global banks written to %s", run_dir / "banks")


def _merge_device(device: str) -> Any:
    from fedpatch_app.model.backbone import resolve_device

    return resolve_device(device)


def write_outputs(
    run_dir: Path,
    run_name: str,
    settings: RunSettings,
    dataset: DatasetChoice,
    weights: str,
    spec: Any,
    strategy: PatchCoreStrategy,
    warnings: list[str],
    seconds: dict[str, float],
    t_start: float,
) -> dict[str, Any]:
    from fedpatch_app.evaluation.results import (
        build_results,
        write_curves,
        write_results,
        write_scores,
    )

    bank_files = {cat: f"banks/{cat}.npz" for cat in strategy.banks}
    for cat, outcome in strategy.outcomes.items():
        write_scores(
            run_dir,
            cat,
            [_Sample(p, d) for p, d in zip(outcome.rel_paths, outcome.defects, strict=True)],
            outcome.scores,
        )
    write_curves(run_dir, {cat: o.curves for cat, o in strategy.outcomes.items()})
    for dropped in strategy.dropped():
        warnings.append(
            f"client node {dropped['node_id']} (partition {dropped['partition_id']}) dropped in "
            f"{dropped['phase']}: {dropped['reason']}"
        )
    missing = [c for c in dataset.categories if c not in strategy.outcomes]
    if missing:
        warnings.append(
            f"categories without results (no client held or kept them): {', '.join(missing)}"
        )
    seconds = dict(seconds)
    seconds.update({f"phase_{k}": v for k, v in strategy.registry.seconds.items()})
    seconds["total"] = round(time.perf_counter() - t_start, 3)
    federated = strategy.federated_facts()
    federated["bank_files"] = bank_files
    federated["maps_written"] = bool(settings.write_maps)
    config = to_names(settings)
    config.update(
        {
            "dataset_used": dataset.dataset,
            "data_root_used": str(dataset.data_root),
            "categories_used": list(dataset.categories),
            "feature_spec": spec.to_dict(),
            "fingerprint": spec.fingerprint(),
        }
    )
    results = build_results(
        "federated",
        run_name,
        config=config,
        weights=weights,
        seconds=seconds,
        categories={cat: o.block for cat, o in strategy.outcomes.items()},
        warnings=warnings,
        dataset=dataset.dataset,
        federated=federated,
        privacy=strategy.privacy_facts(),
    )
    write_results(run_dir, results)
    try:
        from fedpatch_app.evaluation.report import write_report

        write_report([run_dir], run_dir)
    except Exception as exc:  # noqa: BLE001 - the metrics are written; a plot failure must not lose them
        log.error("could not write the report of %s: %s", run_dir, exc)
        results["warnings"].append(f"report not written: {exc}")
        write_results(run_dir, results)
    return results
