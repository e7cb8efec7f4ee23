"""The six drawn scenes, one per AutoVI category: cables with fasteners and a hoop, a pipe
with clips, a pipe with staples, a tank with screws, parallel underbody pipes, an underbody
panel with screws. Each image jitters position and lighting a little."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from fedpatch_app.data.synthetic.drawn_parts import add_screw, pipe
from fedpatch_app.data.synthetic.drawn_render import Scene, background, cylinder, dome, jit, rect


def _start(
    rng: np.random.Generator,
    tex: np.ndarray,
    w: int,
    h: int,
    base: tuple[float, float, float],
    light: tuple[float, float, float],
) -> tuple[Scene, float, float, float]:
    """A scene's background and its units: (scene, scale, dx, dy). The 400x400 scenes are
    drawn in 400-unit coordinates, the 1000x750 ones in 1000-unit coordinates (with objects
    drawn 2.2 times larger); (dx, dy) is this image's position jitter. ``light`` is the
    lighting gradient's angle and strength and the surface texture's amount."""
    small = w == 400
    s = w / (400 if small else 1000)
    bg, noise = background(rng, tex, base, *light)
    sc = Scene(w, h, bg, noise, scale=s if small else s * 2.2)
    amount = 8 if small else 15
    return sc, s, jit(rng, amount) * s, jit(rng, amount) * s


def _panel(
    sc: Scene,
    box: tuple[float, float, float, float],
    radius: float,
    color: tuple[float, float, float],
    texture: float,
) -> None:
    """A flat rounded panel (a tank side, an underbody plate) at the back of the scene."""
    mask = sc.mask(lambda d: d.rounded_rectangle(box, radius=int(radius), fill=255))
    sc.add(1, mask, color, None, texture)


def _scene_engine_wiring(rng: np.random.Generator, tex: np.ndarray, w: int, h: int) -> Scene:
    sc, s, dx, dy = _start(rng, tex, w, h, (70, 72, 78), (0.6, 0.5, 0.12))
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
            (float(x) + dx, float(y_base + amp * math.sin(x / w * 2.6 + phase) + jit(rng, 1.0)))
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
        band = sc.mask(lambda d, c=(cx, cy), a=ang: d.polygon(rect(c, 9 * s, 15 * s, a), fill=255))
        fasteners.append([sc.add(30, band, (225, 222, 210), None, 0.04)])
    sc.groups["fasteners"] = fasteners
    # the hoop: a grey ring around the cable bundle
    hx, hy = 300 * s + dx, 245 * s + dy
    ring = sc.mask(
        lambda d: d.ellipse(
            (hx - 14 * s, hy - 60 * s, hx + 14 * s, hy + 60 * s), outline=255, width=int(6 * s)
        )
    )
    sc.add(40, ring, (150, 150, 155), dome(hx, hy - 40 * s, 60 * s), 0.04)
    return sc


def on_pipe(
    p0: tuple[float, float], p1: tuple[float, float], along: float, length: float, axis: int
) -> tuple[float, float]:
    """The point of the pipe from p0 to p1 (drawn 20 px beyond both image borders) at
    coordinate `along` on `axis` (0: x, 1: y)."""
    across = p0[1 - axis] + (p1[1 - axis] - p0[1 - axis]) * (along + 20) / (length + 40)
    return (along, across) if axis == 0 else (across, along)


def _scene_pipe_clip(rng: np.random.Generator, tex: np.ndarray, w: int, h: int) -> Scene:
    sc, s, dx, dy = _start(rng, tex, w, h, (88, 90, 92), (2.2, 0.6, 0.1))
    sc.add(
        1,
        sc.mask(lambda d: d.rectangle((0, 300 * s + dy, w, h), fill=255)),
        (60, 62, 66),
        None,
        0.08,
    )
    p0, p1 = (-20.0, 150 * s + dy), (w + 20.0, 215 * s + dy)
    pipe(sc, p0, p1, 26 * s, (40, 40, 42), 10)
    pipe(sc, (-20.0, 255 * s + dy), (w + 20.0, 290 * s + dy), 12 * s, (150, 152, 158), 9)
    clips = []
    for fx in (0.3, 0.68):
        cx, cy = on_pipe(p0, p1, fx * w + dx, w, axis=0)
        body = sc.mask(lambda d, c=(cx, cy): d.polygon(rect(c, 13 * s, 36 * s, 9), fill=255))
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
                    30, body, (210, 200, 60), cylinder((cx - 40, cy), (cx + 40, cy), 40 * s), 0.04
                ),
                sc.add(31, tab, (195, 185, 55), None, 0.05),
            ]
        )
    sc.groups["clips"] = clips
    return sc


def _scene_pipe_staple(rng: np.random.Generator, tex: np.ndarray, w: int, h: int) -> Scene:
    sc, s, dx, dy = _start(rng, tex, w, h, (55, 58, 62), (1.0, 0.6, 0.1))
    p0, p1 = (170 * s + dx, -20.0), (210 * s + dx, h + 20.0)
    pipe(sc, p0, p1, 30 * s, (25, 25, 27), 10)
    pipe(sc, (290 * s + dx, -20.0), (300 * s + dx, h + 20.0), 14 * s, (120, 122, 126), 10)
    staples = []
    for fy in (0.3, 0.72):
        cx, cy = on_pipe(p0, p1, fy * h + dy, h, axis=1)
        band = sc.mask(lambda d, c=(cx, cy): d.polygon(rect(c, 44 * s, 7 * s, 6), fill=255))
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
                    cylinder((cx - 50, cy - 5), (cx + 50, cy + 5), 8 * s),
                    0.03,
                ),
                sc.add(30.5, legs, (170, 172, 176), None, 0.04),
            ]
        )
    sc.groups["staples"] = staples
    return sc


def _scene_tank_screw(rng: np.random.Generator, tex: np.ndarray, w: int, h: int) -> Scene:
    sc, s, dx, dy = _start(rng, tex, w, h, (45, 46, 50), (0.3, 0.5, 0.15))
    _panel(sc, (80 * s + dx, 90 * s + dy, 920 * s + dx, 660 * s + dy), 60 * s, (30, 30, 33), 0.12)
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
            cylinder((0, y), (w, y), 7 * s),
            0.05,
        )
    flange = (140 * s + dx, 560 * s + dy, 860 * s + dx, 630 * s + dy)
    sc.add(3, sc.mask(lambda d: d.rectangle(flange, fill=255)), (70, 70, 74), None, 0.06)
    screws = []
    for k in range(4):
        cx = (230 + 180 * k) * s + dx + jit(rng, 2)
        cy = 595 * s + dy + jit(rng, 2)
        screws.append(add_screw(sc, cx, cy, 26 * s, (175, 172, 165)))
    sc.groups["screws"] = screws
    return sc


def _scene_underbody_pipes(rng: np.random.Generator, tex: np.ndarray, w: int, h: int) -> Scene:
    sc, s, dx, dy = _start(rng, tex, w, h, (62, 64, 66), (2.0, 0.6, 0.12))
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
        pipe(
            sc, (-20.0, off - 80 * s), (w + 20.0, off + 80 * s), (16 + 4 * (k % 2)) * s, col, 10 + k
        )
    for k in range(2):  # clamps across the pipes
        x = (330 + 360 * k) * s + dx
        sc.add(
            30,
            sc.mask(
                lambda d, x=x: d.polygon(rect((x, 415 * s + dy), 14 * s, 230 * s, -9), fill=255)
            ),
            (45, 45, 48),
            None,
            0.05,
        )
    return sc


def _scene_underbody_screw(rng: np.random.Generator, tex: np.ndarray, w: int, h: int) -> Scene:
    sc, s, dx, dy = _start(rng, tex, w, h, (50, 52, 55), (0.8, 0.5, 0.15))
    _panel(sc, (120 * s + dx, 110 * s + dy, 880 * s + dx, 640 * s + dy), 30 * s, (82, 84, 86), 0.1)
    sc.add(
        2,
        sc.mask(
            lambda d: d.ellipse((380 * s + dx, 260 * s + dy, 620 * s + dx, 490 * s + dy), fill=255)
        ),
        (60, 62, 64),
        dome(500 * s + dx, 375 * s + dy, 160 * s),
        0.08,
    )
    screws = []
    for gy in (170, 580):
        for gx in (200, 400, 600, 800):
            cx, cy = gx * s + dx + jit(rng, 2), gy * s + dy + jit(rng, 2)
            screws.append(add_screw(sc, cx, cy, 24 * s, (160, 162, 150)))
    sc.groups["screws"] = screws
    return sc


SCENES: dict[str, Callable[[np.random.Generator, np.ndarray, int, int], Scene]] = {
    "engine_wiring": _scene_engine_wiring,
    "pipe_clip": _scene_pipe_clip,
    "pipe_staple": _scene_pipe_staple,
    "tank_screw": _scene_tank_screw,
    "underbody_pipes": _scene_underbody_pipes,
    "underbody_screw": _scene_underbody_screw,
}
