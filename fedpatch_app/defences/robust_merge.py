"""Which coreset rows of a category enter the merge: rows no other client's rows support
are quarantined.

A client that swaps defect-region features into its coreset (while declaring honest
counts) gets them into the bank easily: greedy k-center favours outlying rows. Such rows
are far from everything the other clients saw. So, per category held by two clients or
more, every row is measured against the rows of the OTHER clients (and the parent model's
bank, when the run joins one): its support distance is the distance to the nearest row of
each of them, in units of the coarser of the two clients' typical row spacings (a client
that saw fewer images has its rows farther apart, so neither a large client's row is far
merely because the small client saw less, nor a small client's row merely because the
large client's rows lie close together), the smallest over them. What honest support distances
look like is estimated from all rows together, with robust statistics of the log
distances (median and MAD, each client weighing the same: a minority of planted rows, or
one client that sends many rows, cannot move them). A row whose robust z-score exceeds
the threshold is unsupported.

Policy (`mode`), per client and category, by how many of its rows are unsupported:

- no more than an honest tail (fewer than `PLANTED_MIN`, or the share an honest tail
  gives, see below): under `quarantine` (default) its rows are all KEPT (recorded, not
  flagged): honest lines have such tails, and leaving a few of their rows out changes
  the merged bank's k-center path and with it the metrics by chance, with nothing
  gained; `rows` and `strict` leave those rows out and flag the client;
- more, but not most: the client plants rows. Its supported rows came with them and
  cannot be told from planted ones that sit closer to normal features, so under
  `quarantine` and `strict` ALL its rows of the category are left out of the merge (its
  images are still evaluated). A line whose images differ from the others' in part
  looks the same and loses its rows too; `rows` leaves out only the unsupported rows
  (planted rows close to normal ones then stay, and the client is flagged);
- most (over `MOSTLY`): its normal images differ from everyone else's as a whole (a line
  with its own look), or it sends mostly made-up rows. The rows alone cannot tell the two
  apart. `quarantine` and `rows` keep its rows and flag it by name; `strict` leaves them
  all out (a line whose images differ then loses its rows).

Unequal holders. A client with many images has seen variety that a client with few has
not: some of its honest rows lie beyond the small client's reach, and the more so the
larger it is (measured on pretrained features of one category: 32 images against 4 leave
0.7 % to 3 % of the large line's rows unsupported, equal holders 0.0 % to 1 %). So the
share of unsupported rows an honest tail may have grows with the client's size ratio
(its rows over those of the largest other source): `PLANTED_SHARE` times the ratio, at
least `PLANTED_SHARE`, at most `TAIL_CAP`. A planter among equals is judged as before; a
planter that is also the largest holder must plant more than the honest tail of its
size before it loses its rows (the source check still judges its rows by their effect
on defects).

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
from fedpatch_app.model.row_store import release

log = logging.getLogger(__name__)

MODES = ("quarantine", "rows", "strict", "off")
#: Above this share of unsupported rows, a client's rows are "mostly" unsupported.
MOSTLY = 0.5
#: From this many unsupported rows (and this share of a client's rows, times its size
#: ratio) on, a client plants rows: honest tails give fewer. Equal holders measured up to
#: 1.0 % (22 of 2,202 rows, pretrained features at 256 px, IID); planters from 7.6 %.
PLANTED_MIN = 3
PLANTED_SHARE = 0.03
#: The largest honest tail, whatever the size ratio: honest lines measured up to 3.0 % (32
#: images against 4, local coresets of half the patches); a server-blind inflater that
#: appended whole defect images was 7.6 % (8.4 times the others' rows).
TAIL_CAP = 0.05
#: MAD of a normal distribution = 1 / this factor x its standard deviation.
MAD_TO_SIGMA = 1.4826


@dataclass
class Verdict:
    """The decision for one client's rows of one category."""

    keep: np.ndarray  # bool (rows,)
    unsupported: int
    rows: int
    #: "" (nothing unsupported), "quarantined" (its unsupported rows left out), "dropped"
    #: (all its rows left out: it plants rows, or, under `strict`, most are unsupported),
    #: "kept-mostly-unsupported" (most rows unsupported: kept whole, flagged) or
    #: "kept-tail" (no more unsupported rows than an honest tail of its size has: kept,
    #: not flagged, under `quarantine`).
    action: str = ""
    #: Its rows over those of the largest other source (> 1: it is the largest holder).
    size_ratio: float = 1.0

    @property
    def share(self) -> float:
        return self.unsupported / self.rows if self.rows else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "unsupported": self.unsupported,
            "quarantined": int(self.rows - self.keep.sum()),
            "action": self.action or "kept",
            "size_ratio": round(self.size_ratio, 3),
        }


@dataclass
class Support:
    """The check of one category: a verdict per client (in the order given) and the facts."""

    verdicts: list[Verdict]
    facts: dict[str, Any] = field(default_factory=dict)


def _spacing(rows: np.ndarray, index: MemoryBank) -> float:
    """The typical distance between a source's rows (`index` holds them): the median
    distance of each row to its nearest other row (NaN for a single row)."""
    if len(rows) < 2:
        return math.nan
    distances, _ = index.search(rows, k=2)
    return float(np.median(distances[:, 1]))


