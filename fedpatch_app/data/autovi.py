"""Reader for the AutoVI dataset in its official layout (MVTec LOCO style).

See docs/phases/phase-1-data-preparation/README.md for the layout this module reads.

Reading is lazy: `load_category` lists the files, reads `defects_config.json` and the
PNG headers (image sizes, without decoding any pixel data) and checks that the layout is
complete and consistent. Pixels are read on demand by `read_image` and
`Category.load_regions`. Every problem with the data on disk is reported as a
`DataError` that names the file or folder at fault.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from fedpatch_app.data.autovi_files import (
    GOOD,
    PIL_ERRORS,
    check_orphan_ground_truth,
    check_sizes,
    list_pngs,
    require_dir,
    visible,
)
from fedpatch_app.data.autovi_release import (  # noqa: F401  (the release's facts)
    CATEGORIES,
    DEFECT_FOLDERS,
    NATIVE_SIZES,
)
from fedpatch_app.data.images import image_size, list_images
from fedpatch_app.errors import DataError

log = logging.getLogger(__name__)

#: The per-category file describing the defect types.
DEFECTS_CONFIG = "defects_config.json"

#: Test folders that gather images showing several defect types at once. Their
#: ground-truth regions carry the pixel_value of the defect type each region shows (any
#: entry of defects_config.json), which is how the official evaluator reads them: it maps a
#: region to its defect by pixel value, whatever the folder. A folder of this name need not
#: be listed in defects_config.json.
MULTI_DEFECT_FOLDERS: frozenset[str] = frozenset({"multiple"})

#: Channel layouts accepted for ground-truth PNGs (the official evaluator reads channels 0-2).
MASK_MODES: frozenset[str] = frozenset({"RGB", "RGBA"})

_CONFIG_KEYS = ("defect_name", "pixel_value", "saturation_threshold", "relative_saturation")


@dataclass(frozen=True)
class DefectSpec:
    """One entry of a category's `defects_config.json`."""

    name: str
    pixel_value: int
    saturation_threshold: float | int
    relative_saturation: bool

    def saturation_area(self, region_area: int) -> int:
        """Pixels of a region that must be covered for full sPRO credit.

        `floor(t * area)` if the threshold is relative, else `min(t, area)`.
        """
        area = int(region_area)
        if self.relative_saturation:
            return int(math.floor(self.saturation_threshold * area))
        return int(min(int(self.saturation_threshold), area))

    def to_dict(self) -> dict[str, Any]:
        """The entry as written in `defects_config.json`."""
        return {
            "defect_name": self.name,
            "pixel_value": self.pixel_value,
            "saturation_threshold": self.saturation_threshold,
            "relative_saturation": self.relative_saturation,
        }


@dataclass(frozen=True, eq=False)
class Region:
    """One ground-truth region (one ground-truth PNG) at native resolution."""

    mask: np.ndarray  # bool (H, W)
    defect: str  # defects_config.json entry the region's pixel value maps to
    saturation_area: int
    source: Path

    @property
    def area(self) -> int:
        return int(np.count_nonzero(self.mask))


@dataclass(frozen=True)
class TestSample:
    """One test image and the paths of its ground-truth region PNGs (none for good images)."""

    __test__ = False  # not a pytest test class

    category: str
    defect: str
    image_id: str
    path: Path
    mask_paths: tuple[Path, ...] = ()

    @property
    def rel_path(self) -> str:
        """Path relative to the category root, e.g. `test/fastening/0003.png`."""
        return f"test/{self.defect}/{self.path.name}"

    @property
    def is_good(self) -> bool:
        return self.defect == GOOD


