"""Benchmark: where exact search stops being a small share of a forward.

For one backbone, in one run: the bare forward of `--images` images (decoded and resized
beforehand), then the nearest-row search of their patches (random rows of the backbone's
patch width: the search costs the same whatever the rows are) against banks of several
sizes, exactly (FAISS's flat index, `search = exact`) and through the approximate index
(`search = approximate`, its build not counted). Each search is printed as a share of the
forward; this is how `ann_index.AUTO_MIN_ROWS` (the bank size from which `search = auto`
searches approximately) was chosen.

Usage::

    .venv/bin/python benchmarks/search_crossover.py --backbone wide_resnet50_2
    .venv/bin/python benchmarks/search_crossover.py --backbone efficientnet_lite0
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from predict import bare_forward, write_images  # noqa: E402

from fedpatch_app.model.ann_index import AUTO_MIN_ROWS, IvfIndex  # noqa: E402
from fedpatch_app.model.embedding import FeatureExtractor, FeatureSpec  # noqa: E402
from fedpatch_app.model.memory_bank import MemoryBank  # noqa: E402

ROWS = (1024, 2048, 4096, 6144, 8192, 12288, 16384, 19968)


def best_of(repeats: int, fn) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backbone", default="wide_resnet50_2")
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--rows", type=int, nargs="*", default=list(ROWS))
    args = parser.parse_args()
    spec = FeatureSpec(weights="none", image_size=args.image_size, backbone=args.backbone)
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_images(Path(tmp) / "images", args.images)
        grid = FeatureExtractor(spec, "cpu").extract(paths[:1]).shape[1:3]
        forward = min(bare_forward(spec, paths, args.batch_size) for _ in range(args.repeats))
    rng = np.random.default_rng(0)
    queries = rng.normal(size=(args.images * grid[0] * grid[1], spec.embed_dim))
    queries = queries.astype(np.float32)
    print(
        f"torch threads {torch.get_num_threads()}, {spec.backbone} at {args.image_size} px: "
        f"bare forward of {args.images} images {forward:.2f} s; {queries.shape[0]} patches "
        f"x {spec.embed_dim}; auto searches approximately from {AUTO_MIN_ROWS} rows"
    )
    print("bank rows | exact s | exact / forward | approximate s | approximate / forward")
    for rows in args.rows:
        bank = rng.normal(size=(rows, spec.embed_dim)).astype(np.float32)
        exact = MemoryBank(bank, device="cpu")
        approx = MemoryBank(bank, device="cpu", ann=IvfIndex.build(bank))
        e = best_of(args.repeats, lambda b=exact: b.patch_scores(queries))
        a = best_of(args.repeats, lambda b=approx: b.patch_scores(queries))
        print(f"{rows:9d} | {e:7.2f} | {e / forward:15.2f} | {a:13.2f} | {a / forward:.2f}")


if __name__ == "__main__":
    main()
