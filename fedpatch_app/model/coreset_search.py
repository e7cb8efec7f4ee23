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
    filter_factor,
    filter_threshold,
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


@dataclass
class Nearest:
    """Each point's exact squared distance to its nearest centre (``mind``, float64) and
    the threshold of the float32 filter of :func:`improvements`, kept in step;
    ``measured`` counts the point-to-centre distances estimated so far."""

    mind: Array
    thr: Array
    measured: int = 0

    @classmethod
    def of(cls, rows: Rows, mind: Array) -> Nearest:
        return cls(mind=mind, thr=filter_threshold(rows.sqn, mind, int(rows.pts.shape[1])))

    def set(self, rows: Rows, idx: Array, d2: Array) -> None:
        """New exact squared distances ``d2`` of the points ``idx``."""
        self.mind[idx] = d2
        self.thr[idx] = filter_threshold(rows.sqn[idx], self.mind[idx], int(rows.pts.shape[1]))


def improvements(rows: Rows, idx: Array | None, c: int, near: Nearest) -> tuple[Array, Array]:
    """The points among ``idx`` (None: all points) that centre ``c`` brings strictly
    closer, and their new exact squared distances.

    One float32 dot product per point and :func:`filter_threshold` rule out the points
    that certainly do not move; the others get the exact float64 distance, which alone
    decides.
    """
    cvec = rows.pts[c]
    own = (1.0 - 2.0 * filter_factor(int(cvec.shape[0]))) * float(rows.sqn[c])
    near.measured += int(rows.pts.shape[0]) if idx is None else len(idx)
    if idx is None:
        close = 2.0 * _f64(rows.pts @ cvec) > near.thr + own
        idx = np.flatnonzero(close) if isinstance(close, np.ndarray) else torch.nonzero(close)[:, 0]
    else:
        if len(idx) > DENSE_FRACTION * int(rows.pts.shape[0]):
            dots = (rows.pts @ cvec)[idx]
        else:
            dots = rows.pts[idx] @ cvec
        idx = idx[2.0 * _f64(dots) > near.thr[idx] + own]
    d2 = exact_sq_dist(rows.pts[idx], cvec)
    better = d2 < near.mind[idx]
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
