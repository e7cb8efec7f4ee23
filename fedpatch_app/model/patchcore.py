"""PatchCore: the pipeline every run kind shares.

Fit = patch features of a category's good images -> greedy k-center coreset = memory bank.
Predict = nearest-neighbour distance of each test patch to the bank -> anomaly map at the
image's native resolution (bilinear upsampling, Gaussian smoothing) -> image score = map max.

The centralized baseline, the federated clients and the federated server all call these
functions, so "federated vs centralized" differs only by the federation.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from fedpatch_app.errors import ModelError
from fedpatch_app.model.ann_index import IvfParams
from fedpatch_app.model.backbone import backbone_info, resized_size
from fedpatch_app.model.bank import (
    Bank,
    Prediction,
    _check_features,
    _spec_diff,
)
from fedpatch_app.model.coreset import greedy_coreset
from fedpatch_app.model.dp import clip_rows
from fedpatch_app.model.embedding import FeatureExtractor, FeatureSpec
from fedpatch_app.model.memory_bank import MemoryBank, bank_index
from fedpatch_app.model.row_store import RowStore, gather, release

log = logging.getLogger(__name__)

#: Gaussian smoothing of the anomaly map: sigma 4 px at the reference's 224 px input.
REFERENCE_SIGMA = 4.0
REFERENCE_INPUT = 224


def coreset_size(n_patches: int, ratio: float) -> int:
    """Number of bank entries for `n_patches` training patches at `ratio` (at least 1)."""
    if n_patches < 1:
        raise ModelError(f"cannot build a coreset from {n_patches} patches")
    if not (ratio > 0):
        raise ModelError(f"coreset ratio must be > 0, got {ratio}")
    return int(min(n_patches, max(1, round(ratio * n_patches))))


def select_coreset(
    features: np.ndarray,
    k: int,
    spec: FeatureSpec,
    *,
    initial: np.ndarray | None = None,
    device: str | torch.device | None = None,
) -> tuple[np.ndarray, float]:
    """Greedy k-center selection of `k` rows of `features` with the spec's projection and seed."""
    result = greedy_coreset(
        features,
        k,
        projection_dim=spec.projection_dim,
        seed=spec.seed,
        initial=initial,
        device=device,
    )
    selected = np.ascontiguousarray(features[result.indices], dtype=np.float32)
    return selected, float(result.radius)


def merge_coresets(
    parts: Sequence[np.ndarray],
    k: int,
    spec: FeatureSpec,
    *,
    device: str | torch.device | None = None,
    initial: np.ndarray | None = None,
    store: RowStore | None = None,
) -> tuple[np.ndarray, float, np.ndarray]:
    """Merge coresets (one per client) into one bank of at most `k` entries: greedy k-center
    over their union, with the same code as the local selection. Returns the bank, its
    covering radius and, for every bank row, the index in `parts` of the part it came
    from (-1 for the rows of `initial`; empty parts count in the numbering).

    With `initial` (an existing bank), the selection starts from its rows, which stay: the
    result is the existing bank followed by the `k` new rows that cover the union best.
    This is how a new line joins a model later.

    With a `store` (`row_store.RowStore`), the union is written there and memory-mapped
    instead of concatenated in memory, its pages released once projected and the bank
    gathered from it a chunk at a time: the same rows, bit for bit, with the union never
    resident beside the projection.
    """
    sizes = [0 if p is None else len(p) for p in parts]
    kept = [p for p in parts if p is not None and len(p)]
    if not kept:
        raise ModelError("nothing to merge: every coreset is empty")
    for i, part in enumerate(kept):
        _check_features(part, spec.embed_dim, f"coreset {i}")
    if store is not None:
        union = store.union("union", kept)
    else:
        union = np.concatenate([np.asarray(p, dtype=np.float32) for p in kept], axis=0)
    part_of = np.repeat(np.arange(len(parts)), sizes)
    k = min(int(k), union.shape[0])
    if initial is not None:
        _check_features(initial, spec.embed_dim, "initial bank")
    result = greedy_coreset(
        union,
        k,
        projection_dim=spec.projection_dim,
        seed=spec.seed,
        initial=initial,
        device=device,
        projected=lambda: release(union),
    )
    bank = gather(union, result.indices)
    sources = part_of[result.indices]
    if initial is not None:
        bank = np.concatenate([np.asarray(initial, dtype=np.float32), bank], axis=0)
        sources = np.concatenate([np.full(len(initial), -1, dtype=np.int64), sources])
    return bank, float(result.radius), sources


