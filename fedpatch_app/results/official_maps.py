"""Anomaly maps in the format the official AutoVI evaluator reads.

One map per test image, written as a single-channel 16-bit PNG (PIL mode ``I;16``)
at the category's native size, under ``<out_root>/<category>/test/<defect>/<image_id>.png``
(``good`` included). All maps of a category share ONE affine scaling from the
category's score range to the levels 0..65535, so that one threshold sweep over the
levels ranks pixels of different images exactly as the raw scores do, and the image
score (the map's maximum) keeps its order across images. The scaling is recorded in
``<out_root>/<category>/scaling.json``.

The official evaluator then runs unchanged with
``--anomaly_maps_dir <out_root>/<category>/test``.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm import tqdm

from fedpatch_app.errors import DataError, ModelError
from fedpatch_app.jsonio import read_json
from fedpatch_app.metrics.map_scaling import UINT16_MAX, MapScaling

log = logging.getLogger(__name__)

#: The value of ``"format"`` in scaling.json.
SCALING_FORMAT = "uint16 affine"
SCALING_FILE = "scaling.json"


def _category_name(category: Any) -> str:
    return category if isinstance(category, str) else str(category.name)


def _expected_size(category: Any, size: tuple[int, int] | None) -> tuple[int, int] | None:
    """(width, height) the maps must have: explicit, or the Category's own (a bare name
    fixes none)."""
    if size is not None:
        return (int(size[0]), int(size[1]))
    if not isinstance(category, str) and getattr(category, "size", None) is not None:
        return (int(category.size[0]), int(category.size[1]))
    return None


def _first_size(maps: Sequence[np.ndarray]) -> tuple[int, int] | None:
    """(width, height) of the first map: what a bare category name expects of them all."""
    if not len(maps):
        return None
    height, width = np.shape(maps[0])[:2]
    return int(width), int(height)


def _atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_category_maps(
    out_root: str | Path,
    category: Any,
    samples: Sequence[Any],
    maps: Sequence[np.ndarray],
    scaling: MapScaling,
    *,
    size: tuple[int, int] | None = None,
    meta: dict[str, Any] | None = None,
) -> Path:
    """Write one 16-bit PNG per test sample and the category's scaling.json.

    ``category`` is a ``Category`` (its ``size`` is the expected map size) or a category
    name (then every map must have the first map's size); ``size`` = (width, height)
    overrides both. ``samples[i]`` (a ``TestSample``: ``.defect``, ``.image_id``) names ``maps[i]``.
    ``meta`` adds plain JSON values to scaling.json (e.g. the weights used).
    Returns ``<out_root>/<category>/test``, the folder to pass to the official evaluator.
    """
    name = _category_name(category)
    if len(samples) != len(maps):
        raise ModelError(f"{name}: {len(maps)} anomaly maps for {len(samples)} test images")
    expected = _expected_size(category, size) or _first_size(maps)
    category_dir = Path(out_root) / name
    test_dir = category_dir / "test"
    counts: dict[str, int] = {}
    seen: set[tuple[str, str]] = set()
    for sample, anomaly_map in tqdm(
        zip(samples, maps, strict=True),
        total=len(samples),
        desc=f"export maps {name}",
        disable=None,
    ):
        key = (str(sample.defect), str(sample.image_id))
        if key in seen:
            raise ModelError(f"{name}: test image {key[0]}/{key[1]} given twice")
        seen.add(key)
        arr = np.asarray(anomaly_map)
        if arr.ndim != 2:
            raise ModelError(
                f"{name}: map of test/{key[0]}/{key[1]}.png has shape {arr.shape}, expected (H, W)"
            )
        if expected is not None and (arr.shape[1], arr.shape[0]) != expected:
            raise ModelError(
                f"{name}: map of test/{key[0]}/{key[1]}.png is {arr.shape[1]}x{arr.shape[0]} "
                f"(width x height), the category's native size is {expected[0]}x{expected[1]}"
            )
        path = test_dir / key[0] / f"{key[1]}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(scaling.to_uint16(arr)).save(path, format="PNG")
        counts[key[0]] = counts.get(key[0], 0) + 1
    info: dict[str, Any] = {
        "category": name,
        "format": SCALING_FORMAT,
        "low": scaling.low,
        "high": scaling.high,
        "levels": UINT16_MAX + 1,
        "score": "low + level * (high - low) / 65535",
        "size": list(expected) if expected is not None else None,
        "counts": dict(sorted(counts.items())),
    }
    if meta:
        info["meta"] = meta
    _atomic_write_text(category_dir / SCALING_FILE, json.dumps(info, indent=2) + "\n")
    log.info("%s: wrote %d maps under %s", name, len(samples), test_dir)
    return test_dir


def read_scaling(maps_root: str | Path, category: Any) -> tuple[MapScaling, dict[str, Any]]:
    """The category's scaling and the whole scaling.json (DataError naming the file)."""
    path = Path(maps_root) / _category_name(category) / SCALING_FILE
    info = read_json(path, DataError, "map scaling file")
    if not isinstance(info, dict) or "low" not in info or "high" not in info:
        raise DataError(f"map scaling file {path} lacks 'low' or 'high'")
    if info.get("format", SCALING_FORMAT) != SCALING_FORMAT:
        raise DataError(f"map scaling file {path}: unknown format {info.get('format')!r}")
    try:
        scaling = MapScaling(float(info["low"]), float(info["high"]))
    except (TypeError, ValueError, ModelError) as exc:
        raise DataError(f"map scaling file {path}: {exc}") from None
    return scaling, info


def read_map_png(path: str | Path, size: tuple[int, int] | None = None) -> np.ndarray:
    """One map's 16-bit levels as the official reader sees them (uint16 (H, W)).

    DataError naming the file if it is missing, not single-channel 16-bit, or not
    ``size`` = (width, height).
    """
    path = Path(path)
    try:
        with Image.open(path) as image:
            mode = image.mode
            if mode not in ("I;16", "I"):
                raise DataError(
                    f"anomaly map {path} has PIL mode {mode!r}; expected a single-channel "
                    "16-bit PNG (mode 'I;16')"
                )
            if size is not None and image.size != tuple(size):
                raise DataError(
                    f"anomaly map {path} is {image.size[0]}x{image.size[1]} (width x height), "
                    f"expected {size[0]}x{size[1]}"
                )
            levels = np.array(image)
    except FileNotFoundError:
        raise DataError(f"anomaly map {path} is missing") from None
    except DataError:
        raise
    except OSError as exc:
        raise DataError(f"anomaly map {path} is unreadable: {exc}") from None
    if levels.ndim != 2:
        raise DataError(f"anomaly map {path} has shape {levels.shape}; expected one channel")
    if levels.dtype != np.uint16:
        if levels.min(initial=0) < 0 or levels.max(initial=0) > UINT16_MAX:
            raise DataError(f"anomaly map {path} holds values outside 0..65535")
        levels = levels.astype(np.uint16)
    return levels


def _discover(test_dir: Path) -> list[tuple[str, str]]:
    if not test_dir.is_dir():
        raise DataError(f"anomaly maps folder {test_dir} is missing")
    found: list[tuple[str, str]] = []
    for defect_dir in sorted(p for p in test_dir.iterdir() if p.is_dir()):
        for png in sorted(defect_dir.glob("*.png")):
            found.append((defect_dir.name, png.stem))
    if not found:
        raise DataError(f"anomaly maps folder {test_dir} holds no <defect>/<id>.png maps")
    return sorted(found)


def read_category_maps(
    maps_root: str | Path,
    category: Any,
    samples: Sequence[Any] | None = None,
    *,
    dtype: np.dtype | type = np.float64,
) -> tuple[list[np.ndarray], MapScaling]:
    """Read a category's exported maps back: (maps, scaling).

    Each map holds the 16-bit levels (not the raw scores: ``scaling.from_uint16`` gives
    those back), as the official evaluator sees them, as ``dtype`` (float64 by default;
    float32 holds the levels exactly too, at half the memory).

    With a ``Category`` (or explicit ``samples``) the maps are returned in the order of
    its test samples and every test image must have a map of the expected size; a map
    that matches no test image is an error too (the official evaluator would count it).
    With a plain category name, all maps found are returned sorted by (defect, image_id),
    checked against the size recorded in scaling.json.
    """
    name = _category_name(category)
    scaling, info = read_scaling(maps_root, name)
    test_dir = Path(maps_root) / name / "test"
    if samples is None and not isinstance(category, str):
        samples = category.test
    size: tuple[int, int] | None
    if not isinstance(category, str):
        size = _expected_size(category, None)
    elif info.get("size"):
        size = (int(info["size"][0]), int(info["size"][1]))
    else:
        size = _expected_size(name, None)
    if samples is None:
        keys = _discover(test_dir)
    else:
        keys = [(str(s.defect), str(s.image_id)) for s in samples]
        if test_dir.is_dir():
            present = {
                (d.name, p.stem) for d in test_dir.iterdir() if d.is_dir() for p in d.glob("*.png")
            }
            extra = sorted(present - set(keys))
            if extra:
                shown = ", ".join(f"{d}/{i}.png" for d, i in extra[:5])
                raise DataError(
                    f"anomaly maps folder {test_dir} holds {len(extra)} map(s) that match no "
                    f"test image of {name}: {shown}"
                )
    maps: list[np.ndarray] = []
    for defect, image_id in tqdm(keys, desc=f"read maps {name}", disable=None):
        levels = read_map_png(test_dir / defect / f"{image_id}.png", size)
        maps.append(levels.astype(dtype, copy=False))
    return maps, scaling
