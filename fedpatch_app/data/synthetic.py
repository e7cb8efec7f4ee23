"""Synthetic data in exactly the AutoVI layout, for tests and quick runs without the dataset.

Each category gets a structured scene that resembles its AutoVI counterpart (cables with
fasteners and a hoop, a pipe with clips, a pipe with staples, a tank with screws, parallel
underbody pipes, an underbody panel with screws), drawn as textured shapes with a small
per-image jitter in position and lighting. A defective image is the same scene with local
changes (a missing screw or staple, an open clip or fastener, a foreign object such as a
cardboard piece, a blue hoop, a gloved hand or an obstruction). Every change is one
ground-truth region whose mask covers exactly the pixels the change altered.

Layout written under ``out`` (one folder per category)::

    <cat>/train/good/0000.png ...
    <cat>/test/good/0000.png ...
    <cat>/test/<defect>/0000.png ...
    <cat>/ground_truth/<defect>/<image_id>/0000.png ...   one RGB PNG per region
    <cat>/defects_config.json

Everything is seeded: the same seed gives byte-identical files, and each image depends only
on (seed, category, split, index), so generating a subset of categories gives the same files.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import math
import re
import struct
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm

from fedpatch_app.data.autovi import CATEGORIES, DEFECT_FOLDERS, NATIVE_SIZES
from fedpatch_app.errors import ConfigError

log = logging.getLogger(__name__)

__all__ = ["SCALES", "DEFECT_CONFIGS", "ScaleSpec", "generate", "run_cli"]


@dataclass(frozen=True)
class ScaleSpec:
    """Number of images per folder for one scale."""

    train: int
    test_good: int
    per_defect: int


SCALES: dict[str, ScaleSpec] = {
    "tiny": ScaleSpec(train=8, test_good=4, per_defect=2),
    "small": ScaleSpec(train=40, test_good=12, per_defect=6),
}

#: defects_config.json entries per category: (defect_name, pixel_value, threshold, relative).
#: The ``multiple`` folders are not listed: their region masks carry the pixel value of the
#: defect each region shows, as in the AutoVI release.
DEFECT_CONFIGS: dict[str, tuple[tuple[str, int, float | int, bool], ...]] = {
    "engine_wiring": (
        ("fastening", 255, 0.5, True),
        ("blue_hoop", 254, 1.0, True),
        ("cardboard", 253, 1.0, True),
        ("obstruction", 252, 1.0, True),
    ),
    "pipe_clip": (
        ("unclipped", 255, 400, False),
        ("operator", 254, 1.0, True),
    ),
    "pipe_staple": (("missing", 255, 150, False),),
    "tank_screw": (("missing", 255, 800, False),),
    "underbody_pipes": (
        ("obstruction", 255, 1.0, True),
        ("operator", 254, 1.0, True),
    ),
    "underbody_screw": (("missing", 255, 600, False),),
}

_SPLIT_CODES = {"train/good": 1, "test/good": 2}

RGB = tuple[float, float, float]


# --------------------------------------------------------------------------- drawing


def _smooth_noise(rng: np.random.Generator, w: int, h: int, cell: float) -> np.ndarray:
    """Smooth noise of about unit standard deviation, (h, w) float32."""
    gw = max(2, int(math.ceil(w / cell)) + 2)
    gh = max(2, int(math.ceil(h / cell)) + 2)
    grid = rng.standard_normal((gh, gw)).astype(np.float32)
    return np.asarray(Image.fromarray(grid).resize((w, h), Image.Resampling.BICUBIC))


def _mask(size: tuple[int, int], draw: Callable[[ImageDraw.ImageDraw], None]) -> np.ndarray:
    """Boolean (h, w) mask of what ``draw`` paints with fill=255 on a blank image."""
    im = Image.new("L", size, 0)
    draw(ImageDraw.Draw(im))
    return np.asarray(im) > 127


def _bbox(mask: np.ndarray) -> tuple[slice, slice] | None:
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)


Shade = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclass
class _Op:
    """One drawn object: a mask painted with a colour times a brightness pattern."""

    id: int
    z: float
    mask: np.ndarray
    color: RGB
    shade: Shade | None = None
    texture: float = 0.06
    _box: tuple[slice, slice] | None = field(default=None, repr=False)
    _boxed: bool = field(default=False, repr=False)

    def box(self) -> tuple[slice, slice] | None:
        if not self._boxed:
            self._box, self._boxed = _bbox(self.mask), True
        return self._box


@dataclass
class _Change:
    """A local defect: objects removed from and objects added to a good scene."""

    defect: str
    removed: set[int] = field(default_factory=set)
    added: list[_Op] = field(default_factory=list)


@dataclass
class _Scene:
    """A good scene: a textured background plus objects; named groups of object ids."""

    w: int
    h: int
    background: np.ndarray  # (3, h, w) float32, channel-first
    noise: np.ndarray  # (h, w) float32, surface texture shared by all objects
    ops: list[_Op] = field(default_factory=list)
    groups: dict[str, list[list[int]]] = field(default_factory=dict)
    scale: float = 1.0
    _next_id: int = 0

    def new_op(
        self,
        z: float,
        mask: np.ndarray,
        color: RGB,
        shade: Shade | None = None,
        texture: float = 0.06,
    ) -> _Op:
        op = _Op(self._next_id, z, mask, color, shade, texture)
        self._next_id += 1
        return op

    def add(
        self,
        z: float,
        mask: np.ndarray,
        color: RGB,
        shade: Shade | None = None,
        texture: float = 0.06,
    ) -> int:
        op = self.new_op(z, mask, color, shade, texture)
        self.ops.append(op)
        return op.id

    def mask(self, draw: Callable[[ImageDraw.ImageDraw], None]) -> np.ndarray:
        return _mask((self.w, self.h), draw)

    def op(self, op_id: int) -> _Op:
        for op in self.ops:
            if op.id == op_id:
                return op
        raise KeyError(op_id)

    def render(self, changes: Sequence[_Change] = ()) -> tuple[np.ndarray, np.ndarray]:
        """(image (3, h, w) float32, label (h, w) int32 = id of the top object, -1 = background)."""
        removed: set[int] = set()
        ops = list(self.ops)
        for change in changes:
            removed |= change.removed
            ops.extend(change.added)
        ops = sorted((op for op in ops if op.id not in removed), key=lambda o: (o.z, o.id))
        # channel-first planes so each object is copied into contiguous memory
        planes = self.background.copy()
        label = np.full((self.h, self.w), -1, dtype=np.int32)
        gy, gx = _grid(self.w, self.h)
        for op in ops:
            box = op.box()
            if box is None:
                continue
            ys, xs = box
            m = op.mask[ys, xs]
            bright = self.noise[ys, xs] * np.float32(op.texture)
            bright += np.float32(1.0)
            if op.shade is not None:
                bright *= op.shade(gy[ys, xs], gx[ys, xs])
            for c in range(3):
                np.copyto(planes[c, ys, xs], bright * np.float32(op.color[c]), where=m)
            np.copyto(label[ys, xs], op.id, where=m)
        return planes, label


def _cylinder(p0: tuple[float, float], p1: tuple[float, float], radius: float) -> Shade:
    """Brightness of a cylinder along p0-p1 seen from the side (highlight off-centre)."""
    (x0, y0), (x1, y1) = p0, p1
    length = math.hypot(x1 - x0, y1 - y0) or 1.0
    nx, ny = -(y1 - y0) / length, (x1 - x0) / length

    def shade(yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
        t = np.clip(((xx - x0) * nx + (yy - y0) * ny) / radius, -1.0, 1.0)
        body = 0.45 + 0.55 * np.sqrt(1.0 - t * t)
        return body + 0.35 * np.exp(-(((t + 0.35) / 0.18) ** 2))

    return shade


def _dome(cx: float, cy: float, radius: float) -> Shade:
    """Brightness of a dome (screw head) lit from the top left."""

    def shade(yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
        dx, dy = (xx - cx) / radius, (yy - cy) / radius
        r2 = np.clip(dx * dx + dy * dy, 0.0, 1.0)
        spec = np.exp(-((dx + 0.35) ** 2 + (dy + 0.35) ** 2) / 0.08)
        return 0.55 + 0.45 * np.sqrt(1.0 - r2) + 0.5 * spec

    return shade


@functools.lru_cache(maxsize=4)
def _grid(w: int, h: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    yy.flags.writeable = False
    xx.flags.writeable = False
    return yy, xx


@functools.lru_cache(maxsize=8)
def _surface(seed: int, category: str, w: int, h: int) -> np.ndarray:
    """The category's fixed surface texture (the same for every image of the category)."""
    rng = _rng(seed, category, 0)
    cell = min(w, h) / 6.0
    fixed = _smooth_noise(rng, w, h, cell) * 0.7 + _smooth_noise(rng, w, h, cell / 5) * 0.3
    fixed.flags.writeable = False
    return fixed


