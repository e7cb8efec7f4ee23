"""Pictures of what an attacker rebuilt: an image beside what its shared rows show and
what the attacker reconstructs from them, and single patches true against rebuilt."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fedpatch_app.model.backbone import backbone_info
from fedpatch_app.privacy.patches import input_pixels
from fedpatch_app.privacy.world import World


def _paste(shape: tuple[int, int], positions: np.ndarray, patches: np.ndarray, stride: int):
    """The stride x stride centre of each patch at its grid cell, grey elsewhere."""
    canvas = np.full((*shape, 3), 0.5, dtype=np.float32)
    size = patches.shape[1]
    lo = (size - stride) // 2
    for (i, j), patch in zip(positions, patches, strict=True):
        y, x = stride * i, stride * j
        block = patch[lo : lo + stride, lo : lo + stride]
        h, w = min(stride, shape[0] - y), min(stride, shape[1] - x)
        canvas[y : y + h, x : x + w] = block[:h, :w]
    return canvas


def showcase(world: World) -> tuple[int, int]:
    """(share, image) shown: the share with most rows, its image with most shared rows."""
    si = max(range(len(world.shares)), key=lambda i: len(world.shares[i].rows))
    counts = np.bincount(world.shares[si].positions[:, 0])
    return si, int(np.argmax(counts))


def draw(world: World, estimate: np.ndarray, title: str, path: Path) -> Path:
    """`estimate`: the attacker's estimate of the clear rows of the showcase share."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    si, img = showcase(world)
    share = world.shares[si]
    pixels = input_pixels(world.spec, world.model.extractor.backbone, [share.paths[img]])[0]
    chosen = np.flatnonzero(share.positions[:, 0] == img)
    stride = backbone_info(world.spec.backbone).strides[0]
    where = share.positions[chosen, 1:]
    shown = pixels.shape[:2]
    truth = _paste(shown, where, world.truth[si][chosen], stride)
    rebuilt = _paste(shown, where, world.inverter(estimate[chosen]), stride)
    fig = plt.figure(figsize=(12, 6.2))
    panels = [
        (pixels, "training image"),
        (truth, f"its {len(chosen)} shared rows' patches"),
        (rebuilt, "rebuilt from the shared rows"),
    ]
    for k, (picture, label) in enumerate(panels):
        ax = fig.add_subplot(2, 3, k + 1)
        ax.imshow(np.clip(picture, 0, 1))
        ax.set_title(label, fontsize=9)
        ax.axis("off")
    _strip(fig, world.truth[si][chosen], world.inverter(estimate[chosen]))
    fig.suptitle(title, fontsize=10)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _strip(fig, truth: np.ndarray, rebuilt: np.ndarray, count: int = 10) -> None:
    pick = np.linspace(0, len(truth) - 1, min(count, len(truth))).astype(int)
    for k, i in enumerate(pick):
        for row, source in ((0, truth), (1, rebuilt)):
            ax = fig.add_axes((0.03 + 0.095 * k, 0.25 - 0.2 * row, 0.085, 0.17))
            ax.imshow(np.clip(source[i], 0, 1), interpolation="nearest")
            ax.axis("off")
            if k == 0:
                ax.set_title("true patch" if row == 0 else "rebuilt", fontsize=8, loc="left")
