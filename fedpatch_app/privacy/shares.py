"""Exactly the rows each client would share, and where in its images each row comes from.

The clients' data are the run's partition (`federated.data.partition_shares`, the code
every simulated client runs), and each local coreset is built by `PatchCore.fit` with the
run's `coreset-ratio` and `local-oversample`, as `federated.client.handle_train` builds it.
The only addition is bookkeeping: the features `fit` extracted are kept, so that every
shared row can be traced to its image and grid cell (the ground truth of the attacks).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from fedpatch_app.errors import ModelError
from fedpatch_app.model.memory_bank import MemoryBank
from fedpatch_app.model.patchcore import PatchCore

log = logging.getLogger(__name__)


class RecordingPatchCore(PatchCore):
    """A PatchCore that keeps the features of the image lists it extracted, so that the
    audit reads the very features a client's `fit` selected its rows from."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.kept: dict[tuple[str, ...], np.ndarray] = {}

    def features(
        self,
        paths: Sequence[str | Path],
        desc: str = "features",
        native_size: tuple[int, int] | None = None,
    ) -> np.ndarray:
        key = tuple(str(p) for p in paths)
        if key not in self.kept:
            self.kept[key] = super().features(paths, desc, native_size)
        return self.kept[key]


@dataclass
class ClientShare:
    """One client's local coreset of one category and its ground truth."""

    client: int
    category: str
    rows: np.ndarray  # (k, D) float32: what the client sends
    paths: list[Path]  # its training images (the bank's)
    positions: np.ndarray  # (k, 3) int: image index, grid row, grid column of each row
    features: np.ndarray  # (n, h, w, D): the features of `paths`
    n_patches: int
    radius: float

    @property
    def grid(self) -> tuple[int, int]:
        return int(self.features.shape[1]), int(self.features.shape[2])


@dataclass
class ClientData:
    """A client's images of one category: for the bank (`fit`) and held out of it."""

    client: int
    category: str
    fit: list[Path]
    held_out: list[Path]


def client_data(settings: Any, root: Path) -> list[ClientData]:
    """Every client's images per category under the run's partition."""
    from fedpatch_app.data.autovi import load_category
    from fedpatch_app.federated.data import partition_shares

    plan = SimpleNamespace(categories=settings.categories, settings=settings)
    nodes = partition_shares(plan, Path(root), settings.num_clients)
    out = []
    for pid, node in sorted(nodes.items()):
        for cat, rel in sorted(node.fit.items()):
            base = load_category(root, cat).root
            held = [base / r for r in node.calibration.get(cat, [])]
            out.append(ClientData(pid, cat, [base / r for r in rel], held))
    return out


def locate(rows: np.ndarray, features: np.ndarray) -> np.ndarray:
    """(image, row, column) of each of `rows` among `features` (n, h, w, D): the rows
    are copies of features, so each has one at distance (nearly) 0."""
    n, h, w, d = features.shape
    flat_features = features.reshape(-1, d)
    _, idx = MemoryBank(flat_features).search(rows, k=1)
    flat = idx[:, 0]
    # The search's float32 distances are not exact near 0: check the matches in float64.
    gap = np.linalg.norm(flat_features[flat].astype(np.float64) - rows, axis=1)
    scale = float(np.linalg.norm(rows, axis=1).mean()) or 1.0
    if float(gap.max()) > 1e-4 * scale:
        raise ModelError(
            f"a shared row is {float(gap.max()):.3g} from every feature of its client: "
            "the coreset was not built from these features"
        )
    return np.stack([flat // (h * w), (flat // w) % h, flat % w], axis=1)


def local_share(model: RecordingPatchCore, data: ClientData, settings: Any) -> ClientShare:
    """The client's coreset of its category, built by the clients' own `fit`."""
    bank = model.fit(data.fit, data.category, settings.coreset_ratio, settings.local_oversample)
    feats = model.kept[tuple(str(p) for p in data.fit)]
    share = ClientShare(
        data.client,
        data.category,
        bank.features,
        list(data.fit),
        locate(bank.features, feats),
        feats,
        bank.n_patches,
        bank.radius,
    )
    log.info(
        "client %d, %s: %d images -> %d shared rows",
        data.client,
        data.category,
        len(data.fit),
        len(bank.features),
    )
    return share