def _background(
    rng: np.random.Generator,
    surface: np.ndarray,
    base: RGB,
    grad_angle: float,
    grad: float,
    tex: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Background (3, h, w) and the shared surface noise (h, w) of one image.

    ``surface`` is the category's fixed texture; ``rng`` draws the per-image lighting
    gradient and a weak extra variation.
    """
    h, w = surface.shape
    extra = _smooth_noise(rng, w, h, min(w, h) / 3.0)
    noise = surface + 0.25 * extra
    angle = grad_angle + rng.uniform(-0.25, 0.25)
    yy, xx = _grid(w, h)
    cx, cy = math.cos(angle) * grad / max(w, h), math.sin(angle) * grad / max(w, h)
    bright = tex * noise
    bright += np.float32(1.0 - cx * w / 2 - cy * h / 2)
    bright += np.float32(cx) * xx
    bright += np.float32(cy) * yy
    bg = bright[None, :, :] * np.asarray(base, dtype=np.float32)[:, None, None]
    return bg, noise


def _jit(rng: np.random.Generator, amount: float) -> float:
    return float(rng.uniform(-amount, amount))


# --------------------------------------------------------------------------- objects


def _add_screw(
    scene: _Scene, cx: float, cy: float, r: float, color: RGB, z: float = 5.0
) -> list[int]:
    """A hex screw head on a washer; returns the ids of its parts."""
    washer = scene.mask(lambda d: d.ellipse((cx - r, cy - r, cx + r, cy + r), fill=255))
    rh = r * 0.72
    head = scene.mask(lambda d: d.regular_polygon((cx, cy, rh), 6, rotation=15, fill=255))
    rr = r * 0.28
    recess = scene.mask(lambda d: d.regular_polygon((cx, cy, rr), 6, fill=255))
    ids = [
        scene.add(z, washer, tuple(c * 0.8 for c in color), _dome(cx, cy, r), 0.03),
        scene.add(z + 0.1, head, color, _dome(cx - r * 0.1, cy - r * 0.1, rh), 0.03),
        scene.add(z + 0.2, recess, tuple(c * 0.25 for c in color), None, 0.05),
    ]
    return ids


def _missing_screw(scene: _Scene, rng: np.random.Generator, index: int) -> _Change:
    ids = scene.groups["screws"][index]
    washer = scene.op(ids[0])
    box = _bbox(washer.mask)
    assert box is not None
    ys, xs = box
    cx, cy = (xs.start + xs.stop - 1) / 2, (ys.start + ys.stop - 1) / 2
    r = (xs.stop - xs.start) / 2 * 0.5
    hole = scene.mask(lambda d: d.ellipse((cx - r, cy - r, cx + r, cy + r), fill=255))
    rim = scene.mask(
        lambda d: d.ellipse((cx - r * 1.5, cy - r * 1.5, cx + r * 1.5, cy + r * 1.5), fill=255)
    )
    rim_color = tuple(c * 0.4 for c in washer.color)
    change = _Change("missing", removed=set(ids))
    change.added.append(scene.new_op(washer.z, rim, rim_color, None, 0.05))
    change.added.append(scene.new_op(washer.z + 0.1, hole, (14.0, 13.0, 12.0), None, 0.1))
    return change


def _free_spot(
    scene: _Scene, rng: np.random.Generator, radius: float, taken: list[np.ndarray]
) -> tuple[float, float]:
    """A random centre whose disk of ``radius`` avoids the masks in ``taken``."""
    w, h = scene.w, scene.h
    best = (w / 2, h / 2)
    for _ in range(40):
        cx = float(rng.uniform(radius, w - radius))
        cy = float(rng.uniform(radius, h - radius))
        best = (cx, cy)
        x0, x1 = int(max(0, cx - radius)), int(min(w, cx + radius))
        y0, y1 = int(max(0, cy - radius)), int(min(h, cy + radius))
        if not any(t[y0:y1, x0:x1].any() for t in taken):
            return best
    return best


def _blob_polygon(
    rng: np.random.Generator, cx: float, cy: float, r: float, n: int, rough: float
) -> list[tuple[float, float]]:
    angles = np.sort(rng.uniform(0, 2 * math.pi, n))
    radii = r * (1.0 + rng.uniform(-rough, rough, n))
    return [
        (cx + float(a) * math.cos(t), cy + float(a) * math.sin(t))
        for t, a in zip(angles, radii, strict=True)
    ]


def _cardboard(
    scene: _Scene, rng: np.random.Generator, taken: list[np.ndarray], defect: str = "cardboard"
) -> _Change:
    s = scene.scale
    r = float(rng.uniform(26, 40)) * s
    cx, cy = _free_spot(scene, rng, r * 1.2, taken)
    ang = rng.uniform(0, math.pi)
    w2, h2 = r, r * rng.uniform(0.55, 0.8)
    pts = []
    for sx, sy in ((-1, -1), (1, -1), (1, 1), (-1, 1)):
        px = sx * w2 * (1 + _jit(rng, 0.15))
        py = sy * h2 * (1 + _jit(rng, 0.15))
        pts.append(
            (
                cx + px * math.cos(ang) - py * math.sin(ang),
                cy + px * math.sin(ang) + py * math.cos(ang),
            )
        )
    m = scene.mask(lambda d: d.polygon(pts, fill=255))
    return _Change(defect, added=[scene.new_op(50, m, (176.0, 136.0, 92.0), None, 0.12)])


def _blue_hoop(scene: _Scene, rng: np.random.Generator, taken: list[np.ndarray]) -> _Change:
    s = scene.scale
    r = float(rng.uniform(20, 30)) * s
    cx, cy = _free_spot(scene, rng, r * 1.2, taken)
    e = r * rng.uniform(0.6, 0.9)
    m = scene.mask(
        lambda d: d.ellipse((cx - r, cy - e, cx + r, cy + e), outline=255, width=max(4, int(6 * s)))
    )
    return _Change(
        "blue_hoop",
        added=[scene.new_op(50, m, (40.0, 95.0, 215.0), _dome(cx, cy - e, r * 2), 0.05)],
    )


def _obstruction(
    scene: _Scene, rng: np.random.Generator, taken: list[np.ndarray], color: RGB
) -> _Change:
    s = scene.scale
    r = float(rng.uniform(35, 55)) * s
    cx, cy = _free_spot(scene, rng, r * 1.1, taken)
    pts = _blob_polygon(rng, cx, cy, r, 9, 0.3)
    m = scene.mask(lambda d: d.polygon(pts, fill=255))
    return _Change("obstruction", added=[scene.new_op(50, m, color, _dome(cx, cy, r * 1.6), 0.1)])


def _operator(scene: _Scene, rng: np.random.Generator, taken: list[np.ndarray]) -> _Change:
    """A gloved hand reaching in from the bottom or right edge."""
    s = scene.scale
    w, h = scene.w, scene.h
    r = float(rng.uniform(30, 40)) * s
    from_bottom = bool(rng.integers(2))
    if from_bottom:
        cx, cy = float(rng.uniform(0.25 * w, 0.75 * w)), h - 2.2 * r
        arm = ((cx - 0.8 * r, cy), (cx + 0.8 * r, h + 5))
        fingers = [
            (cx + dx * r, cy - 0.6 * r, cx + dx * r * 1.2, cy - 1.9 * r)
            for dx in (-0.6, -0.2, 0.2, 0.6)
        ]
    else:
        cx, cy = w - 2.2 * r, float(rng.uniform(0.25 * h, 0.75 * h))
        arm = ((cx, cy - 0.8 * r), (w + 5, cy + 0.8 * r))
        fingers = [
            (cx - 0.6 * r, cy + dy * r, cx - 1.9 * r, cy + dy * r * 1.2)
            for dy in (-0.6, -0.2, 0.2, 0.6)
        ]
    fw = max(5, int(0.32 * r))

    def draw(d: ImageDraw.ImageDraw) -> None:
        d.rectangle(arm, fill=255)
        d.ellipse((cx - r, cy - r, cx + r, cy + r), fill=255)
        for f in fingers:
            d.line(f, fill=255, width=fw)
            d.ellipse((f[2] - fw / 2, f[3] - fw / 2, f[2] + fw / 2, f[3] + fw / 2), fill=255)

    m = scene.mask(draw)
    return _Change(
        "operator", added=[scene.new_op(60, m, (70.0, 85.0, 150.0), _dome(cx, cy, r * 2.5), 0.08)]
    )


def _open_part(
    scene: _Scene, rng: np.random.Generator, group: str, index: int, defect: str
) -> _Change:
    """A clip or fastener that came loose: drawn rotated and shifted off its place."""
    ids = scene.groups[group][index]
    ops = [scene.op(i) for i in ids]
    union = np.zeros((scene.h, scene.w), dtype=bool)
    for op in ops:
        union |= op.mask
    box = _bbox(union)
    assert box is not None
    ys, xs = box
    cx, cy = (xs.start + xs.stop) / 2, (ys.start + ys.stop) / 2
    angle = float(rng.choice([-1, 1]) * rng.uniform(30, 50))
    shift = (xs.stop - xs.start) * 0.35
    dx, dy = shift * math.cos(math.radians(angle)), -abs(shift * math.sin(math.radians(angle)))
    change = _Change(defect, removed=set(ids))
    for op in ops:
        im = Image.fromarray(op.mask.astype(np.uint8) * 255)
        moved = im.rotate(
            angle, resample=Image.Resampling.NEAREST, center=(cx, cy), translate=(dx, dy)
        )
        m = np.asarray(moved) > 127
        change.added.append(scene.new_op(op.z + 20, m, op.color, None, op.texture))
    return change


# --------------------------------------------------------------------------- scenes


def _scene_engine_wiring(rng: np.random.Generator, tex: np.ndarray, w: int, h: int) -> _Scene:
    s = w / 400
    bg, noise = _background(rng, tex, (70, 72, 78), 0.6, 0.5, 0.12)
    sc = _Scene(w, h, bg, noise, scale=s)
    dx, dy = _jit(rng, 8) * s, _jit(rng, 8) * s
    # engine parts: metal blocks
    for x0, y0, x1, y1, c in (
        (20, 250, 170, 390, (95, 97, 100)),
        (250, 20, 390, 120, (110, 110, 112)),
    ):
        box = (x0 * s + dx, y0 * s + dy, x1 * s + dx, y1 * s + dy)
        sc.add(
            1,
            sc.mask(lambda d, b=box: d.rounded_rectangle(b, radius=int(12 * s), fill=255)),
            c,
            None,
            0.08,
        )
    # cables: thick curves
    cables = []
    for k, (col, width, phase) in enumerate(
        (
            ((28, 28, 30), 16, 0.0),
            ((36, 34, 34), 13, 1.1),
            ((205, 110, 35), 11, 2.0),
            ((30, 30, 32), 14, 3.0),
        )
    ):
        y_base = (90 + 70 * k) * s + dy
        amp = (22 + 6 * k) * s
        xs = np.linspace(-10, w + 10, 24)
        pts = [
            (float(x) + dx, float(y_base + amp * math.sin(x / w * 2.6 + phase) + _jit(rng, 1.0)))
            for x in xs
        ]
        wd = int(width * s)
        m = sc.mask(lambda d, p=pts, wd=wd: d.line(p, fill=255, width=wd, joint="curve"))
        hl = [(x, y - wd * 0.25) for x, y in pts]
        mh = sc.mask(
            lambda d, p=hl, wd=wd: d.line(p, fill=255, width=max(2, wd // 4), joint="curve")
        )
        sc.add(10 + k, m, col, None, 0.05)
        sc.add(10.5 + k, mh & m, tuple(min(255.0, c * 1.8 + 25) for c in col), None, 0.05)
        cables.append(pts)
    # fasteners: white clips across cables 0 and 2
    fasteners = []
    for k, frac in ((0, 0.3), (2, 0.7), (1, 0.5)):
        pts = cables[k]
        i = int(frac * (len(pts) - 1))
        (x0, y0), (x1, y1) = pts[i], pts[i + 1]
        ang = math.degrees(math.atan2(y1 - y0, x1 - x0))
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        band = sc.mask(lambda d, c=(cx, cy), a=ang: d.polygon(_rect(c, 9 * s, 15 * s, a), fill=255))
        fasteners.append([sc.add(30, band, (225, 222, 210), None, 0.04)])
    sc.groups["fasteners"] = fasteners
    # the hoop: a grey ring around the cable bundle
    hx, hy = 300 * s + dx, 245 * s + dy
    ring = sc.mask(
        lambda d: d.ellipse(
            (hx - 14 * s, hy - 60 * s, hx + 14 * s, hy + 60 * s), outline=255, width=int(6 * s)
        )
    )
    sc.add(40, ring, (150, 150, 155), _dome(hx, hy - 40 * s, 60 * s), 0.04)
    return sc


def _rect(
    c: tuple[float, float], half_w: float, half_h: float, angle_deg: float
) -> list[tuple[float, float]]:
    a = math.radians(angle_deg)
    ca, sa = math.cos(a), math.sin(a)
    out = []
    for sx, sy in ((-1, -1), (1, -1), (1, 1), (-1, 1)):
        px, py = sx * half_w, sy * half_h
        out.append((c[0] + px * ca - py * sa, c[1] + px * sa + py * ca))
    return out


def _pipe(
    sc: _Scene,
    p0: tuple[float, float],
    p1: tuple[float, float],
    radius: float,
    color: RGB,
    z: float,
) -> int:
    m = sc.mask(lambda d: d.line((p0, p1), fill=255, width=int(2 * radius)))
    return sc.add(z, m, color, _cylinder(p0, p1, radius), 0.04)


def _scene_pipe_clip(rng: np.random.Generator, tex: np.ndarray, w: int, h: int) -> _Scene:
    s = w / 400
    bg, noise = _background(rng, tex, (88, 90, 92), 2.2, 0.6, 0.1)
    sc = _Scene(w, h, bg, noise, scale=s)
    dx, dy = _jit(rng, 8) * s, _jit(rng, 8) * s
    sc.add(
        1,
        sc.mask(lambda d: d.rectangle((0, 300 * s + dy, w, h), fill=255)),
        (60, 62, 66),
        None,
        0.08,
    )
    p0, p1 = (-20.0, 150 * s + dy), (w + 20.0, 215 * s + dy)
    _pipe(sc, p0, p1, 26 * s, (40, 40, 42), 10)
    _pipe(sc, (-20.0, 255 * s + dy), (w + 20.0, 290 * s + dy), 12 * s, (150, 152, 158), 9)
    clips = []
    for fx in (0.3, 0.68):
        cx = fx * w + dx
        cy = p0[1] + (p1[1] - p0[1]) * (cx + 20) / (w + 40)
        body = sc.mask(lambda d, c=(cx, cy): d.polygon(_rect(c, 13 * s, 36 * s, 9), fill=255))
        tab = sc.mask(
            lambda d, c=(cx, cy): d.rounded_rectangle(
                (c[0] - 20 * s, c[1] + 30 * s, c[0] + 20 * s, c[1] + 52 * s),
                radius=int(5 * s),
                fill=255,
            )
        )
        clips.append(
            [
                sc.add(
                    30, body, (210, 200, 60), _cylinder((cx - 40, cy), (cx + 40, cy), 40 * s), 0.04
                ),
                sc.add(31, tab, (195, 185, 55), None, 0.05),
            ]
        )
    sc.groups["clips"] = clips
    return sc


def _scene_pipe_staple(rng: np.random.Generator, tex: np.ndarray, w: int, h: int) -> _Scene:
    s = w / 400
    bg, noise = _background(rng, tex, (55, 58, 62), 1.0, 0.6, 0.1)
    sc = _Scene(w, h, bg, noise, scale=s)
    dx, dy = _jit(rng, 8) * s, _jit(rng, 8) * s
    p0, p1 = (170 * s + dx, -20.0), (210 * s + dx, h + 20.0)
    _pipe(sc, p0, p1, 30 * s, (25, 25, 27), 10)
    _pipe(sc, (290 * s + dx, -20.0), (300 * s + dx, h + 20.0), 14 * s, (120, 122, 126), 10)
    staples = []
    for fy in (0.3, 0.72):
        cy = fy * h + dy
        cx = p0[0] + (p1[0] - p0[0]) * (cy + 20) / (h + 40)
        band = sc.mask(lambda d, c=(cx, cy): d.polygon(_rect(c, 44 * s, 7 * s, 6), fill=255))
        legs = sc.mask(
            lambda d, c=(cx, cy): (
                d.rectangle((c[0] - 50 * s, c[1] - 10 * s, c[0] - 38 * s, c[1] + 14 * s), fill=255),
                d.rectangle((c[0] + 38 * s, c[1] - 4 * s, c[0] + 50 * s, c[1] + 20 * s), fill=255),
            )
        )
        staples.append(
            [
                sc.add(
                    30,
                    band,
                    (200, 202, 208),
                    _cylinder((cx - 50, cy - 5), (cx + 50, cy + 5), 8 * s),
                    0.03,
                ),
                sc.add(30.5, legs, (170, 172, 176), None, 0.04),
            ]
        )
    sc.groups["staples"] = staples
    return sc


def _scene_tank_screw(rng: np.random.Generator, tex: np.ndarray, w: int, h: int) -> _Scene:
    s = w / 1000
    bg, noise = _background(rng, tex, (45, 46, 50), 0.3, 0.5, 0.15)
    sc = _Scene(w, h, bg, noise, scale=s * 2.2)
    dx, dy = _jit(rng, 15) * s, _jit(rng, 15) * s
    tank = (80 * s + dx, 90 * s + dy, 920 * s + dx, 660 * s + dy)
    sc.add(
        1,
        sc.mask(lambda d: d.rounded_rectangle(tank, radius=int(60 * s), fill=255)),
        (30, 30, 33),
        None,
        0.12,
    )
    for k in range(5):
        y = (180 + 95 * k) * s + dy
        sc.add(
            2,
            sc.mask(
                lambda d, y=y: d.line(
                    (120 * s + dx, y, 880 * s + dx, y), fill=255, width=int(14 * s)
                )
            ),
            (48, 48, 52),
            _cylinder((0, y), (w, y), 7 * s),
            0.05,
        )
    flange = (140 * s + dx, 560 * s + dy, 860 * s + dx, 630 * s + dy)
    sc.add(3, sc.mask(lambda d: d.rectangle(flange, fill=255)), (70, 70, 74), None, 0.06)
    screws = []
    for k in range(4):
        cx = (230 + 180 * k) * s + dx + _jit(rng, 2)
        cy = 595 * s + dy + _jit(rng, 2)
        screws.append(_add_screw(sc, cx, cy, 26 * s, (175, 172, 165)))
    sc.groups["screws"] = screws
    return sc


def _scene_underbody_pipes(rng: np.random.Generator, tex: np.ndarray, w: int, h: int) -> _Scene:
    s = w / 1000
    bg, noise = _background(rng, tex, (62, 64, 66), 2.0, 0.6, 0.12)
    sc = _Scene(w, h, bg, noise, scale=s * 2.2)
    dx, dy = _jit(rng, 15) * s, _jit(rng, 15) * s
    for k in range(3):  # underbody ribs
        x = (150 + 330 * k) * s + dx
        sc.add(
            1,
            sc.mask(lambda d, x=x: d.rectangle((x, 0, x + 60 * s, h), fill=255)),
            (78, 80, 82),
            None,
            0.08,
        )
    colors = ((150, 152, 156), (140, 142, 146), (30, 30, 32), (150, 152, 156), (110, 112, 118))
    for k, col in enumerate(colors):
        off = (200 + 95 * k) * s + dy
        _pipe(
            sc, (-20.0, off - 80 * s), (w + 20.0, off + 80 * s), (16 + 4 * (k % 2)) * s, col, 10 + k
        )
    for k in range(2):  # clamps across the pipes
        x = (330 + 360 * k) * s + dx
        sc.add(
            30,
            sc.mask(
                lambda d, x=x: d.polygon(_rect((x, 415 * s + dy), 14 * s, 230 * s, -9), fill=255)
            ),
            (45, 45, 48),
            None,
            0.05,
        )
    return sc


def _scene_underbody_screw(rng: np.random.Generator, tex: np.ndarray, w: int, h: int) -> _Scene:
    s = w / 1000
    bg, noise = _background(rng, tex, (50, 52, 55), 0.8, 0.5, 0.15)
    sc = _Scene(w, h, bg, noise, scale=s * 2.2)
    dx, dy = _jit(rng, 15) * s, _jit(rng, 15) * s
    plate = (120 * s + dx, 110 * s + dy, 880 * s + dx, 640 * s + dy)
    sc.add(
        1,
        sc.mask(lambda d: d.rounded_rectangle(plate, radius=int(30 * s), fill=255)),
        (82, 84, 86),
        None,
        0.1,
    )
    sc.add(
        2,
        sc.mask(
            lambda d: d.ellipse((380 * s + dx, 260 * s + dy, 620 * s + dx, 490 * s + dy), fill=255)
        ),
        (60, 62, 64),
        _dome(500 * s + dx, 375 * s + dy, 160 * s),
        0.08,
    )
    screws = []
    for gy in (170, 580):
        for gx in (200, 400, 600, 800):
            cx, cy = gx * s + dx + _jit(rng, 2), gy * s + dy + _jit(rng, 2)
            screws.append(_add_screw(sc, cx, cy, 24 * s, (160, 162, 150)))
    sc.groups["screws"] = screws
    return sc


_SCENES: dict[str, Callable[[np.random.Generator, np.ndarray, int, int], _Scene]] = {
    "engine_wiring": _scene_engine_wiring,
    "pipe_clip": _scene_pipe_clip,
    "pipe_staple": _scene_pipe_staple,
    "tank_screw": _scene_tank_screw,
    "underbody_pipes": _scene_underbody_pipes,
    "underbody_screw": _scene_underbody_screw,
}


def _make_change(
    category: str,
    defect: str,
    scene: _Scene,
    rng: np.random.Generator,
    taken: list[np.ndarray],
    used: dict[str, set[int]],
) -> _Change:
    """One region of ``defect`` in ``scene``; ``used`` tracks parts already changed."""

    def pick(group: str) -> int:
        free = [
            i for i in range(len(scene.groups[group])) if i not in used.setdefault(group, set())
        ]
        i = int(rng.choice(free))
        used[group].add(i)
        return i

    if defect == "missing" and category == "pipe_staple":
        ids = scene.groups["staples"][pick("staples")]
        return _Change("missing", removed=set(ids))
    if defect == "missing":
        return _missing_screw(scene, rng, pick("screws"))
    if defect == "fastening":
        return _open_part(scene, rng, "fasteners", pick("fasteners"), "fastening")
    if defect == "unclipped":
        return _open_part(scene, rng, "clips", pick("clips"), "unclipped")
    if defect == "blue_hoop":
        return _blue_hoop(scene, rng, taken)
    if defect == "cardboard":
        return _cardboard(scene, rng, taken)
    if defect == "operator":
        return _operator(scene, rng, taken)
    if defect == "obstruction":
        color = (38.0, 36.0, 34.0) if category == "engine_wiring" else (196.0, 190.0, 176.0)
        return _obstruction(scene, rng, taken, color)
    raise ValueError(f"no synthetic defect {defect!r} for {category}")


def _region_plan(category: str, folder: str, index: int, rng: np.random.Generator) -> list[str]:
    """The defect type of each region of test image ``index`` of ``folder``."""
    listed = [d[0] for d in DEFECT_CONFIGS[category]]
    if folder == "multiple":
        first, second = rng.choice(len(listed), size=2, replace=False)
        return [listed[int(first)], listed[int(second)]]
    if folder in ("missing", "unclipped") and index % 2 == 1:
        return [folder, folder]  # every second image of these folders has two regions
    if folder == "cardboard" and index % 3 == 2:
        return [folder, folder]
    return [folder]


# --------------------------------------------------------------------------- writing


def _rng(seed: int, category: str, *keys: int) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(category.encode()), *keys])


def _finish(planes: np.ndarray, gain: float) -> np.ndarray:
    """(3, h, w) float image times the lighting gain -> (h, w, 3) uint8."""
    planes *= np.float32(gain)
    planes += np.float32(0.5)
    np.clip(planes, 0, 255, out=planes)
    return np.ascontiguousarray(planes.astype(np.uint8).transpose(1, 2, 0))


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _save_png(arr: np.ndarray, path: Path) -> None:
    """Write an (h, w, 3) uint8 array as an 8-bit RGB PNG.

    A plain PNG writer (no row filters, fast deflate): about three times faster than
    Pillow's adaptive filtering on these images, and the bytes depend only on the pixels.
    """
    h, w, _ = arr.shape
    rows = np.empty((h, 1 + 3 * w), dtype=np.uint8)
    rows[:, 0] = 0  # filter type "None" for every row
    rows[:, 1:] = arr.reshape(h, 3 * w)
    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    data = b"".join(
        (
            b"\x89PNG\r\n\x1a\n",
            _png_chunk(b"IHDR", header),
            _png_chunk(b"IDAT", zlib.compress(rows.tobytes(), 1)),
            _png_chunk(b"IEND", b""),
        )
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _good_image(category: str, seed: int, split_code: int, index: int) -> np.ndarray:
    w, h = NATIVE_SIZES[category]
    rng = _rng(seed, category, split_code, index)
    scene = _SCENES[category](rng, _surface(seed, category, w, h), w, h)
    img, _ = scene.render()
    return _finish(img, float(rng.uniform(0.92, 1.08)))


def _defect_image(
    category: str, folder: str, seed: int, folder_code: int, index: int
) -> tuple[np.ndarray, list[tuple[str, np.ndarray]]]:
    w, h = NATIVE_SIZES[category]
    rng = _rng(seed, category, folder_code, index)
    scene = _SCENES[category](rng, _surface(seed, category, w, h), w, h)
    gain = float(rng.uniform(0.92, 1.08))
    plan = _region_plan(category, folder, index, rng)
    _, good_label = scene.render()
    taken: list[np.ndarray] = []
    used: dict[str, set[int]] = {}
    changes: list[_Change] = []
    for defect in plan:
        change = _make_change(category, defect, scene, rng, taken, used)
        support = np.zeros((h, w), dtype=bool)
        for op in change.added:
            support |= op.mask
        for op_id in change.removed:
            support |= scene.op(op_id).mask
        taken.append(support)
        changes.append(change)
    img, label = scene.render(changes)
    differs = label != good_label
    regions = []
    claimed = np.zeros((h, w), dtype=bool)
    # later changes are drawn on top: give overlapping pixels to the later change
    for change, support in reversed(list(zip(changes, taken, strict=True))):
        region = differs & support & ~claimed
        claimed |= region
        regions.append((change.defect, region))
    regions.reverse()
    regions = [(d, m) for d, m in regions if m.any()]
    return _finish(img, gain), regions


def _write_mask(region: np.ndarray, value: int, path: Path) -> None:
    arr = np.zeros((*region.shape, 3), dtype=np.uint8)
    arr[region] = value
    _save_png(arr, path)


def _category_dir(out: Path, category: str) -> Path:
    return out / category


_NAME_RE = re.compile(r"^(\d{4})\.png$")


def _check_existing(out: Path, category: str, spec: ScaleSpec) -> None:
    """Refuse to write into a category folder holding files this generator would not write.

    Files of an earlier (possibly interrupted) run at the same scale are fine: they are
    overwritten. Anything else, such as the real AutoVI data or a larger scale, raises
    `ConfigError` before a single file is written.
    """
    root = _category_dir(out, category)
    if not root.exists():
        return
    limits = {"train/good": spec.train, "test/good": spec.test_good}
    limits |= {f"test/{d}": spec.per_defect for d in DEFECT_FOLDERS[category]}
    for path in sorted(root.rglob("*")):
        if path.is_dir():
            continue
        rel = path.relative_to(root)
        parts = rel.parts
        ok = False
        if rel.as_posix() == "defects_config.json":
            ok = True
        elif len(parts) == 3 and (m := _NAME_RE.match(parts[2])):
            ok = int(m.group(1)) < limits.get(f"{parts[0]}/{parts[1]}", 0)
        elif len(parts) == 4 and parts[0] == "ground_truth" and _NAME_RE.match(parts[3]):
            m = _NAME_RE.match(parts[2] + ".png")
            ok = m is not None and int(m.group(1)) < limits.get(f"test/{parts[1]}", 0)
        if not ok:
            raise ConfigError(
                f"{path} is not part of the synthetic data ({category}, "
                f"{spec.train} train images): write to an empty folder or delete {root}"
            )


def _generate_category(out: Path, category: str, spec: ScaleSpec, seed: int) -> dict[str, Any]:
    root = _category_dir(out, category)
    pixel = {name: value for name, value, _, _ in DEFECT_CONFIGS[category]}
    config = [
        {
            "defect_name": name,
            "pixel_value": value,
            "saturation_threshold": t,
            "relative_saturation": rel,
        }
        for name, value, t, rel in DEFECT_CONFIGS[category]
    ]
    root.mkdir(parents=True, exist_ok=True)
    (root / "defects_config.json").write_text(json.dumps(config, indent=4) + "\n")

    jobs: list[tuple[str, int]] = [("train/good", i) for i in range(spec.train)]
    jobs += [("test/good", i) for i in range(spec.test_good)]
    jobs += [(f"test/{d}", i) for d in DEFECT_FOLDERS[category] for i in range(spec.per_defect)]
    summary: dict[str, Any] = {
        "train": spec.train,
        "test_good": spec.test_good,
        "test_defect": {},
        "regions": 0,
    }
    for folder, i in tqdm(jobs, desc=f"synth {category}", disable=None, leave=False):
        name = f"{i:04d}"
        if folder in _SPLIT_CODES:
            _save_png(
                _good_image(category, seed, _SPLIT_CODES[folder], i), root / folder / f"{name}.png"
            )
            continue
        defect_folder = folder.split("/", 1)[1]
        code = 10 + DEFECT_FOLDERS[category].index(defect_folder)
        img, regions = _defect_image(category, defect_folder, seed, code, i)
        if not regions:  # cannot happen with the scenes above; never write an image without GT
            raise RuntimeError(f"synthetic {category}/{folder}/{name} has no changed pixels")
        _save_png(img, root / folder / f"{name}.png")
        gt_dir = root / "ground_truth" / defect_folder / name
        if gt_dir.is_dir():  # masks of an earlier run (checked by _check_existing)
            for old in gt_dir.glob("*.png"):
                old.unlink()
        for k, (defect, region) in enumerate(regions):
            _write_mask(region, pixel[defect], gt_dir / f"{k:04d}.png")
        summary["test_defect"][defect_folder] = summary["test_defect"].get(defect_folder, 0) + 1
        summary["regions"] += len(regions)
    return summary


def generate(
    out: str | Path, scale: str = "tiny", seed: int = 0, categories: Iterable[str] | None = None
) -> dict[str, Any]:
    """Write synthetic AutoVI-format data under ``out``; returns summary counts.

    ``scale`` is "tiny" (a few images per folder, seconds for all six categories) or
    "small" (a few dozen per folder). Files of an earlier run at the same scale are
    overwritten; a category folder holding anything else (the real dataset, a larger
    scale) is refused with `ConfigError`.
    """
    if scale not in SCALES:
        raise ConfigError(f"unknown synthetic scale {scale!r}: choose one of {sorted(SCALES)}")
    cats = list(CATEGORIES) if categories is None else list(dict.fromkeys(categories))
    unknown = [c for c in cats if c not in CATEGORIES]
    if unknown:
        raise ConfigError(f"unknown AutoVI categories {unknown}: choose among {list(CATEGORIES)}")
    if not cats:
        raise ConfigError("no categories to generate")
    out = Path(out)
    spec = SCALES[scale]
    for category in cats:
        _check_existing(out, category, spec)
    per_cat = {}
    for category in cats:
        per_cat[category] = _generate_category(out, category, spec, int(seed))
        log.info("synthetic %s: %s", category, per_cat[category])
    total = sum(
        c["train"] + c["test_good"] + sum(c["test_defect"].values()) for c in per_cat.values()
    )
    return {
        "root": str(out),
        "scale": scale,
        "seed": int(seed),
        "images": total,
        "categories": per_cat,
    }


def run_cli(args: argparse.Namespace) -> int:
    """`fedpatch synth`: generate the data and print a short summary."""
    summary = generate(args.out, scale=args.scale, seed=args.seed, categories=args.categories)
    print(
        f"synthetic AutoVI data ({summary['scale']}, seed {summary['seed']}) in {summary['root']}"
    )
    print(f"{'category':<16} {'train':>5} {'good':>5} {'defect':>6} {'regions':>7}  defect folders")
    for cat, c in summary["categories"].items():
        folders = ", ".join(f"{d} {n}" for d, n in c["test_defect"].items())
        print(
            f"{cat:<16} {c['train']:>5} {c['test_good']:>5} {sum(c['test_defect'].values()):>6} {c['regions']:>7}  {folders}"
        )
    print(f"{summary['images']} images in all")
    return 0
