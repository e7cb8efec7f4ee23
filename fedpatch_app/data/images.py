"""One image loader for training, `fedpatch predict` and the service.

Accepted: PNG, JPEG, BMP and TIFF files, 8- or 16-bit, grey, grey+alpha, RGB, RGBA or
palette. Every image becomes uint8 RGB (H, W, 3):

- 16-bit samples are scaled, never clipped: a 16-bit value v becomes round(v / 257), the
  8-bit twin of v (65535 -> 255, 32896 -> 128);
- grey images are repeated over the three channels; alpha is dropped (the part is what
  the camera saw, not what a mask made of it); palette images are looked up;
- the EXIF orientation tag (phone and some industrial cameras write it) is applied, so
  the pixels are the way a viewer shows them; `image_size` reports that size too.

Files that are not images of these formats are skipped by `list_images`, each named in a
warning (hidden files such as `._0000.png` left by macOS included).
"""

from __future__ import annotations

import io
import logging
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from fedpatch_app.errors import DataError

log = logging.getLogger(__name__)

#: File suffixes read as images (lower case).
IMAGE_SUFFIXES: frozenset[str] = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"})
#: Pillow format names of the accepted files, each with the suffix a copy is kept under
#: (the service checks uploads against these).
FORMAT_SUFFIXES: dict[str, str] = {
    "PNG": ".png",
    "JPEG": ".jpg",
    "MPO": ".jpg",
    "BMP": ".bmp",
    "TIFF": ".tif",
}
IMAGE_FORMATS: frozenset[str] = frozenset(FORMAT_SUFFIXES)
#: What a reader may raise on a bad file.
READ_ERRORS = (
    OSError,
    SyntaxError,
    ValueError,
    UnidentifiedImageError,
    Image.DecompressionBombError,
)

_ORIENTATION = 0x0112
#: Pillow modes of 16-bit single-channel images.
_GREY16 = frozenset({"I;16", "I;16B", "I;16L", "I;16N"})


def is_image_file(path: Path) -> bool:
    """A visible file with one of `IMAGE_SUFFIXES`."""
    return path.is_file() and not path.name.startswith(".") and _suffix_ok(path)


def _suffix_ok(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def list_images(folder: Path) -> list[Path]:
    """Sorted image files of a folder; every other entry is named in a warning."""
    found = []
    for entry in sorted(Path(folder).iterdir()):
        if is_image_file(entry):
            found.append(entry)
        elif entry.is_dir():
            log.warning("skipping folder %s (expected image files here)", entry)
        elif entry.name.startswith("."):
            log.warning("skipping hidden file %s (not read as an image)", entry)
        else:
            log.warning(
                "skipping %s (not an image: expected %s)",
                entry,
                ", ".join(sorted(s.lstrip(".") for s in IMAGE_SUFFIXES)),
            )
    return found


def _orientation(img: Image.Image) -> int:
    """The EXIF orientation (1-8) from the header alone (a PNG's eXIf chunk counts when it
    comes before the pixels, as writers put it; Pillow would decode the image to look for
    one after them)."""
    if img.format == "PNG" and "exif" not in img.info:
        return 1
    try:
        value = img.getexif().get(_ORIENTATION, 1)
    except READ_ERRORS:
        return 1
    return int(value) if isinstance(value, int) and 1 <= value <= 8 else 1


def shown_size(img: Image.Image) -> tuple[int, int]:
    """(width, height) of an open image as shown (EXIF orientation applied)."""
    width, height = int(img.width), int(img.height)
    return (height, width) if _orientation(img) >= 5 else (width, height)


def image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) as shown (EXIF orientation applied), from the header only."""
    path = Path(path)
    try:
        with Image.open(path) as img:
            _check_format(img, str(path))
            return shown_size(img)
    except FileNotFoundError as exc:
        raise DataError(f"image {path} does not exist") from exc
    except READ_ERRORS as exc:
        raise DataError(f"cannot read image {path}: {exc}") from exc


def _check_format(img: Image.Image, name: str) -> None:
    if img.format not in IMAGE_FORMATS:
        raise DataError(
            f"image {name} is a {img.format or 'unknown'} file: PNG, JPEG, BMP or TIFF expected"
        )


def to_uint8(values: np.ndarray) -> np.ndarray:
    """16-bit samples to 8 bits: round(v / 257), exact (v / 257 is never a half)."""
    v = np.asarray(values).astype(np.uint32)
    return ((2 * v + 257) // 514).astype(np.uint8)


def _orient(arr: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation (1-8) to an (H, W, C) array."""
    if orientation in (5, 6, 7, 8):
        arr = arr.transpose(1, 0, 2)  # 5: transpose
        arr = {5: arr, 6: arr[:, ::-1], 7: arr[::-1, ::-1], 8: arr[::-1]}[orientation]
    else:
        arr = {1: arr, 2: arr[:, ::-1], 3: arr[::-1, ::-1], 4: arr[::-1]}[orientation]
    return np.ascontiguousarray(arr)


