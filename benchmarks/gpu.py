"""Benchmark of the CUDA paths: one prepared script for one short call on a GPU machine.

Five parts, each printing its figures, ratios and the peak GPU memory it used, then a
summary of the figures a user compares (coreset seconds at N = 1,000,000 and k = 1% /
10%, ms per image at batch 1 and 32, exact and approximate search):

1. **extraction**: the backbone with autocast (bfloat16, or float16 without bf16) and
   channels-last, as the project runs it on CUDA, against plain float32 NCHW (TF32
   off), on the same images: images/s of each, and the largest difference between
   the anomaly scores (image scores and maps) of a bank fitted and scored with each;
2. **latency**: milliseconds per image of the extraction (backbone + embedding, images
   already decoded and on the device) at each of ``--latency-batches`` (1 and 32), as
   the project runs it (autocast + channels-last on CUDA) and in plain float32;
3. **coreset**: greedy k-center at ``--coreset-n`` (1,000,000) patch features (the
   synthetic images at 448 px give 1.1 million), k = each of ``--coreset-ratios`` (1%
   and 10%), on the GPU (the masked form, then plain) against the CPU (the pruned form,
   up to ``--cpu-max-k`` picks: beyond, the CPU would take hours);
4. **kNN**: the exact memory-bank search (FAISS-GPU if installed, else torch) of
   ``--knn-queries`` patch queries against a ``--knn-bank`` bank on the GPU and on
   the CPU, and the largest difference between their distances; then the approximate
   search (``fedpatch_app.model.ann_index``: an IVF index with an exact re-rank) when
   that module is installed: its build and search time, and how many queries get the
   exact nearest distance;
5. **federated**: a whole five-client federated run on the synthetic data, the five
   clients sharing the one GPU: ``flwr run`` with ``client-resources-num-gpus`` =
   1/5 when Ray is installed, else the in-process engine (same ServerApp and
   ClientApp code); wall time and the peak memory used on the GPU (all processes).

Without CUDA every CUDA part is skipped with a message and the CPU side runs at a
small size, so the script can be checked anywhere (``--quick`` makes it smaller).

Usage::

    python benchmarks/gpu.py                 # on a CUDA machine: all five parts
    python benchmarks/gpu.py --quick         # a CPU-only check in seconds
    python benchmarks/gpu.py --parts coreset,knn
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import feature_source
import numpy as np
import torch

from fedpatch_app.data.autovi import NATIVE_SIZES
from fedpatch_app.model.coreset import greedy_coreset
from fedpatch_app.model.embedding import FeatureExtractor, FeatureSpec, embed
from fedpatch_app.model.memory_bank import MemoryBank
from fedpatch_app.model.patchcore import PatchCore

PARTS = ("extraction", "latency", "coreset", "knn", "federated")
CUDA = torch.cuda.is_available()
#: The module of the approximate search (`--ann-module` replaces it).
ANN_MODULE = "fedpatch_app.model.ann_index"
#: The figures of the summary, in the order measured: (what, value).
SUMMARY: list[tuple[str, str]] = []


def note(what: str, value: str) -> None:
    SUMMARY.append((what, value))


def skip(part: str, why: str) -> None:
    print(f"[{part}] SKIPPED: {why}")


def peak_gib() -> float:
    return torch.cuda.max_memory_allocated() / 2**30 if CUDA else 0.0


def reset_peak() -> None:
    if CUDA:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def timed(fn, *args, **kwargs):
    if CUDA:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    if CUDA:
        torch.cuda.synchronize()
    return out, time.perf_counter() - t0


class Float32Extractor(FeatureExtractor):
    """The project's extractor in plain float32 and NCHW layout: the GPU path's baseline."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.backbone = self.backbone.to(memory_format=torch.contiguous_format)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            layer2, layer3 = self.backbone(images.to(self.device))
            return embed(layer2, layer3, self.spec.embed_dim, self.spec.neighbourhood)


def _fit_and_score(model: PatchCore, train: list[Path], test: list[Path], category: str):
    """(images/s of the train extraction, image scores, maps) of one model."""
    model.features(train[:2], desc="warm-up")
    _, seconds = timed(model.features, train, desc="extraction")
    bank = model.fit(train, category, coreset_ratio=0.1)
    pred = model.predict(bank, test, NATIVE_SIZES[category])
    return len(train) / seconds, pred.image_scores, np.stack(pred.maps)


