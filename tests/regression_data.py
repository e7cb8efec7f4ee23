"""A small AutoVI-format data set written by a fixed recipe, for regression figures.

It does not use `fedpatch_app.data.synthetic`, so that improving the project's generator
never changes the figures recorded in `tests/data/regression_figures.json`: only a change
of the pipeline itself can.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

#: (category, native width, height, defect folder) of the two categories written.
CATEGORIES = (("pipe_clip", 400, 400, "unclipped"), ("tank_screw", 1000, 750, "missing"))
TRAIN, GOOD_TEST, BAD_TEST = 10, 4, 4


def _texture(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """Smooth random texture (noise upsampled from a coarse grid), uint8 RGB."""
    coarse = rng.uniform(60, 190, size=(height // 25 + 2, width // 25 + 2, 3))
    img = Image.fromarray(coarse.astype(np.uint8)).resize((width, height), Image.BILINEAR)
    arr = np.asarray(img, dtype=np.float64) + rng.normal(0, 6, size=(height, width, 3))
    return np.clip(arr, 0, 255).astype(np.uint8)


def _save(arr: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def write_category(root: Path, name: str, width: int, height: int, defect: str) -> None:
    rng = np.random.default_rng(len(name) * 7919)
    base = root / name
    for i in range(TRAIN):
        _save(_texture(rng, width, height), base / "train" / "good" / f"{i:03d}.png")
    for i in range(GOOD_TEST):
        _save(_texture(rng, width, height), base / "test" / "good" / f"{i:03d}.png")
    for i in range(BAD_TEST):
        img = _texture(rng, width, height)
        side = width // 8
        x, y = int(rng.integers(0, width - side)), int(rng.integers(0, height - side))
        img[y : y + side, x : x + side] = (230, 30, 30)
        _save(img, base / "test" / defect / f"{i:03d}.png")
        mask = np.zeros((height, width, 3), dtype=np.uint8)
        mask[y : y + side, x : x + side, 0] = 255
        _save(mask, base / "ground_truth" / defect / f"{i:03d}" / "0000.png")
    config = [
        {
            "defect_name": defect,
            "pixel_value": 255,
            "saturation_threshold": 1.0,
            "relative_saturation": True,
        }
    ]
    (base / "defects_config.json").write_text(json.dumps(config), encoding="utf-8")


def write(root: Path) -> Path:
    for name, width, height, defect in CATEGORIES:
        write_category(root, name, width, height, defect)
    return root