def support_distances(
    parts: Sequence[np.ndarray], reference: np.ndarray | None = None, device: Any = "cpu"
) -> list[np.ndarray]:
    """For each part, the support distance of each of its rows: the distance to the
    nearest row of each other source (the other parts, and `reference`: rows that vouch
    but are not judged), in units of the coarser of the two row spacings (the source's
    and the part's own), the smallest over the sources. A client with few rows has them
    far apart: measured in its spacing, a row of a large client is not unsupported merely
    because the small client saw less, and a row of the small client is not unsupported
    merely because the large client's rows lie close together."""
    sources = [np.asarray(p) for p in parts] + (
        [np.asarray(reference)] if reference is not None else []
    )
    # One source's index at a time (an index copies its rows): each part's nearest
    # distances to it, then the next; memory-mapped rows are released once read.
    nearest: list[dict[int, np.ndarray]] = [{} for _ in parts]
    found = []
    for j, src in enumerate(sources):
        index = MemoryBank(src, device=device)
        found.append(_spacing(src, index))
        release(src)
        for i, part in enumerate(parts):
            if i != j:
                nearest[i][j] = index.patch_scores(part)
                release(part)
        del index
    spacings = np.array(found)
    known = spacings[np.isfinite(spacings) & (spacings > 0)]
    fill = float(np.median(known)) if known.size else 1.0
    spacings = np.where(np.isfinite(spacings) & (spacings > 0), spacings, fill)
    out = []
    for i, by_source in enumerate(nearest):
        scaled = [
            d.astype(np.float64) / max(spacings[j], spacings[i]) for j, d in by_source.items()
        ]
        out.append(np.min(np.stack(scaled, axis=1), axis=1))
    return out


def weighted_median(values: np.ndarray, weights: np.ndarray) -> float:
    """The value at half of the total weight (values sorted)."""
    order = np.argsort(values, kind="stable")
    cumulative = np.cumsum(weights[order])
    return float(values[order][np.searchsorted(cumulative, 0.5 * cumulative[-1])])


def _robust_z(distances: Sequence[np.ndarray]) -> tuple[list[np.ndarray], dict[str, float]]:
    """Robust z-scores of the log support distances: median and MAD over every row, each
    client weighing the same whatever its number of rows (a client that sends many rows
    cannot make its own distances the norm)."""
    every = np.concatenate(distances)
    positive = every[every > 0]
    floor = float(np.median(positive)) * 1e-6 if positive.size else 1e-12
    logs = [np.log(np.maximum(d, floor)) for d in distances]
    pooled = np.concatenate(logs)
    weights = np.concatenate([np.full(len(v), 1.0 / len(v)) for v in logs])
    median = weighted_median(pooled, weights)
    mad = weighted_median(np.abs(pooled - median), weights) * MAD_TO_SIGMA
    # Identical distances (MAD 0): a tiny scale, so that only larger ones stand out.
    scale = mad if mad > 0 else 1e-9
    return [(v - median) / scale for v in logs], {"median": median, "scale": scale}


def honest_share(size_ratio: float) -> float:
    """The share of a client's rows that may be unsupported as an honest tail: it grows
    with how much larger the client is than every other source, up to `TAIL_CAP`."""
    return min(TAIL_CAP, PLANTED_SHARE * max(1.0, size_ratio))


def size_ratios(sizes: Sequence[int]) -> list[float]:
    """Each source's rows over the rows of the largest OTHER source."""
    ratios = []
    for i, n in enumerate(sizes):
        others = [m for j, m in enumerate(sizes) if j != i]
        ratios.append(n / max(1, max(others)) if others else 1.0)
    return ratios


def action_for(unsupported: int, rows: int, size_ratio: float, mode: str) -> str:
    """The verdict's action for a client with `unsupported` of its `rows` unsupported (see
    the module doc): "", "kept-tail", "quarantined", "dropped" or
    "kept-mostly-unsupported"."""
    if unsupported == 0:
        return ""
    mostly = unsupported > MOSTLY * rows
    planted = unsupported >= max(PLANTED_MIN, math.ceil(honest_share(size_ratio) * rows))
    if mode == "strict":
        return "dropped" if mostly or planted else "quarantined"
    if mostly:
        return "kept-mostly-unsupported"
    if mode == "rows":
        return "quarantined"
    return "dropped" if planted else "kept-tail"


def _verdict(z: np.ndarray, threshold: float, mode: str, size_ratio: float = 1.0) -> Verdict:
    unsupported = z > threshold
    verdict = Verdict(
        np.ones(len(z), dtype=bool), int(unsupported.sum()), len(z), size_ratio=size_ratio
    )
    verdict.action = action_for(verdict.unsupported, verdict.rows, size_ratio, mode)
    if verdict.action == "dropped":
        verdict.keep = np.zeros(len(z), dtype=bool)
    elif verdict.action == "quarantined":
        verdict.keep = ~unsupported
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
    sizes = [len(p) for p in parts] + ([len(reference)] if reference is not None else [])
    ratios = size_ratios(sizes)
    verdicts = [_verdict(v, z, mode, ratio) for v, ratio in zip(zs, ratios, strict=False)]
    threshold = math.exp(stats["median"] + z * stats["scale"])
    facts = {
        "checked": True,
        "mode": mode,
        "z": z,
        # Support distances are in units of the supporting client's row spacing.
        "median_support": math.exp(stats["median"]),
        "threshold_support": threshold,
        "rows": int(sum(v.rows for v in verdicts)),
        "unsupported": int(sum(v.unsupported for v in verdicts)),
        "quarantined": int(sum(v.rows - int(v.keep.sum()) for v in verdicts)),
    }
    return Support(verdicts, facts)
