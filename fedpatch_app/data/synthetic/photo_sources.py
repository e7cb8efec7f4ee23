"""The photographs behind the photo scenes, and the nuisance variation of a production line.

The photographs ship inside the scikit-image wheel (``skimage/data``; files in the wheel
itself, not the ones scikit-image downloads on demand), so nothing is fetched:

- ``motorcycle_left.png`` / ``motorcycle_right.png``: a rectified stereo pair of a
  motorcycle in a workshop (Middlebury 2014 stereo benchmark, Scharstein et al., GCPR
  2014), with its disparity map ``motorcycle_disp.npz``: the right image is a real second
  viewpoint of the same parts;
- ``rocket.jpg``: a rocket on its launch pad between steel towers (SpaceX, public domain);
- foreign objects come from ``astronaut.png`` (NASA, public domain), ``coffee.png`` (CC0),
  ``coins.png`` (Brooklyn Museum, no known copyright restrictions) and ``brick.png``
  (CC0 texture).

Each category views a fixed window of one photograph (the engine, the front fork, the rear
wheel and exhaust, the tank, the launch towers, the lower half of the bike), resampled to
AutoVI's native size. Between images, as on a line with a fixed camera: a small shift,
rotation and zoom of the window (at most 0.6%, 0.6 degrees, 1%), the other stereo view
for a quarter of the motorcycle images, global gain (+-10%), gamma and colour balance, a
lighting gradient (up to 8% across the image), and sensor noise (sigma 1.5 to 4 grey
levels). Larger pose changes bring new content in at the image borders, which then
outscores the small defects in good images: more than a fixed camera on a line sees.
"""

from __future__ import annotations

import functools
import importlib.util
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from fedpatch_app.data.autovi_release import NATIVE_SIZES
from fedpatch_app.errors import ConfigError


@dataclass(frozen=True)
class View:
    """A category's window on a photograph: (x, y) of the centre, width, stereo or not."""

    source: str
    cx: float
    cy: float
    width: float
    stereo: bool


#: The window of each category (widths keep AutoVI's aspect ratio through NATIVE_SIZES).
VIEWS: dict[str, View] = {
    "engine_wiring": View("motorcycle", 395, 300, 190, True),
    "pipe_clip": View("motorcycle", 575, 330, 200, True),
    "pipe_staple": View("motorcycle", 235, 335, 200, True),
    "tank_screw": View("motorcycle", 370, 255, 400, True),
    "underbody_pipes": View("rocket", 330, 210, 500, False),
    "underbody_screw": View("motorcycle", 400, 280, 540, True),
}

#: Pose variation between images: shift (fraction of the window), rotation (degrees),
#: zoom (fraction), each drawn uniformly in [-value, value].
POSE = {"shift": 0.006, "rotation": 0.6, "zoom": 0.01}

#: Share of the motorcycle images seen from the right camera of the stereo pair.
SECOND_VIEW_SHARE = 0.25


def data_dir() -> Path:
    """scikit-image's bundled data folder; ``ConfigError`` when scikit-image is missing."""
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            "the photo scenes need the photographs shipped with scikit-image: "
            "`pip install scikit-image` (a dependency of fedpatch)"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "data"


@functools.lru_cache(maxsize=16)
def photo(name: str) -> Image.Image:
    """A bundled photograph as an RGB PIL image (cached per process)."""
    path = data_dir() / name
    if not path.is_file():
        raise ConfigError(f"the photograph {path} is missing from the scikit-image install")
    with Image.open(path) as img:
        return img.convert("RGB")


@functools.lru_cache(maxsize=4)
def _disparity(cx: float, cy: float, width: float, height: float) -> float:
    """Median disparity (pixels) of the stereo pair inside a window of the left image."""
    with np.load(data_dir() / "motorcycle_disp.npz", allow_pickle=False) as data:
        disp = data["arr_0"]
    x0, y0 = int(cx - width / 2), int(cy - height / 2)
    window = disp[max(0, y0) : int(y0 + height), max(0, x0) : int(x0 + width)]
    return float(np.nanmedian(window))


def window(category: str, right: bool = False) -> tuple[float, float, float, float]:
    """(centre x, centre y, width, height) of the category's window in its photograph (in
    the right stereo image: shifted by the window's median disparity)."""
    view = VIEWS[category]
    native_w, native_h = NATIVE_SIZES[category]
    height = view.width * native_h / native_w
    cx = view.cx - (_disparity(view.cx, view.cy, view.width, height) if right else 0.0)
    return cx, view.cy, view.width, height


def source_image(category: str, right: bool) -> Image.Image:
    """The photograph a category's image is taken from."""
    view = VIEWS[category]
    if view.source == "rocket":
        return photo("rocket.jpg")
    return photo("motorcycle_right.png" if right else "motorcycle_left.png")


def base_image(category: str, rng: np.random.Generator) -> np.ndarray:
    """The category's window with this image's pose (shift, rotation, zoom, stereo view),
    at native size: float32 (h, w, 3) in 0-255, before lighting and noise."""
    native_w, native_h = NATIVE_SIZES[category]
    right = VIEWS[category].stereo and rng.random() < SECOND_VIEW_SHARE
    cx, cy, width, height = window(category, right)
    cx += rng.uniform(-1, 1) * POSE["shift"] * width
    cy += rng.uniform(-1, 1) * POSE["shift"] * height
    angle = math.radians(rng.uniform(-1, 1) * POSE["rotation"])
    scale = width / native_w * (1.0 + rng.uniform(-1, 1) * POSE["zoom"])
    cos, sin = math.cos(angle) * scale, math.sin(angle) * scale
    # output (x, y) -> source: centre + R(angle) * scale * ((x, y) - output centre)
    ox, oy = native_w / 2, native_h / 2
    coeffs = (cos, -sin, cx - cos * ox + sin * oy, sin, cos, cy - sin * ox - cos * oy)
    img = source_image(category, right).transform(
        (native_w, native_h), Image.Transform.AFFINE, coeffs, Image.Resampling.BILINEAR
    )
    return np.asarray(img, dtype=np.float32)


def finish(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Lighting (gain, gamma, colour balance, a gradient) and sensor noise -> uint8."""
    h, w, _ = img.shape
    gain = rng.uniform(0.9, 1.1) * (1.0 + rng.uniform(-0.02, 0.02, 3))
    gamma = rng.uniform(0.93, 1.07)
    angle = rng.uniform(0, 2 * math.pi)
    strength = rng.uniform(0.0, 0.08)
    sigma = rng.uniform(1.5, 4.0)
    # gain and gamma as one lookup table per channel on the rounded 0-255 values
    levels = 255.0 * (np.arange(256) / 255.0) ** gamma
    luts = (levels[None, :] * gain[:, None]).astype(np.float32)
    q = np.clip(img + 0.5, 0, 255).astype(np.uint8)
    out = np.empty(img.shape, dtype=np.float32)
    for c in range(3):
        np.take(luts[c], q[:, :, c], out=out[:, :, c])
    xs = (np.arange(w, dtype=np.float32) / w - 0.5) * np.float32(math.cos(angle) * strength)
    ys = (np.arange(h, dtype=np.float32) / h - 0.5) * np.float32(math.sin(angle) * strength)
    out *= (1.0 + ys[:, None] + xs[None, :])[:, :, None]
    out += rng.standard_normal(out.shape, dtype=np.float32) * np.float32(sigma)
    out += np.float32(0.5)
    np.clip(out, 0, 255, out=out)
    return out.astype(np.uint8)
