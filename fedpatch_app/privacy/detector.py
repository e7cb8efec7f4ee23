"""The detector a share mode gives: the server's (or, for relayed rows, every client's)
merge of the clients' rows into one bank per category, and its scores on the test images,
with the project's own merge, scoring and metrics."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from fedpatch_app.model.merge import merge_category
from fedpatch_app.model.patchcore import Bank, PatchCore, coreset_size
from fedpatch_app.privacy import relay
from fedpatch_app.privacy.rotation import RotatedExtractor, Rotation, same_key
from fedpatch_app.privacy.world import World

log = logging.getLogger(__name__)


@dataclass
class Part:
    """One client's rows of a category as they enter the merge (in the merge's space)."""

    client: int
    rows: np.ndarray
    n_patches: int
    radius: float
    n_images: int


def merge(
    category: str, parts: Sequence[Part], settings: Any, spec: Any
) -> tuple[Bank, np.ndarray]:
    """The category's bank (`coreset-ratio` of the patches of every part, the `volume`
    budget) and the client of each bank row."""
    items = [
        SimpleNamespace(
            features=p.rows, n_patches=p.n_patches, n_images=p.n_images, radius=p.radius, dp=None
        )
        for p in parts
    ]
    k = coreset_size(sum(p.n_patches for p in parts), settings.coreset_ratio)
    merged = merge_category(category, items, k, spec, device="cpu")
    clients = np.array([parts[i].client for i in merged.sources], dtype=np.int64)
    return merged.bank, clients


def quality(model: PatchCore, bank: Bank, root: Path, seed: int) -> dict[str, float]:
    """Image AUROC and AUC-sPRO@0.3 of `bank` on its category's test images, scored by
    `model` (whose extractor gives features in the bank's space)."""
    from fedpatch_app.data.autovi import load_category
    from fedpatch_app.metrics.evaluate import evaluate_category
    from fedpatch_app.metrics.map_scaling import fit_scaling
    from fedpatch_app.runs.centralized import quantized

    category = load_category(root, bank.category)
    paths = [s.path for s in category.test]
    pred = model.predict(bank, paths, category.size, f"{bank.category}: scoring")
    block, _ = evaluate_category(category, quantized(pred.maps, fit_scaling(pred.maps)), seed=seed)
    out = {"image_auroc": float(block["image_auroc"]["mean"])}
    spro = block.get("auc_spro", {}).get("0.3")
    if spro is not None:
        out["auc_spro_0.3"] = float(spro)
    return out


@contextlib.contextmanager
def rotated_scoring(model: PatchCore, rotation: Rotation | None) -> Iterator[PatchCore]:
    """`model` with its test features rotated as a client of the rotation mode rotates
    them (unchanged without a rotation)."""
    if rotation is None:
        yield model
        return
    inner = model.extractor
    model.extractor = RotatedExtractor(inner, rotation)
    try:
        yield model
    finally:
        model.extractor = inner


def _parts(world: World, cat: str, mode: str, rotation: Rotation) -> list[Part]:
    shares = [s for s in world.shares if s.category == cat]
    if mode == "relay":
        # Every client opens every relayed coreset and merges them itself.
        sealed = [relay.seal(s.rows, world.key, f"client {s.client}", cat) for s in shares]
        rows = [relay.open_rows(x, world.key) for x in sealed]
    elif mode == "raw":
        rows = [s.rows for s in shares]
    else:
        same_key([(f"client {s.client}", rotation.key_id) for s in shares], cat)
        rows = [rotation.apply(s.rows) for s in shares]
    return [
        Part(s.client, r, s.n_patches, s.radius, len(s.paths))
        for s, r in zip(shares, rows, strict=True)
    ]


def mode_detector(world: World, mode: str, rotation: Rotation) -> tuple[dict, dict]:
    """Per category the detector's quality in `mode`, and the clear bank rows every client
    receives (for the curious client's attacks)."""
    rotated = mode in ("rotation", "rotation_public_pairs")
    out, banks = {}, {}
    for cat in sorted({s.category for s in world.shares}):
        bank, _ = merge(cat, _parts(world, cat, mode, rotation), world.settings, world.spec)
        with rotated_scoring(world.model, rotation if rotated else None) as model:
            out[cat] = quality(model, bank, world.root, world.settings.seed)
        clear = bank.features
        if rotated:
            clear = rotation.undo(clear, rotation.key_id, f"the bank of {cat}")
        banks[cat] = clear
    return out, banks
