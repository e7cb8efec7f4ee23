"""Views of a data root made of links (no image is copied)."""

from __future__ import annotations

import logging
import math
import shutil
from pathlib import Path

from fedpatch_app.data.layouts import available_categories

log = logging.getLogger(__name__)


def _link_training_share(src: Path, dst: Path, fraction: float) -> None:
    for entry in sorted(src.iterdir()):
        if entry.name != "train":
            (dst / entry.name).symlink_to(entry.resolve())
    for folder in sorted(p for p in (src / "train").iterdir() if p.is_dir()):
        images = sorted(p for p in folder.iterdir() if p.is_file())
        keep = images[: max(1, math.ceil(fraction * len(images)))]
        (dst / "train" / folder.name).mkdir(parents=True)
        for image in keep:
            (dst / "train" / folder.name / image.name).symlink_to(image.resolve())


def unequal_view(data_root: Path, view: Path, fraction: float) -> tuple[Path, str]:
    """A data root of links where the LAST available category keeps only `fraction` of
    its training images (the first ones by name); the others are linked whole.
    Returns the view and the reduced category."""
    cats = available_categories(data_root)
    smallest = cats[-1]
    if view.exists():
        shutil.rmtree(view)
    view.mkdir(parents=True)
    for entry in sorted(data_root.iterdir()):
        if entry.name != smallest:
            (view / entry.name).symlink_to(entry.resolve())
    (view / smallest).mkdir()
    _link_training_share(data_root / smallest, view / smallest, fraction)
    log.info("data view %s: %s keeps %.0f%% of its training images", view, smallest, 100 * fraction)
    return view, smallest
