"""Feature matrices for the coreset benchmarks: real patch features, noise, or a file.

* ``patches``: PatchCore patch features (``FeatureExtractor``, 1024-d) of the train and
  good test images of an AutoVI-format data root, category after category, until ``N``
  rows; without ``--data-root`` the project's synthetic AutoVI data (scale ``small``)
  is written first. ``--weights`` picks the backbone weights (``none`` = random,
  ``imagenet``, or a state-dict file); the features are cached as ``.npy`` so a second
  run skips the extraction.
* ``gaussian``: i.i.d. standard normal ``(N, D)``: no structure at all, the worst case
  for any pruning.
* ``file``: any ``(N, D)`` float32 ``.npy`` file (``--features``), memory-mapped: the way
  to benchmark on features from another backbone without changing this code.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

KINDS = ("patches", "gaussian", "file")


def add_arguments(parser: argparse.ArgumentParser, cache_default: str) -> None:
    parser.add_argument("--data-root", help="AutoVI-format root for 'patches' (default: synthetic)")
    parser.add_argument("--weights", default="none", help="backbone weights for 'patches'")
    parser.add_argument("--image-size", type=int, default=256, help="image size for 'patches'")
    parser.add_argument("--features", help="(N, D) float32 .npy file: the 'file' data kind")
    parser.add_argument("--cache-dir", default=cache_default, help="synthetic data, features")


def gaussian(n: int, d: int, seed: int) -> np.ndarray:
    """Standard normal float32 ``(n, d)``, written in blocks (no float64 temporary)."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, d), dtype=np.float32)
    for start in range(0, n, 65_536):
        stop = min(n, start + 65_536)
        out[start:stop] = rng.standard_normal((stop - start, d), dtype=np.float32)
    return out


def _image_groups(root: Path) -> list[list[Path]]:
    """Train images, then good test images, one list per category and split (one size)."""
    groups = []
    for split in ("train/good", "test/good"):
        for category in sorted(p for p in root.iterdir() if p.is_dir()):
            groups.append(sorted((category / split).glob("*.png")))
    return [g for g in groups if g]


def synthetic_root(cache: Path, scale: str = "small", categories: list[str] | None = None) -> Path:
    """The project's synthetic AutoVI data, written once under ``cache``."""
    from fedpatch_app.data.synthetic import generate

    name = f"synthetic-{scale}" + (f"-{'-'.join(categories)}" if categories else "")
    root = cache / name
    if not (root / ".complete").is_file():
        log.info("writing synthetic AutoVI data (scale %s) to %s", scale, root)
        generate(root, scale=scale, seed=0, categories=categories, kind="drawn")
        (root / ".complete").touch()
    return root


def patches(n: int, args: argparse.Namespace, device: str = "cpu") -> np.ndarray:
    """``n`` PatchCore patch features (cached), extracted on ``device``; raises if the
    images hold fewer."""
    from fedpatch_app.model.embedding import FeatureExtractor, FeatureSpec

    cache = Path(args.cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    root = Path(args.data_root) if args.data_root else synthetic_root(cache)
    spec = FeatureSpec(weights=args.weights, image_size=args.image_size)
    key = json.dumps([str(root.resolve()), spec.fingerprint(), n])
    path = cache / f"patches-{hashlib.sha256(key.encode()).hexdigest()[:16]}.npy"
    if path.exists():
        return np.load(path, mmap_mode="r")
    extractor = FeatureExtractor(spec, device)
    out = np.lib.format.open_memmap(
        path.with_suffix(".part"), mode="w+", dtype=np.float32, shape=(n, spec.embed_dim)
    )
    filled, images = 0, 0
    for group in _image_groups(root):
        for start in range(0, len(group), 16):
            if filled >= n:
                break
            feats = extractor.extract(group[start : start + 16], desc="patch features")
            flat = feats.reshape(-1, feats.shape[-1])[: n - filled]
            out[filled : filled + len(flat)] = flat
            filled += len(flat)
            images += len(feats)
    if filled < n:
        raise SystemExit(
            f"{root}: {images} images give only {filled:,} patch features at image size "
            f"{args.image_size}, {n:,} requested: pass a larger --image-size or --data-root"
        )
    out.flush()
    del out
    path.with_suffix(".part").rename(path)
    return np.load(path, mmap_mode="r")


def load(
    kind: str, n: int, d: int, seed: int, args: argparse.Namespace, device: str = "cpu"
) -> np.ndarray:
    """The first ``n`` rows of the data kind (``d`` applies to ``gaussian`` only)."""
    if kind == "gaussian":
        return gaussian(n, d, seed)
    if kind == "patches":
        return np.ascontiguousarray(patches(n, args, device))
    if kind == "file":
        if not args.features:
            raise SystemExit("data kind 'file' needs --features PATH.npy")
        data = np.load(args.features, mmap_mode="r")
        if data.ndim != 2 or len(data) < n:
            raise SystemExit(f"{args.features}: need an (N >= {n:,}, D) array, got {data.shape}")
        return np.ascontiguousarray(data[:n], dtype=np.float32)
    raise SystemExit(f"unknown data kind {kind!r}: choose from {KINDS}")