def part_extraction(args: argparse.Namespace, root: Path) -> None:
    category = "tank_screw"
    train = sorted((root / category / "train" / "good").glob("*.png"))[: args.images]
    test = sorted((root / category / "test").glob("*/*.png"))[: args.images]
    spec = FeatureSpec(weights=args.weights, image_size=args.image_size)
    device = "cuda" if CUDA else "cpu"
    workers = min(8, os.cpu_count() or 1)
    reset_peak()
    base = PatchCore(spec, device=device, batch_size=args.batch_size, num_workers=workers)
    base.extractor = Float32Extractor(spec, device, batch_size=args.batch_size, num_workers=workers)
    tf32 = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    try:
        fp32_rate, fp32_scores, fp32_maps = _fit_and_score(base, train, test, category)
    finally:
        torch.backends.cudnn.allow_tf32 = tf32
    print(
        f"[extraction] float32 NCHW on {device}: {fp32_rate:.1f} images/s "
        f"({len(train)} images {args.image_size} px), peak {peak_gib():.2f} GiB"
    )
    if not CUDA:
        skip("extraction", "autocast + channels-last runs on CUDA only (no CUDA device here)")
        return
    reset_peak()
    fast = PatchCore(spec, device=device, batch_size=args.batch_size, num_workers=workers)
    amp_rate, amp_scores, amp_maps = _fit_and_score(fast, train, test, category)
    spread = float(fp32_scores.max() - fp32_scores.min()) or 1.0
    print(
        f"[extraction] autocast {fast.extractor._amp} + channels-last: {amp_rate:.1f} "
        f"images/s, {amp_rate / fp32_rate:.2f}x float32; peak {peak_gib():.2f} GiB"
    )
    print(
        f"[extraction] largest difference: image score {np.abs(amp_scores - fp32_scores).max():.4g}"
        f" ({np.abs(amp_scores - fp32_scores).max() / spread:.2%} of the score range), "
        f"map {np.abs(amp_maps - fp32_maps).max():.4g}"
    )


def _latency(extractor: FeatureExtractor, batch: int, repeats: int, size: int) -> float:
    """Median milliseconds per image of `extractor.features` on a decoded batch."""
    images = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(0))
    images = images.to(extractor.device)
    extractor.features(images)  # warm-up: kernels chosen, memory allocated
    times = [timed(extractor.features, images)[1] for _ in range(repeats)]
    return 1000.0 * float(np.median(times)) / batch


def part_latency(args: argparse.Namespace) -> None:
    device = "cuda" if CUDA else "cpu"
    spec = FeatureSpec(weights=args.weights, image_size=args.image_size, backbone=args.backbone)
    kinds = [("float32", Float32Extractor)]
    if CUDA:
        kinds.insert(0, ("autocast + channels-last", FeatureExtractor))
    for label, cls in kinds:
        reset_peak()
        extractor = cls(spec, device, batch_size=1)
        for batch in args.latency_batches:
            ms = _latency(extractor, batch, args.latency_repeats, args.image_size)
            print(
                f"[latency] {spec.backbone} {args.image_size} px on {device}, {label}: "
                f"batch {batch}: {ms:.2f} ms per image; peak {peak_gib():.2f} GiB"
            )
            note(f"ms per image, batch {batch}, {label} ({device})", f"{ms:.2f}")
    if not CUDA:
        skip("latency", "no CUDA device: the CPU figures above, not the GPU's")


def _coreset_cpu(features: np.ndarray, k: int, max_k: int) -> tuple[object, float] | None:
    """The CPU selection and its seconds; None (said) when k is over `max_k`."""
    if k > max_k:
        print(f"[coreset] CPU, pruned: k = {k:,} is over --cpu-max-k {max_k:,}: not run")
        return None
    cpu, t_cpu = timed(greedy_coreset, features, k)
    print(
        f"[coreset] CPU, pruned: N = {len(features):,}, k = {k:,}: {t_cpu:.2f} s, "
        f"radius {cpu.radius:.4f}"
    )
    note(f"coreset s, N = {len(features):,}, k = {k:,}, CPU pruned", f"{t_cpu:.2f}")
    return cpu, t_cpu


def _coreset_gpu(x: torch.Tensor, k: int, cpu: tuple[object, float] | None) -> None:
    for method in ("masked", "plain"):
        reset_peak()
        gpu, t_gpu = timed(greedy_coreset, x, k, device="cuda", method=method)
        versus = ""
        if cpu is not None:
            same = np.mean(gpu.indices == cpu[0].indices)
            versus = (
                f", {cpu[1] / t_gpu:.1f}x the CPU; {same:.1%} of the picks as on the CPU "
                "(the float32 projections differ in rounding)"
            )
        print(
            f"[coreset] GPU, {method}: k = {k:,}: {t_gpu:.2f} s{versus}; radius "
            f"{gpu.radius:.4f}; peak {peak_gib():.2f} GiB"
        )
        note(f"coreset s, N = {len(x):,}, k = {k:,}, GPU {method}", f"{t_gpu:.2f}")


