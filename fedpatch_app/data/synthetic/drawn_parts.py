"""The parts of drawn scenes and their defects: screws, pipes, foreign objects (cardboard,
a blue hoop, an obstruction, a gloved hand), a part missing or come loose."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

from fedpatch_app.data.synthetic.drawn_render import (
    RGB,
    Change,
    Scene,
    bbox,
    cylinder,
    dome,
    jit,
)


def add_screw(
    scene: Scene, cx: float, cy: float, r: float, color: RGB, z: float = 5.0
) -> list[int]:
    """A hex screw head on a washer; returns the ids of its parts."""
    washer = scene.mask(lambda d: d.ellipse((cx - r, cy - r, cx + r, cy + r), fill=255))
    rh = r * 0.72
    head = scene.mask(lambda d: d.regular_polygon((cx, cy, rh), 6, rotation=15, fill=255))
    rr = r * 0.28
    recess = scene.mask(lambda d: d.regular_polygon((cx, cy, rr), 6, fill=255))
    ids = [
        scene.add(z, washer, tuple(c * 0.8 for c in color), dome(cx, cy, r), 0.03),
        scene.add(z + 0.1, head, color, dome(cx - r * 0.1, cy - r * 0.1, rh), 0.03),
        scene.add(z + 0.2, recess, tuple(c * 0.25 for c in color), None, 0.05),
    ]
    return ids


def missing_screw(scene: Scene, rng: np.random.Generator, index: int) -> Change:
    ids = scene.groups["screws"][index]
    washer = scene.op(ids[0])
    box = bbox(washer.mask)
    assert box is not None
    ys, xs = box
    cx, cy = (xs.start + xs.stop - 1) / 2, (ys.start + ys.stop - 1) / 2
    r = (xs.stop - xs.start) / 2 * 0.5
    hole = scene.mask(lambda d: d.ellipse((cx - r, cy - r, cx + r, cy + r), fill=255))
    rim = scene.mask(
        lambda d: d.ellipse((cx - r * 1.5, cy - r * 1.5, cx + r * 1.5, cy + r * 1.5), fill=255)
    )
    rim_color = tuple(c * 0.7 for c in washer.color)
    change = Change("missing", removed=set(ids))
    change.added.append(scene.new_op(washer.z, rim, rim_color, None, 0.05))
    change.added.append(
        scene.new_op(washer.z + 0.1, hole, tuple(c * 0.45 for c in washer.color), None, 0.1)
    )
    return change


def free_spot(
    scene: Scene, rng: np.random.Generator, radius: float, taken: list[np.ndarray]
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


def blob_polygon(
    rng: np.random.Generator, cx: float, cy: float, r: float, n: int, rough: float
) -> list[tuple[float, float]]:
    angles = np.sort(rng.uniform(0, 2 * math.pi, n))
    radii = r * (1.0 + rng.uniform(-rough, rough, n))
    return [
        (cx + float(a) * math.cos(t), cy + float(a) * math.sin(t))
        for t, a in zip(angles, radii, strict=True)
    ]


def cardboard(
    scene: Scene, rng: np.random.Generator, taken: list[np.ndarray], defect: str = "cardboard"
) -> Change:
    s = scene.scale
    r = float(rng.uniform(14, 26)) * s
    cx, cy = free_spot(scene, rng, r * 1.2, taken)
    ang = rng.uniform(0, math.pi)
    w2, h2 = r, r * rng.uniform(0.55, 0.8)
    pts = []
    for sx, sy in ((-1, -1), (1, -1), (1, 1), (-1, 1)):
        px = sx * w2 * (1 + jit(rng, 0.15))
        py = sy * h2 * (1 + jit(rng, 0.15))
        pts.append(
            (
                cx + px * math.cos(ang) - py * math.sin(ang),
                cy + px * math.sin(ang) + py * math.cos(ang),
            )
        )
    m = scene.mask(lambda d: d.polygon(pts, fill=255))
    return Change(defect, added=[scene.new_op(50, m, (150.0, 128.0, 100.0), None, 0.12)])


def blue_hoop(scene: Scene, rng: np.random.Generator, taken: list[np.ndarray]) -> Change:
    s = scene.scale
    r = float(rng.uniform(12, 18)) * s
    cx, cy = free_spot(scene, rng, r * 1.2, taken)
    e = r * rng.uniform(0.6, 0.9)
    m = scene.mask(
        lambda d: d.ellipse((cx - r, cy - e, cx + r, cy + e), outline=255, width=max(3, int(4 * s)))
    )
    return Change(
        "blue_hoop",
        added=[scene.new_op(50, m, (70.0, 90.0, 150.0), dome(cx, cy - e, r * 2), 0.05)],
    )


def obstruction(
    scene: Scene, rng: np.random.Generator, taken: list[np.ndarray], color: RGB
) -> Change:
    s = scene.scale
    r = float(rng.uniform(18, 32)) * s
    cx, cy = free_spot(scene, rng, r * 1.1, taken)
    pts = blob_polygon(rng, cx, cy, r, 9, 0.3)
    m = scene.mask(lambda d: d.polygon(pts, fill=255))
    return Change("obstruction", added=[scene.new_op(50, m, color, dome(cx, cy, r * 1.6), 0.1)])


def operator(scene: Scene, rng: np.random.Generator, taken: list[np.ndarray]) -> Change:
    """A gloved hand reaching in from the bottom or right edge."""
    s = scene.scale
    w, h = scene.w, scene.h
    r = float(rng.uniform(20, 28)) * s
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
    return Change(
        "operator", added=[scene.new_op(60, m, (85.0, 92.0, 120.0), dome(cx, cy, r * 2.5), 0.08)]
    )


def open_part(
    scene: Scene, rng: np.random.Generator, group: str, index: int, defect: str
) -> Change:
    """A clip or fastener that came loose: drawn rotated and shifted off its place."""
    ids = scene.groups[group][index]
    ops = [scene.op(i) for i in ids]
    union = np.zeros((scene.h, scene.w), dtype=bool)
    for op in ops:
        union |= op.mask
    box = bbox(union)
    assert box is not None
    ys, xs = box
    cx, cy = (xs.start + xs.stop) / 2, (ys.start + ys.stop) / 2
    angle = float(rng.choice([-1, 1]) * rng.uniform(12, 28))
    shift = (xs.stop - xs.start) * 0.2
    dx, dy = shift * math.cos(math.radians(angle)), -abs(shift * math.sin(math.radians(angle)))
    change = Change(defect, removed=set(ids))
    for op in ops:
        im = Image.fromarray(op.mask.astype(np.uint8) * 255)
        moved = im.rotate(
            angle, resample=Image.Resampling.NEAREST, center=(cx, cy), translate=(dx, dy)
        )
        m = np.asarray(moved) > 127
        change.added.append(scene.new_op(op.z + 20, m, op.color, None, op.texture))
    return change


def pipe(
    sc: Scene,
    p0: tuple[float, float],
    p1: tuple[float, float],
    radius: float,
    color: RGB,
    z: float,
) -> int:
    m = sc.mask(lambda d: d.line((p0, p1), fill=255, width=int(2 * radius)))
    return sc.add(z, m, color, cylinder(p0, p1, radius), 0.04)
