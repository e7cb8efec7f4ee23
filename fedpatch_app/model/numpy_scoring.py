"""PatchCore's scoring after the backbone in numpy: what a line PC without PyTorch runs.

The same operations as the torch path, tested against it (`tests/test_onnx_line.py`):

- `embed`: `model.embedding.embed` (channel pooling, neighbourhood averaging, the
  stride-16 map upsampled onto the stride-8 grid);
- `NearestBank`: `MemoryBank.patch_scores` (exact nearest-neighbour distance to the bank);
- `MapMaker`: `PatchCore.maps_of` (patch grid -> backbone input size, Gaussian
  smoothing, native size). All three steps are linear along each image axis, so each
  axis is one matrix (cached per native size) and a map is ``A @ grid @ B.T``.

The image score is the map's maximum, as in `PatchCore.predict`.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from fedpatch_app.errors import ModelError

#: Bytes of the (query chunk x bank) block of products, reused from chunk to chunk (small
#: enough to stay near the cache: one pass over it per chunk).
BLOCK_BYTES = 16 * 2**20
#: Gaussian smoothing of the anomaly map: sigma 4 px at the reference's 224 px input
#: (the values of `model.patchcore`).
REFERENCE_SIGMA = 4.0
REFERENCE_INPUT = 224


def layer_widths(channels2: int, channels3: int, embed_dim: int) -> tuple[int, int]:
    """How many of the ``embed_dim`` values each map gets (`embedding.layer_widths`)."""
    width2 = min(channels2, embed_dim // 2)
    return width2, min(channels3, embed_dim - width2)


@lru_cache(maxsize=16)
def pooling_matrix(channels: int, size: int) -> np.ndarray:
    """(channels, size) float32: adaptive average pooling of `channels` values to `size`
    (bin i averages channels floor(i C / size) to ceil((i + 1) C / size))."""
    out = np.zeros((channels, size), dtype=np.float32)
    for i in range(size):
        start = (i * channels) // size
        stop = -(-((i + 1) * channels) // size)
        out[start:stop, i] = 1.0 / (stop - start)
    return out


def box_average(x: np.ndarray, size: int, axis: int) -> np.ndarray:
    """Mean over a centred window of `size` along `axis` (stride 1), over the positions
    that exist (avg_pool with count_include_pad=False)."""
    pad = size // 2
    length = x.shape[axis]
    widths = [(0, 0)] * x.ndim
    widths[axis] = (pad, pad)
    padded = np.pad(x, widths)
    total = np.zeros_like(x)
    for shift in range(size):
        total += np.take(padded, np.arange(shift, shift + length), axis=axis)
    index = np.arange(length)
    counts = np.minimum(index + pad, length - 1) - np.maximum(index - pad, 0) + 1
    shape = [1] * x.ndim
    shape[axis] = length
    return total / counts.reshape(shape).astype(np.float32)


@lru_cache(maxsize=64)
def bilinear_matrix(out_size: int, in_size: int) -> np.ndarray:
    """(out_size, in_size) float64: bilinear resampling along one axis with
    ``align_corners=False`` (source ``(i + 0.5) in / out - 0.5``, clamped at 0)."""
    matrix = np.zeros((out_size, in_size), dtype=np.float64)
    scale = in_size / out_size
    for i in range(out_size):
        src = max((i + 0.5) * scale - 0.5, 0.0)
        low = min(int(math.floor(src)), in_size - 1)
        high = low + 1 if low < in_size - 1 else low
        frac = src - low
        matrix[i, low] += 1.0 - frac
        matrix[i, high] += frac
    return matrix


def _resample(x: np.ndarray, h: int, w: int) -> np.ndarray:
    """Bilinear resampling of ``(B, H, W, C)`` to ``(B, h, w, C)`` as two matrix products."""
    b, rows_in, cols_in, c = x.shape
    rows = bilinear_matrix(h, rows_in).astype(np.float32)
    cols = bilinear_matrix(w, cols_in).astype(np.float32)
    x = (rows @ x.reshape(b, rows_in, cols_in * c)).reshape(b, h, cols_in, c)
    return (cols @ x.reshape(b * h, cols_in, c)).reshape(b, h, w, c)


def embed(
    layer2: np.ndarray, layer3: np.ndarray, embed_dim: int = 1024, neighbourhood: int = 3
) -> np.ndarray:
    """Patch features ``(B, h, w, D)`` float32 of two ``(B, C, H, W)`` feature maps, as
    `fedpatch_app.model.embedding.embed` computes them."""
    if layer2.ndim != 4 or layer3.ndim != 4 or layer2.shape[0] != layer3.shape[0]:
        raise ModelError(
            f"embed: expected two (B, C, H, W) maps with the same B, got {layer2.shape} "
            f"and {layer3.shape}"
        )
    widths = layer_widths(layer2.shape[1], layer3.shape[1], embed_dim)
    h, w = layer2.shape[-2:]
    parts = []
    for layer, size in zip((layer2, layer3), widths, strict=True):
        x = np.ascontiguousarray(layer.transpose(0, 2, 3, 1), dtype=np.float32)  # B, H, W, C
        if size != x.shape[-1]:
            x = x @ pooling_matrix(x.shape[-1], size)
        if neighbourhood > 1:
            x = box_average(box_average(x, neighbourhood, 1), neighbourhood, 2)
        if x.shape[1:3] != (h, w):
            x = _resample(x, h, w)
        parts.append(x)
    return np.ascontiguousarray(np.concatenate(parts, axis=-1), dtype=np.float32)


class NearestBank:
    """Exact distance of each query to its nearest bank row (float32, Euclidean)."""

    def __init__(self, features: np.ndarray) -> None:
        bank = np.ascontiguousarray(features, dtype=np.float32)
        if bank.ndim != 2 or bank.shape[0] == 0:
            raise ModelError(f"nearest bank: expected a non-empty (M, D) bank, got {bank.shape}")
        self.features = bank
        self._half_sqn = 0.5 * np.einsum("ij,ij->i", bank, bank)

    def __len__(self) -> int:
        return int(self.features.shape[0])

    def patch_scores(self, queries: np.ndarray) -> np.ndarray:
        """Distance of each query ``(N, D)`` to its nearest bank row, float32 ``(N,)``: the
        row found with ``|b|^2 / 2 - q.b`` (in the order of ``|q - b|^2``) block by block,
        its distance recomputed as ``|q - b|`` so that it carries no cancellation error."""
        q = np.ascontiguousarray(queries, dtype=np.float32)
        if q.ndim != 2 or q.shape[1] != self.features.shape[1]:
            raise ModelError(
                f"nearest bank: queries of shape {q.shape} against a bank of "
                f"{self.features.shape[1]} dimensions"
            )
        nearest = np.empty(len(q), dtype=np.int64)
        rows = max(1, BLOCK_BYTES // (4 * len(self)))
        block = np.empty((min(rows, len(q)), len(self)), dtype=np.float32)
        for start in range(0, len(q), rows):
            chunk = q[start : start + rows]
            out = block[: len(chunk)]
            # argmin of |b|^2 / 2 - q.b is the nearest row: one product, one pass.
            np.matmul(chunk, self.features.T, out=out)
            np.subtract(self._half_sqn, out, out=out)
            nearest[start : start + len(chunk)] = np.argmin(out, axis=1)
        diff = q - self.features[nearest]
        return np.sqrt(np.einsum("ij,ij->i", diff, diff)).astype(np.float32)


def _gaussian_kernel(sigma: float) -> np.ndarray:
    radius = max(1, int(math.ceil(4.0 * sigma)))
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    kernel = np.exp(-0.5 * (x / sigma) ** 2)
    return kernel / kernel.sum()


def smoothing_matrix(size: int, sigma: float, reflect: bool) -> np.ndarray:
    """(size, size): Gaussian smoothing along one axis, the border reflected (without
    repeating the edge) or, where the kernel is longer than the map, replicated."""
    if sigma <= 0:
        return np.eye(size)
    kernel = _gaussian_kernel(sigma)
    pad = len(kernel) // 2
    matrix = np.zeros((size, size), dtype=np.float64)
    for i in range(size):
        for k, weight in enumerate(kernel):
            src = i + k - pad
            if reflect:
                src = -src if src < 0 else (2 * (size - 1) - src if src >= size else src)
            else:
                src = min(max(src, 0), size - 1)
            matrix[i, src] += weight
    return matrix


@lru_cache(maxsize=32)
def map_matrices(
    grid: tuple[int, int], input_hw: tuple[int, int], native_hw: tuple[int, int], sigma: float
) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cols) float32 matrices with ``map = rows @ grid @ cols.T``: the patch grid
    upsampled to the backbone input, smoothed, resampled to the native size."""
    reflect = len(_gaussian_kernel(sigma)) // 2 < min(input_hw) if sigma > 0 else True
    out = []
    for axis in range(2):
        up = bilinear_matrix(input_hw[axis], grid[axis])
        smooth = smoothing_matrix(input_hw[axis], sigma, reflect)
        down = bilinear_matrix(native_hw[axis], input_hw[axis])
        out.append((down @ smooth @ up).astype(np.float32))
    return out[0], out[1]


def anomaly_maps(
    patch: np.ndarray, input_hw: tuple[int, int], native_size: tuple[int, int], image_size: int
) -> np.ndarray:
    """Anomaly maps ``(b, height, width)`` float32 of patch scores ``(b, h, w)``, for
    images of native (width, height) `native_size` fed to the backbone at `input_hw`."""
    sigma = REFERENCE_SIGMA * image_size / REFERENCE_INPUT
    width, height = native_size
    rows, cols = map_matrices(tuple(patch.shape[1:]), tuple(input_hw), (height, width), sigma)
    return np.ascontiguousarray(rows @ patch.astype(np.float32) @ cols.T, dtype=np.float32)
