"""Dishonest clients, for the poisoning benchmark and the tests of the server's defences.

Each attack is a `tamper(node_id, instruction, reply)` function; `client_app.tampered_app`
puts it in a ClientApp mod, so that the attacking node runs the real ClientApp handlers,
then changes only its own reply, as a client that controls its own machine can. The
honest nodes are untouched.

| attack | phase | what the attacker sends |
|---|---|---|
| `poison` | train | defect-region patch features in place of coreset rows; honest counts |
| `inflate` | train | whole defect images' patches appended; counts inflated to match |
| `extreme` | evaluate | one map maximum (and image score) of 1e30 |
| `steal` | evaluate | every test image of the category claimed as its own |
| `impersonate` | train | another node's partition id |

The defect features come from the category's defective test images (the very images the
federation evaluates) or from the attacker's own defective parts (`defects_from`: another
AutoVI-format folder). Nothing here runs in a normal run: the product never imports the
drills package; the benchmark (`benchmarks/poisoning.py`) and the tests do.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, Message, MessageType

from fedpatch_app.defences.source_check import defect_patch_mask
from fedpatch_app.federated import messages as M

log = logging.getLogger(__name__)

ATTACKS = ("poison", "inflate", "extreme", "steal", "impersonate")
#: A map maximum no honest PatchCore map reaches.
EXTREME = 1e30


def defect_features(plan: M.Plan, root: Path, category: str, rel_paths: Sequence[str] | None):
    """Patch features (n, D) of the defect regions of a category's defective test images
    (`rel_paths`: only these; None: all of them)."""
    from fedpatch_app.data.layouts import load_category
    from fedpatch_app.model.patchcore import PatchCore

    cat = load_category(root, category)
    wanted = None if rel_paths is None else set(rel_paths)
    samples = [s for s in cat.test if not s.is_good and (wanted is None or s.rel_path in wanted)]
    if not samples:
        empty = np.zeros((0, plan.spec.embed_dim), dtype=np.float32)
        return empty, empty
    model = PatchCore(plan.spec, device="cpu", batch_size=plan.settings.batch_size)
    feats = model.features([s.path for s in samples], desc=f"{category}: attacker's features")
    rows = []
    for sample, grid_feats in zip(samples, feats, strict=True):
        masks = [r.mask for r in cat.load_regions(sample)]
        rows.append(grid_feats[defect_patch_mask(masks, grid_feats.shape[:2])])
    return np.concatenate(rows).astype(np.float32), feats.reshape(-1, feats.shape[-1])


@dataclass
class Attacker:
    """One dishonest node (`node_id`) and what it does (see the module doc)."""

    node_id: int
    kind: str
    data_root: Path
    categories: tuple[str, ...] = ()
    #: Where the defect images come from: None = the category's test images (the ones the
    #: federation evaluates); a folder = the attacker's own AutoVI-format data.
    defects_from: Path | None = None
    victim: int = 0
    node_config: dict[str, Any] = field(default_factory=dict)
    #: What the attacker did, per category (rows injected, counts claimed, ...).
    log: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: The rows it planted, per category.
    planted: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in ATTACKS:
            raise ValueError(f"unknown attack {self.kind!r} (one of {', '.join(ATTACKS)})")

    def __call__(self, node_id: int, msg: Message, reply: Message) -> Message:
        if node_id != self.node_id or reply.has_error():
            return reply
        kind = msg.metadata.message_type
        if kind == MessageType.TRAIN and self.kind in ("poison", "inflate", "impersonate"):
            self._train(M.Plan.from_config(msg.content.config_records[M.CONFIG]), reply)
        elif kind == MessageType.EVALUATE and self.kind in ("extreme", "steal"):
            self._evaluate(M.Plan.from_config(msg.content.config_records[M.CONFIG]), reply)
        return reply

    def _targets(self, held: Sequence[str]) -> list[str]:
        return [c for c in held if not self.categories or c in self.categories]

    # ------------------------------------------------------------------ train

    def _train(self, plan: M.Plan, reply: Message) -> None:
        info = reply.content.config_records[M.INFO]
        if self.kind == "impersonate":
            self.log["partition"] = {"own": info["partition-id"], "claimed": self.victim}
            info["partition-id"] = int(self.victim)
            return
        coresets = reply.content.array_records[M.CORESETS]
        patched = ArrayRecord({k: coresets[k] for k in coresets.keys()})
        for cat in self._targets(list(coresets.keys())):
            root = self.defects_from or self.data_root
            defect, whole = defect_features(plan, root, cat, None)
            honest = coresets[cat].numpy().astype(np.float32)
            if self.kind == "poison":
                rows = self._poison(cat, honest, defect)
            else:
                rows = self._inflate(cat, honest, whole, info, plan)
            patched[cat] = Array(rows.astype(honest.dtype))
        reply.content.array_records[M.CORESETS] = patched

    def _poison(self, cat: str, honest: np.ndarray, defect: np.ndarray) -> np.ndarray:
        """The last rows replaced by defect rows (at most all but one honest row)."""
        n = min(len(defect), len(honest) - 1)
        rows = honest.copy()
        if n > 0:
            rows[len(honest) - n :] = defect[:n]
        self.planted[cat] = defect[:n]
        self.log[cat] = {"rows": len(honest), "injected": int(n)}
        return rows

    def _inflate(
        self, cat: str, honest: np.ndarray, whole: np.ndarray, info: Any, plan: M.Plan
    ) -> np.ndarray:
        """Every patch of every defect image appended; patches and images declared so that
        the rows fit the allowed size and patches per image stay as honest as possible."""
        import math

        rows = np.concatenate([honest, whole]) if len(whole) else honest
        s = plan.settings
        per_image = info[f"n-patches.{cat}"] // max(1, info[f"n-images.{cat}"])
        patches = max(
            info[f"n-patches.{cat}"], math.ceil(len(rows) / (s.coreset_ratio * s.local_oversample))
        )
        images = math.ceil(patches / max(1, per_image))
        info[f"n-images.{cat}"] = int(images)
        info[f"n-patches.{cat}"] = int(images * per_image)
        self.log[cat] = {
            "rows": len(honest),
            "injected": int(len(whole)),
            "patches": int(images * per_image),
        }
        return rows

    # ------------------------------------------------------------------ evaluate

    def _evaluate(self, plan: M.Plan, reply: Message) -> None:
        info = reply.content.config_records[M.INFO]
        scores = reply.content.array_records[M.SCORES]
        patched = ArrayRecord({k: scores[k] for k in scores.keys()})
        for cat in self._targets([c for c in info["categories"].split(",") if c]):
            values = scores[cat].numpy().astype(np.float64)
            if self.kind == "extreme":
                values[int(np.argmax(values))] = EXTREME
                info[f"max.{cat}"] = EXTREME
                self.log[cat] = {"claimed_max": EXTREME}
            else:
                values = self._steal(plan, cat, values, info)
            patched[cat] = Array(values)
        reply.content.array_records[M.SCORES] = patched

    def _steal(self, plan: M.Plan, cat: str, values: np.ndarray, info: Any) -> np.ndarray:
        """Every test image of the category claimed, the others' with made-up scores."""
        from fedpatch_app.data.layouts import load_category

        own = list(info[f"paths.{cat}"])
        others = [r for r in load_category(self.data_root, cat).test_rel if r not in set(own)]
        info[f"paths.{cat}"] = own + others
        info[f"defects.{cat}"] = list(info[f"defects.{cat}"]) + [r.split("/")[1] for r in others]
        fake = np.full(len(others), float(info[f"min.{cat}"]))
        self.log[cat] = {"own": len(own), "stolen": len(others)}
        return np.concatenate([values, fake])


def together(*tampers: Any) -> Any:
    """One tamper function applying several (each attacker changes only its own node)."""

    def tamper(node_id: int, msg: Message, reply: Message) -> Message:
        for each in tampers:
            reply = each(node_id, msg, reply)
        return reply

    return tamper
