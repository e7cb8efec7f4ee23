"""What the ServerApp writes into the run folder, from what the protocol's phases returned.

`<out-dir>/<run-name>/`: results.json (shared schema + a "federated" block), curves.npz,
scores/<category>.csv (raw score and normalized score per test image), model/ (the model
folder: banks, thresholds, provenance), report.md and plots/, and status.json.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedpatch_app.federated.data import DatasetChoice
from fedpatch_app.federated.protocol.facts import federated_facts, privacy_facts
from fedpatch_app.federated.protocol.results import FederationState
from fedpatch_app.inspection.model_folder import Model, write_model
from fedpatch_app.inspection.run_model import category_models, provenance
from fedpatch_app.model.ann_index import built_index, search_params
from fedpatch_app.model.embedding import FeatureSpec
from fedpatch_app.model.row_store import RowStore, release
from fedpatch_app.results import schema as files
from fedpatch_app.run_status import write_status
from fedpatch_app.settings import RunSettings, to_names

log = logging.getLogger(__name__)

#: Where a relay run's banks are: on every client, never on the server.
RELAY_BANKS = "on every client: <node config model-dir>/<run key>/banks/{cat}.npz"


@dataclass
class ServerRun:
    """One federated run on the server: its folder, settings and what it has learned."""

    run_dir: Path
    name: str
    settings: RunSettings
    dataset: DatasetChoice
    spec: FeatureSpec
    parent: Model | None = None
    warnings: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    finished: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)
    #: Where the clients' coresets are kept on disk while the run lasts (removed at its end).
    store: RowStore | None = None

    def phase_done(self, phase: str, since: float) -> None:
        self.seconds[phase] = round(time.perf_counter() - since, 3)
        self.record(phase)

    def record(self, phase: str, *kept: str) -> None:
        """A finished phase and what it kept, in status.json at once."""
        self.finished.append(phase)
        self.kept += [k for k in kept if k not in self.kept]
        write_status(self.run_dir, "running", finished_phases=self.finished, kept=self.kept)


@dataclass
class _Sample:
    """Row of scores/<category>.csv."""

    rel_path: str
    defect: str


def write_run_model(run: ServerRun, state: FederationState, incomplete: str | None = None) -> Path:
    """RUN/model/ from the federation's banks, scalings and thresholds (so far); marked
    incomplete (`incomplete`: why) until the thresholds are calibrated."""
    thresholds = {cat: o.thresholds for cat, o in state.outcomes.items()}
    scalings = dict(state.scalings)
    if run.parent is not None:
        for cat, entry in run.parent.categories.items():
            scalings.setdefault(cat, entry.scaling)
            thresholds.setdefault(cat, entry.thresholds)
    train = {cat: info.train_images for cat, info in state.merged.infos.items()}
    clients = [
        {"partition_id": c.partition_id, "train_images": c.train_images}
        for c in state.registry.active()
        if c.train_images
    ]
    facts = provenance(
        run.name,
        "federated",
        run.settings,
        clients=clients,
        privacy=privacy_facts(state),
        parent=run.parent,
        training_data=federated_training_data(run, state),
    )
    sizes = dict(state.plan.sizes)
    if run.parent is not None:
        for cat, entry in run.parent.categories.items():
            sizes.setdefault(cat, entry.native_size)
    cats = category_models(state.merged.banks, scalings, thresholds, train, sizes)
    for cat in cats.values():  # the index the clients calibrated through
        cat.index = built_index(cat.bank.features, search_params(run.settings))
    folder = write_model(run.run_dir / "model", run.spec, cats, facts, incomplete=incomplete)
    release(*(bank.features for bank in state.merged.banks.values()))
    return folder


def federated_training_data(run: ServerRun, state: FederationState) -> dict[str, Any]:
    """What the federation's model was trained on, as far as the server knows it."""
    from fedpatch_app.inspection.training_data import training_data_facts

    counts = {c: dict(o.block.get("counts", {})) for c, o in state.outcomes.items()}
    for cat, info in state.merged.infos.items():
        counts.setdefault(cat, {}).setdefault("train", info.train_images)
    layouts = {c: run.dataset.layouts.get(c) for c in state.merged.categories}
    synthetic = run.dataset.synthetic
    if run.dataset.dataset == "synthetic" and synthetic is None:
        synthetic = {"kind": run.settings.synthetic_kind, "scale": run.settings.synthetic_scale}
    root = run.dataset.data_root if Path(run.dataset.data_root).is_dir() else None
    return training_data_facts(root, layouts, counts, synthetic)


def banks_written(run: ServerRun, state: FederationState) -> None:
    """Right after a merge: the model folder with the merged banks (incomplete: no map
    scaling or thresholds yet), and the merge among the finished phases."""
    reason = (
        f"written by run {run.name} right after the merge, before evaluation: no map "
        "scaling or thresholds yet"
    )
    write_run_model(run, state, incomplete=reason)
    phase = "merge" if "merge" not in run.finished else "merge again (source check)"
    run.record(phase, "model/ (the merged banks; model.json marked incomplete)")


