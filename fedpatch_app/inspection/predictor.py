"""Scoring new parts with a model folder: the code `fedpatch predict` and `fedpatch serve`
share with each other and with the runs that built the model.

The maps come from `PatchCore.predict`, the very function the study scores its test
images with, so a model scores an image exactly as the run that built it did. Every image
is checked against the size rule of `image_limits` from its header before any decoding:
one far from the category's native size or aspect ratio is refused; one of another size
within the rule is resized to the native size (as training images are) and scored with a
note, so maps, regions and overlays are always at the native size.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fedpatch_app.data.images import image_size
from fedpatch_app.errors import ConfigError, DataError
from fedpatch_app.inspection.image_limits import ImageSizeError, check_image_size
from fedpatch_app.inspection.model_folder import CategoryModel, Model

if TYPE_CHECKING:  # torch-backed; imported when a Predictor is made, so that the
    # torch-free runtime (`onnx_predictor`) can share this module
    from fedpatch_app.model.memory_bank import MemoryBank

log = logging.getLogger(__name__)


@dataclass
class Region:
    """A connected area of the anomaly map above the pixel threshold."""

    area: int
    bbox: tuple[int, int, int, int]  # x0, y0, x1, y1 (x1, y1 exclusive), native pixels
    peak: float

    def to_dict(self) -> dict[str, Any]:
        return {"area": self.area, "bbox": list(self.bbox), "peak": self.peak}


@dataclass
class PartResult:
    """The verdict on one image."""

    path: str
    category: str
    score: float
    normalized_score: float | None
    verdict: str
    regions: list[Region]
    size: tuple[int, int]
    anomaly_map: np.ndarray = field(repr=False)
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        plain = ("path", "category", "score", "normalized_score", "verdict")
        return {
            **{name: getattr(self, name) for name in plain},
            "regions": [r.to_dict() for r in self.regions],
            "region_count": len(self.regions),
            "region_area": int(sum(r.area for r in self.regions)),
            "size": list(self.size),
            **({"note": self.note} if self.note else {}),
        }


def checked_size(path: Path, native: tuple[int, int]) -> tuple[int, int]:
    """`image_size`, and a DataError naming the image and the limit when the size rule
    (`image_limits`) refuses it for a category of `native` size."""
    size = image_size(path)
    try:
        check_image_size(size, native)
    except ImageSizeError as exc:
        raise DataError(f"image {str(path)!r} refused: {exc.message}") from None
    return size


def find_regions(anomaly_map: np.ndarray, threshold: float | None) -> list[Region]:
    """Connected regions (8-neighbourhood) of the map above the pixel threshold."""
    from scipy import ndimage

    if threshold is None:
        return []
    mask = anomaly_map > threshold
    labels, count = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
    regions = []
    for index, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is None:
            continue
        inside = labels[box] == index
        rows, cols = box
        regions.append(
            Region(
                area=int(inside.sum()),
                bbox=(int(cols.start), int(rows.start), int(cols.stop), int(rows.stop)),
                peak=float(anomaly_map[box][inside].max()),
            )
        )
    return sorted(regions, key=lambda r: -r.peak)[: max(0, count)]


def verdict_of(score: float, category: CategoryModel) -> tuple[float | None, str]:
    """normalized_score and verdict (OK / NOK; UNCALIBRATED without a threshold)."""
    threshold = category.image_threshold
    if threshold is None or threshold <= 0:
        return None, "UNCALIBRATED"
    normalized = score / threshold
    return normalized, "NOK" if score > threshold else "OK"


def _size_note(size: tuple[int, int], native: tuple[int, int]) -> str:
    if size == native:
        return ""
    return (
        f"image is {size[0]}x{size[1]}, the category's images are {native[0]}x{native[1]}: "
        "it was resized to the native size before scoring, so its score is less comparable "
        "with the threshold"
    )


class Predictor:
    """One backbone, every category of a model; `score` gives the verdicts."""

    def __init__(
        self,
        model: Model,
        *,
        device: str = "auto",
        batch_size: int = 8,
        weights_file: str | None = None,
        search: str = "approximate",
    ) -> None:
        """`search`: "approximate" searches each category through the index its model
        folder holds (exactly where it holds none: a model built with exact search, or
        before the index existed); "exact" always searches exactly."""
        from fedpatch_app.model.patchcore import PatchCore

        if search not in ("approximate", "exact"):
            raise ConfigError(f"search must be 'approximate' or 'exact', got {search!r}")
        self.search = search
        self.model = model
        spec = model.runtime_spec(weights_file)
        self.patchcore = PatchCore(spec, device=device, batch_size=batch_size)
        # Each category's search index, built on its first image (a service scores one
        # image per call: rebuilding it would copy the bank every time).
        self._indexes: dict[str, MemoryBank] = {}

    def _index(self, category: str) -> MemoryBank:
        from fedpatch_app.model.memory_bank import MemoryBank

        if category not in self._indexes:
            cat = self.model.category(category)
            ann = cat.index if self.search == "approximate" else None
            self._indexes[category] = MemoryBank(
                cat.bank.features, device=self.patchcore.device, ann=ann
            )
        return self._indexes[category]

    def score(self, category: str, paths: Sequence[str | Path]) -> list[PartResult]:
        """Verdicts for the images, in the order given; a DataError naming the image
        when one is unreadable or outside the size rule, before any is scored."""
        cat = self.model.category(category)
        paths = [Path(p) for p in paths]
        sizes = [checked_size(p, cat.native_size) for p in paths]
        for path, size in zip(paths, sizes, strict=True):
            if size != cat.native_size:
                log.warning("%s: %s", path.name, _size_note(size, cat.native_size))
        index, desc = self._index(category), f"{category}: scoring"
        pred = self.patchcore.predict(cat.bank, paths, cat.native_size, desc, index)
        results = []
        for path, size, score, anomaly_map in zip(
            paths, sizes, pred.image_scores, pred.maps, strict=True
        ):
            results.append(self._result(category, cat, path, float(score), anomaly_map, size))
        return results

    def _result(
        self,
        name: str,
        cat: CategoryModel,
        path: Path,
        score: float,
        anomaly_map: np.ndarray,
        size: tuple[int, int],
    ) -> PartResult:
        normalized, verdict = verdict_of(score, cat)
        return PartResult(
            path=str(path),
            category=name,
            score=score,
            normalized_score=normalized,
            verdict=verdict,
            regions=find_regions(anomaly_map, cat.pixel_threshold),
            size=size,
            anomaly_map=anomaly_map,
            note=_size_note(size, cat.native_size),
        )
