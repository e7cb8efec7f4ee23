"""Exact squared distances and rigorous error bounds for the greedy k-center selection.

Which point greedy k-center picks next is decided by comparing distances, and near-ties
are common: a decision taken on rounded values depends on the order in which the
rounding happened, and that order changes with the thread count (BLAS kernels split
their sums differently on 1 and 2 threads). So every value that decides a pick is

* computed in float64 from the float32 projected coordinates, and
* summed in an order that depends on the data alone: numpy's pairwise sum on the CPU
  (numpy never threads a reduction), a halving tree of elementwise adds elsewhere;
  no thread count and no BLAS enters.

Fast float32 matrix-vector products are still used, but only as filters whose error
is bounded rigorously (:func:`estimate_slack`): a point is left out only when its
distance is certainly larger than its current one, never because of rounding luck.
The functions accept numpy arrays and torch tensors alike, so the CPU and the device
code paths share them.
"""

from __future__ import annotations

import math

import numpy as np
import torch

Array = np.ndarray | torch.Tensor

#: Unit roundoff of float32.
UNIT_ROUNDOFF_32 = 2.0**-24
#: Relative safety margin on float64 comparisons that skip work: far above the
#: ``~1e-15`` relative error of the float64 tree sums, far below any real gap.
SKIP_MARGIN = 1e-12
#: Rows handled at once by :func:`exact_sq_dist`: small enough for the float64
#: temporaries to stay in the CPU cache through their ``log2(d)`` passes.
EXACT_CHUNK_ROWS = 1024
#: Rows per block of :func:`fixed_order_mean`.
MEAN_BLOCK_ROWS = 4096


def _tree_sum_rows(sq: Array) -> Array:
    """Row sums of a ``(m, 2**j)`` float64 array, halving in place: a fixed pairwise tree."""
    width = int(sq.shape[1])
    while width > 1:
        width //= 2
        head = sq[:, :width]
        head += sq[:, width : 2 * width]
    return sq[:, 0]


def _numpy_sq_dist(points: np.ndarray, centre: np.ndarray) -> np.ndarray:
    rows = int(points.shape[0]) if points.ndim == 2 else int(centre.shape[0])
    out = np.empty(rows, dtype=np.float64)
    for start in range(0, rows, EXACT_CHUNK_ROWS):
        stop = min(rows, start + EXACT_CHUNK_ROWS)
        p = points[start:stop] if points.ndim == 2 else points
        c = centre[start:stop] if centre.ndim == 2 else centre
        diff = np.subtract(p, c, dtype=np.float64)
        diff *= diff
        out[start:stop] = diff.sum(axis=1)
    return out


def _tree_sq_dist(points: torch.Tensor, centre: torch.Tensor) -> torch.Tensor:
    rows = int(points.shape[0]) if points.ndim == 2 else int(centre.shape[0])
    dim = int(points.shape[-1])
    width = 1 << math.ceil(math.log2(dim)) if dim > 1 else 1
    out = torch.empty(rows, dtype=torch.float64, device=points.device)
    for start in range(0, rows, EXACT_CHUNK_ROWS):
        stop = min(rows, start + EXACT_CHUNK_ROWS)
        p = points[start:stop] if points.ndim == 2 else points
        c = centre[start:stop] if centre.ndim == 2 else centre
        sq = torch.zeros((stop - start, width), dtype=torch.float64, device=points.device)
        sq[:, :dim] = p.to(torch.float64) - c.to(torch.float64)
        sq *= sq
        out[start:stop] = _tree_sum_rows(sq)
    return out


