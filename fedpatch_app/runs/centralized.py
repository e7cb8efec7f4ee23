"""Centralized PatchCore baseline: one bank per category from all its training images.

Also the building block of the local-only baseline (each client alone): `run_category`
fits on any list of training images and scores any list of test and calibration images;
`finish_category` evaluates them as the official evaluator reads the exported maps and
calibrates the thresholds on the held-out images exactly as the federated run does.

A centralized run keeps what it has finished: each category's bank is written into the
model folder as soon as its coreset is built (the folder marked incomplete until every
category is calibrated), and status.json lists the finished phases, categories and files,
so a run killed half-way leaves its finished banks and says so.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np

from fedpatch_app.data.autovi import Category, TestSample
from fedpatch_app.data.calibration import split_calibration
from fedpatch_app.data.layouts import available_categories, load_category
from fedpatch_app.errors import DataError
from fedpatch_app.inspection.model_folder import CategoryModel, write_model
from fedpatch_app.inspection.run_model import provenance
from fedpatch_app.inspection.training_data import local_layouts, training_data_facts
from fedpatch_app.metrics.evaluate import evaluate_category, format_value
from fedpatch_app.metrics.map_scaling import MapScaling, fit_scaling
from fedpatch_app.metrics.thresholds import (
    CalibrationStats,
    category_thresholds,
    support_warning,
    threshold_on_test,
)
from fedpatch_app.model.ann_index import built_index, search_params
from fedpatch_app.model.crossfit import crossfit_bank
from fedpatch_app.model.memory_bank import bank_index
from fedpatch_app.model.patchcore import Bank, PatchCore
from fedpatch_app.outputs import prepare_output
from fedpatch_app.results.official_maps import write_category_maps
from fedpatch_app.results.schema import (
    build_results,
    data_facts,
    features_facts,
    write_curves,
    write_results,
    write_scores,
)
from fedpatch_app.run_status import final_state, write_status
from fedpatch_app.settings import RunSettings, to_names
from fedpatch_app.settings.options import settings_from_args

log = logging.getLogger(__name__)


@dataclass
class CategoryRun:
    """What one category's fit + predict produced."""

    bank: Bank
    image_scores: np.ndarray
    maps: list[np.ndarray]
    calibration_maps: list[np.ndarray]
    seconds: dict[str, float]


@dataclass
class CategoryResult:
    """One category evaluated: its results block and curves, and what its model needs."""

    block: dict[str, Any]
    curves: dict[str, np.ndarray]
    scaling: MapScaling
    thresholds: dict[str, Any] | None = None


@dataclass
class RunTotals:
    """Everything a non-federated run gathers before writing its results."""

    blocks: dict[str, dict] = field(default_factory=dict)
    curves: dict[str, dict] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    models: dict[str, CategoryModel] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def run_category(
    model: PatchCore,
    category: Category,
    fit_paths: Sequence[Path],
    calibration_paths: Sequence[Path],
    test_samples: Sequence[TestSample],
    coreset_ratio: float,
    on_bank: Callable[[Bank], None] | None = None,
    folds: int = 0,
    seed: int = 0,
) -> CategoryRun:
    """Fit a bank on `fit_paths` (handed to `on_bank` at once), score the test and
    calibration images at native size; with `folds` >= 2 the calibration maps are the
    fit images' own, cross-fitted (`model.crossfit`)."""
    name = category.name
    t0 = time.perf_counter()
    crossfit: list[np.ndarray] = []
    if folds >= 2:
        index_folds = _fold_index(category, fit_paths, folds, seed)
        bank, crossfit = crossfit_bank(
            model, name, fit_paths, index_folds, coreset_ratio, category.size
        )
    else:
        bank = model.fit(fit_paths, name, coreset_ratio=coreset_ratio, native_size=category.size)
    if on_bank is not None:
        on_bank(bank)
    t1 = time.perf_counter()
    size = category.size
    tests = [s.path for s in test_samples]
    index = bank_index(bank.features, model.device, model.search)
    pred = model.predict(bank, tests, size, f"{name}: scoring", index) if tests else None
    calib = list(calibration_paths)
    calib_maps = (
        model.predict(bank, calib, size, f"{name}: calibration", index).maps if calib else []
    ) + crossfit
    t2 = time.perf_counter()
    seconds = {"fit": t1 - t0, "predict": t2 - t1}
    if pred is None:
        return CategoryRun(bank, np.zeros(0), [], calib_maps, seconds)
    return CategoryRun(bank, pred.image_scores, pred.maps, calib_maps, seconds)


