"""The three ways a data root may keep its categories, and one reader for all of them.

Under a data root every sub-folder whose name follows `NAME_RULE` is a category, laid out
as one of:

- autovi: `<cat>/train/good/`, `<cat>/test/<type>/`, `<cat>/ground_truth/<type>/<id>/0000.png`
  and `<cat>/defects_config.json` (the AutoVI release; `data.autovi`);
- mvtec: `<cat>/train/good/`, `<cat>/test/<type>/`, `<cat>/ground_truth/<type>/<stem>_mask.png`
  (the MVTec AD layout, also VisA's as converted; no defects_config.json);
- folder: `<cat>/good/` training images, optional `<cat>/test/good/` and
  `<cat>/test/<any name>/` defective images, optional masks as in mvtec.

The `layout` setting forces one of them; `auto` reads each category's own: autovi when it
has a defects_config.json, else mvtec when it has train/, else folder when it has good/.
Categories are listed in sorted name order. A category's size is its first training
image's; images of another size are resized to it (a warning names them), so that every
image of a category gives the same patch grid. Test images and masks are optional in the
mvtec and folder layouts: without test images a run builds the model and its thresholds
and has nothing to evaluate; defective images without masks give image-level figures only.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from fedpatch_app.data.autovi import DEFECTS_CONFIG, Category, DefectSpec, TestSample
from fedpatch_app.data.autovi_files import GOOD
from fedpatch_app.errors import DataError

log = logging.getLogger(__name__)

#: The layouts a data root may have (`auto` detects each category's).
LAYOUTS: tuple[str, ...] = ("autovi", "mvtec", "folder")
#: Which folder names are categories (they name bank files, report sections and URLs).
NAME_RULE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
NAME_RULE_TEXT = (
    "letters, digits, '_', '-' and '.', starting with a letter or digit, at most 64 characters"
)
#: Largest number of defect folders of one category (each gets a pixel value 1..255).
MAX_DEFECT_TYPES = 255
#: Warnings about a category's data already given by this process (a run lists a
#: category several times; the same facts are told once).
_TOLD: set[str] = set()


def _tell_once(message: str, *args: object) -> None:
    text = message % args
    if text not in _TOLD:
        _TOLD.add(text)
        log.warning("%s", text)


def check_name(name: str, where: str = "category") -> str:
    """`name` if it is a valid category name, else `DataError` stating the rule."""
    if not NAME_RULE.match(name):
        raise DataError(f"{where} name {name!r} is not allowed: use {NAME_RULE_TEXT}")
    return name


def category_layout(folder: Path) -> str | None:
    """The layout of one category folder, or None if it is none of them."""
    for candidate in (folder, folder / folder.name):
        if (candidate / "train").is_dir():
            return "autovi" if (candidate / DEFECTS_CONFIG).is_file() else "mvtec"
    if (folder / GOOD).is_dir():
        return "folder"
    return None


def _check_layout(layout: str) -> str:
    if layout != "auto" and layout not in LAYOUTS:
        raise DataError(f"layout {layout!r} is not one of auto, {', '.join(LAYOUTS)}")
    return layout


def _fits(folder: Path, layout: str) -> bool:
    found = category_layout(folder)
    if found is None:
        return False
    if layout in ("auto", found):
        return True
    # autovi and mvtec share train/: a forced layout reads either tree its way.
    return layout in ("autovi", "mvtec") and found in ("autovi", "mvtec")


def available_categories(root: str | Path, layout: str = "auto") -> list[str]:
    """The categories under `root` of `layout` (any with `auto`), sorted by name. Each
    folder passed over is named in a warning when some category is found (when none is,
    the caller's error says what a category looks like)."""
    root = Path(root)
    _check_layout(layout)
    if not root.is_dir():
        raise DataError(f"data root {root} does not exist or is not a folder")
    names, skipped = [], []
    for entry in sorted(root.iterdir()):
        if not entry.is_dir() or entry.name.startswith("."):
            continue
        if not _fits(entry, layout):
            what = "a category" if layout == "auto" else f"a {layout}-layout category"
            skipped.append(f"skipping folder {entry} (not {what}: {expected_tree(entry)})")
        elif not NAME_RULE.match(entry.name):
            skipped.append(f"skipping category folder {entry}: names use {NAME_RULE_TEXT}")
        else:
            names.append(entry.name)
    for message in skipped if names else ():
        _tell_once("%s", message)
    return names


def expected_tree(folder: Path) -> str:
    return f"expected {folder}/train/good/ (autovi, mvtec) or {folder}/good/ (folder)"


def resolve_layout(root: str | Path, name: str, layout: str = "auto") -> str:
    """The layout category `name` is read with: `layout`, or its own with `auto`."""
    folder = Path(root) / check_name(name)
    if not folder.is_dir():
        raise DataError(f"category {name} not found under {root} (no folder {folder})")
    found = category_layout(folder)
    if _check_layout(layout) != "auto":
        if not _fits(folder, layout):
            raise DataError(
                f"category {name}: {folder} is not in the {layout} layout; {expected_tree(folder)}"
            )
        return layout
    if found is None:
        raise DataError(f"category {name}: {folder} is in no known layout; {expected_tree(folder)}")
    return found


def load_category(root: str | Path, name: str, layout: str = "auto") -> Category:
    """List one category in its layout (no pixel is decoded; see the module doc)."""
    from fedpatch_app.data import autovi

    lay = resolve_layout(root, name, layout)
    if lay == "autovi":
        return autovi.load_category(root, name)
    folder = Path(root) / name
    if lay == "mvtec" and not (folder / "train").is_dir():
        folder = folder / name  # the nested copy some archives unpack to
    train_dir = folder / "train" / GOOD if lay == "mvtec" else folder / GOOD
    return _load_tree(name, folder, train_dir, lay)


def _load_tree(name: str, folder: Path, train_dir: Path, layout: str) -> Category:
    from fedpatch_app.data.images import image_size, list_images

    if not train_dir.is_dir():
        raise DataError(f"category {name}: missing training folder {train_dir}")
    train = tuple(list_images(train_dir))
    if not train:
        raise DataError(f"category {name}: no image in {train_dir}")
    samples = _test_samples(name, folder)
    size = image_size(train[0])
    _note_sizes(name, [*train, *(s.path for s in samples)], size)
    types = sorted({s.defect for s in samples if not s.is_good})
    if len(types) > MAX_DEFECT_TYPES:
        raise DataError(f"category {name}: more than {MAX_DEFECT_TYPES} defect folders in test/")
    defects = {t: DefectSpec(t, i + 1, 1.0, True) for i, t in enumerate(types)}
    _note_masks(name, folder, samples)
    log.debug(
        "category %s (%s layout) at %s: %d train, %d test images",
        name,
        layout,
        folder,
        len(train),
        len(samples),
    )
    return Category(name, folder, size, train, tuple(samples), defects, layout)


def _test_samples(name: str, folder: Path) -> list[TestSample]:
    from fedpatch_app.data.images import list_images
    from fedpatch_app.data.masks import find_mask

    test_dir = folder / "test"
    if not test_dir.is_dir():
        return []
    samples = []
    for entry in sorted(test_dir.iterdir()):
        if not entry.is_dir():
            log.warning("skipping %s (test/ holds one folder per kind of image)", entry)
            continue
        if entry.name.startswith("."):
            log.warning("skipping hidden folder %s", entry)
            continue
        for path in list_images(entry):
            mask = None
            if entry.name != GOOD:
                mask = find_mask(folder / "ground_truth" / entry.name, path.stem)
            masks = (mask,) if mask is not None else ()
            samples.append(TestSample(name, entry.name, path.stem, path, masks))
    samples.sort(key=lambda s: (s.defect, s.image_id))
    return samples


def _note_sizes(name: str, paths: list[Path], size: tuple[int, int]) -> None:
    from fedpatch_app.data.images import image_size

    other = [p for p in paths if image_size(p) != size]
    if other:
        shown = ", ".join(str(p) for p in other[:5]) + (" ..." if len(other) > 5 else "")
        _tell_once(
            "category %s: %d image(s) are not %dx%d like its first training image and are "
            "resized to it: %s",
            name,
            len(other),
            size[0],
            size[1],
            shown,
        )


def _note_masks(name: str, folder: Path, samples: list[TestSample]) -> None:
    defective = [s for s in samples if not s.is_good]
    missing = [s for s in defective if not s.mask_paths]
    if defective and missing:
        _tell_once(
            "category %s: %d of %d defective test images have no mask under %s (e.g. %s): "
            "image-level figures only, AUC-sPRO not available",
            name,
            len(missing),
            len(defective),
            folder / "ground_truth",
            missing[0].path,
        )


def category_facts(
    root: str | Path, name: str, layout: str = "auto"
) -> tuple[tuple[int, int], str]:
    """(size, layout) of a category, from its first training image's header alone."""
    from fedpatch_app.data.autovi import find_category_root
    from fedpatch_app.data.images import image_size, is_image_file

    lay = resolve_layout(root, name, layout)
    folder = Path(root) / name
    if lay == "folder":
        train_dir = folder / GOOD
    else:
        train_dir = (find_category_root(root, name) or folder) / "train" / GOOD
    first = next((p for p in sorted(train_dir.glob("*")) if is_image_file(p)), None)
    if first is None:
        raise DataError(f"category {name}: no image in {train_dir}")
    return image_size(first), lay