def exact_sq_dist(points: Array, centre: Array) -> Array:
    """Squared Euclidean distances ``(m,)`` float64 of rows of ``points`` to ``centre``.

    ``points`` may be ``(m, d)`` or ``centre`` may be ``(m, d)`` (row-wise pairs) or both.
    The differences and squares are exact-rounded float64 operations; the sum runs in
    an order fixed by the data alone: numpy's pairwise sum on the CPU (numpy does not
    thread its reductions; torch CPU tensors go through numpy too, so both give the
    same bits), a halving tree of elementwise adds on other devices.
    """
    if isinstance(points, np.ndarray):
        return _numpy_sq_dist(points, np.asarray(centre))
    if points.device.type == "cpu":
        return torch.from_numpy(_numpy_sq_dist(points.numpy(), centre.numpy()))
    return _tree_sq_dist(points, centre)


def filter_factor(dim: int) -> float:
    """``K`` of the float32 filters: ``2u (dim + 8)``, at least twice ``gamma_dim``."""
    return (dim + 8) * 2.0 * UNIT_ROUNDOFF_32


def estimate_slack(norm_a: Array, norm_b: Array | float, dim: int) -> Array:
    """Largest error of a float32 ``||a||^2 + ||b||^2 - 2 a.b`` distance estimate.

    ``norm_a``, ``norm_b``: float64 Euclidean norms. A dot product of ``dim`` float32
    products, summed in ANY order, errs by at most ``gamma_dim * ||a|| ||b||``
    (``gamma_n = n u / (1 - n u)``, ``u = 2**-24``); float32 squared norms summed in any
    order err by at most ``gamma_dim ||a||^2`` and ``gamma_dim ||b||^2``; the two additions
    add ``2u (||a|| + ||b||)^2``. Together at most ``(dim + 2) u (||a|| + ||b||)^2`` (to
    first order). The bound used, ``(dim + 8) * 2u * (||a|| + ||b||)^2`` plus an allowance
    for underflow, is more than twice that, which also covers norms that are themselves
    float32 roundings.
    """
    total = norm_a + norm_b
    return filter_factor(dim) * total * total + dim * 2.0**-140


def filter_threshold(sqn: Array, mind: Array, dim: int) -> Array:
    """Per point, ``(1 - 2K) ||p||^2 - mind (1 + margin)``: centre ``c`` may bring ``p``
    closer only if ``2 p.c > threshold + (1 - 2K) ||c||^2`` in float32 terms.

    Why it is safe: with ``S = ||p||^2``, the float32 squared norm ``sqn`` and dot product
    ``dot`` err by at most ``gamma S`` and ``gamma ||p|| ||c||`` (``gamma = gamma_dim``,
    any summation order). If ``2 dot <= (1 - 2K)(sqn_p + sqn_c) - mind (1 + margin)``,
    the true squared distance ``S_p + S_c - 2 p.c`` is at least ``mind (1 + margin) +
    (2K - gamma(1 - 2K) - gamma)(S_p + S_c)``, and ``K >= gamma`` makes that more than
    ``mind``: the point cannot move. ``sqn`` float32, ``mind`` float64.
    """
    sqn64 = sqn.astype(np.float64) if isinstance(sqn, np.ndarray) else sqn.to(torch.float64)
    return (1.0 - 2.0 * filter_factor(dim)) * sqn64 - mind * (1.0 + SKIP_MARGIN) - dim * 2.0**-140


def fixed_order_mean(points: torch.Tensor) -> torch.Tensor:
    """Column means ``(d,)`` float64 of ``(N, d)`` points, in one fixed order.

    Each block of :data:`MEAN_BLOCK_ROWS` rows is summed by halving (elementwise adds,
    zero-padded to a power of two), the block sums are added in block order: no thread
    count or device changes a bit of it.
    """
    n, dim = int(points.shape[0]), int(points.shape[1])
    total = torch.zeros(dim, dtype=torch.float64, device=points.device)
    for start in range(0, n, MEAN_BLOCK_ROWS):
        stop = min(n, start + MEAN_BLOCK_ROWS)
        block = torch.zeros((MEAN_BLOCK_ROWS, dim), dtype=torch.float64, device=points.device)
        block[: stop - start] = points[start:stop]
        _tree_sum_rows(block.t())
        total += block[0]
    return total / max(n, 1)
