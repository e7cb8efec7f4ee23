"""Benchmark: the approximate search against exact search on real features.

Per category of `--bank-data`: a bank of the default size (coreset 0.1) from its training
images less every `--calibration-every`-th one (held out for calibration, as a run holds
some out); then every image is extracted once and its maps computed three ways from the
same features:

* exact: the exact search (`search = exact`, FAISS's flat index);
* approximate: the IVF index with the exact re-rank (`search = approximate`);
* exact re-measured: exact search's nearest rows with their distances measured the way
  the re-rank measures them (float64 differences), so that "identical" means the same
  nearest row and not the same arithmetic.

Each search sets its own thresholds from its own calibration maps (as a run does), and
its own map scaling; verdicts, image scores, image AUROC and AUC-sPRO are compared. The
images scored: the test images of `--bank-data` and of every `--data` root (same
categories, other seeds), and the training images of the `--data` roots (good parts
the bank never saw).

Usage::

    .venv/bin/python benchmarks/ann_agreement.py --bank-data data/photo-small \\
        --data data/photo-s1 data/photo-s2 --backbone efficientnet_lite0 --weights imagenet
"""

from __future__ import annotations

import argparse
import json
import time
from itertools import chain
from pathlib import Path

import numpy as np

from fedpatch_app.data.autovi import load_category
from fedpatch_app.metrics.evaluate import evaluate_category
from fedpatch_app.metrics.map_scaling import fit_scaling
from fedpatch_app.model.ann_index import IvfIndex, IvfParams, exact_distances
from fedpatch_app.model.embedding import FeatureSpec
from fedpatch_app.model.memory_bank import MemoryBank
from fedpatch_app.model.patchcore import PatchCore
from fedpatch_app.runs.centralized import calibrated, quantized
from fedpatch_app.settings import RunSettings

KINDS = ("exact", "approximate", "remeasured")


class Recording:
    """A search that records the nearest rows found and the seconds spent."""

    def __init__(self, bank: MemoryBank, remeasure: bool = False) -> None:
        self.bank, self.remeasure = bank, remeasure
        self.rows: list[np.ndarray] = []
        self.seconds = 0.0

    def patch_scores(self, queries: np.ndarray) -> np.ndarray:
        start = time.perf_counter()
        dist, idx = self.bank.search(queries, k=1)
        self.seconds += time.perf_counter() - start
        self.rows.append(idx[:, 0])
        if not self.remeasure:
            return dist[:, 0]
        rows = self.bank.features[idx[:, 0]][:, None, :]
        return exact_distances(queries, rows)[:, 0].astype(np.float32)


def score_group(model: PatchCore, bank, searches: dict, paths: list, size) -> dict:
    """Maps of `paths` under each search, from one extraction."""
    maps: dict[str, list[np.ndarray]] = {k: [] for k in searches}
    for _, feats in model.extractor.extract_iter(paths, "agreement", size):
        for kind, search in searches.items():
            maps[kind] += list(model.maps_of(bank, search, feats, size))
    return maps


def category_figures(model: PatchCore, args: argparse.Namespace, name: str) -> dict:
    home = load_category(args.bank_data, name)
    train = list(home.train)
    held = train[:: args.calibration_every]
    fit = [p for p in train if p not in held]
    bank = model.fit(fit, name, coreset_ratio=args.coreset_ratio, native_size=home.size)
    index = IvfIndex.build(bank.features, IvfParams(probe=args.probe, seed=args.seed))
    searches = {
        "exact": Recording(MemoryBank(bank.features)),
        "approximate": Recording(MemoryBank(bank.features, ann=index)),
        "remeasured": Recording(MemoryBank(bank.features), remeasure=True),
    }
    calib = score_group(model, bank, searches, held, home.size)
    roots = [home] + [load_category(root, name) for root in args.data]
    tests = [score_group(model, bank, searches, [s.path for s in c.test], home.size) for c in roots]
    extra = [score_group(model, bank, searches, list(c.train), home.size) for c in roots[1:]]
    out: dict = {"category": name, "bank_rows": bank.size, "lists": index.lists}
    settings = RunSettings()
    for kind in KINDS:
        scaling = fit_scaling(chain(tests[0][kind], calib[kind]))
        thresholds = calibrated(calib[kind], scaling, settings)
        maps = list(chain(*(t[kind] for t in tests), *(e[kind] for e in extra)))
        blocks = [
            evaluate_category(c, quantized(t[kind], scaling), seed=0)[0]
            for c, t in zip(roots, tests, strict=True)
        ]
        out[kind] = {
            "scores": [float(m.max()) for m in maps],
            "threshold": float(thresholds["image"]["raw"]),
            "image_auroc": [b["image_auroc"]["mean"] for b in blocks],
            "auc_spro_0.05": [b["auc_spro"]["0.05"] for b in blocks],
            "auc_spro_0.3": [b["auc_spro"]["0.3"] for b in blocks],
            "search_seconds": searches[kind].seconds,
        }
    found = np.concatenate(searches["approximate"].rows) == np.concatenate(searches["exact"].rows)
    out["patches"], out["patches_nearest_found"] = int(found.size), int(found.sum())
    return out