def _fold_index(category: Category, paths: Sequence[Path], folds: int, seed: int) -> dict[int, int]:
    """Each fit image's fold (by its index in `paths`), from the category's whole list."""
    from fedpatch_app.data.calibration import crossfit_folds

    fold = crossfit_folds(category.name, category.train_rel, folds, seed)
    return {i: fold[Path(p).relative_to(category.root).as_posix()] for i, p in enumerate(paths)}


def quantized(maps: Sequence[np.ndarray], scaling: MapScaling) -> list[np.ndarray]:
    """The 16-bit levels the official evaluator reads from the exported maps (kept as uint16:
    the metrics count integer levels exactly, at a quarter of float64's memory)."""
    return [scaling.to_uint16(m) for m in maps]


def calibrated(
    calibration_maps: Sequence[np.ndarray], scaling: MapScaling, settings: RunSettings
) -> dict[str, Any] | None:
    """The thresholds from held-out images' maps (None without any)."""
    parts = [CalibrationStats.of_maps(calibration_maps, scaling)] if calibration_maps else []
    return category_thresholds(
        parts, scaling, settings.target_false_reject, settings.target_pixel_fpr
    )


def finish_category(
    out: Path,
    category: Category,
    maps: Sequence[np.ndarray],
    calibration_maps: Sequence[np.ndarray],
    settings: RunSettings,
) -> CategoryResult:
    """Export the test maps (`maps[i]` of `category.test[i]`; one scaling per category,
    over test and calibration maps), write the scores, evaluate them as the official
    evaluator reads the exported files, and calibrate the thresholds."""
    samples = list(category.test)
    scaling = fit_scaling(chain(maps, calibration_maps))
    write_category_maps(out / "maps", category.name, samples, list(maps), scaling)
    block, curves = evaluate_category(category, quantized(maps, scaling), seed=settings.seed)
    thresholds = calibrated(calibration_maps, scaling, settings)
    if (warning := support_warning(category.name, thresholds)) is not None:
        log.warning("%s", warning)
    crossfit = settings.calibration_folds >= 2
    block["counts"]["train"] = len(category.train) - (0 if crossfit else len(calibration_maps))
    block["counts"]["calibration"] = len(calibration_maps)
    raw = [float(m.max()) for m in maps]
    threshold = None if thresholds is None else float(thresholds["image"]["raw"])
    if thresholds is not None and crossfit:
        thresholds["cross_fitted_folds"] = settings.calibration_folds
    if thresholds is not None:
        block["thresholds"] = thresholds
    if thresholds is not None and samples:
        on_test = threshold_on_test(raw, [s.defect for s in samples], threshold)
        block["thresholds"] = {**thresholds, "on_test": on_test}
    write_scores(out, category.name, samples, raw, threshold=threshold)
    return CategoryResult(block, curves, scaling, thresholds)


def resolve_categories(
    data_root: Path, requested: Sequence[str] | None, layout: str = "auto"
) -> list[str]:
    present = available_categories(data_root, layout)
    if requested:
        missing = [c for c in requested if c not in present]
        if missing:
            raise DataError(
                f"categories {missing} not found under {data_root} (found: "
                f"{', '.join(present) or 'none'})"
            )
        return list(requested)
    if not present:
        raise DataError(
            f"no category found under {data_root}: expected {data_root}/<name>/train/good/ "
            f"(autovi or mvtec layout) or {data_root}/<name>/good/ (folder layout)"
        )
    return present


def training_split(category: Category, rel: Sequence[str], settings: RunSettings):
    """(fit paths, calibration paths) of training images `rel` of a category (cross-fitted
    calibration: all of them fit, none held out)."""
    if settings.calibration_folds >= 2:
        return [category.root / r for r in rel], []
    split = split_calibration(
        category.name, rel, settings.calibration_fraction, settings.seed, category.train_rel
    )
    fit, calibration = list(split.fit), list(split.calibration)
    if not fit:
        # A bank needs one image: give back the first held-out one (tiny data only).
        log.warning(
            "%s: all %d training images fell in the calibration share", category.name, len(rel)
        )
        fit, calibration = calibration[:1], calibration[1:]
    root = category.root
    return [root / r for r in fit], [root / r for r in calibration]


@dataclass
class RunProgress:
    """What a non-federated run has finished and kept so far; status.json says it while
    the run goes on (and a failure's status keeps it)."""

    out: Path
    finished: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    banks: list[str] = field(default_factory=list)
    categories: list[str] = field(default_factory=list)
    saved: dict[str, tuple[Bank, str]] = field(default_factory=dict)

    def done(self, phase: str, *kept: str) -> None:
        self.finished.append(phase)
        self.kept += [k for k in kept if k not in self.kept]
        facts = {"finished_phases": self.finished, "kept": self.kept}
        facts |= {"banks_written": self.banks, "finished_categories": self.categories}
        write_status(self.out, "running", **facts)

    def facts(self) -> tuple[list[str], list[str]]:
        return self.finished, self.kept