@dataclass(frozen=True)
class Category:
    """One AutoVI category as found on disk (file lists only; pixels are read on demand)."""

    name: str
    root: Path  # the folder holding train/, test/, ground_truth/, defects_config.json
    size: tuple[int, int]  # (width, height) of every image
    train: tuple[Path, ...]
    test: tuple[TestSample, ...]
    defects: dict[str, DefectSpec]
    #: How the category is kept on disk: autovi, mvtec or folder (`data.layouts`).
    layout: str = "autovi"

    @property
    def train_rel(self) -> tuple[str, ...]:
        """Train image paths relative to `root`, e.g. `train/good/0000.png`."""
        return tuple(p.relative_to(self.root).as_posix() for p in self.train)

    @property
    def has_masks(self) -> bool:
        """Whether every defective test image has its ground truth (AUC-sPRO needs it)."""
        return all(s.is_good or s.mask_paths for s in self.test)

    @property
    def test_rel(self) -> tuple[str, ...]:
        """Test image paths relative to `root`, in the order of `test`."""
        return tuple(s.rel_path for s in self.test)

    @property
    def defect_types(self) -> tuple[str, ...]:
        """The defect folders present in test/ (sorted, `good` excluded)."""
        return tuple(sorted({s.defect for s in self.test if not s.is_good}))

    @property
    def config_path(self) -> Path:
        return self.root / DEFECTS_CONFIG

    @cached_property
    def _test_by_rel(self) -> dict[str, TestSample]:
        return {s.rel_path: s for s in self.test}

    def find_test(self, rel_path: str) -> TestSample:
        """The test sample with this relative path (`test/<defect>/<id>.png`)."""
        try:
            return self._test_by_rel[rel_path]
        except KeyError:
            raise DataError(
                f"category {self.name}: no test image {rel_path} under {self.root}"
            ) from None

    def allowed_defects(self, folder: str) -> dict[int, DefectSpec]:
        """Pixel value -> defect spec that the masks of a test folder may carry."""
        if folder in MULTI_DEFECT_FOLDERS:
            return {spec.pixel_value: spec for spec in self.defects.values()}
        if folder in self.defects:
            spec = self.defects[folder]
            return {spec.pixel_value: spec}
        raise DataError(
            f"defect folder {self.root / 'test' / folder} missing from {self.config_path}"
        )

    def load_regions(self, sample: TestSample) -> list[Region]:
        """Read and validate the ground-truth regions of one test image (empty if good)."""
        if sample.category != self.name:
            raise DataError(
                f"test image {sample.path} belongs to {sample.category}, not to {self.name}"
            )
        if sample.is_good:
            return []
        if self.layout != "autovi":
            from fedpatch_app.data.masks import binary_regions

            return binary_regions(sample, self.size)
        allowed = self.allowed_defects(sample.defect)
        regions = []
        for mask_path in sample.mask_paths:
            mask, value = read_region_mask(mask_path, self.size)
            spec = allowed.get(value)
            if spec is None:
                if sample.defect in MULTI_DEFECT_FOLDERS:
                    expected = "one of " + ", ".join(
                        f"{v} ({s.name})" for v, s in sorted(allowed.items())
                    )
                else:
                    expected = f"{self.defects[sample.defect].pixel_value}"
                raise DataError(
                    f"ground-truth mask {mask_path} has pixel value {value}, but defect folder "
                    f"{sample.defect} expects {expected} (from {self.config_path})"
                )
            area = int(np.count_nonzero(mask))
            regions.append(Region(mask, spec.name, spec.saturation_area(area), mask_path))
        return regions


# --------------------------------------------------------------------------- reading pixels


def read_image(path: str | Path) -> np.ndarray:
    """Decode an image as uint8 RGB (H, W, 3) (`data.images`); `DataError` naming the file."""
    from fedpatch_app.data.images import read_image as read

    return read(path)


