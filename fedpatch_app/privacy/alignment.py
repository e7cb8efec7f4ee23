"""The adaptive attacks of a server on rotated rows: estimate the rotation R (rows @ R ~
clear features) from what it has, without the key.

- `pca_alignment`: match the principal axes of the rotated rows to those of public
  features (signs from the mean), the start of the others;
- `procrustes_icp`: iterative closest point: pair each aligned row with its nearest
  public feature, solve the orthogonal Procrustes problem, repeat;
- `moment_alignment`: gradient search over rotations for the one under which the rows
  look like public features coordinate by coordinate (mean, spread, and the non-negativity
  of ReLU features where the public features are non-negative, as WideResNet's are);
- `known_pairs`: Procrustes on pairs (x, xQ) it knows, e.g. public rows it also receives
  rotated (DP's public centres).
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from fedpatch_app.model.memory_bank import MemoryBank

log = logging.getLogger(__name__)


def procrustes(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The orthogonal R minimising ||source @ R - target|| (Frobenius)."""
    u, _, vt = np.linalg.svd(np.asarray(source, np.float64).T @ np.asarray(target, np.float64))
    return u @ vt


def _axes(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, np.float64)
    mean = x.mean(axis=0)
    _, vecs = np.linalg.eigh(np.cov(x, rowvar=False))
    vecs = vecs[:, ::-1]
    third = (((x - mean) @ vecs) ** 3).mean(axis=0)  # skew: a sign where the mean has none
    sign = np.sign(mean @ vecs + 1e-9 * np.sign(third))
    return vecs * np.where(sign == 0, 1.0, sign), mean


def pca_alignment(rows: np.ndarray, public: np.ndarray) -> np.ndarray:
    vy, _ = _axes(rows)
    vf, _ = _axes(public)
    return vy @ vf.T


def procrustes_icp(
    rows: np.ndarray, public: np.ndarray, start: np.ndarray, iterations: int = 15
) -> np.ndarray:
    index = MemoryBank(np.asarray(public, np.float32))
    r = start
    for _ in range(iterations):
        _, idx = index.search((rows @ r).astype(np.float32), k=1)
        r = procrustes(rows, public[idx[:, 0]])
    return r


def moment_alignment(
    rows: np.ndarray, public: np.ndarray, start: np.ndarray, steps: int = 300, seed: int = 0
) -> np.ndarray:
    torch.manual_seed(seed)
    y = torch.from_numpy(np.asarray(rows, np.float64))
    f = np.asarray(public, np.float64)
    f_mean, f_std = torch.from_numpy(f.mean(0)), torch.from_numpy(f.std(0))
    nonneg = bool((f >= 0).mean() > 0.99)
    r0 = torch.from_numpy(start)
    a = torch.zeros_like(r0, requires_grad=True)
    opt = torch.optim.Adam([a], lr=1e-2)
    scale = float((f**2).mean())
    for _ in range(steps):
        r = r0 @ torch.linalg.matrix_exp(a - a.T)
        z = y @ r
        loss = ((z.mean(0) - f_mean) ** 2).sum() / (f_mean**2).sum()
        loss = loss + ((z.std(0) - f_std) ** 2).sum() / (f_std**2).sum()
        if nonneg:
            loss = loss + (torch.relu(-z) ** 2).mean() / scale
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return (r0 @ torch.linalg.matrix_exp(a - a.T)).numpy()


def known_pairs(clear: np.ndarray, rotated: np.ndarray) -> np.ndarray:
    return procrustes(rotated, clear)


def estimates(rows: np.ndarray, public: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    """Every key-free estimate of R from pooled rotated rows and public features."""
    rng = np.random.default_rng(seed)
    y = rows[rng.permutation(len(rows))[:6000]].astype(np.float64)
    f = public[rng.permutation(len(public))[:6000]].astype(np.float64)
    pca = pca_alignment(y, f)
    out = {"pca": pca, "procrustes_icp": procrustes_icp(y, f, pca)}
    out["moments"] = moment_alignment(y, f, out["procrustes_icp"], seed=seed)
    return out
