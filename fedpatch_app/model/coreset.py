"""Greedy k-center coreset (PatchCore's memory-bank subsampling): exact, pruned, reproducible.

The selection is the exact greedy k-center ("farthest point first") over a seeded
random projection of the features: start from one point (or from ``initial`` centres),
then repeatedly add the point farthest from every centre chosen so far, the lowest
index on ties. Three properties, each in its own module:

* reproducible (:mod:`coreset_projection`, :mod:`coreset_exact`): the projection is
  computed in fixed blocks by single-threaded BLAS, and every distance that decides a
  pick is float64 summed in one fixed order, so the same data and seed select the same
  points whatever the thread count;
* fast (:mod:`coreset_search`, :mod:`coreset_loops`): the triangle inequality skips the
  points, and whole groups of points, that the new centre cannot bring closer, so a
  step costs what the new centre's neighbourhood costs, not ``N`` distances;
* exact: only what certainly cannot change is skipped, so the picks are those of plain
  greedy k-center (``method="plain"`` runs it, for comparison).

Memory: the projected points ``(N, d')`` float32 plus a few ``N``-vectors; the
projection works in row blocks, so a ``1,000,000 x 1024`` input is never copied whole.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from fedpatch_app.errors import ModelError
from fedpatch_app.model.coreset_exact import fixed_order_mean
from fedpatch_app.model.coreset_loops import ListGroups, MaskedGroups, initial_state
from fedpatch_app.model.coreset_projection import (
    full_float32_precision,
    project_rows,
    random_projection,
)
from fedpatch_app.model.coreset_search import Rows

logger = logging.getLogger(__name__)

#: The ways to run the selection (all select the same points); see greedy_coreset.
METHODS = ("pruned", "masked", "plain")
#: Largest projected norm accepted: float32 squared distances overflow near 1e38.
MAX_NORM = 1e18

__all__ = [
    "CoresetResult",
    "greedy_coreset",
    "project_features",
    "random_projection",
    "start_index",
]

ArrayLike = np.ndarray | torch.Tensor


@dataclass(frozen=True)
class CoresetResult:
    """Outcome of :func:`greedy_coreset`.

    ``indices``: int64 ``(k,)`` row indices into the features, in selection order.
    ``radius``: the covering radius reached, in the projected space: the largest
    distance from any point to its nearest centre (``initial`` centres included).
    """

    indices: np.ndarray
    radius: float
    #: point-to-centre distances estimated (plain greedy estimates ``N`` per new centre).
    measured: int = 0


def start_index(n: int, seed: int = 0) -> int:
    """The seeded random start point used when no initial centres are given."""
    gen = torch.Generator(device="cpu").manual_seed(int(seed) + 1)
    return int(torch.randint(n, (1,), generator=gen).item())


def _as_device(device: str | torch.device | None, features: ArrayLike) -> torch.device:
    if device is None:
        if isinstance(features, torch.Tensor):
            return features.device
        return torch.device("cpu")
    if str(device) == "auto":
        from fedpatch_app.model.backbone import resolve_device

        return resolve_device("auto")
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ModelError(f"greedy_coreset: invalid device {device!r}") from exc


def _check_matrix(x: ArrayLike, name: str) -> tuple[int, int]:
    if not isinstance(x, np.ndarray | torch.Tensor):
        raise ModelError(
            f"greedy_coreset: {name} must be a numpy array or torch tensor, got {type(x).__name__}"
        )
    if x.ndim != 2:
        raise ModelError(f"greedy_coreset: {name} must be 2-D (N, D), got shape {tuple(x.shape)}")
    floating = (
        x.is_floating_point()
        if isinstance(x, torch.Tensor)
        else np.issubdtype(x.dtype, np.floating)
    )
    if not floating:
        raise ModelError(f"greedy_coreset: {name} must hold floats, got dtype {x.dtype}")
    return int(x.shape[0]), int(x.shape[1])


def _check_arguments(
    features: ArrayLike,
    k: object,
    projection_dim: int | None,
    initial: ArrayLike | None,
    method: str,
) -> tuple[int, int]:
    """Validate the arguments of :func:`greedy_coreset`; returns ``(N, D)``."""
    n, d = _check_matrix(features, "features")
    if n == 0:
        raise ModelError("greedy_coreset: features are empty (0 rows)")
    if d == 0:
        raise ModelError("greedy_coreset: features have 0 columns")
    if isinstance(k, bool) or not isinstance(k, int | np.integer):
        raise ModelError(f"greedy_coreset: k must be an integer, got {k!r}")
    if int(k) < 1:
        raise ModelError(f"greedy_coreset: k must be >= 1, got {k}")
    if int(k) > n:
        raise ModelError(
            f"greedy_coreset: k = {k} centres requested but there are only N = {n} points"
        )
    if projection_dim is not None and int(projection_dim) < 1:
        raise ModelError(
            f"greedy_coreset: projection_dim must be >= 1 or None, got {projection_dim}"
        )
    if initial is not None:
        _, d_init = _check_matrix(initial, "initial")
        if d_init != d:
            raise ModelError(
                f"greedy_coreset: initial centres have {d_init} dimensions but features have {d}"
            )
    if method not in METHODS:
        raise ModelError(f"greedy_coreset: method must be one of {METHODS}, got {method!r}")
    return n, d


def _check_magnitude(rows: Rows, name: str) -> None:
    """float32 distance estimates overflow beyond ~1e19; such features are refused."""
    if len(rows.norm) and float(rows.norm.max()) > MAX_NORM:
        raise ModelError(
            f"greedy_coreset: {name} have a projected norm above {MAX_NORM:.0e}; "
            "rescale them (float32 distances would overflow)"
        )


def select(
    pts: torch.Tensor,
    k: int,
    *,
    start: int | None,
    initial: torch.Tensor | None,
    method: str = "pruned",
) -> tuple[np.ndarray, float, int]:
    """Greedy k-center over already projected float32 points ``(N, d')``.

    ``initial`` ``(M, d')`` projected centres chosen before, or None: then ``start`` is
    the first centre (and the first of the ``k`` indices). Returns the indices in
    selection order, the covering radius and the number of distances estimated.
    """
    m = 0 if initial is None else int(initial.shape[0])
    slots, dim, dev = m + k, int(pts.shape[1]), pts.device
    rows = Rows.of(pts)
    _check_magnitude(rows, "features")
    centres = Rows(
        pts=torch.empty((slots, dim), dtype=torch.float32, device=dev),
        sqn=torch.empty(slots, dtype=torch.float32, device=dev),
        norm=torch.empty(slots, dtype=torch.float64, device=dev),
    )
    if initial is not None:
        given = Rows.of(initial)
        _check_magnitude(given, "initial centres")
        centres.pts[:m], centres.sqn[:m], centres.norm[:m] = given.pts, given.sqn, given.norm
    first = None if m else start
    with full_float32_precision():
        mind, assign = initial_state(rows, centres, first, m)
        if method == "pruned" and dev.type == "cpu":
            groups: ListGroups | MaskedGroups = ListGroups(
                Rows(rows.pts.numpy(), rows.sqn.numpy(), rows.norm.numpy()),
                Rows(centres.pts.numpy(), centres.sqn.numpy(), centres.norm.numpy()),
                mind.numpy(),
                assign.numpy(),
                first,
            )
        else:
            groups = MaskedGroups(rows, centres, mind, assign, first, prune=method != "plain")
        selected = [] if m else [int(start)]
        for slot in range(1 if first is not None else m, slots):
            pick = groups.pick(slot)
            groups.add(pick, slot)
            selected.append(pick)
        radius = groups.radius(slots)
    return np.asarray(selected, dtype=np.int64), radius, groups.near.measured


def project_features(
    features: ArrayLike,
    projection_dim: int | None = 128,
    seed: int = 0,
    device: torch.device | None = None,
    *,
    initial: ArrayLike | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The float32 coordinates :func:`greedy_coreset` measures distances in.

    ``features @ P`` (the seeded projection; no projection when ``projection_dim`` is
    None or ``>= D``), minus the fixed-order mean of the projected features, for the
    features and for ``initial`` alike. The translation changes no distance, but it
    shrinks the norms, and with them the rounding error of the float32 estimates that
    decide which exact distances are needed. Bit-identical for any thread count.
    """
    dev = torch.device("cpu") if device is None else torch.device(device)
    d = int(features.shape[1])
    proj = None
    if projection_dim is not None and int(projection_dim) < d:
        proj = random_projection(d, int(projection_dim), seed)
    pts = project_rows(features, proj, dev, "features")
    shift = fixed_order_mean(pts).to(torch.float32)
    pts -= shift
    if initial is None:
        return pts, None
    centres = project_rows(initial, proj, dev, "initial")
    centres -= shift
    return pts, centres


def greedy_coreset(
    features: ArrayLike,
    k: int,
    *,
    projection_dim: int | None = 128,
    seed: int = 0,
    initial: ArrayLike | None = None,
    device: str | torch.device | None = None,
    method: str = "pruned",
    projected: Callable[[], None] | None = None,
) -> CoresetResult:
    """Select ``k`` rows of ``features`` by greedy k-center (farthest point first).

    Parameters
    ----------
    features:
        ``(N, D)`` float16/float32/float64 numpy array or torch tensor (any device).
    k:
        number of NEW centres to select, ``1 <= k <= N``.
    projection_dim:
        dimension ``d'`` of the seeded Gaussian projection the distances are measured
        in; ``None`` or ``>= D`` means no projection (exact distances in ``D``).
    seed:
        seeds the projection and, without ``initial``, the start point.
    initial:
        ``(M, D)`` feature vectors of centres chosen before (e.g. existing memory banks):
        the first new centre is then the point farthest from them, and the radius counts
        them.
    device:
        where the computation runs (default: the tensor's device, CPU for numpy).
    method:
        ``"pruned"`` (default: per-centre groups on the CPU, masks on other devices),
        ``"masked"`` (the device form, on any device) or ``"plain"`` (no pruning). All
        three select the same points.
    projected:
        called once the features are projected: the selection reads only the
        projection, so a caller may release the features' memory then (a memory-mapped
        union's pages, `row_store.release`).

    Returns
    -------
    CoresetResult with ``indices`` (int64, selection order) and ``radius``.
    """
    n, _ = _check_arguments(features, k, projection_dim, initial, method)
    if initial is not None and initial.shape[0] == 0:
        initial = None
    pts, centres = project_features(
        features, projection_dim, seed, _as_device(device, features), initial=initial
    )
    if projected is not None:
        projected()
    indices, radius, measured = select(
        pts, int(k), start=start_index(n, seed), initial=centres, method=method
    )
    logger.debug(
        "greedy_coreset: N=%d D=%d d'=%d k=%d radius=%.4g",
        n,
        features.shape[1],
        pts.shape[1],
        k,
        radius,
    )
    return CoresetResult(indices=indices, radius=radius, measured=measured)