def _write_partial_model(run: RunStart, settings: RunSettings, name: str) -> None:
    """The model folder so far, marked incomplete: what is still to build and calibrate."""
    models, done = run.totals.models, run.totals.blocks
    pending = [c for c in run.categories if c in models and c not in done]
    todo = [c for c in run.categories if c not in models]
    reason = f"written by run {name} before every category was calibrated"
    if pending:
        reason += f"; {', '.join(pending)}: bank built, no map scaling or thresholds yet"
    if todo:
        reason += f"; {', '.join(todo)}: not built yet"
    facts = provenance(name, "centralized", settings, training_data=_trained_on(run, settings))
    spec, saved = run.model.spec, run.progress.saved
    write_model(run.out / "model", spec, models, facts, incomplete=reason, saved=saved)


def _trained_on(run: RunStart, settings: RunSettings) -> dict[str, Any]:
    root = Path(settings.data_root)
    layouts = local_layouts(root, run.categories, settings.layout)
    counts = {c: b.get("counts", {}) for c, b in run.totals.blocks.items()}
    return training_data_facts(root, layouts, counts)


def _centralized_category(run: RunStart, category: Category, s: RunSettings, name: str) -> None:
    out, model, totals, cat = run.out, run.model, run.totals, category.name
    fit, calibration = training_split(category, category.train_rel, s)

    def bank_built(bank: Bank) -> None:
        scaling = MapScaling(0.0, max(bank.radius, 1.0))  # a stand-in until calibrated
        totals.models[cat] = CategoryModel(bank, category.size, scaling, None, len(fit))
        _write_partial_model(run, s, name)
        run.progress.banks.append(cat)
        run.progress.done(f"{cat}: bank", f"model/banks/{cat}.npz", "model/model.json")

    tests = list(category.test)
    cr = run_category(
        model,
        category,
        fit,
        calibration,
        tests,
        s.coreset_ratio,
        bank_built,
        folds=s.calibration_folds,
        seed=s.seed,
    )
    t0 = time.perf_counter()
    result = finish_category(out, category, cr.maps, cr.calibration_maps, s)
    bank = cr.bank
    result.block["bank"] = {"size": bank.size, "radius": bank.radius, "n_patches": bank.n_patches}
    totals.blocks[cat], totals.curves[cat] = result.block, result.curves
    totals.models[cat] = CategoryModel(
        cr.bank,
        category.size,
        result.scaling,
        result.thresholds,
        len(fit),
        built_index(cr.bank.features, model.search),
    )
    if any(c not in totals.blocks for c in run.categories):
        _write_partial_model(run, s, name)
    run.progress.categories.append(cat)
    run.progress.done(f"{cat}: evaluate", f"maps/{cat}/", f"scores/{cat}.csv")
    for phase, seconds in (*cr.seconds.items(), ("evaluate", time.perf_counter() - t0)):
        totals.seconds[f"{category.name}/{phase}"] = seconds
    block = result.block
    log.info(
        "%s: AUC-sPRO@0.05 %s @0.3 %s, image AUROC %s",
        cat,
        format_value(block["auc_spro"]["0.05"]),
        format_value(block["auc_spro"]["0.3"]),
        format_value(block["image_auroc"]["mean"]),
    )


@dataclass
class RunStart:
    """What a non-federated run checks and prepares before its first category."""

    categories: list[str]
    model: PatchCore
    out: Path
    totals: RunTotals
    progress: RunProgress
    started: float = field(default_factory=time.perf_counter)


def start_run(settings: RunSettings, out: Path) -> RunStart:
    """Categories, model and a fresh output folder (status.json "running", beating)."""
    names = resolve_categories(Path(settings.data_root), settings.categories, settings.layout)
    model, warnings = make_model(settings)
    out = prepare_output(out, overwrite=settings.overwrite)
    progress = RunProgress(out)
    progress.done("prepare")
    return RunStart(names, model, out, RunTotals(warnings=list(warnings)), progress)


def run_centralized(settings: RunSettings, out: Path, *, name: str = "centralized") -> dict:
    """The whole centralized baseline; returns the results dict it wrote to `out`."""
    run = start_run(settings, out)
    out, model, totals = run.out, run.model, run.totals
    with final_state(out, name, run.progress.facts):
        for cat in run.categories:
            category = load_category(Path(settings.data_root), cat, settings.layout)
            _centralized_category(run, category, settings, name)
        totals.seconds["total"] = time.perf_counter() - run.started
        names = run.categories
        facts = provenance(name, "centralized", settings, training_data=_trained_on(run, settings))
        write_model(out / "model", model.spec, totals.models, facts, saved=run.progress.saved)
        run.progress.done("model", "model/ (complete)")
        return write_run(out, "centralized", name, settings, names, model, totals)


