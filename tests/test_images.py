"""The one image loader: formats, bit depths, channels, EXIF orientation, skipped files."""

from __future__ import annotations

import io
import logging
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image, ImageOps

from fedpatch_app.data.images import decode_image, image_size, list_images, read_image, to_uint8
from fedpatch_app.errors import DataError

#: 16-bit values whose 8-bit twins a clipping or high-byte reader gets wrong.
VALUES16 = np.array([0, 128, 255, 256, 383, 384, 32896, 40000, 65279, 65535], dtype=np.uint16)


def twin(values: np.ndarray) -> np.ndarray:
    """The 8-bit twin of 16-bit values: round(v / 257)."""
    return np.array([round(int(v) / 257) for v in values.ravel()], dtype=np.uint8).reshape(
        values.shape
    )


def grey16() -> np.ndarray:
    return np.resize(VALUES16, (6, 10)).astype(np.uint16)


def rgb16() -> np.ndarray:
    return np.stack([grey16(), grey16()[::-1], 65535 - grey16()], axis=2)


def png16_rgb(arr: np.ndarray) -> bytes:
    """A 16-bit RGB PNG (Pillow cannot write one), with filter 0 rows."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    h, w, _ = arr.shape
    rows = b"".join(b"\x00" + arr[y].astype(">u2").tobytes() for y in range(h))
    header = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def test_16bit_round_to_their_8bit_twins() -> None:
    assert to_uint8(VALUES16).tolist() == twin(VALUES16).tolist()
    assert to_uint8(np.array([255, 65535])).tolist() == [1, 255]  # not clipped, not >> 8


def test_16bit_grey_png_is_scaled_not_clipped(tmp_path: Path) -> None:
    path = tmp_path / "grey16.png"
    Image.fromarray(grey16()).save(path)
    assert Image.open(path).mode == "I;16"
    got = read_image(path)
    assert got.dtype == np.uint8 and got.shape == (6, 10, 3)
    assert np.array_equal(got, np.repeat(twin(grey16())[..., None], 3, axis=2))


def test_16bit_rgb_png_and_tiff_match_their_twins(tmp_path: Path) -> None:
    (tmp_path / "rgb16.png").write_bytes(png16_rgb(rgb16()))
    tifffile.imwrite(tmp_path / "rgb16.tif", rgb16(), photometric="rgb")
    tifffile.imwrite(tmp_path / "grey16.tiff", grey16())
    for name in ("rgb16.png", "rgb16.tif"):
        assert np.array_equal(read_image(tmp_path / name), twin(rgb16())), name
    grey = read_image(tmp_path / "grey16.tiff")
    assert np.array_equal(grey[..., 1], twin(grey16()))


def test_8bit_modes_and_formats_read_as_pillow_shows_them(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (9, 7, 3), dtype=np.uint8)
    rgba = np.concatenate([rgb, np.full((9, 7, 1), 7, np.uint8)], axis=2)
    images = {
        "grey.png": Image.fromarray(rgb[..., 0]),
        "rgba.png": Image.fromarray(rgba),
        "palette.png": Image.fromarray(rgb).convert("P"),
        "la.png": Image.fromarray(rgba[..., :2].copy(), "LA"),
        "rgb.bmp": Image.fromarray(rgb),
        "rgb.tiff": Image.fromarray(rgb),
    }
    for name, img in images.items():
        img.save(tmp_path / name)
        expected = np.asarray(Image.open(tmp_path / name).convert("RGB"))
        assert np.array_equal(read_image(tmp_path / name), expected), name
    assert np.array_equal(read_image(tmp_path / "rgba.png"), rgb)  # alpha dropped


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    img = Image.fromarray(rng.integers(0, 256, (30, 50, 3), dtype=np.uint8))
    for orientation in range(1, 9):
        exif = Image.Exif()
        exif[0x0112] = orientation
        path = tmp_path / f"o{orientation}.jpg"
        img.save(path, quality=95, exif=exif.tobytes())
        shown = np.asarray(ImageOps.exif_transpose(Image.open(path)).convert("RGB"))
        got = read_image(path)
        assert np.array_equal(got, shown), orientation
        assert image_size(path) == (got.shape[1], got.shape[0])
    assert image_size(tmp_path / "o6.jpg") == (30, 50)


def test_uploads_decode_as_files_do(tmp_path: Path) -> None:
    data = png16_rgb(rgb16())
    (tmp_path / "a.png").write_bytes(data)
    assert np.array_equal(decode_image(data, "upload"), read_image(tmp_path / "a.png"))
    with pytest.raises(DataError, match="cannot read upload"):
        decode_image(b"not an image", "upload")
    buf = io.BytesIO()
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(buf, "GIF")
    with pytest.raises(DataError, match="GIF file: PNG, JPEG, BMP or TIFF expected"):
        decode_image(buf.getvalue(), "upload")


def test_every_skipped_file_is_named(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    for name in ("0000.png", "0001.JPG", "0002.tif", "0003.bmp"):
        Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / name)
    (tmp_path / "._0000.png").write_bytes(b"\0\0")
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "sub").mkdir()
    with caplog.at_level(logging.WARNING):
        found = list_images(tmp_path)
    assert [p.name for p in found] == ["0000.png", "0001.JPG", "0002.tif", "0003.bmp"]
    for skipped in ("._0000.png", "notes.txt", "sub"):
        assert any(skipped in r.getMessage() for r in caplog.records), skipped
