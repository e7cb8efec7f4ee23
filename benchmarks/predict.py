"""Benchmark: `fedpatch predict` against the bare backbone forward on the same images.

Prints, measured in the same run on the same images:

* bare forward: the backbone alone on batches already decoded and resized (the least any
  PatchCore inference must do): images/s;
* predict: the whole `fedpatch predict` path (`run_predict`: reading and checking the
  images, extraction, kNN search against a bank of the default size, maps at native
  size, regions, predictions.csv/.jsonl; the overlays too with `--overlays`, as
  `fedpatch predict --overlays` writes them), images/s;
* the ratio predict / bare forward (target at most 1.5x on CPU for WideResNet-50-2, 2.0x
  for EfficientNet-Lite0), and where predict's time goes (extraction, kNN search, maps,
  writing).

`--search` (default: the `search` setting's default) writes the model folder as a run
with that setting would: with the bank's approximate index (`approximate`; `auto` from
`AUTO_MIN_ROWS` rows, which the default-size bank reaches) or without it (exact search).

`--runtime onnx` measures the line runtime instead (the model folder's ONNX backbone,
exported here with `fedpatch export`'s code, on onnxruntime; numpy after it): the bare
forward is then the ONNX graph's, and the PyTorch predict runs in the same run for the
ratio ONNX / PyTorch.

The bank has the size a real model of the category has at the default settings
(coreset-ratio 0.1 of the training patches of `--train-images` images); its rows are
drawn at random (the search costs the same whatever the rows are). Random backbone
weights by default (speed does not depend on them), saved first and read as a line reads
its ImageNet weights: for WideResNet-50-2 the whole network in a temporary torch hub cache
under the name of torchvision's ImageNet checkpoint (predict then takes its default path,
`weights = imagenet`, byte for byte as large), for EfficientNet-Lite0 a weights file
(`--weights imagenet` reads the installed ImageNet weights). Drawing random weights in
predict is what only a `weights = none` study does (`--random-init` measures that path).

Usage::

    .venv/bin/python benchmarks/predict.py                          # 32 images, size 256
    .venv/bin/python benchmarks/predict.py --images 8 --image-size 128 --train-images 40
    .venv/bin/python benchmarks/predict.py --backbone efficientnet_lite0 --runtime onnx
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from fedpatch_app.inspection.model_folder import CategoryModel, write_model
from fedpatch_app.inspection.predict import run_predict
from fedpatch_app.metrics.map_scaling import MapScaling
from fedpatch_app.model.ann_index import built_index, search_kind, search_params
from fedpatch_app.model.backbone import ImageFolderDataset
from fedpatch_app.model.backbones.wide_resnet import imagenet_cache_path
from fedpatch_app.model.embedding import FeatureExtractor, FeatureSpec
from fedpatch_app.model.patchcore import Bank, coreset_size
from fedpatch_app.settings import RunSettings

CATEGORY = "pipe_clip"
NATIVE = (400, 400)
#: The most predict may cost against the bare forward (a light backbone's forward leaves
#: the fixed costs more weight).
TARGETS = {"wide_resnet50_2": 1.5, "efficientnet_lite0": 2.0}


def write_images(
    folder: Path, count: int, seed: int = 0, size: tuple[int, int] = NATIVE
) -> list[Path]:
    """`count` PNGs of random pixels, `size` (width, height)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    paths = []
    for i in range(count):
        arr = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
        paths.append(folder / f"{i:04d}.png")
        Image.fromarray(arr).save(paths[-1])
    return paths


def write_bank_model(folder: Path, spec: FeatureSpec, rows: int, search: str) -> Path:
    rng = np.random.default_rng(1)
    features = rng.normal(size=(rows, spec.embed_dim)).astype(np.float32)
    bank = Bank(features, spec, CATEGORY, radius=1.0, n_patches=rows * 10)
    thresholds = {"image": {"raw": 99.0}, "pixel": {"raw": 99.0}}
    index = built_index(features, search_params(RunSettings(search=search)))
    cats = {CATEGORY: CategoryModel(bank, NATIVE, MapScaling(0.0, 100.0), thresholds, 1, index)}
    write_model(folder, spec, cats, {"run_name": "benchmark", "run_kind": "benchmark"})
    return folder


