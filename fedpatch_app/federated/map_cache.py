"""A node's float anomaly maps, kept on its own disk between the two evaluation messages.

Flower may handle each message in a new process, so the maps of phase A ("score") are
written here and read back by phase B ("stats"); then they are deleted. Maps never leave
the node. One folder per category and kind ("test" or "calibration"): `maps.npy`
(float32, (n, H, W), memory-mapped) and `index.json` (paths, labels, scores).
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fedpatch_app.errors import ModelError

KINDS = ("test", "calibration")


class MapCache:
    """The cache folder of one node and run."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    def reset(self) -> None:
        if self.folder.exists():
            shutil.rmtree(self.folder)
        self.folder.mkdir(parents=True)

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)

    def put(
        self, category: str, kind: str, maps: Sequence[np.ndarray], index: dict[str, Any]
    ) -> tuple[float, float]:
        """Store one category's maps of one kind; returns their (min, max)."""
        folder = self.folder / category / kind
        folder.mkdir(parents=True)
        height, width = maps[0].shape
        stack = np.lib.format.open_memmap(
            folder / "maps.npy", mode="w+", dtype=np.float32, shape=(len(maps), height, width)
        )
        lo, hi = math.inf, -math.inf
        for i, anomaly_map in enumerate(maps):
            stack[i] = anomaly_map
            lo, hi = min(lo, float(np.min(anomaly_map))), max(hi, float(np.max(anomaly_map)))
        stack.flush()
        del stack
        (folder / "index.json").write_text(json.dumps(index), encoding="utf-8")
        return lo, hi

    def categories(self, kind: str) -> list[str]:
        if not self.folder.is_dir():
            return []
        return sorted(p.name for p in self.folder.iterdir() if (p / kind / "index.json").is_file())

    def get(self, category: str, kind: str) -> tuple[np.ndarray, dict[str, Any]]:
        """(memory-mapped maps, index) of one category and kind."""
        folder = self.folder / category / kind
        index = json.loads((folder / "index.json").read_text(encoding="utf-8"))
        maps = np.load(folder / "maps.npy", mmap_mode="r", allow_pickle=False)
        if maps.shape[0] != len(index["rel_paths"]):
            raise ModelError(f"{category}: cached {kind} maps do not match their index ({folder})")
        return maps, index
