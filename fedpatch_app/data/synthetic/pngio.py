"""PNG files as the synthetic data needs them: 8-bit RGB images and AutoVI-format masks.

A plain PNG writer: the "Up" row filter (each row minus the one above) and deflate's
run-length strategy. Measured on 1000x750 images, about twice as fast as unfiltered
level-1 deflate and 30% smaller for photographs with sensor noise, 3 to 4 times faster
for drawn scenes; the bytes depend only on the pixels.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def save_png(arr: np.ndarray, path: Path) -> None:
    """Write an (h, w, 3) uint8 array as an 8-bit RGB PNG."""
    h, w, _ = arr.shape
    raw = arr.reshape(h, 3 * w)
    rows = np.empty((h, 1 + 3 * w), dtype=np.uint8)
    rows[:, 0] = 2  # filter type "Up" for every row (the first row's "above" is zero)
    rows[0, 1:] = raw[0]
    np.subtract(raw[1:], raw[:-1], out=rows[1:, 1:])  # modulo 256, as the filter wants
    deflate = zlib.compressobj(1, zlib.DEFLATED, 15, 8, zlib.Z_RLE)
    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    data = b"".join(
        (
            b"\x89PNG\r\n\x1a\n",
            _png_chunk(b"IHDR", header),
            _png_chunk(b"IDAT", deflate.compress(rows.tobytes()) + deflate.flush()),
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
