"""The official metrics of a model folder on a labelled test set.

Two models are compared on the same footing by scoring the same test images with each
(the scoring code of `fedpatch predict`) and evaluating the maps as a centralized run
does: one map scaling per category, 16-bit levels, AUC-sPRO and image AUROC. This is how
a model that new lines joined is compared with one built by all of them at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fedpatch_app.data.layouts import load_category
from fedpatch_app.inspection.model_folder import load_model
from fedpatch_app.metrics.evaluate import evaluate_category
from fedpatch_app.metrics.map_scaling import fit_scaling
from fedpatch_app.model.memory_bank import MemoryBank
from fedpatch_app.model.patchcore import PatchCore


def evaluate_model(
    model_dir: str | Path,
    data_root: str | Path,
    categories: Sequence[str] | None = None,
    *,
    device: str = "auto",
    batch_size: int = 8,
    seed: int = 0,
) -> dict[str, dict[str, Any]]:
    """Results block per category of the model's banks on the data root's test images."""
    model = load_model(model_dir)
    patchcore = PatchCore(model.runtime_spec(), device=device, batch_size=batch_size)
    out = {}
    for cat in categories or sorted(model.categories):
        category = load_category(data_root, cat)
        held = model.category(cat)
        index = MemoryBank(held.bank.features, device=patchcore.device, ann=held.index)
        pred = patchcore.predict(
            held.bank, [s.path for s in category.test], held.native_size, index=index
        )
        scaling = fit_scaling(pred.maps)
        levels = [scaling.to_uint16(m) for m in pred.maps]
        out[cat], _ = evaluate_category(category, levels, seed=seed)
    return out
