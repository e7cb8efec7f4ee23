"""Evaluate one category's anomaly maps: the block of the results schema and its curves.

``evaluate_category`` is the one place where a run (centralized, local-only, or
``fedpatch evaluate`` on exported maps) turns maps into metrics, so every run kind
scores the same way: AUC-sPRO as the official AutoVI evaluator, image AUROC per
defect type against ``good`` (and their mean), pooled ROC, and the counts.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from fedpatch_app.errors import DataError, ModelError
from fedpatch_app.results.schema import (
    LIMIT_KEYS,
    build_results,
    category_block,
    write_curves,
    write_results,
    write_scores,
)

log = logging.getLogger(__name__)


def image_scores_of(maps: Sequence[np.ndarray]) -> np.ndarray:
    """Image scores (the maximum of each map), as the official evaluator takes them."""
    from fedpatch_app import metrics

    func = getattr(metrics, "image_scores", None)
    if func is not None:
        return np.asarray(func(maps), dtype=np.float64)
    return np.array([float(np.max(m)) for m in maps], dtype=np.float64)


def _check_maps(category: Any, maps: Sequence[np.ndarray]) -> None:
    if len(maps) != len(category.test):
        raise ModelError(
            f"{category.name}: {len(maps)} anomaly maps for {len(category.test)} test images"
        )
    width, height = category.size
    for sample, anomaly_map in zip(category.test, maps, strict=True):
        if tuple(np.shape(anomaly_map)) != (height, width):
            raise ModelError(
                f"{category.name}: map of {sample.rel_path} has shape {np.shape(anomaly_map)}, "
                f"expected (height, width) = ({height}, {width})"
            )


def evaluate_category(
    category: Any,
    maps: Sequence[np.ndarray],
    *,
    seed: int = 0,
    extra: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Metrics of one category from its maps (``maps[i]`` belongs to ``category.test[i]``).

    Returns ``(block, curves)``: ``block`` is the category's entry of results.json
    (``auc_spro``, ``image_auroc``, ``counts``, ``auc_spro_per_defect``, plus ``extra``);
    ``curves`` holds ``spro_fpr``, ``spro``, ``roc_fpr``, ``roc_tpr``. The maps are
    used as given (no copy here).
    """
    from fedpatch_app import metrics
    from fedpatch_app.metrics.availability import not_available

    _check_maps(category, maps)
    start = time.perf_counter()
    missing = not_available(category.test)
    for metric, reason in missing.items():
        log.warning("%s: %s not available: %s", category.name, metric, reason)
    spro = None if "auc_spro" in missing else _spro(category, maps, seed)
    scores = image_scores_of(maps)
    defects = [s.defect for s in category.test]
    auroc: dict[str, Any] = {"mean": None, "pooled": None}
    roc_fpr: Any = []
    roc_tpr: Any = []
    if "image_auroc" not in missing:
        auroc = metrics.image_auroc(scores, defects)
        roc_fpr, roc_tpr = metrics.roc_curve_points(scores, defects)
    counts = {
        "train": len(category.train),
        "test_good": sum(1 for s in category.test if s.is_good),
        "test_defective": sum(1 for s in category.test if not s.is_good),
    }
    block = category_block(
        auc_spro=spro.auc if spro is not None else dict.fromkeys(LIMIT_KEYS),
        image_auroc=auroc,
        counts=counts,
        auc_spro_per_defect=(spro.per_defect or None) if spro is not None else None,
        seconds_eval=round(time.perf_counter() - start, 3),
        **({"not_available": missing} if missing else {}),
        **(extra or {}),
    )
    curves = {
        "spro_fpr": np.asarray(spro.fpr if spro is not None else [], dtype=np.float64),
        "spro": np.asarray(spro.spro if spro is not None else [], dtype=np.float64),
        "roc_fpr": np.asarray(roc_fpr, dtype=np.float64),
        "roc_tpr": np.asarray(roc_tpr, dtype=np.float64),
    }
    log.info(
        "%s: AUC-sPRO@0.05 %s, @0.3 %s, image AUROC %s",
        category.name,
        format_value(block["auc_spro"]["0.05"]),
        format_value(block["auc_spro"]["0.3"]),
        format_value(block["image_auroc"]["mean"]),
    )
    return block, curves


