"""Which coreset rows of a category enter the merge: rows no other client's rows support
are quarantined.

A client that swaps defect-region features into its coreset (while declaring honest
counts) gets them into the bank easily: greedy k-center favours outlying rows. Such rows
are far from everything the other clients saw. So, per category held by two clients or
more, every row is measured against the rows of the OTHER clients (and the parent model's
bank, when the run joins one): its support distance is the distance to the nearest of
them (with three or more others: to the nearest row of the second closest client, so that
no single client vouches alone). What honest support distances look like is estimated from all rows together, with
robust statistics of the log distances: the median over clients of each client's median
and of each client's MAD (a minority of planted rows, one client that sends many rows, or
one line whose rows all lie apart cannot move them). A row whose robust z-score exceeds
the threshold is unsupported.

Policy (`mode`), per client and category, by how many of its rows are unsupported:

- a few (fewer than `PLANTED_MIN`, or `PLANTED_SHARE` of its rows: the tail honest data
  have too): those rows are quarantined (left out of the merge);
- more, but not most: the client plants rows. Its supported rows came with them and
  cannot be told from planted ones that sit closer to normal features, so under
  `quarantine` (default) and `strict` ALL its rows of the category are left out of the
  merge (its images are still evaluated). A line whose images differ from the others'
  in part looks the same and loses its rows too; `rows` leaves out only the unsupported
  rows (planted rows close to normal ones then stay, and the client is flagged);
- most (over `MOSTLY`): its normal images differ from everyone else's as a whole (a line
  with its own look), or it sends mostly made-up rows. The rows alone cannot tell the two
  apart. `quarantine` and `rows` keep its rows and flag it by name; `strict` leaves them
  all out (a line whose images differ then loses its rows).

What this cannot catch is said in docs/security.md: a category held by one client only
(nothing to compare with), rows planted within the honest spread (e.g. defect features
pulled towards normal ones), and contamination that every client shares.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fedpatch_app.model.memory_bank import MemoryBank

log = logging.getLogger(__name__)

MODES = ("quarantine", "rows", "strict", "off")
#: Above this share of unsupported rows, a client's rows are "mostly" unsupported.
MOSTLY = 0.5
#: From this many unsupported rows (and this share of a client's rows) on, a client plants
#: rows: honest tails give fewer (none of some 9,000 honest rows measured at z 4).
PLANTED_MIN = 3
PLANTED_SHARE = 0.01
#: MAD of a normal distribution = 1 / this factor x its standard deviation.
MAD_TO_SIGMA = 1.4826


@dataclass
class Verdict:
    """The decision for one client's rows of one category."""

    keep: np.ndarray  # bool (rows,)
    unsupported: int
    rows: int
    #: "" (nothing unsupported), "quarantined" (its unsupported rows left out), "dropped"
    #: (all its rows left out: it plants rows, or, under `strict`, most are unsupported) or
    #: "kept-mostly-unsupported" (most rows unsupported: kept whole, flagged).
    action: str = ""

    @property
    def share(self) -> float:
        return self.unsupported / self.rows if self.rows else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "unsupported": self.unsupported,
            "quarantined": int(self.rows - self.keep.sum()),
            "action": self.action or "kept",
        }


@dataclass
class Support:
    """The check of one category: a verdict per client (in the order given) and the facts."""

    verdicts: list[Verdict]
    facts: dict[str, Any] = field(default_factory=dict)


def support_distances(
    parts: Sequence[np.ndarray], reference: np.ndarray | None = None, device: Any = "cpu"
) -> list[np.ndarray]:
    """For each part, the support distance of each of its rows: with three or more other
    sources (the other parts and `reference`, rows that vouch but are not judged), the
    distance to the nearest row of the SECOND closest source, so that one other client
    alone (an outlying line, or an accomplice) cannot vouch for a row; else the distance
    to the nearest row of the other source."""
    sources = [*parts, *([reference] if reference is not None else [])]
    indexes = [MemoryBank(np.asarray(p), device=device) for p in sources]
    out = []
    for i, part in enumerate(parts):
        nearest = np.stack(
            [index.patch_scores(part) for j, index in enumerate(indexes) if j != i], axis=1
        ).astype(np.float64)
        nearest.sort(axis=1)
        out.append(nearest[:, 1] if nearest.shape[1] >= 3 else nearest[:, 0])
    return out


def _robust_z(distances: Sequence[np.ndarray]) -> tuple[list[np.ndarray], dict[str, float]]:
    """Robust z-scores of the log distances. Centre and scale are those of the typical
    client: the median over clients of each client's median, and of each client's MAD.
    A client that sends many rows, or a line whose rows all lie far from the others', moves
    neither (a pooled MAD would grow with such a line and hide planted rows)."""
    every = np.concatenate(distances)
    positive = every[every > 0]
    floor = float(np.median(positive)) * 1e-6 if positive.size else 1e-12
    logs = [np.log(np.maximum(d, floor)) for d in distances]
    centres = [float(np.median(v)) for v in logs]
    spreads = [float(np.median(np.abs(v - c))) for v, c in zip(logs, centres, strict=True)]
    median = float(np.median(centres))
    mad = float(np.median(spreads)) * MAD_TO_SIGMA
    # Identical distances (MAD 0): a tiny scale, so that only larger ones stand out.
    scale = mad if mad > 0 else 1e-9
    return [(v - median) / scale for v in logs], {"median": median, "scale": scale}


def _verdict(z: np.ndarray, threshold: float, mode: str) -> Verdict:
    unsupported = z > threshold
    n = int(unsupported.sum())
    verdict = Verdict(np.ones(len(z), dtype=bool), n, len(z))
    if n == 0:
        return verdict
    if mode in ("quarantine", "rows") and verdict.share > MOSTLY:
        verdict.action = "kept-mostly-unsupported"
    elif mode != "rows" and n >= max(PLANTED_MIN, math.ceil(PLANTED_SHARE * len(z))):
        verdict.keep = np.zeros(len(z), dtype=bool)
        verdict.action = "dropped"
    else:
        verdict.keep = ~unsupported
        verdict.action = "quarantined"
    return verdict


def check_support(
    parts: Sequence[np.ndarray],
    *,
    z: float,
    mode: str = "quarantine",
    reference: np.ndarray | None = None,
    device: Any = "cpu",
) -> Support:
    """The verdict on every client's rows of one category (see the module doc)."""
    if mode not in MODES:
        raise ValueError(f"robust merge mode must be one of {MODES}, got {mode!r}")
    everything = [Verdict(np.ones(len(p), dtype=bool), 0, len(p)) for p in parts]
    comparable = len(parts) + (reference is not None)
    if mode == "off" or comparable < 2:
        reason = "off" if mode == "off" else "one client holds this category: nothing to compare"
        return Support(everything, {"checked": False, "reason": reason})
    distances = support_distances(parts, reference, device)
    zs, stats = _robust_z(distances)
    verdicts = [_verdict(v, z, mode) for v in zs]
    threshold = math.exp(stats["median"] + z * stats["scale"])
    facts = {
        "checked": True,
        "mode": mode,
        "z": z,
        "median_distance": math.exp(stats["median"]),
        "threshold_distance": threshold,
        "rows": int(sum(v.rows for v in verdicts)),
        "unsupported": int(sum(v.unsupported for v in verdicts)),
        "quarantined": int(sum(v.rows - int(v.keep.sum()) for v in verdicts)),
    }
    return Support(verdicts, facts)
