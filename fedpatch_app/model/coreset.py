"""Greedy k-center coreset (PatchCore's memory-bank subsampling), fast and memory-lean.

The selection is the exact greedy k-center ("farthest point first") over a seeded
random projection of the features: start from one point, then repeatedly add the
point farthest from every centre chosen so far. What makes it fast:

* each point's current squared distance to its nearest centre lives in ONE vector;
  a step only computes the distances to the ONE new centre, from precomputed squared
  norms (``||x||^2 - 2 x.c + ||c||^2``): one matrix-vector product, then the
  min-update and the argmax on ``N``-vectors. No ``N x N`` matrix, no ``N x d'``
  temporary per step.
* the projected features are stored transposed, ``(d', N)``: the product then streams
  through memory as a sequence of axpy's, which BLAS runs at memory bandwidth
  (row-major ``(N, d')`` with ``d' = 128`` runs at about half of it on CPUs).
* on a GPU nothing leaves the device until the end: the argmax results stay device
  tensors and the indices are gathered once.

Memory: ``d' * N`` projected values plus a few ``N``-vectors; the projection itself is
done in row chunks, so a ``1,000,000 x 1024`` float32 input never gets copied whole.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import torch

from fedpatch_app.errors import ModelError

logger = logging.getLogger(__name__)

#: Rows projected at a time (bounds the temporaries of the projection).
PROJECT_CHUNK_ROWS = 32_768
#: Elements of the largest (points x initial centres) block computed at once.
INITIAL_BLOCK_ELEMENTS = 1 << 23

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


def random_projection(dim_in: int, projection_dim: int, seed: int = 0) -> torch.Tensor:
    """The seeded Gaussian projection matrix ``(dim_in, projection_dim)``, float32 on CPU.

    Entries are N(0, 1/projection_dim), so squared norms are preserved in expectation
    (Johnson-Lindenstrauss). Drawn on the CPU so every device gets the same matrix.
    """
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    return torch.randn(dim_in, projection_dim, generator=gen) / math.sqrt(projection_dim)


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


def _rows(x: ArrayLike, start: int, stop: int, device: torch.device) -> torch.Tensor:
    block = x[start:stop]
    if isinstance(block, np.ndarray):
        block = torch.from_numpy(np.ascontiguousarray(block))
    return block.to(device=device, dtype=torch.float32, non_blocking=False)


def _project(
    x: ArrayLike,
    proj: torch.Tensor | None,
    device: torch.device,
    name: str,
) -> torch.Tensor:
    """Project ``x`` (N, D) chunk by chunk into a transposed ``(d', N)`` tensor."""
    n, d = int(x.shape[0]), int(x.shape[1])
    d_out = d if proj is None else int(proj.shape[1])
    out = torch.empty((d_out, n), dtype=torch.float32, device=device)
    for start in range(0, n, PROJECT_CHUNK_ROWS):
        stop = min(n, start + PROJECT_CHUNK_ROWS)
        block = _rows(x, start, stop, device)
        if not bool(torch.isfinite(block).all()):
            bad = start + int(torch.nonzero(~torch.isfinite(block).all(dim=1))[0, 0])
            raise ModelError(f"greedy_coreset: {name} row {bad} holds NaN or infinite values")
        if proj is not None:
            block = block @ proj
        out[:, start:stop] = block.t()
    return out


def _initial_min_dist(pt: torch.Tensor, sqn: torch.Tensor, centres_t: torch.Tensor) -> torch.Tensor:
    """Squared distance of every point (columns of ``pt``) to its nearest initial centre."""
    n = pt.shape[1]
    m = centres_t.shape[1]
    centres = centres_t.t()
    c_sqn = (centres * centres).sum(dim=1)
    mind = torch.empty(n, dtype=torch.float32, device=pt.device)
    rows = max(1, INITIAL_BLOCK_ELEMENTS // max(1, m))
    for start in range(0, n, rows):
        stop = min(n, start + rows)
        block = pt[:, start:stop].t()  # (b, d')
        d2 = torch.addmm(c_sqn.unsqueeze(0), block, centres.t(), alpha=-2.0)
        d2.add_(sqn[start:stop].unsqueeze(1))
        mind[start:stop] = d2.amin(dim=1).clamp_min_(0.0)
    return mind


def greedy_coreset(
    features: ArrayLike,
    k: int,
    *,
    projection_dim: int | None = 128,
    seed: int = 0,
    initial: ArrayLike | None = None,
    device: str | torch.device | None = None,
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

    Returns
    -------
    CoresetResult with ``indices`` (int64, selection order) and ``radius``.
    """
    n, d = _check_matrix(features, "features")
    if n == 0:
        raise ModelError("greedy_coreset: features are empty (0 rows)")
    if d == 0:
        raise ModelError("greedy_coreset: features have 0 columns")
    if isinstance(k, bool) or not isinstance(k, int | np.integer):
        raise ModelError(f"greedy_coreset: k must be an integer, got {k!r}")
    k = int(k)
    if k < 1:
        raise ModelError(f"greedy_coreset: k must be >= 1, got {k}")
    if k > n:
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
        if initial.shape[0] == 0:
            initial = None
    dev = _as_device(device, features)

    proj = None
    if projection_dim is not None and int(projection_dim) < d:
        proj = random_projection(d, int(projection_dim), seed).to(dev)
    pt = _project(features, proj, dev, "features")  # (d', N)
    d_out = pt.shape[0]
    # Squared norms, accumulated row by row of the transposed matrix (no N x d' temporary).
    sqn = torch.zeros(n, dtype=torch.float32, device=dev)
    for j in range(d_out):
        sqn.addcmul_(pt[j], pt[j])

    if initial is not None:
        centres_t = _project(initial, proj, dev, "initial")
        mind = _initial_min_dist(pt, sqn, centres_t)
        del centres_t
        idx = torch.argmax(mind).view(1)
    else:
        mind = torch.full((n,), float("inf"), dtype=torch.float32, device=dev)
        idx = torch.tensor([start_index(n, seed)], dtype=torch.int64, device=dev)

    selected = torch.empty(k, dtype=torch.int64, device=dev)
    dist = torch.empty(n, dtype=torch.float32, device=dev)
    mat = pt.t()  # (N, d') view, column-major: gemv streams through it
    neg_inf = float("-inf")
    for step in range(k):
        selected[step : step + 1] = idx
        centre = pt.index_select(1, idx).view(d_out)
        torch.addmv(sqn, mat, centre, alpha=-2.0, out=dist)
        dist.add_(sqn.index_select(0, idx))
        torch.minimum(mind, dist, out=mind)
        mind.index_fill_(0, idx, neg_inf)  # a chosen point is never chosen again
        if step + 1 < k:
            idx = torch.argmax(mind).view(1)

    radius = math.sqrt(max(0.0, float(mind.max())))
    indices = selected.cpu().numpy().astype(np.int64, copy=False)
    logger.debug("greedy_coreset: N=%d D=%d d'=%d k=%d radius=%.4g", n, d, d_out, k, radius)
    return CoresetResult(indices=indices, radius=radius)
