"""Realistic defects on a photo scene, each with the mask of the region it changed.

Four kinds, as on an assembly line:

- ``missing``: a part is erased to its surroundings (the region is filled from the
  nearest pixels outside it, smoothed, with a little texture), as if it were never mounted;
- ``foreign``: a foreign object, a real photo patch (a gloved hand and suit, a cup, coins,
  a cardboard-coloured texture, a blue ring) in an irregular outline;
- ``displaced``: a part comes loose: it is cut out, rotated and shifted, and the place it
  left is erased to its surroundings;
- ``faint``: a small low-contrast mark (a scratch or a stain), a few grey levels only.

Region sizes are drawn log-uniformly per kind, from under 0.1% of the image (faint marks,
small missing parts) to a quarter of it (large foreign objects), so that they spread like
AutoVI's. Parts are placed where the image has structure; foreign objects anywhere.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

from fedpatch_app.data.synthetic.photo_sources import photo


@dataclass(frozen=True)
class Style:
    """How one defect type looks: its kind, its area range (fraction of the image), and
    for foreign objects the photograph and tint of the patch."""

    kind: str
    area: tuple[float, float]
    patch: str = ""
    tint: tuple[float, float, float] | None = None
    ring: bool = False


#: The styles of each defect type; region k of an image uses style k mod len.
STYLES: dict[str, tuple[Style, ...]] = {
    "missing": (
        Style("missing", (0.003, 0.03)),
        Style("missing", (0.002, 0.012)),
        Style("faint", (0.0005, 0.004)),
    ),
    "fastening": (Style("displaced", (0.003, 0.03)), Style("faint", (0.0005, 0.004))),
    "unclipped": (Style("displaced", (0.004, 0.04)),),
    "blue_hoop": (Style("foreign", (0.004, 0.03), "astronaut.png", (0.3, 0.5, 1.4), ring=True),),
    "cardboard": (Style("foreign", (0.01, 0.08), "brick.png", (1.05, 0.82, 0.58)),),
    "obstruction": (
        Style("foreign", (0.03, 0.25), "coins.png"),
        Style("foreign", (0.02, 0.15), "coffee.png"),
    ),
    "operator": (Style("foreign", (0.05, 0.25), "astronaut.png"),),
}


def _log_uniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(math.exp(rng.uniform(math.log(low), math.log(high))))


def structure_map(img: np.ndarray) -> np.ndarray:
    """Local contrast (h/4, w/4): where parts are, as opposed to flat background."""
    grey = img.mean(axis=2)
    h4, w4 = grey.shape[0] // 4, grey.shape[1] // 4
    small = grey[: h4 * 4, : w4 * 4].reshape(h4, 4, w4, 4).mean(axis=(1, 3))
    mean = ndimage.uniform_filter(small, 5)
    return np.sqrt(np.maximum(ndimage.uniform_filter(small * small, 5) - mean * mean, 0))


def place(
    rng: np.random.Generator,
    shape: tuple[int, int],
    radius: float,
    taken: np.ndarray,
    structure: np.ndarray | None,
) -> tuple[float, float]:
    """A centre whose disk of ``radius`` stays inside the image, off the ``taken`` pixels,
    and (with a structure map) on the more structured half of the image."""
    h, w = shape
    margin = min(radius * 1.1, min(h, w) / 2 - 1)
    best = (w / 2, h / 2)
    limit = np.median(structure) if structure is not None else 0.0
    for _ in range(60):
        cx, cy = rng.uniform(margin, w - margin), rng.uniform(margin, h - margin)
        best = (cx, cy)
        if structure is not None:
            sy = min(int(cy / 4), structure.shape[0] - 1)
            sx = min(int(cx / 4), structure.shape[1] - 1)
            if structure[sy, sx] < limit:
                continue
        y0, y1 = int(max(0, cy - radius)), int(min(h, cy + radius))
        x0, x1 = int(max(0, cx - radius)), int(min(w, cx + radius))
        if not taken[y0:y1, x0:x1].any():
            return best
    return best


def blob(
    rng: np.random.Generator, shape: tuple[int, int], cx: float, cy: float, radius: float
) -> np.ndarray:
    """An irregular blob mask (h, w) of about ``pi * radius**2`` pixels."""
    n = int(rng.integers(9, 15))
    angles = np.sort(rng.uniform(0, 2 * math.pi, n))
    radii = radius * (1.0 + rng.uniform(-0.3, 0.3, n))
    points = [
        (cx + float(r) * math.cos(a), cy + float(r) * math.sin(a))
        for a, r in zip(angles, radii, strict=True)
    ]
    canvas = Image.new("L", (shape[1], shape[0]), 0)
    ImageDraw.Draw(canvas).polygon(points, fill=255)
    return np.asarray(canvas) > 127


def _box(mask: np.ndarray, pad: int) -> tuple[slice, slice]:
    ys, xs = np.nonzero(mask)
    h, w = mask.shape
    return (
        slice(max(0, ys.min() - pad), min(h, ys.max() + pad + 1)),
        slice(max(0, xs.min() - pad), min(w, xs.max() + pad + 1)),
    )


def erase(img: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> None:
    """Fill ``mask`` from its surroundings, in place: nearest outside pixel, smoothed over
    the region's size, plus fine texture (the region's surroundings are not flat)."""
    radius = math.sqrt(mask.sum() / math.pi)
    box = _box(mask, int(radius) + 4)
    region, inside = img[box], mask[box]
    _, (iy, ix) = ndimage.distance_transform_edt(inside, return_indices=True)
    filled = region[iy, ix]
    sigma = max(1.5, radius / 3)
    smooth = ndimage.gaussian_filter(filled, sigma=(sigma, sigma, 0), mode="nearest")
    texture = rng.standard_normal(inside.shape).astype(np.float32) * np.float32(3.0)
    smooth += ndimage.gaussian_filter(texture, 0.8)[:, :, None]
    region[inside] = smooth[inside]


def foreign(
    img: np.ndarray, mask: np.ndarray, style: Style, rng: np.random.Generator
) -> np.ndarray:
    """Paste a patch of ``style.patch`` (tinted, shaded) into ``mask``; returns the mask
    (a ring when the style asks for one)."""
    if style.ring:
        inner = ndimage.binary_erosion(mask, iterations=max(2, int(math.sqrt(mask.sum()) / 8)))
        mask = mask & ~inner
    box = _box(mask, 0)
    bh, bw = box[0].stop - box[0].start, box[1].stop - box[1].start
    source = photo(style.patch)
    side = min(source.width, source.height) * rng.uniform(0.25, 0.6)
    x0 = rng.uniform(0, source.width - side)
    y0 = rng.uniform(0, source.height - side * bh / max(bw, 1))
    crop = source.crop((int(x0), int(y0), int(x0 + side), int(y0 + side * bh / max(bw, 1))))
    patch = np.asarray(crop.resize((bw, bh), Image.Resampling.BILINEAR), dtype=np.float32)
    if style.tint is not None:
        patch = patch * np.asarray(style.tint, dtype=np.float32)
    yy = np.linspace(1.1, 0.8, bh, dtype=np.float32)[:, None, None]  # lit from the top
    region = img[box]
    inside = mask[box]
    region[inside] = np.clip(patch * yy, 0, 255)[inside]
    return mask


def displace(img: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Cut the part under ``mask`` loose: rotate it by 10-35 degrees and shift it by a
    fraction of its size; the place it left is erased. Returns the changed region."""
    h, w = mask.shape
    ys, xs = np.nonzero(mask)
    cx, cy = float(xs.mean()), float(ys.mean())
    radius = math.sqrt(mask.sum() / math.pi)
    angle = float(rng.choice([-1, 1]) * rng.uniform(10, 35))
    shift = radius * rng.uniform(0.3, 0.8)
    direction = rng.uniform(0, 2 * math.pi)
    dx, dy = shift * math.cos(direction), shift * math.sin(direction)
    rgba = np.dstack([np.clip(img, 0, 255), mask.astype(np.float32) * 255]).astype(np.uint8)
    moved = Image.fromarray(rgba, "RGBA").rotate(
        angle, resample=Image.Resampling.BILINEAR, center=(cx, cy), translate=(dx, dy)
    )
    moved_arr = np.asarray(moved, dtype=np.float32)
    new_place = moved_arr[:, :, 3] > 127
    erase(img, mask & ~new_place, rng)
    img[new_place] = moved_arr[:, :, :3][new_place]
    return mask | new_place


