"""Centralized PatchCore baseline: one bank per category from all its training images.

Also the building block of the local-only baseline (each client alone): `run_category`
fits on any list of training images and scores any list of test samples.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedpatch_app.data.autovi import (
    CATEGORIES,
    Category,
    TestSample,
    available_categories,
    load_category,
)
from fedpatch_app.errors import ConfigError, DataError
from fedpatch_app.evaluation.evaluate import evaluate_category
from fedpatch_app.evaluation.export import fit_scaling, write_category_maps
from fedpatch_app.evaluation.results import build_results, write_curves, write_results, write_scores
from fedpatch_app.model.patchcore import Bank, PatchCore

log = logging.getLogger(__name__)


@dataclass
class CategoryRun:
    """What one category's fit + predict produced."""

    bank: Bank
    image_scores: np.ndarray
    maps: list[np.ndarray]
    seconds: dict[str, float]


def run_category(
    model: PatchCore,
    category: Category,
    train_paths: Sequence[Path],
    test_samples: Sequence[TestSample],
    coreset_ratio: float,
) -> CategoryRun:
    """Fit a bank on `train_paths` and score `test_samples` at native resolution."""
    t0 = time.perf_counter()
    bank = model.fit(train_paths, category.name, coreset_ratio=coreset_ratio)
    t1 = time.perf_counter()
    pred = model.predict(
        bank, [s.path for s in test_samples], category.size, desc=f"{category.name}: scoring"
    )
    t2 = time.perf_counter()
    return CategoryRun(bank, pred.image_scores, pred.maps, {"fit": t1 - t0, "predict": t2 - t1})


def quantized(maps: Sequence[np.ndarray], scaling) -> list[np.ndarray]:
    """The 16-bit levels the official evaluator reads from the exported maps (kept as uint16:
    the metrics count integer levels exactly, at a quarter of float64's memory)."""
    return [scaling.to_uint16(m) for m in maps]


def finish_category(
    out: Path,
    category: Category,
    samples: Sequence[TestSample],
    maps: list[np.ndarray],
    *,
    seed: int,
) -> tuple[dict, dict]:
    """Export the maps (one scaling per category), write the scores and evaluate them as the
    official evaluator would read the exported files."""
    scaling = fit_scaling(maps)
    write_category_maps(out / "maps", category.name, samples, maps, scaling)
    levels = quantized(maps, scaling)
    block, curves = evaluate_category(category, levels, seed=seed)
    write_scores(out, category.name, samples, [float(m.max()) for m in maps])
    return block, curves


def resolve_categories(data_root: Path, requested: Sequence[str] | None) -> list[str]:
    present = available_categories(data_root)
    if requested:
        unknown = [c for c in requested if c not in CATEGORIES]
        if unknown:
            raise ConfigError(f"unknown categories {unknown}; AutoVI has {list(CATEGORIES)}")
        missing = [c for c in requested if c not in present]
        if missing:
            raise DataError(f"categories {missing} not found under {data_root}")
        return list(requested)
    if not present:
        raise DataError(f"no AutoVI category found under {data_root}")
    return present