def _write_scores(run: ServerRun, state: FederationState) -> None:
    for cat, outcome in state.outcomes.items():
        samples = [_Sample(p, d) for p, d in zip(outcome.rel_paths, outcome.defects, strict=True)]
        files.write_scores(
            run.run_dir, cat, samples, outcome.raw_scores, threshold=outcome.image_threshold
        )


def _warnings(run: ServerRun, state: FederationState) -> list[str]:
    out = list(run.warnings)
    if run.dataset.synthetic and not any("SYNTHETIC" in w for w in out):
        out.append("SYNTHETIC data: the metrics say nothing about AutoVI")
    if run.spec.with_weights_id().weights == "none" and not any("RANDOM" in w for w in out):
        out.append(
            "RANDOM backbone weights (weights=none): the metrics say little about a pretrained PatchCore"
        )
    for dropped in state.registry.dropped():
        out.append(
            f"client node {dropped['node_id']} (partition {dropped['partition_id']}) dropped in "
            f"{dropped['phase']}: {dropped['reason']}"
        )
    for flagged in state.registry.flagged():
        out.append(
            f"client node {flagged['node_id']} (partition {flagged['partition_id']}) flagged in "
            f"{flagged['flag']}"
        )
    missing = [c for c in run.dataset.categories if c not in state.outcomes]
    if missing:
        out.append(
            f"categories without results (no client held or kept them): {', '.join(missing)}"
        )
    return out


def phase_seconds(state: FederationState) -> dict[str, float | None]:
    """Where the run's time went (results.json `run.phases`). Client phases count the
    slowest client (the critical path); upload and broadcast are the rest of the train
    and evaluate phases' wall time: transfer and waiting."""
    clients = [c for c in state.registry.clients.values() if c.status != "dropped"]
    walls = state.registry.seconds

    def slowest(key: str) -> float:
        return round(max((c.seconds.get(key, 0.0) for c in clients), default=0.0), 3)

    local = slowest("extraction") + slowest("coreset")
    return {
        "extraction": slowest("extraction"),
        "local_coreset": slowest("coreset"),
        "upload": round(max(0.0, walls.get("train", 0.0) - local), 3),
        "merge": walls.get("merge"),
        "broadcast": round(max(0.0, walls.get("evaluate", 0.0) - slowest("scoring")), 3),
        "scoring": slowest("scoring"),
        "statistics": slowest("statistics"),
        "pooling": walls.get("pooled_metrics"),
    }


def _run_facts(run: ServerRun) -> dict[str, Any]:
    import torch

    synthetic = None
    if run.dataset.dataset == "synthetic" or run.dataset.synthetic:
        synthetic = run.dataset.synthetic
    return {
        "features": files.features_facts(run.spec),
        "data": files.data_facts(
            run.dataset.dataset,
            run.dataset.data_root,
            run.dataset.categories,
            synthetic,
            run.dataset.layouts,
        ),
        "status": "completed",
        "outputs": {
            "maps": "maps" if run.settings.write_maps else None,
            # Under share-mode relay the model folders are the clients' (bank_files).
            "model": None if run.settings.share_mode == "relay" else "model",
        },
        "threads": torch.get_num_threads(),
    }


def write_outputs(run: ServerRun, state: FederationState) -> dict[str, Any]:
    """Every file of a completed run; returns the results dict."""
    _write_scores(run, state)
    files.write_curves(run.run_dir, {cat: o.curves for cat, o in state.outcomes.items()})
    seconds = {**run.seconds, **{f"phase_{k}": v for k, v in state.registry.seconds.items()}}
    seconds["total"] = round(time.perf_counter() - run.started, 3)
    federated = federated_facts(state)
    relayed = run.settings.share_mode == "relay"
    federated["bank_files"] = {
        cat: RELAY_BANKS.format(cat=cat) if relayed else f"model/banks/{cat}.npz"
        for cat in state.merged.categories
    }
    config = to_names(run.settings)
    results = files.build_results(
        "federated",
        run.name,
        config=config,
        weights=run.spec.with_weights_id().weights,
        seconds=seconds,
        categories={cat: o.block for cat, o in state.outcomes.items()},
        run_facts={**_run_facts(run), "phases": phase_seconds(state)},
        warnings=_warnings(run, state),
        dataset="synthetic" if run.dataset.synthetic else run.dataset.dataset,
        federated=federated,
        privacy=privacy_facts(state),
    )
    files.write_results(run.run_dir, results)
    if not relayed:
        write_run_model(run, state)
    _report(run, results)
    write_status(run.run_dir, "completed", finished_phases=[*run.finished, "write"])
    return results


def _report(run: ServerRun, results: dict[str, Any]) -> None:
    try:
        from fedpatch_app.reports.report import write_report

        write_report([run.run_dir], run.run_dir)
    except Exception as exc:  # noqa: BLE001 - the metrics are written; a plot failure must not lose them
        log.error("could not write the report of %s: %s", run.run_dir, exc)
        results["warnings"].append(f"report not written: {exc}")
        files.write_results(run.run_dir, results)