def _is_16bit(img: Image.Image) -> bool:
    if img.mode in _GREY16:
        return True
    rawmode = img.tile[0][3] if img.tile else ""
    rawmode = rawmode[0] if isinstance(rawmode, tuple) else rawmode
    return isinstance(rawmode, str) and ";16" in rawmode


def _decode_16bit(img: Image.Image, data: Callable[[], bytes], name: str) -> np.ndarray:
    """(H, W, C) uint16 of a 16-bit PNG or TIFF (Pillow would keep only the high byte)."""
    if img.format == "PNG":
        import torch

        with warnings.catch_warnings():
            # torchvision (pinned in pyproject) marks its decoders as deprecated.
            warnings.simplefilter("ignore", DeprecationWarning)
            from torchvision.io import ImageReadMode, decode_png

            raw = torch.frombuffer(bytearray(data()), dtype=torch.uint8)
            arr = decode_png(raw, mode=ImageReadMode.UNCHANGED).permute(1, 2, 0)
        return arr.numpy().astype(np.uint16)
    if img.format == "TIFF":
        import tifffile

        arr = np.asarray(tifffile.imread(io.BytesIO(data()), key=0))
        return arr[..., None] if arr.ndim == 2 else arr
    raise DataError(f"image {name}: 16-bit {img.format} images are not supported")


def _pixels(img: Image.Image, data: Callable[[], bytes], name: str) -> np.ndarray:
    """uint8 RGB (H, W, 3) of an open image, before orientation."""
    if img.mode == "I":
        arr = np.asarray(img)
        if arr.size and (arr.min() < 0 or arr.max() > 65535):
            raise DataError(f"image {name}: 32-bit samples outside 0..65535 are not supported")
        return np.repeat(to_uint8(arr)[..., None], 3, axis=2)
    if img.mode == "F":
        raise DataError(f"image {name}: floating-point images are not supported")
    if _is_16bit(img):
        arr = _decode_16bit(img, data, name)
        if arr.dtype != np.uint16:
            raise DataError(f"image {name}: unexpected sample type {arr.dtype}")
        channels = arr.shape[2]
        grey = channels <= 2
        rgb = np.repeat(arr[..., :1], 3, axis=2) if grey else arr[..., :3]
        return to_uint8(rgb)
    return np.asarray(img.convert("RGB"), dtype=np.uint8)


def _decode(img: Image.Image, data: Callable[[], bytes], name: str) -> np.ndarray:
    _check_format(img, name)
    orientation = _orientation(img)
    return _orient(_pixels(img, data, name), orientation)


def read_image(path: str | Path) -> np.ndarray:
    """Decode an image file as uint8 RGB (H, W, 3); `DataError` naming it if unreadable."""
    path = Path(path)
    try:
        with Image.open(path) as img:
            return _decode(img, path.read_bytes, str(path))
    except FileNotFoundError as exc:
        raise DataError(f"image {path} does not exist") from exc
    except READ_ERRORS as exc:
        raise DataError(f"cannot read image {path}: {exc}") from exc


def decode_image(data: bytes, name: str = "the image") -> np.ndarray:
    """Decode image bytes (an upload) exactly as `read_image` decodes a file."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            return _decode(img, lambda: data, name)
    except READ_ERRORS as exc:
        raise DataError(f"cannot read {name}: {exc}") from exc


def resize_rgb(arr: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """An RGB array resized to `size` (width, height), bilinear; unchanged if it fits."""
    if (arr.shape[1], arr.shape[0]) == tuple(size):
        return arr
    img = Image.fromarray(arr).resize(tuple(size), Image.Resampling.BILINEAR)
    return np.asarray(img, dtype=np.uint8)
