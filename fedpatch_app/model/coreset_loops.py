"""The greedy k-center loops: per-centre lists on the CPU, masks on any torch device.

Both run the same steps on the same state (see :mod:`coreset_search` for why the
skipping is exact): centre ``c`` becomes slot ``s``; the lower bounds on its distances
to the earlier centres rule out whole groups and single points; the remaining points
are measured; the moved points change group. They differ only in how the groups are
kept. Slots ``0 .. M-1`` hold the ``initial`` centres, if any, then the selected ones in
order. The pick is the point with the largest exact distance to its nearest centre, the
lowest index on ties, as plain greedy k-center picks it.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from fedpatch_app.model.coreset_exact import SKIP_MARGIN, exact_sq_dist
from fedpatch_app.model.coreset_search import (
    DENSE_FRACTION,
    Nearest,
    Rows,
    centre_lower_bounds,
    improvements,
    nearest_centres,
)


class ListGroups:
    """CPU state: every centre's points in one numpy array, with their largest distance.

    ``mind`` (float64) and ``assign`` hold each point's exact squared distance to its
    nearest centre and that centre's slot; a centre itself has distance 0 and belongs
    to no group. ``r2[j]`` is the largest ``mind`` in group ``j`` (``-inf`` if empty) and
    ``rarg[j]`` the lowest point index reaching it.
    """

    def __init__(
        self, rows: Rows, centres: Rows, mind: np.ndarray, assign: np.ndarray, start: int | None
    ) -> None:
        self.rows, self.centres = rows, centres
        self.near, self.mind, self.assign = Nearest.of(rows, mind), mind, assign
        slots = int(centres.pts.shape[0])
        self.r2 = np.full(slots, -np.inf)
        self.rarg = np.full(slots, -1, dtype=np.int64)
        self.sizes = np.zeros(slots, dtype=np.int64)
        order = np.argsort(assign, kind="stable")
        if start is not None:  # the start point is a centre, in no group
            order = order[order != start]
        bounds = np.searchsorted(assign[order], np.arange(slots + 1))
        self.members = [order[bounds[j] : bounds[j + 1]] for j in range(slots)]
        for j in range(slots):
            self._refresh(j)

    def _refresh(self, j: int) -> None:
        """Drop the points that left group ``j``; recompute its largest distance if the
        point holding it left (the others keep their distances)."""
        mem = self.members[j]
        mem = mem[self.assign[mem] == j]
        self.members[j] = mem
        self.sizes[j] = len(mem)
        if len(mem) == 0:
            self.r2[j], self.rarg[j] = -np.inf, -1
        elif self.rarg[j] < 0 or self.assign[self.rarg[j]] != j:
            vals = self.mind[mem]
            top = vals.max()
            self.r2[j] = top
            self.rarg[j] = mem[vals == top].min()

    def _candidates(self, c: int, s: int) -> np.ndarray | None:
        """The points the new centre ``c`` (slot ``s``) may bring closer, or None (all
        points) when the bounds leave most of them."""
        low = centre_lower_bounds(self.centres, s)
        groups = np.flatnonzero(4.0 * self.r2[:s] * (1.0 + SKIP_MARGIN) > low)
        if self.sizes[groups].sum() > DENSE_FRACTION * len(self.mind):
            return None  # pruning does not pay (e.g. noise): measure every point
        idx = np.concatenate([self.members[j] for j in groups] + [np.empty(0, np.int64)])
        return idx[4.0 * self.mind[idx] * (1.0 + SKIP_MARGIN) > low[self.assign[idx]]]

    def add(self, c: int, s: int) -> None:
        """Make point ``c`` the centre of slot ``s`` and move the points it takes."""
        a = int(self.assign[c])
        self.centres.put(s, self.rows, c)
        self.members[a] = self.members[a][self.members[a] != c]
        self.assign[c] = s
        self.near.set(self.rows, np.array([c]), np.zeros(1))
        moved, d2 = improvements(self.rows, self._candidates(c, s), c, self.near)
        touched = np.unique(np.append(self.assign[moved], a))
        self.near.set(self.rows, moved, d2)
        self.assign[moved] = s
        self.members[s] = moved
        for j in touched:
            self._refresh(int(j))
        self._refresh(s)

    def pick(self, slots: int) -> int:
        """The point farthest from its centre (lowest index on ties)."""
        r2 = self.r2[:slots]
        return int(self.rarg[:slots][r2 == r2.max()].min())

    def radius(self, slots: int) -> float:
        top = float(self.r2[:slots].max()) if slots else -math.inf
        return math.sqrt(max(top, 0.0))


class MaskedGroups:
    """Device state: the groups as one assignment vector; bounds applied as masks.

    ``score`` is ``mind`` with the centres at ``-inf``, so the pick is one argmax.
    With ``prune=False`` every point is measured at every step: plain greedy k-center
    with the same exact decisions.
    """

    def __init__(
        self,
        rows: Rows,
        centres: Rows,
        mind: torch.Tensor,
        assign: torch.Tensor,
        start: int | None,
        prune: bool = True,
    ) -> None:
        self.rows, self.centres = rows, centres
        self.near, self.mind, self.assign, self.prune = Nearest.of(rows, mind), mind, assign, prune
        self.score = mind.clone()
        if start is not None:  # the start point is a centre
            self.score[start] = -math.inf
        self.inf = torch.full((1,), math.inf, dtype=torch.float64, device=mind.device)

    def add(self, c: int, s: int) -> None:
        """Make point ``c`` the centre of slot ``s`` and move the points it takes."""
        self.centres.put(s, self.rows, c)
        self.assign[c], self.score[c] = s, -math.inf
        self.near.set(self.rows, torch.tensor([c], device=self.mind.device), self.mind.new_zeros(1))
        if self.prune:
            low = torch.cat([centre_lower_bounds(self.centres, s), self.inf])
            keep = 4.0 * self.mind * (1.0 + SKIP_MARGIN) > low[self.assign]
            idx = torch.nonzero(keep).flatten()
        else:
            idx = None
        moved, d2 = improvements(self.rows, idx, c, self.near)
        self.near.set(self.rows, moved, d2)
        self.score[moved] = d2
        self.assign[moved] = s

    def pick(self, slots: int) -> int:
        return int(torch.argmax(self.score))

    def radius(self, slots: int) -> float:
        top = float(self.score.max()) if self.score.numel() else -math.inf
        return math.sqrt(max(top, 0.0))


def initial_state(
    rows: Rows, centres: Rows, start: int | None, count: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``mind`` and ``assign`` before the first new centre is added: against the
    ``count`` initial centres, or (``count == 0``) against the point ``start``, which
    becomes the centre of slot 0."""
    if count:
        return nearest_centres(rows, centres, count)
    if start is None:
        raise ValueError("initial_state: a start point is needed without initial centres")
    centres.put(0, rows, start)
    mind = exact_sq_dist(rows.pts, rows.pts[start])
    assign = torch.zeros(mind.shape, dtype=torch.int64, device=mind.device)
    return mind, assign