def faint(img: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A scratch (a thin curved line) or a stain (the blob) of a few grey levels; returns
    the changed region."""
    h, w = mask.shape
    if rng.random() < 0.5:
        ys, xs = np.nonzero(mask)
        cx, cy = float(xs.mean()), float(ys.mean())
        length = math.sqrt(mask.sum()) * rng.uniform(1.5, 2.5)
        angle = rng.uniform(0, math.pi)
        bend = rng.uniform(-0.3, 0.3) * length
        t = np.linspace(-0.5, 0.5, 12)
        points = [
            (
                cx + float(s) * length * math.cos(angle) - bend * (1 - 4 * s * s) * math.sin(angle),
                cy + float(s) * length * math.sin(angle) + bend * (1 - 4 * s * s) * math.cos(angle),
            )
            for s in t
        ]
        canvas = Image.new("L", (w, h), 0)
        ImageDraw.Draw(canvas).line(points, fill=255, width=int(rng.integers(2, 5)))
        mask = np.asarray(canvas) > 127
    delta = float(rng.choice([-1, 1]) * rng.uniform(12, 24))
    soft = ndimage.gaussian_filter(mask.astype(np.float32), 0.7)
    img += (delta * soft)[:, :, None]
    return ndimage.binary_dilation(mask, iterations=2)  # the blurred edge belongs to it


def make_defect(
    img: np.ndarray,
    style: Style,
    rng: np.random.Generator,
    taken: np.ndarray,
    structure: np.ndarray,
) -> np.ndarray:
    """Apply one defect of ``style`` to ``img`` (float32, in place); returns its region."""
    h, w = taken.shape
    area = _log_uniform(rng, *style.area) * h * w
    radius = math.sqrt(area / math.pi)
    on_parts = style.kind != "foreign"
    cx, cy = place(rng, (h, w), radius * 1.3, taken, structure if on_parts else None)
    mask = blob(rng, (h, w), cx, cy, radius)
    if style.kind == "missing":
        erase(img, mask, rng)
        return mask
    if style.kind == "displaced":
        return displace(img, mask, rng)
    if style.kind == "faint":
        return faint(img, mask, rng)
    return foreign(img, mask, style, rng)
