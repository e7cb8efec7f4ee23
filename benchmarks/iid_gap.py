"""Benchmark: how well each run's bank covers the training patches (technical report,
appendix A: why federated IID loses image AUROC).

For each category of a `fedpatch experiment --preset stage1` folder, the patch features
of the images the banks were fit from (the training images less the calibration share,
as every run of the study splits them at the default calibration settings and the banks'
seed) are scored against the bank of each run
(`<run>/model/banks/<category>.npz`) with the project's `MemoryBank`, exactly, in the
full feature space (not the coreset's projection). Printed and written as JSON, per
category and run:

* `radius`: the largest distance of a fit patch to its nearest bank row (how far the
  bank leaves some training patch);
* `good_p99`: the 99th percentile of the patch scores of the good test images (what a
  good part scores against that bank).

Usage::

    python benchmarks/iid_gap.py --experiment runs/figures/stage1-photo-pretrained/stage1 \\
        --data-root data/photo-small --out runs/iid-gap.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np

from fedpatch_app.data.layouts import load_category
from fedpatch_app.model.backbone import loadable_weights
from fedpatch_app.model.bank import Bank
from fedpatch_app.model.embedding import FeatureExtractor
from fedpatch_app.model.memory_bank import MemoryBank
from fedpatch_app.runs.centralized import training_split
from fedpatch_app.settings import RunSettings

RUNS = ("centralized", "federated-iid", "federated-noniid")


def patch_rows(extractor: FeatureExtractor, paths: list[Path]) -> np.ndarray:
    """Every patch feature of the images, one row each."""
    feats = extractor.extract(paths)
    return feats.reshape(-1, feats.shape[-1])


def category_figures(
    experiment: Path, root: Path, cat: str, extractor, settings: RunSettings
) -> dict:
    category = load_category(root, cat)
    fit, _ = training_split(category, category.train_rel, settings)
    good = [category.root / s.rel_path for s in category.test if s.is_good]
    fit_rows, good_rows = patch_rows(extractor, fit), patch_rows(extractor, good)
    out = {}
    for run in RUNS:
        bank = Bank.load(experiment / run / "model" / "banks" / f"{cat}.npz")
        index = MemoryBank(bank.features)
        out[run] = {
            "radius": float(index.patch_scores(fit_rows).max()),
            "good_p99": float(np.percentile(index.patch_scores(good_rows), 99)),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--experiment", type=Path, required=True)
    parser.add_argument("--data-root", type=Path, required=True)
    parser.add_argument("--out", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args()
    central = Bank.load(next((args.experiment / "centralized" / "model" / "banks").glob("*.npz")))
    spec = dataclasses.replace(
        central.spec, weights=loadable_weights(central.spec.weights, central.spec.backbone)
    )
    settings = RunSettings(seed=spec.seed)
    extractor = FeatureExtractor(spec, "cpu")
    cats = sorted(
        p.stem for p in (args.experiment / "centralized" / "model" / "banks").glob("*.npz")
    )
    figures = {}
    for cat in cats:
        figures[cat] = category_figures(args.experiment, args.data_root, cat, extractor, settings)
        cells = ", ".join(
            f"{run} radius {f['radius']:.2f} good p99 {f['good_p99']:.2f}"
            for run, f in figures[cat].items()
        )
        print(f"{cat}: {cells}", flush=True)
    if args.out:
        args.out.write_text(json.dumps(figures, indent=1) + "\n")


if __name__ == "__main__":
    main()