def phase_seconds(model: PatchCore, seconds: dict[str, float]) -> dict[str, float | None]:
    """Where a non-federated run's time went (the same phases as a federated run's;
    those of the federation are None)."""
    evaluation = sum(v for k, v in seconds.items() if k.endswith("/evaluate"))
    return {
        "extraction": round(model.seconds["extraction"], 3),
        "local_coreset": round(model.seconds["coreset"], 3),
        "upload": None,
        "merge": None,
        "broadcast": None,
        "scoring": round(model.seconds["scoring"], 3),
        "statistics": round(evaluation, 3),
        "pooling": None,
    }


def run_facts(settings: RunSettings, categories: Sequence[str], model: PatchCore) -> dict[str, Any]:
    """The `run` facts of a non-federated run (features, data, status, outputs)."""
    import torch

    from fedpatch_app.federated.data import synthetic_facts

    synthetic = synthetic_facts(Path(settings.data_root))
    kind = "synthetic" if synthetic else "autovi"
    return {
        "features": features_facts(model.spec),
        "data": data_facts(
            kind,
            Path(settings.data_root).resolve(),
            categories,
            synthetic,
            local_layouts(settings.data_root, categories, settings.layout),
        ),
        "status": "completed",
        "outputs": {"maps": "maps", "model": "model"},
        "threads": torch.get_num_threads(),
    }


def write_run(
    out: Path,
    kind: str,
    name: str,
    settings: RunSettings,
    categories: Sequence[str],
    model: PatchCore,
    totals: RunTotals,
) -> dict:
    """results.json (shared schema), curves.npz and status.json of a non-federated run."""
    facts = {
        **run_facts(settings, categories, model),
        "phases": phase_seconds(model, totals.seconds),
    }
    warnings = list(totals.warnings)
    if facts["data"]["kind"] == "synthetic":
        warnings.append("SYNTHETIC data: the metrics say nothing about AutoVI")
    results = build_results(
        kind,
        name,
        {**to_names(settings), "categories": list(categories)},
        facts["features"]["weights"],
        totals.seconds,
        totals.blocks,
        run_facts=facts,
        warnings=warnings,
    )
    write_results(out, results)
    write_curves(out, totals.curves)
    write_status(out, "completed")
    return results


def make_model(settings: RunSettings) -> tuple[PatchCore, tuple[str, ...]]:
    """The PatchCore model of these settings, with the features `choose_features` picks
    (real features unless weights=none; a pretrained stand-in only on synthetic data),
    and the warnings to record."""
    from fedpatch_app.data.synthetic import is_synthetic
    from fedpatch_app.model.feature_choice import feature_spec

    synthetic = is_synthetic(settings.data_root) is not None
    spec, warnings = feature_spec(settings, synthetic_data=synthetic)
    model = PatchCore(
        spec,
        device=settings.device,
        batch_size=settings.batch_size,
        num_workers=settings.num_workers,
    )
    model.search = search_params(settings)
    return model, warnings


def print_summary(results: dict) -> None:
    """The figures per category; a metric the data cannot give shows n/a with its reason."""
    cats = results["categories"]
    print(f"{'category':<18} {'sPRO@0.05':>10} {'sPRO@0.3':>10} {'img AUROC':>10}")
    rows = [(n, b["auc_spro"], b["image_auroc"]["mean"]) for n, b in cats.items()]
    rows.append(("mean", results["mean"]["auc_spro"], results["mean"]["image_auroc"]))
    for name, spro, auroc in rows:
        values = (spro["0.05"], spro["0.3"], auroc)
        print(f"{name:<18} " + " ".join(f"{format_value(v):>10}" for v in values))
    for name, block in cats.items():
        for metric, reason in (block.get("not_available") or {}).items():
            print(f"{name}: {metric} not available: {reason}")


def run_cli(args: argparse.Namespace) -> int:
    from fedpatch_app.inspection.signing import use_signing_key

    settings = settings_from_args(args)
    use_signing_key(args.signing_key)  # a bad key stops the run before any work
    results = run_centralized(settings, Path(args.out))
    print_summary(results)
    for warning in results["warnings"]:
        print(f"WARNING: {warning}")
    print(f"results: {Path(args.out) / 'results.json'}")
    print(f"model:   {Path(args.out) / 'model'} (use it with fedpatch predict)")
    return 0
