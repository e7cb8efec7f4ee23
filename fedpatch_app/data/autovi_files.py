"""Files of an AutoVI category on disk: listing PNGs, reading their sizes from the headers
and checking that images, masks and ground-truth folders fit together. `autovi` uses
these to list a category; every problem is a `DataError` naming the file."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

from PIL import Image
from tqdm import tqdm

from fedpatch_app.data.images import image_size
from fedpatch_app.errors import DataError

log = logging.getLogger(__name__)

#: Name of the test and train folder of defect-free images.
GOOD = "good"

PIL_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


def is_png(path: Path) -> bool:
    return path.suffix.lower() == ".png"


def visible(entries: Iterable[Path]) -> list[Path]:
    return sorted(p for p in entries if not p.name.startswith("."))


def list_pngs(folder: Path) -> list[Path]:
    """Sorted PNG files of a folder; other (non-hidden) entries are logged and skipped."""
    pngs = []
    for p in visible(folder.iterdir()):
        if p.is_file() and is_png(p):
            pngs.append(p)
        else:
            log.warning("skipping %s (not a PNG image)", p)
    return pngs


def require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise DataError(f"missing {what}: {path}")
    return path


def check_sizes(name: str, images: list[Path], masks: list[Path], size: tuple[int, int]) -> None:
    """Every image, and every ground-truth mask (so that a bad one is found before any
    feature is extracted), has the category's size, read from the PNG headers."""
    masks = set(masks)
    paths = [*images, *sorted(masks)]
    for path in tqdm(paths, desc=f"{name}: image headers", unit="img", disable=None, leave=False):
        found = image_size(path)
        if found != size:
            kind = "ground-truth mask" if path in masks else "image"
            raise DataError(
                f"{kind} {path} is {found[0]}x{found[1]}, but the first train image of "
                f"{name} is {size[0]}x{size[1]}"
            )


def check_orphan_ground_truth(gt_root: Path, test_dir: Path, images: set[tuple[str, str]]) -> None:
    """Every ground-truth folder must belong to a defective test image."""
    if not gt_root.is_dir():
        return
    for defect_dir in visible(gt_root.iterdir()):
        if not defect_dir.is_dir():
            log.warning("skipping %s (ground_truth/ holds one folder per defect type)", defect_dir)
            continue
        if defect_dir.name == GOOD:
            raise DataError(f"ground truth {defect_dir}: good test images have no ground truth")
        for entry in visible(defect_dir.iterdir()):
            if entry.is_dir():
                if (defect_dir.name, entry.name) not in images:
                    raise DataError(
                        f"ground truth {entry} has no test image "
                        f"{test_dir / defect_dir.name / (entry.name + '.png')}"
                    )
            elif is_png(entry):
                raise DataError(
                    f"ground-truth mask {entry} is not in a per-image folder "
                    f"(AutoVI layout: ground_truth/<defect>/<image_id>/0000.png)"
                )
            else:
                log.warning("skipping %s (not a ground-truth folder)", entry)
