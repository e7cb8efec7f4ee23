"""Exact greedy k-center that skips what the triangle inequality rules out.

Greedy k-center ("farthest point first") adds, at every step, the point farthest from
the centres chosen so far, and then lowers every point's distance to its nearest centre
where the new centre is closer. Done plainly, every step measures all ``N`` points
against the new centre. Most of that work cannot change anything: keep, for every
point ``p``, its nearest centre ``a(p)`` and that distance; when the new centre ``c``
arrives, the triangle inequality gives ``d(p, c) >= d(c, a(p)) - d(p, a(p))``, so ``p``
cannot come closer to ``c`` when ``d(p, a(p)) <= d(c, a(p)) / 2``. Applied to a whole
group (the points of one centre ``a``, whose largest distance ``r_a`` is kept), a group
with ``r_a <= d(c, a) / 2`` is skipped without looking at its points; this is the bound
of Elkan's and Hamerly's accelerated k-means, used for farthest-first traversal.

What is skipped is only ever what certainly cannot change, and every distance that
decides a pick is the exact float64 value of :mod:`coreset_exact`, so the selection is
the one plain greedy k-center makes with the same projection, start point and ties
(lowest index first), bit for bit, whatever the thread count.

Two ways to keep the groups:

* ``"lists"`` (CPU, numpy): every centre keeps the array of its points and their
  largest distance, so the next pick is an argmax over centres and a skipped group
  costs nothing at all;
* ``"masked"`` (any torch device, CUDA included): one vector of assignments, the same
  bounds applied to all points as a mask in a few elementwise operations, the distance
  computed only for the points the mask keeps, and the pick an argmax over points (one
  kernel on a GPU).

``prune=False`` in the masked form is plain greedy k-center with the same exact
decisions, kept as the baseline the benchmarks compare with.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from fedpatch_app.model.coreset_exact import (
    SKIP_MARGIN,
    Array,
    estimate_slack,
    exact_sq_dist,
)

#: Above this fraction of all points, one matrix-vector product over all of them is
#: cheaper than gathering the rows that need a distance estimate.
DENSE_FRACTION = 0.25
#: Elements of the largest (points x initial centres) block computed at once.
INITIAL_BLOCK_ELEMENTS = 1 << 22


@dataclass
class Rows:
    """Float32 coordinates with their exact squared norms (float32 copy) and norms."""

    pts: Array
    sqn: Array
    norm: Array

    @classmethod
    def of(cls, pts: torch.Tensor) -> Rows:
        """Norms for the float32 estimates: they only size the filters, whose bound
        (:func:`estimate_slack`) allows for their float32 rounding, so any summation
        order will do."""
        sqn = (pts * pts).sum(dim=1)
        return cls(pts=pts, sqn=sqn, norm=torch.sqrt(sqn.to(torch.float64)))

    def put(self, slot: int, other: Rows, index: int) -> None:
        """Copy row ``index`` of ``other`` into row ``slot``."""
        self.pts[slot] = other.pts[index]
        self.sqn[slot] = other.sqn[index]
        self.norm[slot] = other.norm[index]


def _f64(x: Array) -> Array:
    return x.astype(np.float64) if isinstance(x, np.ndarray) else x.to(torch.float64)


def _clamp0(x: Array) -> Array:
    return np.maximum(x, 0.0) if isinstance(x, np.ndarray) else x.clamp_min(0.0)


def centre_lower_bounds(centres: Rows, slot: int) -> Array:
    """Lower bounds ``(slot,)`` float64 on the squared distances from centre ``slot`` to
    every earlier centre (float32 estimate minus its largest error)."""
    c = centres.pts[slot]
    est = centres.sqn[:slot] + centres.sqn[slot] - 2.0 * (centres.pts[:slot] @ c)
    slack = estimate_slack(centres.norm[:slot], centres.norm[slot], int(c.shape[0]))
    return _clamp0(_f64(est) - slack)


def improvements(rows: Rows, idx: Array | None, c: int, mind: Array) -> tuple[Array, Array]:
    """The points among ``idx`` (None: all points) that centre ``c`` brings strictly
    closer, and their new exact squared distances.

    A float32 estimate, with its largest error, rules out the points that certainly do
    not move; the others get the exact float64 distance, which alone decides.
    """
    cvec = rows.pts[c]
    if idx is None:
        est = rows.sqn + rows.sqn[c] - 2.0 * (rows.pts @ cvec)
        slack = estimate_slack(rows.norm, rows.norm[c], int(cvec.shape[0]))
        close = _f64(est) - slack < mind * (1.0 + SKIP_MARGIN)
        idx = np.flatnonzero(close) if isinstance(close, np.ndarray) else torch.nonzero(close)[:, 0]
    else:
        if len(idx) > DENSE_FRACTION * int(rows.pts.shape[0]):
            est = (rows.sqn + rows.sqn[c] - 2.0 * (rows.pts @ cvec))[idx]
        else:
            est = rows.sqn[idx] + rows.sqn[c] - 2.0 * (rows.pts[idx] @ cvec)
        slack = estimate_slack(rows.norm[idx], rows.norm[c], int(cvec.shape[0]))
        idx = idx[_f64(est) - slack < mind[idx] * (1.0 + SKIP_MARGIN)]
    d2 = exact_sq_dist(rows.pts[idx], cvec)
    better = d2 < mind[idx]
    return idx[better], d2[better]


def nearest_centres(rows: Rows, centres: Rows, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact squared distance of every point to its nearest of the first ``count``
    centres, and that centre's slot (the lowest on ties). Torch, any device."""
    n = int(rows.pts.shape[0])
    dim = int(rows.pts.shape[1])
    dev = rows.pts.device
    mind = torch.empty(n, dtype=torch.float64, device=dev)
    assign = torch.empty(n, dtype=torch.int64, device=dev)
    cpts, csqn, cnorm = centres.pts[:count], centres.sqn[:count], centres.norm[:count]
    block = max(1, INITIAL_BLOCK_ELEMENTS // count)
    for start in range(0, n, block):
        stop = min(n, start + block)
        pts = rows.pts[start:stop]
        est = torch.addmm(csqn.unsqueeze(0), pts, cpts.t(), alpha=-2.0)
        est = _f64(est.add_(rows.sqn[start:stop].unsqueeze(1)))
        slack = estimate_slack(rows.norm[start:stop].unsqueeze(1), cnorm.unsqueeze(0), dim)
        upper = (est + slack).amin(dim=1, keepdim=True) * (1.0 + SKIP_MARGIN)
        r, j = torch.nonzero(est - slack <= upper, as_tuple=True)
        d2 = exact_sq_dist(pts[r], cpts[j])
        low = torch.full((stop - start,), float("inf"), dtype=torch.float64, device=dev)
        low.scatter_reduce_(0, r, d2, reduce="amin")
        at_min = d2 == low[r]
        arg = torch.full((stop - start,), count, dtype=torch.int64, device=dev)
        arg.scatter_reduce_(0, r[at_min], j[at_min], reduce="amin")
        mind[start:stop] = low
        assign[start:stop] = arg
    return mind, assign


class Pivots:
    """Every point's distance to a few early centres (the pivots), as float32 intervals.

    For any pivot ``v``, ``d(p, c) >= |d(p, v) - d(c, v)|``: a point whose distance to a
    new centre ``c`` is bounded that way above its current distance cannot move, and
    the test reads one 64-byte row per point (``count`` lower, then ``count`` upper
    bounds) instead of its coordinates. The farthest-first centres are spread over the
    data, which makes them good pivots. Numpy (CPU) only.
    """

    def __init__(self, n: int, count: int) -> None:
        self.count = count
        self.bounds = np.zeros((n, 2 * count), dtype=np.float32)
        self.used = 0
        self.tolerance = 0.0

    @property
    def full(self) -> bool:
        return self.used == self.count

    def _store(self, lo2: np.ndarray, hi2: np.ndarray) -> None:
        """Store a pivot from lower and upper bounds on the squared distances, rounded
        outwards so that float32 storage never tightens them."""
        lo = np.sqrt(np.maximum(lo2, 0.0)) * (1.0 - 2.0**-20)
        hi = np.sqrt(np.maximum(hi2, 0.0)) * (1.0 + 2.0**-20)
        self.bounds[:, self.used] = lo
        self.bounds[:, self.count + self.used] = hi
        self.used += 1
        # float32 subtractions of values up to max(hi) err by at most 2**-24 of it each
        self.tolerance = max(self.tolerance, float(hi.max()) * 2.0**-21)

    def add_exact(self, d2: np.ndarray) -> None:
        """A pivot whose squared distances to all points are known exactly."""
        self._store(d2, d2)

    def add_estimated(self, rows: Rows, c: int) -> None:
        """Point ``c`` as a pivot, from float32 estimates with their error bounds."""
        cvec = rows.pts[c]
        est = (rows.sqn + rows.sqn[c] - 2.0 * (rows.pts @ cvec)).astype(np.float64)
        slack = estimate_slack(rows.norm, rows.norm[c], int(cvec.shape[0]))
        self._store(est - slack, est + slack)

    def lower_bounds(self, idx: np.ndarray, c: int) -> np.ndarray:
        """Lower bounds ``(m,)`` float64 on ``d(p, c)`` for the points ``idx`` (float32
        arithmetic, minus the largest rounding error it can make)."""
        u, k = self.used, self.count
        rows = self.bounds[idx]
        centre = self.bounds[c]
        below = rows[:, :u] - centre[k : k + u]  # d(p, v) - d(c, v) >= ...
        above = centre[:u] - rows[:, k : k + u]  # d(c, v) - d(p, v) >= ...
        np.maximum(below, above, out=below)
        return below.max(axis=1, initial=0.0).astype(np.float64) - self.tolerance
