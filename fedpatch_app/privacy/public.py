"""The attacker's public images: photographs that share no source with the data audited.

The photo scenes of the synthetic generator are windows on photographs shipped with
scikit-image (`data.synthetic.photo_sources`); an attacker trained on those would hold the
truth itself. The default public set is therefore the OTHER photographs installed with
scikit-image and matplotlib (a cat, a galaxy field, a stained tissue, a retina, a camera
man, grass, gravel, the moon, text, a portrait...), never one the generator draws on.
`--public-root DIR` names any folder of images instead.

The attacker cuts random crops with the data's aspect ratio from them and writes them as
PNG files (`crops`), so that they pass through the very same loading as the data.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
from pathlib import Path

import numpy as np
from PIL import Image

from fedpatch_app.errors import ConfigError

log = logging.getLogger(__name__)

#: The photographs the synthetic photo scenes are made of (never a public image).
GENERATOR_SOURCES = frozenset(
    {
        "motorcycle_left.png",
        "motorcycle_right.png",
        "rocket.jpg",
        "astronaut.png",
        "coffee.png",
        "coins.png",
        "brick.png",
    }
)
#: scikit-image photographs (in its wheel) that the generator does not use.
SKIMAGE_PUBLIC = (
    "chelsea.png",
    "hubble_deep_field.jpg",
    "ihc.png",
    "retina.jpg",
    "color.png",
    "camera.png",
    "grass.png",
    "gravel.png",
    "moon.png",
    "page.png",
    "text.png",
    "clock_motion.png",
    "cell.png",
)
#: matplotlib's sample photographs.
MATPLOTLIB_PUBLIC = ("grace_hopper.jpg", "Minduka_Present_Blue_Pack.png")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def _package_dir(name: str, *parts: str) -> Path | None:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))).joinpath(*parts)


def default_public_images() -> list[Path]:
    """The installed public photographs (see the module doc); ConfigError if none is found."""
    found: list[Path] = []
    for package, parts, names in (
        ("skimage", ("data",), SKIMAGE_PUBLIC),
        ("matplotlib", ("mpl-data", "sample_data"), MATPLOTLIB_PUBLIC),
    ):
        folder = _package_dir(package, *parts)
        if folder is not None:
            found += [folder / n for n in names if (folder / n).is_file()]
    if not found:
        raise ConfigError(
            "no public photograph found in the scikit-image or matplotlib installs: "
            "name a folder of images with --public-root"
        )
    return found


def folder_images(root: Path) -> list[Path]:
    """Every image file under `root` (sorted); ConfigError naming the folder if none."""
    root = Path(root)
    if not root.is_dir():
        raise ConfigError(f"--public-root {root} is not a folder")
    found = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not found:
        raise ConfigError(f"--public-root {root} holds no image ({', '.join(IMAGE_SUFFIXES)})")
    return found


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def check_disjoint(public: list[Path]) -> None:
    """Refuse public images that are one of the generator's source photographs (by name
    in scikit-image's folder, or by content anywhere)."""
    folder = _package_dir("skimage", "data")
    sources = {}
    if folder is not None:
        sources = {_digest(folder / n): n for n in GENERATOR_SOURCES if (folder / n).is_file()}
    for path in public:
        name = sources.get(_digest(path))
        if name is not None:
            raise ConfigError(
                f"public image {path} is {name}, a photograph the synthetic data is made of: "
                "the attacker's public images must share no source with the data audited"
            )


def _load(path: Path) -> Image.Image:
    with Image.open(path) as img:
        return img.convert("RGB")


def write_crops(
    images: list[Path], out: Path, count: int, size: tuple[int, int], seed: int
) -> list[Path]:
    """`count` random crops (width/height ratio of `size`, 35 to 100 % of the shorter
    side) of the public `images`, resized to `size` (width, height), as PNG files in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    photos = [_load(p) for p in images]
    aspect = size[0] / size[1]
    paths = []
    for i in range(count):
        img = photos[i % len(photos)]
        h_max = min(img.height, img.width / aspect)
        h = h_max * rng.uniform(0.35, 1.0)
        w = h * aspect
        x0 = rng.uniform(0, img.width - w)
        y0 = rng.uniform(0, img.height - h)
        crop = img.resize(size, Image.Resampling.BILINEAR, box=(x0, y0, x0 + w, y0 + h))
        if rng.random() < 0.5:
            crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        path = out / f"crop-{i:04d}.png"
        crop.save(path)
        paths.append(path)
    log.info("%d public crops of %d photographs in %s", count, len(photos), out)
    return paths
