"""The backbone as ONNX: exported once from the torch network into the model folder, run
by onnxruntime on line PCs that have no PyTorch.

A graph is exported with a dynamic batch and image size, then run against the torch
network on a random input at every input size the model's categories use. A backbone
whose graph is only valid at the size it was traced at (EfficientNet-Lite0's "same"
padding is computed from the input size in Python, so the trace fixes it) gets a graph of
its own for each other size. model.json records each file, its SHA-256 and the input
sizes (H, W) it was checked at, under `backbone_onnx`::

    "backbone_onnx": {"opset": 17, "files": [
        {"file": "backbone.onnx", "sha256": "...", "inputs": [[256, 341]]},
        {"file": "backbone-256x256.onnx", "sha256": "...", "inputs": [[256, 256]]}]}

model.json is what the folder's signature covers, so the files are signed with the banks;
a file is hashed again before onnxruntime reads it. Importing this module needs neither
torch nor onnxruntime; exporting needs torch and onnx, running needs onnxruntime.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedpatch_app.errors import ConfigError, ModelError
from fedpatch_app.hashing import file_sha256

log = logging.getLogger(__name__)

MANIFEST_KEY = "backbone_onnx"
OPSET = 17
#: Largest relative difference (to the largest value) between the ONNX and torch feature
#: maps accepted at export.
EXPORT_TOLERANCE = 1e-4
INPUT, OUTPUTS = "images", ("stride8", "stride16")


def _export(net: Any, path: Path, input_hw: tuple[int, int]) -> None:
    import torch

    example = torch.zeros(1, 3, *input_hw)
    axes = {0: "batch", 2: "height", 3: "width"}
    tmp = path.with_name(path.name + ".tmp")
    with torch.inference_mode(False), torch.no_grad():
        torch.onnx.export(
            net,
            (example,),
            str(tmp),
            dynamo=False,
            opset_version=OPSET,
            input_names=[INPUT],
            output_names=list(OUTPUTS),
            dynamic_axes={INPUT: axes, OUTPUTS[0]: axes, OUTPUTS[1]: axes},
        )
    tmp.replace(path)


def _difference(net: Any, path: Path, input_hw: tuple[int, int]) -> float:
    """Largest relative difference of the ONNX graph's two maps from the torch ones on a
    fixed random input of `input_hw` (inf when the shapes differ)."""
    import torch

    images = np.random.default_rng(0).standard_normal((1, 3, *input_hw), dtype=np.float32)
    with torch.inference_mode():
        expected = [t.numpy() for t in net(torch.from_numpy(images))]
    got = _session(path, threads=0).run(None, {INPUT: images})
    worst = 0.0
    for a, b in zip(got, expected, strict=True):
        if a.shape != b.shape:
            return float("inf")
        worst = max(worst, float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12)))
    return worst


def export_backbone(net: Any, folder: Path, sizes: Sequence[tuple[int, int]]) -> dict[str, Any]:
    """Export `net` (the torch backbone, eval mode) for the input sizes (H, W) into
    `folder`; the `backbone_onnx` entry of model.json. ModelError when a graph does not
    reproduce the torch maps within EXPORT_TOLERANCE."""
    sizes = sorted({(int(h), int(w)) for h, w in sizes})
    net = net.eval()
    main = folder / "backbone.onnx"
    _export(net, main, sizes[0])
    files: list[dict[str, Any]] = [{"file": main.name, "inputs": []}]
    for size in sizes:
        diff = _difference(net, main, size)
        target = files[0]
        if diff > EXPORT_TOLERANCE:
            path = folder / f"backbone-{size[0]}x{size[1]}.onnx"
            _export(net, path, size)
            diff = _difference(net, path, size)
            if diff > EXPORT_TOLERANCE:
                raise ModelError(
                    f"{path}: the ONNX backbone differs from the torch one by {diff:.3g} "
                    f"(relative) at input {size[0]}x{size[1]}; refusing to keep it"
                )
            target = {"file": path.name, "inputs": []}
            files.append(target)
        target["inputs"].append(list(size))
        log.info("ONNX backbone %s at %dx%d: largest difference %.2g", target["file"], *size, diff)
    for entry in files:
        entry["sha256"] = file_sha256(folder / entry["file"])
    return {"opset": OPSET, "files": files}


@dataclass(frozen=True)
class OnnxFile:
    """One checked entry of `backbone_onnx`."""

    file: str
    sha256: str
    inputs: tuple[tuple[int, int], ...]


def onnx_files(manifest: dict[str, Any], path: Path) -> list[OnnxFile]:
    """The `backbone_onnx` entries of a model.json at `path` ([] when it has none);
    ModelError naming the field at fault."""
    entry = manifest.get(MANIFEST_KEY)
    if entry is None:
        return []
    where = f"{path}: field {MANIFEST_KEY!r}"
    if not isinstance(entry, dict) or not isinstance(entry.get("files"), list):
        raise ModelError(f"{where} must be an object with a list 'files'")
    out = []
    for i, item in enumerate(entry["files"]):
        try:
            name, sha = str(item["file"]), str(item["sha256"])
            inputs = tuple((int(h), int(w)) for h, w in item["inputs"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"{where}, file {i}: {exc!r} (needs file, sha256, inputs)") from None
        if "/" in name or "\\" in name or not name.endswith(".onnx") or len(sha) != 64:
            raise ModelError(f"{where}, file {i}: {name!r} is not an .onnx file of the folder")
        out.append(OnnxFile(name, sha, inputs))
    return out


def has_onnx(manifest: dict[str, Any]) -> bool:
    return bool(manifest.get(MANIFEST_KEY))


def _session(path: Path, threads: int) -> Any:
    try:
        import onnxruntime as ort
    except ImportError:
        raise ConfigError(
            "the ONNX runtime needs onnxruntime: pip install onnxruntime "
            "(or install fedpatch[line])"
        ) from None
    options = ort.SessionOptions()
    if threads > 0:
        options.intra_op_num_threads = threads
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class OnnxBackbone:
    """The backbone files of a model folder, opened on first use per input size."""

    def __init__(self, folder: Path, manifest: dict[str, Any], threads: int = 0) -> None:
        self.folder = folder
        self.files = onnx_files(manifest, folder / "model.json")
        if not self.files:
            raise ModelError(
                f"{folder} has no ONNX backbone: run `fedpatch export --model {folder}` "
                "where PyTorch is installed"
            )
        self.threads = int(threads)
        self._sessions: dict[str, Any] = {}

    def _file_for(self, input_hw: tuple[int, int]) -> OnnxFile:
        for entry in self.files:
            if tuple(input_hw) in entry.inputs:
                return entry
        raise ModelError(
            f"{self.folder}: no ONNX backbone was exported for input {input_hw[0]}x"
            f"{input_hw[1]} (exported: {[e.inputs for e in self.files]}); run `fedpatch "
            "export` again"
        )

    def session(self, input_hw: tuple[int, int]) -> Any:
        entry = self._file_for(input_hw)
        if entry.file not in self._sessions:
            path = self.folder / entry.file
            if not path.is_file():
                raise ModelError(f"ONNX backbone {path} is missing")
            if file_sha256(path) != entry.sha256:
                raise ModelError(
                    f"ONNX backbone {path} has changed since the model was written "
                    "(SHA-256 differs from model.json): refusing to use it"
                )
            self._sessions[entry.file] = _session(path, self.threads)
        return self._sessions[entry.file]

    def __call__(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The stride-8 and stride-16 maps of a batch ``(B, 3, H, W)`` float32."""
        layer2, layer3 = self.session(images.shape[-2:]).run(None, {INPUT: images})
        return layer2, layer3
