"""Scoring without PyTorch: the model folder's ONNX backbone on onnxruntime, and the rest
of PatchCore's scoring in numpy (`fedpatch_app.model.numpy_scoring`).

`make_predictor` picks the runtime for `fedpatch predict` and `fedpatch serve`:

- ``torch``: the PyTorch path (`Predictor`), what the runs score with;
- ``onnx``: `LinePredictor`, which needs the folder's `backbone_onnx` files
  (`fedpatch export`) and onnxruntime;
- ``auto`` (default): ``onnx`` when PyTorch is not installed and the folder has an ONNX
  backbone, ``torch`` otherwise.

Both give the same verdicts, regions and maps from the same `Predictor.score` code; the
scores agree within 1e-4 relative (`tests/test_onnx_line.py`). Importing this module
imports neither torch nor onnxruntime.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from fedpatch_app.errors import ConfigError, ModelError
from fedpatch_app.inspection.model_folder import Model
from fedpatch_app.inspection.predictor import Predictor
from fedpatch_app.model.ann_index import IvfSearch
from fedpatch_app.model.backbone_facts import backbone_facts
from fedpatch_app.model.backbone_input import backbone_input, input_size
from fedpatch_app.model.bank import Bank, Prediction
from fedpatch_app.model.dp import clip_rows
from fedpatch_app.model.numpy_scoring import NearestBank, anomaly_maps, embed
from fedpatch_app.model.onnx_backbone import OnnxBackbone, has_onnx

log = logging.getLogger(__name__)

RUNTIMES = ("auto", "torch", "onnx")


def torch_installed() -> bool:
    try:
        return importlib.util.find_spec("torch") is not None
    except (ImportError, ValueError):
        return False


def choose_runtime(model: Model, asked: str = "auto") -> str:
    """``torch`` or ``onnx`` for `model` (see the module doc); ConfigError when the one
    asked for cannot run here."""
    if asked not in RUNTIMES:
        raise ConfigError(f"runtime must be one of {RUNTIMES}, got {asked!r}")
    onnx = has_onnx(model.manifest)
    if asked == "onnx" and not onnx:
        raise ConfigError(
            f"--runtime onnx: {model.path} has no ONNX backbone; run `fedpatch export "
            f"--model {model.path}` where PyTorch is installed"
        )
    if asked != "auto":
        return asked
    if torch_installed():
        return "torch"
    if not onnx:
        raise ConfigError(
            f"PyTorch is not installed and {model.path} has no ONNX backbone: run "
            f"`fedpatch export --model {model.path}` where PyTorch is installed"
        )
    return "onnx"


class LinePipeline:
    """`PatchCore.predict` on the ONNX backbone and numpy."""

    device = "cpu"

    def __init__(self, model: Model, batch_size: int = 8, threads: int = 0) -> None:
        if int(batch_size) < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        self.spec = model.spec
        self.batch_size = int(batch_size)
        self.backbone = OnnxBackbone(model.path, model.manifest, threads)
        facts = backbone_facts(self.spec.backbone)
        self._norm = (facts.input_mean, facts.input_std)

    def predict(
        self,
        bank: Bank,
        paths: Sequence[str | Path],
        native_size: tuple[int, int],
        desc: str = "scoring",
        index: NearestBank | IvfSearch | None = None,
    ) -> Prediction:
        """Anomaly maps (float32, native (height, width)) and image scores (map maxima)."""
        if bank.spec.fingerprint() != self.spec.fingerprint():
            raise ModelError(f"bank of {bank.category} was built with other feature settings")
        if not paths:
            raise ModelError(f"{desc}: no test images")
        index = NearestBank(bank.features) if index is None else index
        spec, in_hw = self.spec, input_size(native_size, self.spec.image_size)
        maps: list[np.ndarray] = []
        for start in range(0, len(paths), self.batch_size):
            batch = paths[start : start + self.batch_size]
            images = np.stack(
                [backbone_input(p, spec.image_size, *self._norm, native_size) for p in batch]
            )
            feats = embed(*self.backbone(images), spec.embed_dim, spec.neighbourhood)
            b, h, w, d = feats.shape
            queries = feats.reshape(-1, d)
            if bank.query_clip > 0:
                queries = clip_rows(queries, bank.query_clip).astype(np.float32)
            patch = index.patch_scores(queries).reshape(b, h, w)
            maps += list(anomaly_maps(patch, in_hw, native_size, spec.image_size))
        scores = np.array([float(m.max()) for m in maps], dtype=np.float64)
        return Prediction(image_scores=scores, maps=maps)


class LinePredictor(Predictor):
    """`Predictor` on the ONNX runtime: the same checks, verdicts and regions, and the
    same search (`search` as `Predictor`'s: through the folder's index where it holds one,
    in numpy)."""

    def __init__(
        self, model: Model, *, batch_size: int = 8, threads: int = 0, search: str = "approximate"
    ) -> None:
        if search not in ("approximate", "exact"):
            raise ConfigError(f"search must be 'approximate' or 'exact', got {search!r}")
        self.model, self.search = model, search
        self.patchcore = LinePipeline(model, batch_size, threads)  # type: ignore[assignment]
        self._indexes = {}

    def _index(self, category: str) -> NearestBank | IvfSearch:  # type: ignore[override]
        if category not in self._indexes:
            cat = self.model.category(category)
            found: NearestBank | IvfSearch = NearestBank(cat.bank.features)
            if self.search == "approximate" and cat.index is not None:
                found = IvfSearch(cat.index, cat.bank.features)
            self._indexes[category] = found  # type: ignore[assignment]
        return self._indexes[category]  # type: ignore[return-value]


def make_predictor(
    model: Model,
    *,
    runtime: str = "auto",
    device: str = "auto",
    batch_size: int = 8,
    weights_file: str | None = None,
    threads: int = 0,
    search: str = "approximate",
) -> Predictor:
    """The predictor of the runtime `choose_runtime` picks. `threads`: onnxruntime's CPU
    threads (0: its default, one per core). `search` as `Predictor`'s, on either runtime."""
    chosen = choose_runtime(model, runtime)
    log.info("scoring runtime: %s", chosen)
    if chosen == "torch":
        return Predictor(
            model, device=device, batch_size=batch_size, weights_file=weights_file, search=search
        )
    if device not in ("auto", "cpu"):
        log.warning("the ONNX runtime scores on the CPU (device %r is not used)", device)
    return LinePredictor(model, batch_size=batch_size, threads=threads, search=search)