def part_coreset(args: argparse.Namespace) -> None:
    n = args.coreset_n if CUDA else min(args.coreset_n, 20_000)
    source = argparse.Namespace(**{**vars(args), "image_size": args.coreset_image_size})
    features = feature_source.load(args.coreset_data, n, 1024, 0, source, "cuda" if CUDA else "cpu")
    x = torch.from_numpy(np.ascontiguousarray(features)) if CUDA else None
    for ratio in args.coreset_ratios:
        k = max(1, round(n * ratio))
        cpu = _coreset_cpu(features, k, args.cpu_max_k)
        if CUDA:
            _coreset_gpu(x, k, cpu)
    if not CUDA:
        skip("coreset", "no CUDA device: the GPU side and the 1,000,000-point case did not run")


def _approximate(bank: np.ndarray, queries: np.ndarray, exact: np.ndarray, module: str) -> None:
    """The approximate search of `module` (IvfIndex.build, IvfSearch.nearest) when it is
    installed: build and search seconds, and agreement with the exact distances."""
    try:
        ann = importlib.import_module(module)
        build, search = ann.IvfIndex.build, ann.IvfSearch
    except (ImportError, AttributeError) as exc:
        skip("knn", f"approximate search: {module} is not available here ({exc})")
        return
    index, t_build = timed(build, bank)
    searcher = search(index, bank)
    (dist, _), t_search = timed(searcher.nearest, queries)
    same = float(np.mean(np.isclose(dist, exact, rtol=1e-5, atol=1e-6)))
    worst = float(np.max(np.abs(dist - exact) / np.maximum(exact, 1e-12)))
    print(
        f"[knn] approximate ({module}, CPU): build {t_build:.2f} s, search {t_search:.2f} s, "
        f"{len(queries) / t_search:,.0f} queries/s; exact nearest distance for {same:.2%} of "
        f"the queries, largest relative difference {worst:.3g}"
    )
    note("search s, approximate (CPU)", f"{t_search:.2f}")


