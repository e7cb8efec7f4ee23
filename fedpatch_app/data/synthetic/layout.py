"""What synthetic data is written where: the scales (image counts per folder), the defect
types of each category with their ``defects_config.json`` entries, the defect types of
each test image's regions, and the guard against overwriting foreign files.

Everything is seeded per image: an image depends only on (seed, category, folder, index),
so generating a subset of categories, or one image, gives the same bytes.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedpatch_app.data.autovi import DEFECT_FOLDERS
from fedpatch_app.errors import ConfigError


@dataclass(frozen=True)
class ScaleSpec:
    """Number of images per folder for one scale (the same for every category)."""

    train: int
    test_good: int
    per_defect: int

    def counts(self, category: str) -> dict[str, int]:
        """Images per folder (``train/good``, ``test/good``, ``test/<defect>``)."""
        counts = {"train/good": self.train, "test/good": self.test_good}
        return counts | {f"test/{d}": self.per_defect for d in DEFECT_FOLDERS[category]}


#: AutoVI's own counts per category: train/good, test/good and each defect folder.
AUTOVI_COUNTS: dict[str, dict[str, int]] = {
    "engine_wiring": {
        "train/good": 285,
        "test/good": 285,
        "test/fastening": 277,
        "test/multiple": 33,
        "test/blue_hoop": 5,
        "test/cardboard": 5,
        "test/obstruction": 2,
    },
    "pipe_clip": {"train/good": 195, "test/good": 195, "test/unclipped": 141, "test/operator": 1},
    "pipe_staple": {"train/good": 191, "test/good": 188, "test/missing": 117},
    "tank_screw": {"train/good": 318, "test/good": 318, "test/missing": 95},
    "underbody_pipes": {
        "train/good": 161,
        "test/good": 161,
        "test/obstruction": 180,
        "test/operator": 3,
        "test/multiple": 1,
    },
    "underbody_screw": {"train/good": 373, "test/good": 374, "test/missing": 18},
}


@dataclass(frozen=True)
class AutoviScale:
    """AutoVI's own image counts, per category and folder (1,523 train, 2,399 test)."""

    def counts(self, category: str) -> dict[str, int]:
        return dict(AUTOVI_COUNTS[category])


SCALES: dict[str, ScaleSpec | AutoviScale] = {
    "tiny": ScaleSpec(train=8, test_good=4, per_defect=2),
    "small": ScaleSpec(train=40, test_good=12, per_defect=6),
    "autovi": AutoviScale(),
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


#: Seed codes of the good folders; defect folders use 10 + their index in DEFECT_FOLDERS.
SPLIT_CODES = {"train/good": 1, "test/good": 2}


def folder_code(category: str, folder: str) -> int:
    """The seed code of ``folder`` (``train/good``, ``test/good`` or ``test/<defect>``)."""
    if folder in SPLIT_CODES:
        return SPLIT_CODES[folder]
    return 10 + DEFECT_FOLDERS[category].index(folder.split("/", 1)[1])


def rng_for(seed: int, category: str, *keys: int) -> np.random.Generator:
    """The generator of one image (or one category-wide fixture when ``keys`` is (0,))."""
    return np.random.default_rng([seed, zlib.crc32(category.encode()), *keys])


def defects_config(category: str) -> list[dict]:
    """The ``defects_config.json`` list of ``category``."""
    return [
        {
            "defect_name": name,
            "pixel_value": value,
            "saturation_threshold": threshold,
            "relative_saturation": relative,
        }
        for name, value, threshold, relative in DEFECT_CONFIGS[category]
    ]


def region_plan(category: str, folder: str, index: int, rng: np.random.Generator) -> list[str]:
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


_NAME_RE = re.compile(r"^(\d{4})\.png$")


def check_existing(out: Path, category: str, spec: ScaleSpec | AutoviScale) -> None:
    """Refuse to write into a category folder holding files this generator would not write.

    Files of an earlier (possibly interrupted) run at the same scale are fine: they are
    overwritten. Anything else, such as the real AutoVI data or a larger scale, raises
    `ConfigError` before a single file is written.
    """
    root = out / category
    if not root.exists():
        return
    limits = spec.counts(category)
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
                f"{limits['train/good']} train images): write to an empty folder or delete {root}"
            )
