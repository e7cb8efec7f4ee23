"""What each attacker holds in each share mode.

The server's `View` of a mode: per share the rows it holds (aligned with the client's
rows), and its key-free estimates of the map back to clear features (None: the rows are
taken as they are). The curious client's view: the rows of the OTHER clients it receives.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedpatch_app.model.memory_bank import MemoryBank
from fedpatch_app.model.patchcore import select_coreset
from fedpatch_app.privacy import alignment, relay
from fedpatch_app.privacy.rotation import Rotation
from fedpatch_app.privacy.world import World

SEES = {
    "raw": "every client's local coreset: real patch features, with the row and image counts",
    "rotation": "every client's local coreset rotated by the share key's secret rotation: "
    "the norms and all pairwise distances of the rows, and the counts",
    "rotation_public_pairs": "as rotation, plus public rows it also receives rotated (the "
    "public centres of the DP mode): pairs (x, xQ)",
    "dp": "per client the noisy per-cluster sums and counts of its image-level DP release "
    "around public centres, a noisy image count, the public centres",
    "dp_projection": "as dp, in a public d-dimensional subspace (principal directions of "
    "the DP public reference): noisy per-cluster sums and counts of d-dimensional projected "
    "features, a noisy image count, the public centres and the projection",
    "relay": "AES-256-GCM ciphertexts of every client's coreset (random bytes) and their "
    "sizes (the row counts)",
}


@dataclass
class View:
    rows: list[np.ndarray]
    estimates: dict[str, np.ndarray | None]


def _bytes_as_features(sealed: relay.Sealed, public: np.ndarray) -> np.ndarray:
    """Ciphertext bytes turned into feature rows with the public features' marginals (the
    attacker's best use of random bytes): 32 bits per value -> a quantile per dimension."""
    n, d = sealed.shape
    raw = np.frombuffer(sealed.ciphertext[: n * d * 4], dtype=np.uint32).reshape(n, d)
    u = (raw.astype(np.float64) + 0.5) / 2.0**32
    ranked = np.sort(public, axis=0)
    pos = np.minimum((u * len(ranked)).astype(np.int64), len(ranked) - 1)
    return np.take_along_axis(ranked, pos, axis=0).astype(np.float32)


def public_centres(world: World) -> np.ndarray:
    """The K public rows (greedy k-center of public features) a DP reply would carry."""
    k = min(world.audit.public_pairs, len(world.public_features))
    return select_coreset(world.public_features, k, world.spec)[0]


def server_view(world: World, mode: str, rotation: Rotation) -> View:
    if mode == "raw":
        return View([s.rows for s in world.shares], {"direct": None})
    if mode == "relay":
        sealed = [
            relay.seal(s.rows, world.key, f"client {s.client}", s.category) for s in world.shares
        ]
        return View(
            [_bytes_as_features(x, world.public_features) for x in sealed], {"direct": None}
        )
    rows = [rotation.apply(s.rows) for s in world.shares]
    if mode == "rotation":
        found = alignment.estimates(
            np.concatenate(rows), world.public_features, world.settings.seed
        )
        return View(rows, {"direct": None, **found})
    clear = public_centres(world)
    return View(rows, {"known_pairs": alignment.known_pairs(clear, rotation.apply(clear))})


def matches(seen: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Indices of the `rows` that are (to float tolerance) among `seen`."""
    if len(seen) == 0:
        return np.zeros(0, dtype=np.int64)
    dist, _ = MemoryBank(np.asarray(seen, np.float32)).search(rows, k=1)
    scale = float(np.linalg.norm(rows, axis=1).mean()) or 1.0
    return np.flatnonzero(dist[:, 0] <= 1e-2 * scale)


def curious_rows(world: World, mode: str, banks: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Per share, the indices of its rows the curious client receives: none of its own;
    with relayed rows every other client's whole coreset, else the global bank's rows."""
    out = []
    for s in world.shares:
        if s.client == world.curious:
            out.append(np.zeros(0, dtype=np.int64))
        elif mode == "relay":
            out.append(np.arange(len(s.rows)))
        else:
            out.append(matches(banks[s.category], s.rows))
    return out
