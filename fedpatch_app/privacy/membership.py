"""Membership inference: was this image in a client's training set?

The attacker holds candidate images (half of them members) and the rows it sees. Scores
(higher = more likely a member):

- `distance_scores`: minus the smallest distance of any patch feature of the candidate
  to any row (a member's selected patches are the rows themselves: distance 0);
- `norm_scores`: minus the smallest relative gap between the norm of any patch feature
  of the candidate and the norm of any row: needs no alignment, and a rotation keeps
  norms.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedpatch_app.model.memory_bank import MemoryBank


@dataclass
class Candidates:
    """Candidate images of one client and category, their labels and patch features."""

    client: int
    category: str
    paths: list[Path]
    members: np.ndarray  # bool
    features: np.ndarray  # (n, P, D) clear patch features, as the attacker computes them


def pick(
    members: Sequence[Path], others: Sequence[Path], count: int, seed: int
) -> tuple[list[Path], np.ndarray]:
    """Up to `count` members and as many non-members, drawn with `seed`."""
    rng = np.random.default_rng(seed)
    n = min(len(members), len(others), count)
    inside = [members[i] for i in sorted(rng.permutation(len(members))[:n])]
    outside = [others[i] for i in sorted(rng.permutation(len(others))[:n])]
    return inside + outside, np.array([True] * n + [False] * n)


def distance_scores(features: np.ndarray, rows: np.ndarray) -> np.ndarray:
    index = MemoryBank(np.asarray(rows, np.float32))
    n, p, d = features.shape
    dist = index.patch_scores(features.reshape(-1, d).astype(np.float32)).reshape(n, p)
    return -dist.min(axis=1)


def norm_scores(features: np.ndarray, rows: np.ndarray) -> np.ndarray:
    norms = np.sort(np.linalg.norm(np.asarray(rows, np.float64), axis=1))
    n, p, d = features.shape
    cand = np.linalg.norm(features.reshape(-1, d).astype(np.float64), axis=1)
    at = np.clip(np.searchsorted(norms, cand), 1, len(norms) - 1)
    gap = np.minimum(np.abs(cand - norms[at - 1]), np.abs(cand - norms[at]))
    return -(gap / np.maximum(cand, 1e-12)).reshape(n, p).min(axis=1)
