"""Benchmark: what a line gets per category at AutoVI's bank sizes, images per second.

For each of the six AutoVI categories, a model with the bank a real model of that
category has at the default settings (the training images AutoVI has, less the
calibration share held out, x the patch grid, x the coreset ratio; rows drawn at random:
the search costs the same whatever the rows are) and test images at the category's
native size. Measured in one run, on CPU:

* `fedpatch predict` (`run_predict`, everything it does by default: reading, checking,
  extraction, search, maps at native size, regions and files; no overlays), batches of
  `--batch-size`: images/s, best of `--repeats`;
* the inspection service (`create_app` on uvicorn in a thread of this process, on
  127.0.0.1) with 1, 4 and 8 clients posting the images at once (`--concurrency`):
  images/s and p50/p95 latency as the clients see them (raw PNG bodies, no overlay).
  The clients run in this process too, so their work counts against the service.

`--search` picks how the model searches its bank (the run setting `search`; `approximate`
writes the folder's index as a run does). Random backbone weights by default (speed does
not depend on them), saved first and read as predict reads ImageNet weights
(`benchmarks/predict.py`'s `with_saved_random_weights`), so that predict does not pay
for drawing them at every call. `--out FILE` also writes the figures as JSON.

Usage::

    .venv/bin/python benchmarks/throughput.py --backbone wide_resnet50_2
    .venv/bin/python benchmarks/throughput.py --backbone efficientnet_lite0 --images 8
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import torch
from predict import weights_path, weights_source, with_saved_random_weights, write_images
from serve import ServiceThread, stats, timed

from fedpatch_app.data.autovi_release import NATIVE_SIZES
from fedpatch_app.data.calibration import calibration_set
from fedpatch_app.data.synthetic.layout import AUTOVI_COUNTS
from fedpatch_app.inspection.model_folder import CategoryModel, load_model, write_model
from fedpatch_app.inspection.predict import run_predict
from fedpatch_app.inspection.scorer import Scorer
from fedpatch_app.metrics.map_scaling import MapScaling
from fedpatch_app.model.ann_index import IvfIndex
from fedpatch_app.model.embedding import FeatureExtractor, FeatureSpec
from fedpatch_app.model.patchcore import Bank, coreset_size
from fedpatch_app.settings import RunSettings

DEFAULTS = RunSettings()


def bank_rows(category: str, grid: tuple[int, int]) -> int:
    """Rows of the category's bank at the default settings and AutoVI's image count."""
    train = [str(i) for i in range(AUTOVI_COUNTS[category]["train/good"])]
    held = calibration_set(category, train, DEFAULTS.calibration_fraction, DEFAULTS.seed)
    return coreset_size((len(train) - len(held)) * grid[0] * grid[1], DEFAULTS.coreset_ratio)


def write_models(folder: Path, spec: FeatureSpec, grid: tuple[int, int], search: str) -> Path:
    """One model folder holding all six categories, each at its default bank size."""
    rng = np.random.default_rng(1)
    cats = {}
    for category in AUTOVI_COUNTS:
        rows = bank_rows(category, grid)
        features = rng.normal(size=(rows, spec.embed_dim)).astype(np.float32)
        bank = Bank(features, spec, category, radius=1.0, n_patches=rows * 10)
        thresholds = {"image": {"raw": 99.0}, "pixel": {"raw": 99.0}}
        index = IvfIndex.build(features) if search == "approximate" else None
        scaling = MapScaling(0.0, 100.0)
        cats[category] = CategoryModel(bank, NATIVE_SIZES[category], scaling, thresholds, 1, index)
    write_model(folder, spec, cats, {"run_name": "benchmark", "run_kind": "benchmark"})
    return folder


def predict_rate(
    model_dir: Path, category: str, paths: list[Path], args, tmp: Path, weights_file: str | None
) -> float:
    best = float("inf")
    for r in range(args.repeats):
        start = time.perf_counter()
        out = tmp / f"{category}-{r}"
        run_predict(
            model_dir,
            category,
            out,
            paths,
            device="cpu",
            batch_size=args.batch_size,
            weights_file=weights_file,
        )
        best = min(best, time.perf_counter() - start)
    return len(paths) / best


def service_rates(scorer: Scorer, url: str, category: str, paths: list[Path], levels) -> dict:
    """Images/s and latencies with c clients posting at once, for each c in `levels`."""
    bodies = [p.read_bytes() for p in paths]
    out = {}
    with httpx.Client(timeout=600) as client:
        target = f"{url}/v1/predict/{category}"

        def post(body: bytes) -> None:
            headers = {"Content-Type": "image/png"}
            client.post(target, content=body, headers=headers).raise_for_status()

        post(bodies[0])  # the category's first request warms it up
        for c in levels:
            calls = [lambda b=b: post(b) for b in bodies] * max(1, c // 2)
            cpu = time.process_time()
            latencies, wall = timed(calls, c)
            out[c] = stats(latencies, wall, time.process_time() - cpu)
    return out


def measure(args: argparse.Namespace, spec: FeatureSpec, tmp: Path) -> dict:
    images = {
        size: write_images(tmp / f"images-{size[0]}x{size[1]}", args.images, size=size)
        for size in sorted(set(NATIVE_SIZES.values()))
    }
    first = next(iter(images.values()))[:1]
    grid = tuple(FeatureExtractor(spec, "cpu").extract(first).shape[1:3])
    model_dir = write_models(tmp / "model", spec, grid, args.search)
    model = load_model(model_dir)
    scorer = Scorer.load(model, device="cpu", weights_file=weights_path(spec))
    results = {}
    with ServiceThread(scorer) as url:
        scorer.ready.wait()
        for category in AUTOVI_COUNTS:
            paths = images[NATIVE_SIZES[category]]
            rows = model.category(category).bank.features.shape[0]
            rate = predict_rate(model_dir, category, paths, args, tmp, weights_path(spec))
            service = service_rates(scorer, url, category, paths, args.concurrency)
            results[category] = {"bank_rows": rows, "predict": rate, "service": service}
            logging.info("%s: %d rows, predict %.2f images/s", category, rows, rate)
    return {"grid": list(grid), "categories": results}


def report(out: dict, args: argparse.Namespace, spec: FeatureSpec, load: tuple) -> None:
    print(
        f"{spec.backbone} at {spec.image_size} px, search {args.search}, {args.images} images "
        f"per category, batch {args.batch_size}, torch threads {torch.get_num_threads()}, "
        f"{os.cpu_count()} CPUs, load average at start {load[0]:.2f}, at end "
        f"{os.getloadavg()[0]:.2f}"
    )
    print(f"backbone weights: {args.weights} ({weights_source(args, spec)})")
    levels = args.concurrency
    head = " | ".join(f"service c={c} images/s (p50 / p95 ms)" for c in levels)
    print(f"| category | native size | bank rows | predict images/s | {head} |")
    print("|---|---|---|---|" + "---|" * len(levels))
    for category, r in out["categories"].items():
        size = "x".join(map(str, NATIVE_SIZES[category]))
        cells = " | ".join(
            f"{s['rate']:.2f} ({1000 * s['p50']:.0f} / {1000 * s['p95']:.0f})"
            for s in (r["service"][c] for c in levels)
        )
        print(f"| {category} | {size} | {r['bank_rows']} | {r['predict']:.2f} | {cells} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backbone", default="wide_resnet50_2")
    parser.add_argument("--weights", default="none")
    parser.add_argument("--image-size", type=int, default=DEFAULTS.image_size)
    parser.add_argument("--images", type=int, default=16, help="test images per category")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--search", choices=("approximate", "exact"), default="approximate")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--out", help="also write the figures to this JSON file")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    spec = FeatureSpec(weights=args.weights, image_size=args.image_size, backbone=args.backbone)
    load = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        spec = with_saved_random_weights(spec, Path(tmp) / "weights", False)
        out = measure(args, spec, Path(tmp))
    report(out, args, spec, load)
    if args.out:
        meta = {"backbone": spec.backbone, "image_size": spec.image_size, "search": args.search}
        Path(args.out).write_text(json.dumps(meta | out, indent=1))


if __name__ == "__main__":
    main()
