"""The size rule shared by `fedpatch serve` and `fedpatch predict`: refused from the
header alone, before any decoding, naming the limit."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image

from fedpatch_app.errors import DataError
from fedpatch_app.inspection.image_limits import ImageSizeError, check_image_size
from fedpatch_app.inspection.predictor import checked_size

SQUARE = (400, 400)
WIDE = (1000, 750)


@pytest.mark.parametrize(
    ("size", "native"),
    [
        ((400, 400), SQUARE),
        ((800, 800), SQUARE),
        ((200, 160), SQUARE),
        ((400, 201), SQUARE),
        ((1000, 750), WIDE),
        ((2000, 1500), WIDE),
        ((100, 75), WIDE),
        ((1000, 1000), WIDE),
    ],
)
def test_sizes_within_the_rule_pass(size: tuple[int, int], native: tuple[int, int]) -> None:
    check_image_size(size, native)


@pytest.mark.parametrize(
    ("size", "native", "limit", "words"),
    [
        ((4000, 1), SQUARE, "aspect", "aspect-ratio limit"),
        ((1000, 1), SQUARE, "aspect", "aspect-ratio limit"),
        ((400, 199), SQUARE, "aspect", "aspect-ratio limit"),
        ((801, 801), SQUARE, "pixels", "4x the category's 400x400"),
        ((6300, 6300), SQUARE, "pixels", "4x the category's 400x400"),
        ((2001, 1500), WIDE, "pixels", "4x the category's 1000x750"),
        ((0, 10), SQUARE, "pixels", "no pixels"),
    ],
)
def test_sizes_outside_the_rule_are_refused_naming_the_limit(
    size: tuple[int, int], native: tuple[int, int], limit: str, words: str
) -> None:
    with pytest.raises(ImageSizeError, match=words) as caught:
        check_image_size(size, native)
    assert caught.value.limit == limit


def _png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG whose header claims `width` x `height` and whose pixel data is a few bytes:
    decoding it would fail or cost gigabytes; the rule must refuse it from the header."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    body = chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)


def test_predict_refuses_from_the_header(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.png"
    _png_header_only(bomb, 6300, 6300)
    with pytest.raises(DataError, match=r"bomb\.png.*6300x6300.*above the limit"):
        checked_size(bomb, SQUARE)
    line = tmp_path / "line.png"
    Image.new("L", (4000, 1)).save(line)
    with pytest.raises(DataError, match=r"line\.png.*aspect-ratio limit"):
        checked_size(line, SQUARE)
    fine = tmp_path / "fine.png"
    Image.new("L", (300, 300)).save(fine)
    assert checked_size(fine, SQUARE) == (300, 300)


def test_the_loader_resizes_any_size_as_the_native_one(tmp_path: Path) -> None:
    from fedpatch_app.model.backbones.images import ImageFolderDataset

    small = tmp_path / "small.png"
    Image.new("RGB", (200, 160)).save(small)
    as_is, _ = ImageFolderDataset([small], 64)[0]
    native, _ = ImageFolderDataset([small], 64, native_size=(400, 400))[0]
    assert tuple(as_is.shape) == (3, 64, 80) and tuple(native.shape) == (3, 64, 64)