def part_knn(args: argparse.Namespace) -> None:
    scale = 1 if CUDA else 20
    rng = np.random.default_rng(0)
    bank = rng.standard_normal((args.knn_bank // scale, 1024), dtype=np.float32)
    queries = rng.standard_normal((args.knn_queries // scale, 1024), dtype=np.float32)
    cpu_bank = MemoryBank(bank, device="cpu")
    (d_cpu, _), t_cpu = timed(cpu_bank.search, queries)
    print(
        f"[knn] CPU ({cpu_bank.backend}): {len(queries):,} queries x {len(bank):,} bank: "
        f"{t_cpu:.2f} s, {len(queries) / t_cpu:,.0f} queries/s"
    )
    note(f"search s, exact CPU, {len(queries):,} x {len(bank):,}", f"{t_cpu:.2f}")
    if CUDA:
        reset_peak()
        gpu_bank = MemoryBank(bank, device="cuda")
        gpu_bank.search(queries[:1000])
        (d_gpu, _), t_gpu = timed(gpu_bank.search, queries)
        print(
            f"[knn] GPU ({gpu_bank.backend}): {t_gpu:.2f} s, {t_cpu / t_gpu:.1f}x the CPU; "
            f"largest distance difference {np.abs(d_gpu - d_cpu).max():.3g}; peak "
            f"{peak_gib():.2f} GiB"
        )
        note(f"search s, exact GPU ({gpu_bank.backend})", f"{t_gpu:.2f}")
    _approximate(bank, queries, d_cpu[:, 0], args.ann_module)
    if not CUDA:
        skip("knn", "no CUDA device: the GPU search did not run")


class GpuMemorySampler:
    """Peak memory used on GPU 0 by all processes (nvidia-smi, or torch's NVML query)."""

    def __init__(self) -> None:
        self.peak_mib = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _used_mib(self) -> float:
        if shutil.which("nvidia-smi"):
            out = subprocess.run(
                [
                    "nvidia-smi",
                    "--query-gpu=memory.used",
                    "--format=csv,noheader,nounits",
                    "--id=0",
                ],
                capture_output=True,
                text=True,
                check=False,
            )
            if out.returncode == 0 and out.stdout.strip():
                return float(out.stdout.split()[0])
        return torch.cuda.device_memory_used(0) / 2**20

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_mib = max(self.peak_mib, self._used_mib())
            time.sleep(0.5)

    def __enter__(self) -> GpuMemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def part_federated(args: argparse.Namespace, root: Path) -> None:
    if not CUDA:
        skip("federated", "no CUDA device: five clients sharing one GPU cannot be measured")
        return
    if importlib.util.find_spec("flwr") is None:
        skip("federated", "flwr is not installed here: pip install the project first")
        return
    out = Path(args.cache_dir) / "federated-run"
    shutil.rmtree(out, ignore_errors=True)
    config = {
        "dataset": "autovi",
        "data-root": str(root),
        "partition": "iid",
        "num-clients": 5,
        "min-clients": 5,
        "weights": args.weights,
        "image-size": args.image_size,
        "device": "cuda",
        "out-dir": str(out),
        "run-name": "gpu",
        "wait-timeout": 600.0,
    }
    ray = importlib.util.find_spec("ray") is not None
    with GpuMemorySampler() as sampler:
        t0 = time.perf_counter()
        if ray:
            from fedpatch_app.federated.simulation import run_simulation

            run_simulation(
                config,
                flwr_home=out / ".flwr",
                num_supernodes=5,
                cpus_per_client=max(1, (os.cpu_count() or 5) // 5),
                gpus_per_client=0.2,
                timeout=3000,
            )
            how = "flwr run, 5 SuperNodes, client-resources-num-gpus=0.2"
        else:
            from fedpatch_app.federated.inprocess import run_inprocess

            run_inprocess(config)
            how = "in-process engine (Ray is not installed), 5 clients"
        seconds = time.perf_counter() - t0
    print(
        f"[federated] {how}: {seconds:.1f} s for the whole run; peak GPU memory used "
        f"(all processes) {sampler.peak_mib / 1024:.2f} GiB; results in {out / 'gpu'}"
    )


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v]


def _floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--parts", default=",".join(PARTS), help="comma-separated parts")
    parser.add_argument("--quick", action="store_true", help="small sizes (a CPU check)")
    parser.add_argument("--images", type=int, default=40, help="images of the extraction part")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--backbone", default="wide_resnet50_2", help="of the latency part")
    parser.add_argument("--latency-batches", type=_ints, default=[1, 32])
    parser.add_argument("--latency-repeats", type=int, default=10)
    parser.add_argument("--coreset-n", type=int, default=1_000_000)
    parser.add_argument("--coreset-ratios", type=_floats, default=[0.01, 0.1])
    parser.add_argument("--cpu-max-k", type=int, default=10_000, help="largest CPU coreset")
    parser.add_argument("--coreset-data", default="patches", choices=feature_source.KINDS)
    parser.add_argument(
        "--coreset-image-size", type=int, default=448, help="448 px: 1.1M patches (synthetic)"
    )
    parser.add_argument("--knn-bank", type=int, default=100_000)
    parser.add_argument("--knn-queries", type=int, default=100_000)
    parser.add_argument("--ann-module", default=ANN_MODULE, help="the approximate search")
    feature_source.add_arguments(parser, os.path.join(tempfile.gettempdir(), "fedpatch-gpu"))
    args = parser.parse_args()
    if args.quick:
        args.images, args.batch_size, args.image_size = 3, 3, 64
        args.latency_batches, args.latency_repeats = [1, 2], 2
        args.backbone = "efficientnet_lite0"
        args.coreset_n, args.knn_bank, args.knn_queries = 4000, 20_000, 10_000
        args.coreset_data = "gaussian"
    return args


def main() -> None:
    args = parse_args()
    device = torch.cuda.get_device_name(0) if CUDA else "no CUDA device"
    print(
        f"torch {torch.__version__}, {device}, {os.cpu_count()} CPUs, Python {sys.version.split()[0]}"
    )
    parts = [p for p in args.parts.split(",") if p]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        raise SystemExit(f"unknown part(s) {unknown}: choose from {PARTS}")
    root = Path(args.data_root) if args.data_root else None
    if root is None and {"extraction", "federated"} & set(parts):
        scale, only = ("tiny", ["tank_screw"]) if args.quick else ("small", None)
        root = feature_source.synthetic_root(Path(args.cache_dir), scale, only)
    for part in parts:
        t0 = time.perf_counter()
        if part == "extraction":
            part_extraction(args, root)
        elif part == "latency":
            part_latency(args)
        elif part == "coreset":
            part_coreset(args)
        elif part == "knn":
            part_knn(args)
        else:
            part_federated(args, root)
        print(f"[{part}] done in {time.perf_counter() - t0:.1f} s")
    print(f"[summary] {device}:")
    for what, value in SUMMARY:
        print(f"[summary] {what}: {value}")


if __name__ == "__main__":
    main()
