"""Benchmark: feature extraction overhead and the peak memory of fitting one category.

Prints, all measured in the same run:

* fitting = extracting the features of ``--images`` synthetic images into the
  preallocated array + greedy k-center at ``--ratio`` (10%): time, images/s, and the
  peak resident memory it added (sampled every 5 ms) against the raw size of the
  features (target <= 1.5x);
* on the first ``--overhead-images`` images: extraction again, and the bare backbone
  forward on the same batches (images already decoded), alternated ``--repeats`` times
  keeping the best time of each: images/s, and extraction time / bare forward time
  (overhead ratio, target <= 1.15x).

Random backbone weights (``none``) are used: speed and memory do not depend on them.

Usage::

    .venv/bin/python benchmarks/pipeline.py                      # 300 images, 400x400, size 256
    .venv/bin/python benchmarks/pipeline.py --images 40 --image-size 128   # a quick run
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from fedpatch_app.model.coreset import greedy_coreset
from fedpatch_app.model.embedding import FeatureExtractor, FeatureSpec

PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * PAGE


class PeakSampler:
    """Samples the resident set size in a thread; ``peak`` is the largest seen."""

    def __init__(self, interval: float = 0.005) -> None:
        self.interval = interval
        self.peak = rss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes())
            time.sleep(self.interval)

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())


def make_images(folder: Path, count: int, width: int, height: int, seed: int) -> list[Path]:
    """Smooth random textures with a little per-image noise, saved as PNG."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(0, 255, (height // 8, width // 8, 3)).astype(np.uint8)
    base = np.asarray(Image.fromarray(base).resize((width, height), Image.Resampling.BILINEAR))
    paths = []
    for i in range(count):
        noise = rng.normal(0, 12, base.shape)
        img = np.clip(base + noise, 0, 255).astype(np.uint8)
        path = folder / f"{i:04d}.png"
        Image.fromarray(img).save(path, compress_level=1)
        paths.append(path)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--native", default="400x400", help="synthetic image size WxH")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--ratio", type=float, default=0.1, help="coreset size as a fraction")
    parser.add_argument(
        "--overhead-images", type=int, default=64, help="images of the overhead test"
    )
    parser.add_argument("--repeats", type=int, default=2, help="alternating overhead runs")
    parser.add_argument("--skip-fit", action="store_true", help="only the overhead test")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    width, height = (int(v) for v in args.native.lower().split("x"))

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device cpu")
    with tempfile.TemporaryDirectory() as tmp:
        paths = make_images(Path(tmp), args.images, width, height, args.seed)
        spec = FeatureSpec(weights="none", image_size=args.image_size)
        extractor = FeatureExtractor(spec, "cpu", batch_size=args.batch_size)
        # Warm-up (oneDNN kernel set-up) outside the timed and measured parts.
        extractor.extract(paths[: args.batch_size], desc="warm-up")

        if not args.skip_fit:
            rss_before = rss_bytes()
            with PeakSampler() as sampler:
                t0 = time.perf_counter()
                feats = extractor.extract(paths, desc="extract")
                t_extract = time.perf_counter() - t0
                flat = feats.reshape(-1, feats.shape[-1])
                k = max(1, round(args.ratio * len(flat)))
                t0 = time.perf_counter()
                result = greedy_coreset(flat, k, projection_dim=spec.projection_dim, seed=spec.seed)
                t_coreset = time.perf_counter() - t0
                bank = flat[result.indices].copy()
            raw = feats.nbytes
            added = sampler.peak - rss_before
            print(
                f"features: {feats.shape} float32 = {raw / 2**20:.0f} MiB raw "
                f"({len(flat):,} patches); bank {bank.shape}"
            )
            print(
                f"extraction: {t_extract:.1f} s, {args.images / t_extract:.2f} images/s; "
                f"coreset {args.ratio:.0%} (k = {k:,}): {t_coreset:.1f} s"
            )
            print(
                f"peak RSS while fitting: {sampler.peak / 2**20:.0f} MiB (process), "
                f"{added / 2**20:.0f} MiB added by fitting; added / raw features = {added / raw:.2f}x"
            )
            del feats, flat, bank

        # Overhead: extraction against the bare backbone forward on the same batches
        # (images decoded beforehand), on the first --overhead-images images.
        subset = paths[: args.overhead_images]
        loader = extractor._loader(subset)
        t_sub = t_bare = float("inf")
        for _ in range(args.repeats):  # alternate, keep the best of each (shared machines)
            t0 = time.perf_counter()
            extractor.extract(subset, desc="extract again")
            t_sub = min(t_sub, time.perf_counter() - t0)
            elapsed = 0.0
            with torch.inference_mode():
                for images, _ in loader:
                    t0 = time.perf_counter()
                    extractor.backbone(images)
                    elapsed += time.perf_counter() - t0
            t_bare = min(t_bare, elapsed)
        n_sub = len(subset)
        print(
            f"on {n_sub} images: extraction {t_sub:.1f} s ({n_sub / t_sub:.2f} images/s), "
            f"bare backbone forward {t_bare:.1f} s ({n_sub / t_bare:.2f} images/s)"
        )
        print(f"extraction / bare forward: {t_sub / t_bare:.3f}x")


if __name__ == "__main__":
    main()
