"""PNG files as the synthetic data needs them: 8-bit RGB images and AutoVI-format masks.

A plain PNG writer (no row filters, fast deflate): about three times faster than Pillow's
adaptive filtering on these images, and the bytes depend only on the pixels.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def save_png(arr: np.ndarray, path: Path) -> None:
    """Write an (h, w, 3) uint8 array as an 8-bit RGB PNG.

    A plain PNG writer (no row filters, fast deflate): about three times faster than
    Pillow's adaptive filtering on these images, and the bytes depend only on the pixels.
    """
    h, w, _ = arr.shape
    rows = np.empty((h, 1 + 3 * w), dtype=np.uint8)
    rows[:, 0] = 0  # filter type "None" for every row
    rows[:, 1:] = arr.reshape(h, 3 * w)
    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    data = b"".join(
        (
            b"\x89PNG\r\n\x1a\n",
            _png_chunk(b"IHDR", header),
            _png_chunk(b"IDAT", zlib.compress(rows.tobytes(), 1)),
            _png_chunk(b"IEND", b""),
        )
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def write_mask(region: np.ndarray, value: int, path: Path) -> None:
    """One ground-truth region as AutoVI writes it: RGB, ``value`` in every channel."""
    arr = np.zeros((*region.shape, 3), dtype=np.uint8)
    arr[region] = value
    save_png(arr, path)