def with_saved_random_weights(spec: FeatureSpec, folder: Path, random_init: bool) -> FeatureSpec:
    """`spec` with its random weights saved where predict reads them (unless `random_init`,
    or the weights are not random). WideResNet-50-2: the whole network saved in a
    temporary torch hub cache (`TORCH_HOME`) under the name of torchvision's ImageNet
    checkpoint, so that predict loads it exactly as it loads ImageNet weights by default
    (from the cache, no file hash); other backbones: a weights file."""
    if random_init or spec.weights != "none":
        return spec
    if spec.backbone == "wide_resnet50_2":
        from torchvision.models import wide_resnet50_2

        os.environ["TORCH_HOME"] = str(folder / "torch")
        path = imagenet_cache_path()  # under the TORCH_HOME just set
        path.parent.mkdir(parents=True)
        torch.manual_seed(spec.seed)
        torch.save(wide_resnet50_2(weights=None).state_dict(), path)
        weights = "imagenet"
    else:
        folder.mkdir(parents=True)
        weights = str(folder / f"{spec.backbone}-random.pth")
        torch.save(FeatureExtractor(spec, "cpu").backbone.state_dict(), weights)
    return FeatureSpec(
        weights=weights, image_size=spec.image_size, backbone=spec.backbone, seed=spec.seed
    )


def weights_source(args: argparse.Namespace, spec: FeatureSpec) -> str:
    """How the measured backbone got its weights, for the printout."""
    if args.weights != "none":
        return "read as predict reads them"
    if spec.weights == "none":
        return "random, drawn in predict"
    if spec.weights == "imagenet":
        return "random, read from torchvision's cache as the ImageNet checkpoint"
    return "random, read from a file"


def bare_forward(spec: FeatureSpec, paths: list[Path], batch_size: int) -> float:
    """Seconds of the backbone alone on pre-decoded batches."""
    extractor = FeatureExtractor(spec, "cpu", batch_size=batch_size)
    data = ImageFolderDataset(paths, spec.image_size)
    batches = [
        torch.stack([data[i][0] for i in range(s, min(s + batch_size, len(paths)))])
        for s in range(0, len(paths), batch_size)
    ]
    start = time.perf_counter()
    with torch.inference_mode():
        for batch in batches:
            extractor.backbone(batch)
    return time.perf_counter() - start


def parts(spec: FeatureSpec, model_dir: Path, paths: list[Path], batch_size: int) -> dict:
    """Seconds of extraction (decode + forward + embedding) and of the kNN search alone."""
    from fedpatch_app.inspection.model_folder import load_model
    from fedpatch_app.model.memory_bank import MemoryBank

    extractor = FeatureExtractor(spec, "cpu", batch_size=batch_size)
    start = time.perf_counter()
    feats = extractor.extract(paths)
    extraction = time.perf_counter() - start
    cat = load_model(model_dir).category(CATEGORY)
    index = MemoryBank(cat.bank.features, device="cpu", ann=cat.index)
    start = time.perf_counter()
    index.patch_scores(feats.reshape(-1, feats.shape[-1]))
    return {"extraction": extraction, "knn": time.perf_counter() - start}


def onnx_bare_forward(spec: FeatureSpec, model_dir: Path, paths: list[Path], batch_size: int):
    """Seconds of the ONNX backbone alone on pre-decoded batches."""
    from fedpatch_app.model.onnx_backbone import OnnxBackbone

    net = OnnxBackbone(model_dir, json.loads((model_dir / "model.json").read_text()))
    data = ImageFolderDataset(paths, spec.image_size)
    batches = [
        np.stack([data[i][0].numpy() for i in range(s, min(s + batch_size, len(paths)))])
        for s in range(0, len(paths), batch_size)
    ]
    net(batches[0][:1])  # the session opens (and checks its file's hash) once
    start = time.perf_counter()
    for batch in batches:
        net(batch)
    return time.perf_counter() - start


def onnx_parts(spec: FeatureSpec, model_dir: Path, paths: list[Path], batch_size: int) -> dict:
    """`parts` on the line runtime: extraction (decode + ONNX + numpy embedding), search."""
    from fedpatch_app.inspection.model_folder import load_model
    from fedpatch_app.inspection.onnx_predictor import LinePredictor
    from fedpatch_app.model.backbone_input import backbone_input
    from fedpatch_app.model.numpy_scoring import embed

    predictor = LinePredictor(load_model(model_dir), batch_size=batch_size)
    net, norm = predictor.patchcore.backbone, predictor.patchcore._norm
    start = time.perf_counter()
    feats = []
    for s in range(0, len(paths), batch_size):
        images = np.stack(
            [backbone_input(p, spec.image_size, *norm) for p in paths[s : s + batch_size]]
        )
        feats.append(embed(*net(images), spec.embed_dim, spec.neighbourhood))
    extraction = time.perf_counter() - start
    queries = np.concatenate(feats).reshape(-1, spec.embed_dim)
    index = predictor._index(CATEGORY)
    start = time.perf_counter()
    index.patch_scores(queries)
    return {"extraction": extraction, "knn": time.perf_counter() - start}


def weights_path(spec: FeatureSpec) -> str | None:
    """The weights file predict is given (`--weights PATH`), when the spec names one."""
    return None if spec.weights in ("none", "imagenet") else spec.weights