def _gaussian_kernel(sigma: float, device: torch.device) -> torch.Tensor:
    radius = max(1, int(math.ceil(4.0 * sigma)))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32, device=device)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    return kernel / kernel.sum()


def smooth(maps: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian smoothing of (B, H, W) maps, reflecting at the borders."""
    if sigma <= 0:
        return maps
    kernel = _gaussian_kernel(sigma, maps.device)
    pad = kernel.numel() // 2
    x = maps.unsqueeze(1)
    # Reflect padding needs pad < size; fall back to replicate for tiny maps.
    mode = "reflect" if pad < min(x.shape[-2:]) else "replicate"
    x = F.pad(x, (pad, pad, 0, 0), mode=mode)
    x = F.conv2d(x, kernel.view(1, 1, 1, -1))
    x = F.pad(x, (0, 0, pad, pad), mode=mode)
    x = F.conv2d(x, kernel.view(1, 1, -1, 1))
    return x.squeeze(1)


def input_size(native_size: tuple[int, int], image_size: int) -> tuple[int, int]:
    """(height, width) of the backbone input for a (width, height) image (the backbone's
    own resizing rule: shorter side = `image_size`, aspect ratio kept)."""
    width, height = resized_size(*native_size, image_size)
    return height, width


def patch_grid(spec: FeatureSpec, native_size: tuple[int, int]) -> tuple[int, int]:
    """(rows, columns) of the patch grid of a (width, height) image: the first layer's
    feature map, whose stride-2 stages each halve a side, rounding up."""
    stride = backbone_info(spec.backbone).strides[0]
    height, width = input_size(native_size, spec.image_size)
    return -(-height // stride), -(-width // stride)


class PatchCore:
    """Feature extraction, bank building and scoring for one feature spec on one device."""

    def __init__(self, spec: FeatureSpec, **loading: Any) -> None:
        """`loading`: how images are read and where the network runs, as
        `FeatureExtractor` takes them (`device`, `batch_size`, `num_workers`)."""
        self.spec = spec
        self.extractor = FeatureExtractor(spec, **loading)
        self.device = self.extractor.device
        #: Seconds spent so far per phase ("extraction", "coreset", "scoring"): where a
        #: run's time goes (results.json `run.phases`).
        self.seconds: dict[str, float] = {"extraction": 0.0, "coreset": 0.0, "scoring": 0.0}
        #: Parameters of the banks' approximate search index (`ann_index`); None: exact.
        self.search: IvfParams | None = None

    def _clock(self, phase: str, since: float) -> float:
        now = time.perf_counter()
        self.seconds[phase] = self.seconds.get(phase, 0.0) + now - since
        return now

    def features(
        self,
        paths: Sequence[str | Path],
        desc: str = "features",
        native_size: tuple[int, int] | None = None,
    ) -> np.ndarray:
        """Patch features (n_images, h, w, D) of the given images (resized to
        `native_size`, the category's size, where they differ from it)."""
        if not paths:
            raise ModelError(f"{desc}: no images")
        return self.extractor.extract(list(paths), desc=desc, native_size=native_size)

    def fit(
        self,
        paths: Sequence[str | Path],
        category: str,
        coreset_ratio: float,
        oversample: float = 1.0,
        native_size: tuple[int, int] | None = None,
    ) -> Bank:
        """Memory bank of `category` from its good training images.

        `oversample` > 1 keeps more than `coreset_ratio` of the patches: federated clients
        do so, so that the server's merge has something to choose from.
        """
        if not paths:
            raise ModelError(f"category {category}: no training images to fit on")
        t0 = time.perf_counter()
        feats = self.features(paths, f"{category}: train features", native_size)
        t0 = self._clock("extraction", t0)
        bank = self.bank_of(feats, category, coreset_ratio * oversample)
        self._clock("coreset", t0)
        return bank

    def bank_of(self, feats: np.ndarray, category: str, ratio: float) -> Bank:
        """The coreset bank of patch features (n_images, h, w, D) at `ratio`."""
        flat = feats.reshape(-1, feats.shape[-1])
        n = flat.shape[0]
        k = coreset_size(n, ratio)
        log.info("%s: %d images, %d patches -> coreset of %d", category, len(feats), n, k)
        selected, radius = select_coreset(flat, k, self.spec, device=self.device)
        return Bank(
            features=selected, spec=self.spec, category=category, radius=radius, n_patches=n
        )

    def predict(
        self,
        bank: Bank,
        paths: Sequence[str | Path],
        native_size: tuple[int, int],
        desc: str = "scoring",
        index: MemoryBank | None = None,
        observe: Callable[[int, np.ndarray, tuple[int, int, int]], None] | None = None,
    ) -> Prediction:
        """Anomaly maps (float32, native (height, width)) and image scores (map maxima).

        `index`: the bank's search index when the caller keeps one (built from
        `bank.features` with `MemoryBank`), so that it is not rebuilt on every call.
        `observe(start, queries, (b, h, w))`: called with each batch's patch features as
        searched (the federated source check searches them per source too)."""
        if bank.spec.fingerprint() != self.spec.fingerprint():
            raise ModelError(
                f"bank of {bank.category} was built with other feature settings: "
                f"{_spec_diff(bank.spec, self.spec)}"
            )
        if not paths:
            raise ModelError(f"{desc}: no test images")
        if index is None:
            index = bank_index(bank.features, self.device, self.search)
        maps: list[np.ndarray] = []
        scores = np.empty(len(paths), dtype=np.float64)
        t0 = time.perf_counter()
        for start, feats in self.extractor.extract_iter(list(paths), desc, native_size):
            native = self.maps_of(bank, index, feats, native_size, start, observe)
            for i in range(len(native)):
                maps.append(native[i])
                scores[start + i] = float(native[i].max())
        self._clock("scoring", t0)
        return Prediction(image_scores=scores, maps=maps)

    def maps_of(
        self,
        bank: Bank,
        index: MemoryBank,
        feats: np.ndarray,
        native_size: tuple[int, int],
        start: int = 0,
        observe: Callable[[int, np.ndarray, tuple[int, int, int]], None] | None = None,
    ) -> np.ndarray:
        """Anomaly maps (b, height, width) of a batch of patch features (b, h, w, D)."""
        width, height = native_size
        in_h, in_w = input_size(native_size, self.spec.image_size)
        sigma = REFERENCE_SIGMA * self.spec.image_size / REFERENCE_INPUT
        b, h, w, d = feats.shape
        queries = feats.reshape(-1, d)
        if bank.query_clip > 0:
            queries = clip_rows(queries, bank.query_clip).astype(np.float32)
        patch = index.patch_scores(queries).reshape(b, h, w)
        if observe is not None:
            observe(start, queries, (b, h, w))
        grid = torch.from_numpy(np.ascontiguousarray(patch, dtype=np.float32)).to(self.device)
        # Patch grid -> backbone input resolution -> smoothing -> native resolution.
        up = F.interpolate(
            grid.unsqueeze(1), size=(in_h, in_w), mode="bilinear", align_corners=False
        )
        up = smooth(up.squeeze(1), sigma)
        native = F.interpolate(
            up.unsqueeze(1), size=(height, width), mode="bilinear", align_corners=False
        )
        return native.squeeze(1).float().cpu().numpy()