def _mean_diff(figures: list[dict], key: str, ref: str) -> float:
    """Mean of a metric under the approximate search less its mean under `ref`."""
    a = [v for f in figures for v in f["approximate"][key] if v is not None]
    e = [v for f in figures for v in f[ref][key] if v is not None]
    return float(np.mean(a) - np.mean(e))


def summary(figures: list[dict]) -> dict:
    """Agreement of the approximate search with exact search (and with the re-measured
    exact search) over every image of every category."""
    out: dict = {"images": sum(len(f["exact"]["scores"]) for f in figures)}
    for ref in ("exact", "remeasured"):
        a = np.concatenate([f["approximate"]["scores"] for f in figures])
        e = np.concatenate([f[ref]["scores"] for f in figures])
        va = np.concatenate(
            [
                np.asarray(f["approximate"]["scores"]) > f["approximate"]["threshold"]
                for f in figures
            ]
        )
        ve = np.concatenate([np.asarray(f[ref]["scores"]) > f[ref]["threshold"] for f in figures])
        rel = np.abs(a - e) / np.maximum(np.abs(e), 1e-30)
        metrics = ("image_auroc", "auc_spro_0.05", "auc_spro_0.3")
        out[ref] = {
            "scores_identical": float(np.mean(a == e)),
            "scores_within_1e-5": float(np.mean(rel <= 1e-5)),
            "largest_relative_difference": float(rel.max()),
            "verdict_changes": int(np.sum(va != ve)),
            "verdicts_identical": float(np.mean(va == ve)),
            **{f"mean_{k}_difference": _mean_diff(figures, k, ref) for k in metrics},
        }
    patches = sum(f["patches"] for f in figures)
    out["patches_nearest_found"] = sum(f["patches_nearest_found"] for f in figures) / patches
    out["search_seconds"] = {k: sum(f[k]["search_seconds"] for f in figures) for k in KINDS}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bank-data", type=Path)
    parser.add_argument(
        "--summary-of",
        type=Path,
        help="print the summary of the figures an earlier --out wrote, measuring nothing",
    )
    parser.add_argument("--data", type=Path, nargs="*", default=[])
    parser.add_argument("--categories", nargs="*", default=None)
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--weights", default="imagenet")
    parser.add_argument("--coreset-ratio", type=float, default=0.1)
    parser.add_argument("--calibration-every", type=int, default=5)
    parser.add_argument("--probe", type=int, default=IvfParams().probe)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="JSON of every figure")
    args = parser.parse_args()
    if args.summary_of is not None:
        figures = json.loads(args.summary_of.read_text())["categories"]
        print(json.dumps(summary(figures), indent=2))
        return
    if args.bank_data is None:
        parser.error("--bank-data is required (or --summary-of a saved run)")
    spec = FeatureSpec(weights=args.weights, backbone=args.backbone)
    model = PatchCore(spec, device="cpu", batch_size=8)
    names = args.categories or sorted(
        p.parent.name for p in args.bank_data.glob("*/defects_config.json")
    )
    figures = [category_figures(model, args, name) for name in names]
    result = summary(figures)
    if args.out is not None:
        args.out.write_text(json.dumps({"summary": result, "categories": figures}, indent=1))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