def run_centralized(
    data_root: Path,
    out: Path,
    *,
    categories: Sequence[str] | None = None,
    weights: str = "imagenet",
    coreset_ratio: float = 0.1,
    image_size: int = 256,
    seed: int = 0,
    device: str = "auto",
    batch_size: int = 8,
    num_workers: int = 0,
    name: str = "centralized",
    backbone: str = "wide_resnet50_2",
) -> dict:
    """The whole centralized baseline; returns the results dict it wrote to `out`."""
    data_root, out = Path(data_root), Path(out)
    if not 0 < coreset_ratio <= 1:
        raise ConfigError(f"--coreset-ratio must be in (0, 1], got {coreset_ratio}")
    names = resolve_categories(data_root, categories)
    spec, model = make_model(
        weights, image_size, seed, device, batch_size, num_workers, backbone=backbone
    )
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    blocks: dict[str, dict] = {}
    curves: dict[str, dict] = {}
    seconds: dict[str, float] = {}
    for name_ in names:
        category = load_category(data_root, name_)
        run = run_category(
            model, category, list(category.train), list(category.test), coreset_ratio
        )
        run.bank.save(out / "banks" / f"{name_}.npz")
        t0 = time.perf_counter()
        block, cat_curves = finish_category(out, category, list(category.test), run.maps, seed=seed)
        block["bank"] = {
            "size": run.bank.size,
            "radius": run.bank.radius,
            "n_patches": run.bank.n_patches,
        }
        blocks[name_] = block
        curves[name_] = cat_curves
        seconds[f"{name_}/fit"] = run.seconds["fit"]
        seconds[f"{name_}/predict"] = run.seconds["predict"]
        seconds[f"{name_}/evaluate"] = time.perf_counter() - t0
        log.info(
            "%s: AUC-sPRO@0.05 %.4f @0.3 %.4f, image AUROC %.4f",
            name_,
            block["auc_spro"]["0.05"],
            block["auc_spro"]["0.3"],
            block["image_auroc"]["mean"],
        )
    seconds["total"] = time.perf_counter() - t_start
    settings = {
        "backbone": backbone,
        "weights": weights,
        "coreset_ratio": coreset_ratio,
        "image_size": image_size,
        "seed": seed,
    }
    return write_run(
        out, "centralized", name, data_root, names, model, settings, seconds, blocks, curves
    )


def write_run(
    out: Path,
    kind: str,
    name: str,
    data_root: Path,
    categories: Sequence[str],
    model: PatchCore,
    settings: dict,
    seconds: dict[str, float],
    blocks: dict[str, dict],
    curves: dict[str, dict],
) -> dict:
    """results.json (shared schema) and curves.npz of a non-federated run."""
    spec = model.spec
    config = {
        "data_root": str(data_root),
        "categories": list(categories),
        **settings,
        "device": str(model.device),
        "feature_spec": spec.with_weights_id().to_dict(),
        "fingerprint": spec.fingerprint(),
    }
    results = build_results(kind, name, config, spec.with_weights_id().weights, seconds, blocks)
    write_results(out, results)
    write_curves(out, curves)
    return results


def make_model(
    weights: str,
    image_size: int,
    seed: int,
    device: str,
    batch_size: int,
    num_workers: int,
    backbone: str = "wide_resnet50_2",
):
    """Feature spec and PatchCore model for the given settings (weights resolved once)."""
    from fedpatch_app.model.embedding import FeatureSpec

    if image_size < 32:
        raise ConfigError(f"--image-size must be at least 32, got {image_size}")
    spec = FeatureSpec(weights=weights, image_size=image_size, seed=seed, backbone=backbone)
    model = PatchCore(spec, device=device, batch_size=batch_size, num_workers=num_workers)
    return spec, model


def print_summary(results: dict) -> None:
    cats = results["categories"]
    print(f"{'category':<18} {'sPRO@0.05':>10} {'sPRO@0.3':>10} {'img AUROC':>10}")
    for name, block in cats.items():
        print(
            f"{name:<18} {block['auc_spro']['0.05']:>10.4f} {block['auc_spro']['0.3']:>10.4f} "
            f"{block['image_auroc']['mean']:>10.4f}"
        )
    mean = results["mean"]
    print(
        f"{'mean':<18} {mean['auc_spro']['0.05']:>10.4f} {mean['auc_spro']['0.3']:>10.4f} {mean['image_auroc']:>10.4f}"
    )


def run_cli(args: argparse.Namespace) -> int:
    results = run_centralized(
        Path(args.data_root),
        Path(args.out),
        categories=args.categories,
        weights=args.weights,
        coreset_ratio=args.coreset_ratio,
        image_size=args.image_size,
        seed=args.seed,
        device=args.device,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        backbone=args.backbone,
    )
    print_summary(results)
    print(f"results: {Path(args.out) / 'results.json'}")
    return 0
