"""How drawn scenes are painted: textured shapes with shading on a lit background.

A scene is a background plus objects (a mask, a colour, a brightness pattern, a depth);
a defect is a change (objects removed, objects added). Rendering paints the objects in
depth order and also returns which object shows at each pixel, so the ground truth of a
change is exactly the pixels it altered.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from fedpatch_app.data.synthetic.layout import rng_for

RGB = tuple[float, float, float]


def smooth_noise(rng: np.random.Generator, w: int, h: int, cell: float) -> np.ndarray:
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


def bbox(mask: np.ndarray) -> tuple[slice, slice] | None:
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)


Shade = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclass
class Op:
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
            self._box, self._boxed = bbox(self.mask), True
        return self._box


@dataclass
class Change:
    """A local defect: objects removed from and objects added to a good scene."""

    defect: str
    removed: set[int] = field(default_factory=set)
    added: list[Op] = field(default_factory=list)


@dataclass
class Scene:
    """A good scene: a textured background plus objects; named groups of object ids."""

    w: int
    h: int
    background: np.ndarray  # (3, h, w) float32, channel-first
    noise: np.ndarray  # (h, w) float32, surface texture shared by all objects
    ops: list[Op] = field(default_factory=list)
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
    ) -> Op:
        op = Op(self._next_id, z, mask, color, shade, texture)
        self._next_id += 1
        return op

    def add(self, *args: Any, **kwargs: Any) -> int:
        """Add an object to the scene (arguments of `new_op`); returns its id."""
        op = self.new_op(*args, **kwargs)
        self.ops.append(op)
        return op.id

    def mask(self, draw: Callable[[ImageDraw.ImageDraw], None]) -> np.ndarray:
        return _mask((self.w, self.h), draw)

    def op(self, op_id: int) -> Op:
        for op in self.ops:
            if op.id == op_id:
                return op
        raise KeyError(op_id)

    def render(self, changes: Sequence[Change] = ()) -> tuple[np.ndarray, np.ndarray]:
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
        gy, gx = grid(self.w, self.h)
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


def cylinder(p0: tuple[float, float], p1: tuple[float, float], radius: float) -> Shade:
    """Brightness of a cylinder along p0-p1 seen from the side (highlight off-centre)."""
    (x0, y0), (x1, y1) = p0, p1
    length = math.hypot(x1 - x0, y1 - y0) or 1.0
    nx, ny = -(y1 - y0) / length, (x1 - x0) / length

    def shade(yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
        t = np.clip(((xx - x0) * nx + (yy - y0) * ny) / radius, -1.0, 1.0)
        body = 0.45 + 0.55 * np.sqrt(1.0 - t * t)
        return body + 0.35 * np.exp(-(((t + 0.35) / 0.18) ** 2))

    return shade


def dome(cx: float, cy: float, radius: float) -> Shade:
    """Brightness of a dome (screw head) lit from the top left."""

    def shade(yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
        dx, dy = (xx - cx) / radius, (yy - cy) / radius
        r2 = np.clip(dx * dx + dy * dy, 0.0, 1.0)
        spec = np.exp(-((dx + 0.35) ** 2 + (dy + 0.35) ** 2) / 0.08)
        return 0.55 + 0.45 * np.sqrt(1.0 - r2) + 0.5 * spec

    return shade


@functools.lru_cache(maxsize=4)
def grid(w: int, h: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    yy.flags.writeable = False
    xx.flags.writeable = False
    return yy, xx


@functools.lru_cache(maxsize=8)
def surface(seed: int, category: str, w: int, h: int) -> np.ndarray:
    """The category's fixed surface texture (the same for every image of the category)."""
    rng = rng_for(seed, category, 0)
    cell = min(w, h) / 6.0
    fixed = smooth_noise(rng, w, h, cell) * 0.7 + smooth_noise(rng, w, h, cell / 5) * 0.3
    fixed.flags.writeable = False
    return fixed


def background(
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
    extra = smooth_noise(rng, w, h, min(w, h) / 3.0)
    noise = surface + 0.25 * extra
    angle = grad_angle + rng.uniform(-0.25, 0.25)
    yy, xx = grid(w, h)
    cx, cy = math.cos(angle) * grad / max(w, h), math.sin(angle) * grad / max(w, h)
    bright = tex * noise
    bright += np.float32(1.0 - cx * w / 2 - cy * h / 2)
    bright += np.float32(cx) * xx
    bright += np.float32(cy) * yy
    bg = bright[None, :, :] * np.asarray(base, dtype=np.float32)[:, None, None]
    return bg, noise


def jit(rng: np.random.Generator, amount: float) -> float:
    return float(rng.uniform(-amount, amount))


def rect(
    c: tuple[float, float], half_w: float, half_h: float, angle_deg: float
) -> list[tuple[float, float]]:
    a = math.radians(angle_deg)
    ca, sa = math.cos(a), math.sin(a)
    out = []
    for sx, sy in ((-1, -1), (1, -1), (1, 1), (-1, 1)):
        px, py = sx * half_w, sy * half_h
        out.append((c[0] + px * ca - py * sa, c[1] + px * sa + py * ca))
    return out
