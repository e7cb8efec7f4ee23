"""Score bins shared by the AUC-sPRO statistics: edges, the bin of a score, sparse rows.

Clients and the server must histogram scores over the very same edges for their statistics to
merge; :func:`level_edges` gives one bin per 16-bit level, which represents exported 16-bit
maps exactly. Per-region histograms are sparse (a region covers few levels), so they are kept
as CSR rows (``ptr``, ``bins``, ``counts``).
"""

from __future__ import annotations

import numpy as np

from fedpatch_app.errors import DataError


def is_level_map(m: np.ndarray) -> bool:
    """Whether a map holds integer levels counted by histogram (8- or 16-bit unsigned)."""
    return m.dtype in (np.dtype(np.uint8), np.dtype(np.uint16))


def level_edges(n_levels: int = 65536) -> np.ndarray:
    """Bin edges with one bin per integer level ``0 .. n_levels - 1`` (edges at ``k - 0.5``)."""
    if n_levels < 1:
        raise DataError(f"n_levels must be >= 1, got {n_levels}")
    return np.arange(n_levels + 1, dtype=np.float64) - 0.5


def uniform_edges(low: float, high: float, n_bins: int) -> np.ndarray:
    """``n_bins`` equal bins spanning ``[low, high]``."""
    if n_bins < 1 or not (np.isfinite(low) and np.isfinite(high) and high > low):
        raise DataError(f"cannot make {n_bins} bins over [{low}, {high}]")
    return np.linspace(float(low), float(high), n_bins + 1)


def _level_lookup(edges: np.ndarray, n_levels: int) -> np.ndarray:
    """Bin of each integer level ``0 .. n_levels - 1``."""
    levels = np.arange(n_levels, dtype=np.float64)
    return np.clip(np.searchsorted(edges, levels, side="right") - 1, 0, edges.size - 2)


def bin_index(m: np.ndarray, edges: np.ndarray, lookup: dict[int, np.ndarray | None]) -> np.ndarray:
    """Bin of every score: ``edges[b] <= s < edges[b + 1]``, out-of-range scores clipped."""
    n_bins = edges.size - 1
    if is_level_map(m):
        n_levels = 1 << (8 * m.dtype.itemsize)
        if n_levels not in lookup:
            lut = _level_lookup(edges, n_levels)
            identity = lut.size <= n_bins and np.array_equal(lut, np.arange(n_levels))
            lookup[n_levels] = None if identity else lut
        lut = lookup[n_levels]
        return m if lut is None else lut[m]
    x = m.astype(np.float64, copy=False)
    width = np.diff(edges)
    if np.allclose(width, width[0], rtol=1e-9, atol=0.0):
        b = np.floor((x - edges[0]) / width[0]).astype(np.int64)
        np.clip(b, 0, n_bins - 1, out=b)
        # fix the rounding of scores that sit on an edge
        b -= (x < edges[b]) & (b > 0)
        b += (x >= edges[b + 1]) & (b < n_bins - 1)
        return b
    return np.clip(np.searchsorted(edges, x, side="right") - 1, 0, n_bins - 1)


def csr_from_dense(rows: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sparse rows (``ptr``, ``bins``, ``counts``) of dense histograms, zero bins dropped."""
    ptr = [0]
    bins: list[np.ndarray] = []
    counts: list[np.ndarray] = []
    for h in rows:
        nz = np.flatnonzero(h)
        bins.append(nz.astype(np.int64))
        counts.append(h[nz].astype(np.int64))
        ptr.append(ptr[-1] + nz.size)
    return (
        np.asarray(ptr, dtype=np.int64),
        np.concatenate(bins) if bins else np.empty(0, np.int64),
        np.concatenate(counts) if counts else np.empty(0, np.int64),
    )


def dense_row(
    ptr: np.ndarray, bins: np.ndarray, counts: np.ndarray, row: int, n: int
) -> np.ndarray:
    """Row ``row`` of sparse rows as a dense histogram of ``n`` bins."""
    out = np.zeros(n, dtype=np.int64)
    lo, hi = ptr[row], ptr[row + 1]
    out[bins[lo:hi]] = counts[lo:hi]
    return out
