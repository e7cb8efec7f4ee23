"""Local-only baseline: what each line would get alone.

Every client of a partition fits its own bank per category on its own training images
(minus the ones held out for calibration, the same as in every run kind) and scores its
own test images with it; nothing is shared. The category's figures pool all its test
images (each scored by the bank of the client that holds it), so they are computed on
exactly the test set the centralized and federated runs use; per-client figures and
thresholds (calibrated on the client's own held-out images) are added per client, and
each client's model is written to `model/client-<id>/`.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedpatch_app.data.autovi import Category
from fedpatch_app.data.layouts import load_category
from fedpatch_app.data.partition import Partition
from fedpatch_app.errors import DataError, FedpatchError
from fedpatch_app.inspection.model_folder import CategoryModel, write_model
from fedpatch_app.inspection.run_model import provenance
from fedpatch_app.inspection.training_data import local_layouts, training_data_facts
from fedpatch_app.metrics.evaluate import evaluate_category
from fedpatch_app.metrics.thresholds import threshold_on_test
from fedpatch_app.model.ann_index import built_index, search_params
from fedpatch_app.model.patchcore import PatchCore
from fedpatch_app.run_status import final_state
from fedpatch_app.runs.centralized import (
    CategoryResult,
    CategoryRun,
    RunTotals,
    calibrated,
    finish_category,
    quantized,
    run_category,
    start_run,
    training_split,
    write_run,
)
from fedpatch_app.settings import RunSettings

log = logging.getLogger(__name__)


@dataclass
class ClientRun:
    """One client's bank of one category and what it scored."""

    client: int
    fit: int
    samples: list
    run: CategoryRun


def _client_runs(
    model: PatchCore, category: Category, partition: Partition, s: RunSettings, seconds: dict
) -> list[ClientRun]:
    runs = []
    for share in partition.clients:
        train_rel, test_rel = share.train.get(category.name, []), share.test.get(category.name, [])
        if not train_rel:
            if test_rel:
                raise DataError(
                    f"client {share.client} holds {len(test_rel)} test images of "
                    f"{category.name} but no training image: it has no bank to score them with"
                )
            continue
        t0 = time.perf_counter()
        fit, calibration = training_split(category, train_rel, s)
        samples = [category.find_test(rel) for rel in test_rel]
        run = run_category(
            model,
            category,
            fit,
            calibration,
            samples,
            s.coreset_ratio,
            folds=s.calibration_folds,
            seed=s.seed,
        )
        runs.append(ClientRun(share.client, len(fit), samples, run))
        seconds[f"{category.name}/client-{share.client}"] = time.perf_counter() - t0
    return runs


def _ordered_maps(category: Category, runs: list[ClientRun]) -> list[np.ndarray]:
    maps = {s.rel_path: m for r in runs for s, m in zip(r.samples, r.run.maps, strict=True)}
    missing = [s.rel_path for s in category.test if s.rel_path not in maps]
    if missing:
        raise DataError(
            f"{category.name}: {len(missing)} test images belong to no client of the "
            f"partition (first: {missing[0]})"
        )
    return [maps[s.rel_path] for s in category.test]


def _client_entry(
    category: Category, cr: ClientRun, result: CategoryResult, s: RunSettings
) -> dict[str, Any]:
    """A client's own figures on its own test split (same map scaling as the category)."""
    entry: dict[str, Any] = {
        "train_images": cr.fit + (0 if s.calibration_folds >= 2 else len(cr.run.calibration_maps)),
        "calibration_images": len(cr.run.calibration_maps),
        "test_images": len(cr.samples),
        "bank_size": cr.run.bank.size,
        "radius": cr.run.bank.radius,
    }
    thresholds = calibrated(cr.run.calibration_maps, result.scaling, s)
    if thresholds is not None and cr.samples:
        raw = [float(m.max()) for m in cr.run.maps]
        on_test = threshold_on_test(raw, [x.defect for x in cr.samples], thresholds["image"]["raw"])
        entry["thresholds"] = {**thresholds, "on_test": on_test}
    good = sum(x.is_good for x in cr.samples)
    if good == 0 or good == len(cr.samples):
        entry["note"] = "test split lacks good or defective images: no metrics"
        return entry
    sub = dataclasses.replace(category, test=tuple(cr.samples))
    try:
        block, _ = evaluate_category(sub, quantized(cr.run.maps, result.scaling), seed=s.seed)
    except FedpatchError as exc:
        entry["note"] = f"no metrics: {exc}"
    else:
        entry["auc_spro"] = block["auc_spro"]
        entry["image_auroc"] = block["image_auroc"]["mean"]
    return entry


def _local_category(
    out: Path,
    category: Category,
    runs: list[ClientRun],
    s: RunSettings,
    totals: RunTotals,
    models: dict[int, dict[str, CategoryModel]],
) -> None:
    calibration = [m for r in runs for m in r.run.calibration_maps]
    t0 = time.perf_counter()
    result = finish_category(out, category, _ordered_maps(category, runs), calibration, s)
    totals.seconds[f"{category.name}/evaluate"] = time.perf_counter() - t0
    result.block["clients"] = {}
    for cr in runs:
        entry = _client_entry(category, cr, result, s)
        result.block["clients"][str(cr.client)] = entry
        index = built_index(cr.run.bank.features, search_params(s))  # calibrated through it
        models.setdefault(cr.client, {})[category.name] = CategoryModel(
            cr.run.bank, category.size, result.scaling, entry.get("thresholds"), cr.fit, index
        )
    totals.blocks[category.name], totals.curves[category.name] = result.block, result.curves
    log.info(
        "%s (local-only): AUC-sPRO@0.3 %.4f, image AUROC %.4f",
        category.name,
        result.block["auc_spro"]["0.3"],
        result.block["image_auroc"]["mean"],
    )


def run_local_only(
    settings: RunSettings, out: Path, partition: Partition, *, name: str = "local-only"
) -> dict:
    """Fit and score per client, evaluate per category; returns the results it wrote."""
    run = start_run(settings, out)
    out, model, totals, names = run.out, run.model, run.totals, run.categories
    models: dict[int, dict[str, CategoryModel]] = {}
    with final_state(out, name, run.progress.facts):
        for cat in names:
            category = load_category(Path(settings.data_root), cat, settings.layout)
            runs = _client_runs(model, category, partition, settings, totals.seconds)
            _local_category(out, category, runs, settings, totals, models)
            run.progress.done(f"{cat}: evaluate", f"maps/{cat}/", f"scores/{cat}.csv")
        totals.seconds["total"] = time.perf_counter() - run.started
        layouts = local_layouts(settings.data_root, names, settings.layout)
        for client, cats in sorted(models.items()):
            counts = {c: {"train": m.train_images} for c, m in cats.items()}
            used = {c: layouts[c] for c in cats}
            trained = training_data_facts(settings.data_root, used, counts)
            facts = provenance(
                f"{name} client {client}", "local-only", settings, training_data=trained
            )
            write_model(out / "model" / f"client-{client}", model.spec, cats, facts)
        return write_run(out, "local-only", name, settings, names, model, totals)