def read_region_mask(
    path: str | Path, size: tuple[int, int] | None = None
) -> tuple[np.ndarray, int]:
    """Decode one ground-truth PNG: (bool mask (H, W) of channel 0 != 0, its pixel value).

    The PNG must be RGB or RGBA, of `size` (width, height) if given, and hold exactly one
    non-zero value, in channel 0 and wherever channels 1-2 are non-zero (as the official
    evaluator requires).
    """
    path = Path(path)
    try:
        with Image.open(path) as im:
            if im.mode not in MASK_MODES:
                raise DataError(
                    f"ground-truth mask {path} has mode {im.mode}; AutoVI masks are RGB or RGBA"
                )
            if size is not None and im.size != tuple(size):
                raise DataError(
                    f"ground-truth mask {path} is {im.size[0]}x{im.size[1]}, "
                    f"but its test image is {size[0]}x{size[1]}"
                )
            arr = np.asarray(im)
    except FileNotFoundError as exc:
        raise DataError(f"ground-truth mask {path} does not exist") from exc
    except PIL_ERRORS as exc:
        raise DataError(f"cannot read ground-truth mask {path}: {exc}") from exc
    rgb = arr[..., :3]
    channel0 = rgb[..., 0]
    mask = channel0 != 0
    if not mask.any():
        raise DataError(f"ground-truth mask {path} is empty (channel 0 has no non-zero pixel)")
    values = np.unique(channel0[mask])
    if values.size != 1:
        raise DataError(
            f"ground-truth mask {path} holds several values {values.tolist()} in channel 0; "
            "each ground-truth PNG must be one region of one defect"
        )
    value = int(values[0])
    if not np.all((rgb == 0) | (rgb == value)):
        raise DataError(
            f"ground-truth mask {path}: channels 1-2 hold values other than 0 and {value}"
        )
    return mask, value


# ------------------------------------------------------------------------ defects_config


def parse_defects_config(data: Any, source: str | Path = DEFECTS_CONFIG) -> dict[str, DefectSpec]:
    """Validate the parsed JSON of a `defects_config.json` (`source` names it in errors)."""
    if not isinstance(data, list):
        raise DataError(
            f"{source}: expected a JSON list of defect entries, got {type(data).__name__}"
        )
    specs: dict[str, DefectSpec] = {}
    by_value: dict[int, str] = {}
    for i, entry in enumerate(data):
        where = f"{source}: entry {i}"
        if not isinstance(entry, dict):
            raise DataError(f"{where}: expected an object, got {type(entry).__name__}")
        missing = [k for k in _CONFIG_KEYS if k not in entry]
        if missing:
            raise DataError(f"{where}: missing key(s) {', '.join(missing)}")
        name = entry["defect_name"]
        if not isinstance(name, str) or not name or name != name.strip() or "/" in name:
            raise DataError(f"{where}: defect_name must be a non-empty folder name, got {name!r}")
        where = f"{source}: defect {name!r}"
        if name == GOOD:
            raise DataError(f"{where}: 'good' is not a defect type")
        if name in specs:
            raise DataError(f"{where}: defect_name listed twice")
        value = entry["pixel_value"]
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 255:
            raise DataError(f"{where}: pixel_value must be an integer in 1..255, got {value!r}")
        if value in by_value:
            raise DataError(f"{where}: pixel_value {value} already used by {by_value[value]!r}")
        relative = entry["relative_saturation"]
        if not isinstance(relative, bool):
            raise DataError(f"{where}: relative_saturation must be true or false, got {relative!r}")
        threshold = entry["saturation_threshold"]
        if relative:
            # The official evaluator requires a JSON float here (1.0, not 1).
            if not isinstance(threshold, float) or not 0.0 < threshold <= 1.0:
                raise DataError(
                    f"{where}: a relative saturation_threshold must be a float in (0, 1], "
                    f"got {threshold!r}"
                )
        elif isinstance(threshold, bool) or not isinstance(threshold, int) or threshold <= 0:
            raise DataError(
                f"{where}: an absolute saturation_threshold must be a positive integer "
                f"(pixels), got {threshold!r}"
            )
        specs[name] = DefectSpec(name, value, threshold, relative)
        by_value[value] = name
    return specs


