"""Benchmark: the cost of each backbone on the same images.

For each backbone (random weights: speed and memory do not depend on them), in a fresh
process so that peak memory is its own, on ``--images`` photo-scene images of
``--category`` at ``--image-size``:

* extraction speed: images/s of decode + resize + backbone + patch embedding, and CPU
  seconds per image (all threads; on a shared machine the figure that load inflates
  least), best of ``--repeats`` passes after one warm-up pass;
* the peak resident memory extraction adds to the process (sampled every 5 ms, above
  the process before the backbone was built), and the size of the backbone's weights;
* the patch grid, the feature width and the memory-bank size per training image at a
  10% coreset (what a client stores and sends per image).

Prints one row per registered backbone and each one's ratios to the default
(efficientnet_lite0 / wide_resnet50_2).

Usage::

    .venv/bin/python benchmarks/backbones.py                        # 24 images, 256 px
    .venv/bin/python benchmarks/backbones.py --images 8 --image-size 128   # a quick run
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import tempfile
import threading
import time
from pathlib import Path

from fedpatch_app.model.backbones import registry

PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * PAGE


def measure(backbone: str, paths: list[str], image_size: int, repeats: int) -> dict:
    """Run in a child process: build, warm up, then time extraction and sample memory."""
    import torch

    from fedpatch_app.model.embedding import FeatureExtractor, FeatureSpec

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    before = rss_bytes()
    spec = FeatureSpec(weights="none", image_size=image_size, backbone=backbone)
    extractor = FeatureExtractor(spec, device="cpu", batch_size=8)
    params = sum(p.numel() * p.element_size() for p in extractor.backbone.parameters())
    feats = extractor.extract(paths, desc=backbone)  # warm-up
    peak = [rss_bytes()]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], rss_bytes())
            time.sleep(0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    best, best_cpu = float("inf"), float("inf")
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        extractor.extract(paths, desc=backbone)
        best = min(best, time.perf_counter() - start)
        best_cpu = min(best_cpu, time.process_time() - start_cpu)
    stop.set()
    sampler.join()
    _, h, w, dim = feats.shape
    return {
        "backbone": backbone,
        "images_per_s": len(paths) / best,
        "cpu_s_per_image": best_cpu / len(paths),
        "weights_mib": params / 2**20,
        "peak_rss_mib": (peak[0] - before) / 2**20,
        "grid": f"{h}x{w}",
        "dim": dim,
        "bank_kib_per_image": round(0.1 * h * w) * dim * 4 / 2**10,
    }


def write_images(folder: Path, category: str, count: int) -> list[str]:
    from fedpatch_app.data.synthetic import photo
    from fedpatch_app.data.synthetic.layout import folder_code
    from fedpatch_app.data.synthetic.pngio import save_png

    code = folder_code(category, "train/good")
    paths = []
    for i in range(count):
        path = folder / f"{i:04d}.png"
        save_png(photo.good_image(category, 0, code, i), path)
        paths.append(str(path))
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--category", default="tank_screw")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_images(Path(tmp), args.category, args.images)
        ctx = multiprocessing.get_context("spawn")
        rows = []
        for backbone in registry.names():  # every registered backbone, the default first
            with ctx.Pool(1) as pool:
                rows.append(pool.apply(measure, (backbone, paths, args.image_size, args.repeats)))
    print(
        f"{args.images} {args.category} images at {args.image_size} px, {os.cpu_count()} CPUs, "
        f"load {os.getloadavg()[0]:.1f}"
    )
    keys = (
        "images_per_s",
        "cpu_s_per_image",
        "weights_mib",
        "peak_rss_mib",
        "dim",
        "bank_kib_per_image",
    )
    print(
        f"{'backbone':<20}{'img/s':>8}{'CPU s/img':>11}{'weights MiB':>13}{'peak +RSS MiB':>14}{'grid':>8}"
        f"{'dim':>6}{'bank KiB/img':>14}"
    )
    for r in rows:
        print(
            f"{r['backbone']:<20}{r['images_per_s']:>8.2f}{r['cpu_s_per_image']:>11.3f}{r['weights_mib']:>13.1f}"
            f"{r['peak_rss_mib']:>14.0f}{r['grid']:>8}{r['dim']:>6}{r['bank_kib_per_image']:>14.1f}"
        )
    base = next(r for r in rows if r["backbone"] == registry.DEFAULT)
    for row in (r for r in rows if r is not base):
        ratios = ", ".join(f"{k} {row[k] / base[k]:.2f}x" for k in keys)
        print(f"{row['backbone']} / {base['backbone']}: {ratios}")


if __name__ == "__main__":
    main()
