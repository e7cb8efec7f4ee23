"""Local-only baseline: what each line would get alone.

Every client of a partition fits its own bank per category on its own training images
and scores its own test images with it; nothing is shared. The category's figures pool
all its test images (each scored by the bank of the client that holds it), so they are
computed on exactly the test set the centralized and federated runs use; per-client
figures are added where a client's test split has both good and defective images.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

import numpy as np

from fedpatch_app.centralized import (
    finish_category,
    make_model,
    quantized,
    resolve_categories,
    run_category,
    write_run,
)
from fedpatch_app.data.autovi import load_category
from fedpatch_app.data.partition import Partition
from fedpatch_app.errors import DataError, FedpatchError
from fedpatch_app.evaluation.evaluate import evaluate_category
from fedpatch_app.evaluation.export import fit_scaling
from fedpatch_app.settings import RunSettings

log = logging.getLogger(__name__)


def run_local_only(
    settings: RunSettings, out: Path, partition: Partition, *, name: str = "local-only"
) -> dict:
    """Fit and score per client, evaluate per category; returns the results it wrote."""
    data_root, out = Path(settings.data_root), Path(out)
    names = resolve_categories(data_root, settings.categories)
    model = make_model(settings)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    blocks: dict[str, dict] = {}
    curves: dict[str, dict] = {}
    seconds: dict[str, float] = {}
    seed, coreset_ratio = settings.seed, settings.coreset_ratio
    for cat in names:
        category = load_category(data_root, cat)
        maps: dict[str, np.ndarray] = {}
        owners: dict[str, int] = {}
        client_runs = []
        for share in partition.clients:
            train_rel = share.train.get(cat, [])
            test_rel = share.test.get(cat, [])
            if not train_rel:
                if test_rel:
                    raise DataError(
                        f"client {share.client} holds {len(test_rel)} test images of {cat} but no "
                        "training image: it has no bank to score them with"
                    )
                continue
            train = [category.root / rel for rel in train_rel]
            samples = [category.find_test(rel) for rel in test_rel]
            t0 = time.perf_counter()
            if samples:
                run = run_category(model, category, train, samples, coreset_ratio)
                for sample, anomaly_map in zip(samples, run.maps, strict=True):
                    maps[sample.rel_path] = anomaly_map
                    owners[sample.rel_path] = share.client
                client_runs.append((share.client, train, samples, run.bank))
            seconds[f"{cat}/client-{share.client}"] = time.perf_counter() - t0
        missing = [s.rel_path for s in category.test if s.rel_path not in maps]
        if missing:
            raise DataError(
                f"{cat}: {len(missing)} test images belong to no client of the partition "
                f"(first: {missing[0]})"
            )
        ordered = [maps[s.rel_path] for s in category.test]
        block, cat_curves = finish_category(out, category, list(category.test), ordered, seed=seed)
        block["clients"] = _per_client(category, client_runs, ordered, seed)
        blocks[cat] = block
        curves[cat] = cat_curves
        log.info(
            "%s (local-only): AUC-sPRO@0.3 %.4f, image AUROC %.4f",
            cat,
            block["auc_spro"]["0.3"],
            block["image_auroc"]["mean"],
        )
    seconds["total"] = time.perf_counter() - t_start
    return write_run(out, "local-only", name, settings, names, model, seconds, blocks, curves)


def _per_client(category, client_runs, ordered_maps, seed: int) -> dict[str, dict]:
    """Each client's own metrics on its own test split (same map scaling as the category)."""
    scaling = fit_scaling(ordered_maps)
    index = {s.rel_path: i for i, s in enumerate(category.test)}
    out: dict[str, dict] = {}
    for client, train, samples, bank in client_runs:
        entry: dict = {
            "train_images": len(train),
            "test_images": len(samples),
            "bank_size": bank.size,
            "radius": bank.radius,
        }
        good = sum(s.is_good for s in samples)
        if good == 0 or good == len(samples):
            entry["note"] = "test split lacks good or defective images: no metrics"
        else:
            sub = dataclasses.replace(category, train=tuple(train), test=tuple(samples))
            levels = quantized([ordered_maps[index[s.rel_path]] for s in samples], scaling)
            try:
                block, _ = evaluate_category(sub, levels, seed=seed)
            except FedpatchError as exc:
                entry["note"] = f"no metrics: {exc}"
            else:
                entry["auc_spro"] = block["auc_spro"]
                entry["image_auroc"] = block["image_auroc"]["mean"]
        out[str(client)] = entry
    return out