def _spro(category: Any, maps: Sequence[np.ndarray], seed: int) -> Any:
    """AUC-sPRO of a category whose every defective test image has its ground truth."""
    from fedpatch_app import metrics

    regions = [
        [] if sample.is_good else category.load_regions(sample)
        for sample in tqdm(category.test, desc=f"ground truth {category.name}", disable=None)
    ]
    for sample, sample_regions in zip(category.test, regions, strict=True):
        if not sample.is_good and not sample_regions:
            log.warning("%s: %s has no ground-truth region", category.name, sample.rel_path)
    # Integer (16-bit level) maps are counted exactly by histogram, so the initial
    # thresholds come from all scores, never a sample: the same figures as the pooled
    # federated statistics. Float maps keep the official evaluator's 10M-score sampling.
    exact = all(np.issubdtype(np.asarray(m).dtype, np.integer) for m in maps)
    return metrics.auc_spro(maps, regions, seed=seed, max_samples=None if exact else 10_000_000)


def format_value(value: float | None, digits: int = 4) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def format_table(results: dict[str, Any]) -> str:
    """A short plain-text table of a results dict (one row per category, then the mean)."""
    header = ["category", *(f"sPRO@{k}" for k in LIMIT_KEYS), "AUROC", "pooled"]
    rows = []
    for cat, block in results["categories"].items():
        rows.append(
            [
                cat,
                *(format_value(block["auc_spro"][k]) for k in LIMIT_KEYS),
                format_value(block["image_auroc"]["mean"]),
                format_value(block["image_auroc"]["pooled"]),
            ]
        )
    mean = results["mean"]
    rows.append(
        [
            "mean",
            *(format_value(mean["auc_spro"][k]) for k in LIMIT_KEYS),
            format_value(mean["image_auroc"]),
            "",
        ]
    )
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(header, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    for row in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))
    return "\n".join(lines)


def _categories_with_maps(maps_root: Path, requested: Sequence[str] | None) -> list[str]:
    if not maps_root.is_dir():
        raise DataError(f"maps folder {maps_root} is missing")
    if requested:
        for cat in requested:
            if not (maps_root / cat / "test").is_dir():
                raise DataError(f"maps folder {maps_root / cat / 'test'} is missing for {cat}")
        return list(dict.fromkeys(requested))
    found = sorted(p.name for p in maps_root.iterdir() if (p / "test").is_dir())
    if not found:
        raise DataError(f"maps folder {maps_root} holds no <category>/test folder of maps")
    return found


def run_cli(args: argparse.Namespace) -> int:
    """``fedpatch evaluate --data-root DIR --maps DIR --out DIR [--categories ...] [--seed N]``."""
    from fedpatch_app.commands import EVALUATE
    from fedpatch_app.data.layouts import load_category
    from fedpatch_app.results.official_maps import read_category_maps, read_scaling
    from fedpatch_app.settings.options import option_values

    given = option_values(args, EVALUATE.settings)
    data_root, seed = Path(given["data_root"]), given["seed"]
    maps_root = Path(args.maps)
    out = Path(args.out)
    names = _categories_with_maps(maps_root, given["categories"])
    total_start = time.perf_counter()
    blocks: dict[str, dict[str, Any]] = {}
    curves: dict[str, dict[str, np.ndarray]] = {}
    seconds: dict[str, float] = {}
    weights: set[str] = set()
    for name in names:
        start = time.perf_counter()
        category = load_category(data_root, name)
        _, info = read_scaling(maps_root, name)
        meta = info.get("meta") or {}
        if isinstance(meta, dict) and meta.get("weights"):
            weights.add(str(meta["weights"]))
        # The 16-bit levels as uint16: what the official evaluator reads, counted exactly
        # by histogram in the metric, at a quarter of the memory of float64.
        maps, scaling = read_category_maps(maps_root, category, dtype=np.uint16)
        block, cat_curves = evaluate_category(
            category, maps, seed=seed, extra={"map_scaling": scaling.to_dict()}
        )
        write_scores(out, name, category.test, image_scores_of(maps))
        del maps
        blocks[name] = block
        curves[name] = cat_curves
        seconds[name] = round(time.perf_counter() - start, 3)
    seconds["total"] = round(time.perf_counter() - total_start, 3)
    results = build_results(
        "evaluate",
        out.resolve().name,
        config={
            "data_root": str(data_root.resolve()),
            "maps": str(maps_root.resolve()),
            "categories": names,
            "seed": seed,
        },
        weights=", ".join(sorted(weights)) if weights else "unknown",
        seconds=seconds,
        categories=blocks,
    )
    write_curves(out, curves)
    path = write_results(out, results)
    print(format_table(results))
    print(f"results: {path}")
    return 0