def read_defects_config(path: str | Path) -> dict[str, DefectSpec]:
    """Read and validate one `defects_config.json`."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path} does not exist (every AutoVI category has one)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise DataError(f"{path} is not valid JSON: {exc}") from exc
    return parse_defects_config(data, path)


def write_defects_config(
    path: str | Path, specs: Iterable[DefectSpec] | Mapping[str, DefectSpec]
) -> None:
    """Write a `defects_config.json` in the official format."""
    items = specs.values() if isinstance(specs, Mapping) else specs
    Path(path).write_text(
        json.dumps([s.to_dict() for s in items], indent=4) + "\n", encoding="utf-8"
    )


# ---------------------------------------------------------------------------- the layout


def find_category_root(root: str | Path, name: str) -> Path | None:
    """The folder holding `train/` of a category: `root/<name>` or `root/<name>/<name>`."""
    base = Path(root) / name
    for candidate in (base, base / name):
        if (candidate / "train").is_dir():
            return candidate
    return None


def available_categories(root: str | Path, layout: str = "auto") -> list[str]:
    """The categories under `root` (names sorted; `data.layouts` for the rules)."""
    from fedpatch_app.data.layouts import available_categories as available

    return available(root, layout)


def load_category(root: str | Path, name: str) -> Category:
    """List one category under `root` and check its layout (no pixel data is decoded).

    Accepts `root/<name>/train` and the zip's `root/<name>/<name>/train`. Every image
    must have the size of the first train image (read from the headers).
    """
    cat_root = _category_root(Path(root), name)
    train_dir = require_dir(cat_root / "train" / GOOD, f"split folder of category {name}")
    test_dir = require_dir(cat_root / "test", f"split folder of category {name}")
    require_dir(test_dir / GOOD, f"test folder of category {name}")
    defects = read_defects_config(cat_root / DEFECTS_CONFIG)

    train = tuple(list_images(train_dir))
    if not train:
        raise DataError(f"category {name}: no image in {train_dir}")
    samples = _test_samples(name, cat_root, defects)
    check_orphan_ground_truth(
        cat_root / "ground_truth", test_dir, {(s.defect, s.image_id) for s in samples}
    )
    size = image_size(train[0])
    masks = [m for s in samples for m in s.mask_paths]
    check_sizes(name, [*train, *(s.path for s in samples)], masks, size)

    log.debug(
        "category %s at %s: %d train, %d test images, defects %s",
        name,
        cat_root,
        len(train),
        len(samples),
        sorted(defects),
    )
    return Category(name, cat_root, size, train, tuple(samples), defects)


def _category_root(root: Path, name: str) -> Path:
    if not root.is_dir():
        raise DataError(f"AutoVI root {root} does not exist or is not a folder")
    cat_root = find_category_root(root, name)
    if cat_root is not None:
        return cat_root
    base = root / name
    if base.is_dir():
        raise DataError(
            f"category {name}: missing split folder {base / 'train'} (nor {base / name / 'train'})"
        )
    raise DataError(f"category {name} not found under {root} (no folder {base})")


def _test_samples(name: str, cat_root: Path, defects: Mapping[str, DefectSpec]) -> list[TestSample]:
    """The test images, one folder per defect type, each defective one with its masks."""
    test_dir = cat_root / "test"
    config_path = cat_root / DEFECTS_CONFIG
    samples: list[TestSample] = []
    for folder in _test_folders(test_dir):
        defect = folder.name
        if defect != GOOD:
            if defect not in defects and defect not in MULTI_DEFECT_FOLDERS:
                raise DataError(f"defect folder {folder} missing from {config_path}")
            if defect in MULTI_DEFECT_FOLDERS and not defects:
                raise DataError(f"defect folder {folder}: {config_path} lists no defect type")
        for path in list_images(folder):
            masks = () if defect == GOOD else _masks_of(cat_root, defect, path)
            samples.append(TestSample(name, defect, path.stem, path, masks))
    samples.sort(key=lambda s: (s.defect, s.image_id))
    return samples


def _test_folders(test_dir: Path) -> list[Path]:
    folders = []
    for entry in visible(test_dir.iterdir()):
        if entry.is_dir():
            folders.append(entry)
        else:
            log.warning("skipping %s (test/ holds one folder per defect type)", entry)
    return folders


def _masks_of(cat_root: Path, defect: str, path: Path) -> tuple[Path, ...]:
    gt_dir = cat_root / "ground_truth" / defect / path.stem
    if not gt_dir.is_dir():
        raise DataError(
            f"defective test image {path} has no ground truth (expected {gt_dir / '0000.png'})"
        )
    masks = tuple(list_pngs(gt_dir))
    if not masks:
        raise DataError(f"ground-truth folder {gt_dir} of test image {path} holds no PNG")
    return masks
