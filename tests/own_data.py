"""Tiny data sets in the MVTec AD and plain-folder layouts, with category names that are
not AutoVI's, written from small arrays (a smooth texture; defects are a red square)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

#: Two categories of other names and sizes than AutoVI's.
SIZES = {"my-bracket": (96, 80), "valve.cover_2": (72, 72)}
TRAIN, GOOD_TEST, BAD_TEST = 8, 3, 3


def texture(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    coarse = rng.uniform(60, 190, size=(height // 16 + 2, width // 16 + 2, 3))
    img = Image.fromarray(coarse.astype(np.uint8)).resize((width, height), Image.BILINEAR)
    arr = np.asarray(img, dtype=np.float64) + rng.normal(0, 5, size=(height, width, 3))
    return np.clip(arr, 0, 255).astype(np.uint8)


def save(arr: np.ndarray, path: Path, fmt: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, fmt)
    return path


def defective(rng: np.random.Generator, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """An image with a red square and its binary mask (uint8 0/255, single channel)."""
    img = texture(rng, width, height)
    side = max(6, width // 6)
    x, y = int(rng.integers(0, width - side)), int(rng.integers(0, height - side))
    img[y : y + side, x : x + side] = (230, 30, 30)
    mask = np.zeros((height, width), dtype=np.uint8)
    mask[y : y + side, x : x + side] = 255
    return img, mask


def write(
    root: Path, layout: str, *, masks: bool = True, test: bool = True, suffix: str = ".png"
) -> Path:
    """`root` holding SIZES' categories in the mvtec or folder layout."""
    for name, (width, height) in SIZES.items():
        rng = np.random.default_rng(len(name))
        base = root / name
        train = base / "train" / "good" if layout == "mvtec" else base / "good"
        for i in range(TRAIN):
            save(texture(rng, width, height), train / f"{i:03d}{suffix}")
        if not test:
            continue
        for i in range(GOOD_TEST):
            save(texture(rng, width, height), base / "test" / "good" / f"{i:03d}{suffix}")
        for i in range(BAD_TEST):
            img, mask = defective(rng, width, height)
            save(img, base / "test" / "dent" / f"{i:03d}{suffix}")
            if masks:
                save(mask, base / "ground_truth" / "dent" / f"{i:03d}_mask.png")
    return root