def timed_predict(
    model_dir: Path,
    paths: list[Path],
    out: Path,
    batch_size: int,
    runtime: str = "torch",
    weights_file: str | None = None,
    overlays: bool = False,
) -> float:
    start = time.perf_counter()
    run_predict(
        model_dir,
        CATEGORY,
        out,
        paths,
        device="cpu",
        batch_size=batch_size,
        runtime=runtime,
        weights_file=weights_file,
        overlays=overlays,
    )
    return time.perf_counter() - start


def measure(
    args: argparse.Namespace, spec: FeatureSpec, model_dir: Path, paths: list[Path], tmp_path: Path
):
    """Seconds of each repeat: bare forward, predict, its parts, and (onnx) torch's predict."""
    onnx = args.runtime == "onnx"
    wfile = weights_path(spec)
    if onnx:
        from fedpatch_app.inspection.onnx_export import export_model

        start = time.perf_counter()
        export_model(model_dir, weights_file=wfile)
        print(f"ONNX export (fedpatch export): {time.perf_counter() - start:.1f} s")
    bare, full, split, torch_full = [], [], [], []
    for r in range(args.repeats):
        if onnx:
            bare.append(onnx_bare_forward(spec, model_dir, paths, args.batch_size))
            t_out = tmp_path / f"t{r}"
            torch_full.append(
                timed_predict(model_dir, paths, t_out, args.batch_size, "torch", wfile)
            )
        else:
            bare.append(bare_forward(spec, paths, args.batch_size))
        out = tmp_path / f"out{r}"
        timed = timed_predict(
            model_dir, paths, out, args.batch_size, args.runtime, wfile, args.overlays
        )
        full.append(timed)
        split.append((onnx_parts if onnx else parts)(spec, model_dir, paths, args.batch_size))
    return bare, full, split, torch_full


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--train-images", type=int, default=195, help="pipe_clip has 195")
    parser.add_argument("--backbone", default="wide_resnet50_2")
    parser.add_argument("--weights", default="none")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument(
        "--runtime", choices=("torch", "onnx"), default="torch", help="see the module doc"
    )
    parser.add_argument(
        "--overlays", action="store_true", help="predict writes the overlays too (--overlays)"
    )
    parser.add_argument(
        "--random-init",
        action="store_true",
        help="with --weights none: draw the random weights in predict, as a weights=none "
        "study does, instead of reading them from a file",
    )
    parser.add_argument(
        "--search", choices=("auto", "approximate", "exact"), default=RunSettings().search
    )
    args = parser.parse_args()

    spec = FeatureSpec(weights=args.weights, image_size=args.image_size)
    if args.backbone != spec.backbone:
        spec = FeatureSpec(weights=args.weights, image_size=args.image_size, backbone=args.backbone)
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        spec = with_saved_random_weights(spec, tmp_path / "weights", args.random_init)
        paths = write_images(tmp_path / "images", args.images)
        grid = FeatureExtractor(spec, "cpu").extract(paths[:1]).shape[1:3]
        rows = coreset_size(args.train_images * grid[0] * grid[1], 0.1)
        model_dir = write_bank_model(tmp_path / "model", spec, rows, args.search)
        bare, full, split, torch_full = measure(args, spec, model_dir, paths, tmp_path)
    n = args.images
    print(
        f"torch threads {torch.get_num_threads()}, {spec.backbone} at {args.image_size} px, "
        f"{n} images of {NATIVE[0]}x{NATIVE[1]}, bank {rows} x {spec.embed_dim} "
        f"(coreset 0.1 of {args.train_images} images x {grid[0]}x{grid[1]} patches)"
    )
    kind = search_kind(rows, search_params(RunSettings(search=args.search)))
    print(f"runtime {args.runtime}, search {args.search}: the bank is searched {kind}ly")
    source = weights_source(args, spec)
    print(
        f"backbone weights: {args.weights} ({source}); overlays {'on' if args.overlays else 'off'}"
    )
    print(f"bare forward : {n / min(bare):7.2f} images/s (best of {args.repeats})")
    print(f"predict      : {n / min(full):7.2f} images/s (best of {args.repeats})")
    if torch_full:
        print(f"predict torch: {n / min(torch_full):7.2f} images/s (best of {args.repeats})")
        print(f"ratio onnx predict / torch predict: {min(full) / min(torch_full):.2f}x time")
    target = TARGETS.get(spec.backbone, 1.5)
    print(f"ratio predict / bare forward: {min(full) / min(bare):.2f}x (target <= {target}x)")
    ext = min(p["extraction"] for p in split)
    knn = min(p["knn"] for p in split)
    rest = max(0.0, min(full) - ext - knn)
    total = min(full)
    print(
        f"predict's time: extraction {ext:.2f} s ({100 * ext / total:.0f}%), kNN {knn:.2f} s "
        f"({100 * knn / total:.0f}%), maps, regions, overlays and files {rest:.2f} s "
        f"({100 * rest / total:.0f}%)"
    )


if __name__ == "__main__":
    main()
