"""Drawn scenes (``--kind drawn``): structured scenes that resemble the AutoVI categories,
drawn as textured shapes, and their defects as local changes of the same scene (a missing
screw or staple, an open clip or fastener, cardboard, a blue hoop, a gloved hand, an
obstruction). Every change is one ground-truth region whose mask covers exactly the pixels
the change altered. Cheap to make; the photo scenes are the realistic kind."""

from __future__ import annotations

import numpy as np

from fedpatch_app.data.autovi_release import NATIVE_SIZES
from fedpatch_app.data.synthetic.drawn_parts import (
    blue_hoop,
    cardboard,
    missing_screw,
    obstruction,
    open_part,
    operator,
)
from fedpatch_app.data.synthetic.drawn_render import Change, Scene, surface
from fedpatch_app.data.synthetic.drawn_scenes import SCENES
from fedpatch_app.data.synthetic.layout import region_plan, rng_for


def make_change(
    category: str,
    defect: str,
    scene: Scene,
    rng: np.random.Generator,
    taken: list[np.ndarray],
    used: dict[str, set[int]],
) -> Change:
    """One region of ``defect`` in ``scene``; ``used`` tracks parts already changed."""

    def pick(group: str) -> int:
        free = [
            i for i in range(len(scene.groups[group])) if i not in used.setdefault(group, set())
        ]
        i = int(rng.choice(free))
        used[group].add(i)
        return i

    if defect == "missing" and category == "pipe_staple":
        ids = scene.groups["staples"][pick("staples")]
        return Change("missing", removed=set(ids))
    if defect == "missing":
        return missing_screw(scene, rng, pick("screws"))
    if defect == "fastening":
        return open_part(scene, rng, "fasteners", pick("fasteners"), "fastening")
    if defect == "unclipped":
        return open_part(scene, rng, "clips", pick("clips"), "unclipped")
    if defect == "blue_hoop":
        return blue_hoop(scene, rng, taken)
    if defect == "cardboard":
        return cardboard(scene, rng, taken)
    if defect == "operator":
        return operator(scene, rng, taken)
    if defect == "obstruction":
        color = (55.0, 53.0, 50.0) if category == "engine_wiring" else (150.0, 146.0, 138.0)
        return obstruction(scene, rng, taken, color)
    raise ValueError(f"no synthetic defect {defect!r} for {category}")


def _finish(planes: np.ndarray, gain: float) -> np.ndarray:
    """(3, h, w) float image times the lighting gain -> (h, w, 3) uint8."""
    planes *= np.float32(gain)
    planes += np.float32(0.5)
    np.clip(planes, 0, 255, out=planes)
    return np.ascontiguousarray(planes.astype(np.uint8).transpose(1, 2, 0))


def good_image(category: str, seed: int, split_code: int, index: int) -> np.ndarray:
    w, h = NATIVE_SIZES[category]
    rng = rng_for(seed, category, split_code, index)
    scene = SCENES[category](rng, surface(seed, category, w, h), w, h)
    img, _ = scene.render()
    return _finish(img, float(rng.uniform(0.92, 1.08)))


def defect_image(
    category: str, folder: str, seed: int, folder_code: int, index: int
) -> tuple[np.ndarray, list[tuple[str, np.ndarray]]]:
    w, h = NATIVE_SIZES[category]
    rng = rng_for(seed, category, folder_code, index)
    scene = SCENES[category](rng, surface(seed, category, w, h), w, h)
    gain = float(rng.uniform(0.92, 1.08))
    plan = region_plan(category, folder, index, rng)
    _, good_label = scene.render()
    taken: list[np.ndarray] = []
    used: dict[str, set[int]] = {}
    changes: list[Change] = []
    for defect in plan:
        change = make_change(category, defect, scene, rng, taken, used)
        support = np.zeros((h, w), dtype=bool)
        for op in change.added:
            support |= op.mask
        for op_id in change.removed:
            support |= scene.op(op_id).mask
        taken.append(support)
        changes.append(change)
    img, label = scene.render(changes)
    differs = label != good_label
    regions = []
    claimed = np.zeros((h, w), dtype=bool)
    # later changes are drawn on top: give overlapping pixels to the later change
    for change, support in reversed(list(zip(changes, taken, strict=True))):
        region = differs & support & ~claimed
        claimed |= region
        regions.append((change.defect, region))
    regions.reverse()
    regions = [(d, m) for d, m in regions if m.any()]
    return _finish(img, gain), regions
