"""The line runtime: `fedpatch export` puts the ONNX backbone into a model folder (hashed,
signed), and `fedpatch predict` on onnxruntime + numpy gives the PyTorch path's scores
within 1e-4 relative, also in a process where torch cannot be imported."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fedpatch_app.errors import ConfigError, ModelError
from fedpatch_app.inspection.live_model import ModelSource
from fedpatch_app.inspection.model_folder import (
    CategoryModel,
    load_model,
    set_manifest_field,
    write_model,
)
from fedpatch_app.inspection.onnx_export import export_model
from fedpatch_app.inspection.onnx_predictor import LinePredictor, choose_runtime
from fedpatch_app.inspection.predict import run_predict
from fedpatch_app.inspection.signing import read_public_keys, use_signing_key
from fedpatch_app.metrics.map_scaling import MapScaling
from fedpatch_app.model.ann_index import IvfIndex, IvfParams
from fedpatch_app.model.embedding import FeatureSpec
from fedpatch_app.model.patchcore import PatchCore

REPO = Path(__file__).resolve().parents[1]
CAT = "pipe_clip"
#: A second category whose native size gives another backbone input (64x77), so that
#: EfficientNet-Lite0 needs a second graph.
WIDE = "pipe_wide"
RTOL = 1e-4

BLOCKER = """
import importlib.abc, sys
class NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "torchvision"):
            raise ImportError("torch is blocked in this test: " + name)
sys.meta_path.insert(0, NoTorch())
from fedpatch_app.cli import main
code = main(sys.argv[1:])
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "torchvision"))
assert not loaded, loaded
sys.exit(code)
"""


def _make_model(root: Path, folder: Path) -> None:
    """A two-category EfficientNet-Lite0 model (ImageNet weights, 64 px), thresholds at
    the median held-out score, so that both verdicts and some regions occur. The second
    category shares the first one's bank (only its native size matters here). Both
    carry an approximate search index probing one cell, which misses some nearest rows:
    both runtimes must search through it to agree."""
    spec = FeatureSpec(weights="imagenet", image_size=64, backbone="efficientnet_lite0")
    model = PatchCore(spec, device="cpu", batch_size=4)
    good = sorted((root / CAT / "train" / "good").glob("*.png"))
    bank = model.fit(good[:4], CAT, coreset_ratio=0.25, native_size=(400, 400))
    pred = model.predict(bank, good[4:8], (400, 400))
    thresholds = {
        "image": {"raw": float(np.median(pred.image_scores))},
        "pixel": {"raw": float(np.quantile(np.stack(pred.maps), 0.9))},
    }
    scaling = MapScaling(0.0, float(pred.image_scores.max()) * 3)
    index = IvfIndex.build(bank.features, IvfParams(probe=1))
    cats = {
        name: CategoryModel(
            dataclasses.replace(bank, category=name), native, scaling, thresholds, 4, index
        )
        for name, native in ((CAT, (400, 400)), (WIDE, (480, 400)))
    }
    write_model(folder, spec, cats, {"run_name": "onnx-test"})


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from key_utils import write_key_pair

    return write_key_pair(tmp_path_factory.mktemp("keys"), "model")


@pytest.fixture(scope="module")
def exported(tiny_root: Path, tmp_path_factory: pytest.TempPathFactory, keys) -> Path:
    """The model folder, signed, then exported with the same key."""
    folder = tmp_path_factory.mktemp("line") / "model"
    use_signing_key(keys[0])
    try:
        _make_model(tiny_root, folder)
        export_model(folder, trusted_keys=read_public_keys([keys[1]]))
    finally:
        use_signing_key(None)
    return folder


def _images(root: Path) -> list[Path]:
    return sorted((root / CAT / "test").rglob("*.png"))


def test_export_records_the_files_signed_with_the_folder(exported: Path, keys) -> None:
    manifest = json.loads((exported / "model.json").read_text())
    files = manifest["backbone_onnx"]["files"]
    # Lite0's traced graph holds its padding for one input size: one file per size.
    assert [(f["file"], f["inputs"]) for f in files] == [
        ("backbone.onnx", [[64, 64]]),
        ("backbone-64x77.onnx", [[64, 77]]),
    ]
    model = load_model(exported, trusted_keys=read_public_keys([keys[1]]))
    assert choose_runtime(model, "onnx") == "onnx"
    assert choose_runtime(model, "auto") == "torch"  # torch is installed here
    assert isinstance(ModelSource(exported, runtime="onnx").load().predictor, LinePredictor)


@pytest.mark.parametrize("category", [CAT, WIDE])
def test_onnx_scores_equal_the_torch_path(
    exported: Path, tiny_root: Path, tmp_path: Path, category: str
) -> None:
    images = _images(tiny_root)
    common = {"device": "cpu", "batch_size": 4, "write_maps": True}
    torch_run = run_predict(exported, category, tmp_path / "t", images, runtime="torch", **common)
    line_run = run_predict(exported, category, tmp_path / "o", images, runtime="onnx", **common)
    for a, b in zip(line_run, torch_run, strict=True):
        assert a.score == pytest.approx(b.score, rel=RTOL)
        assert a.verdict == b.verdict
        assert a.anomaly_map.shape == b.anomaly_map.shape == (400, 480 if category == WIDE else 400)
        assert np.abs(a.anomaly_map - b.anomaly_map).max() <= RTOL * np.abs(b.anomaly_map).max()
    if category == CAT:
        assert {r.verdict for r in torch_run} == {"OK", "NOK"}
    assert len(list((tmp_path / "o" / "maps").iterdir())) == len(images)


def test_onnx_runtime_searches_through_the_folders_index(
    exported: Path, tiny_root: Path, tmp_path: Path
) -> None:
    """The index changes some scores (one cell probed), and the line runtime's scores
    follow it: approximate equals torch's approximate, exact equals torch's exact."""
    images = _images(tiny_root)
    runs = {
        (runtime, search): run_predict(
            exported,
            CAT,
            tmp_path / f"{runtime}-{search}",
            images,
            device="cpu",
            runtime=runtime,
            search=search,
        )
        for runtime in ("torch", "onnx")
        for search in ("approximate", "exact")
    }
    scores = {key: np.array([r.score for r in run]) for key, run in runs.items()}
    approx, exact = scores["torch", "approximate"], scores["torch", "exact"]
    assert np.all(approx >= exact * (1 - RTOL))
    assert np.any(approx > exact * (1 + 10 * RTOL))  # the index misses some nearest rows
    for search in ("approximate", "exact"):
        np.testing.assert_allclose(scores["onnx", search], scores["torch", search], rtol=RTOL)


def test_predict_runs_where_torch_cannot_be_imported(
    exported: Path, tiny_root: Path, tmp_path: Path
) -> None:
    """The whole `fedpatch predict` (runtime auto) in a process whose imports of torch
    and torchvision fail: it picks the ONNX runtime and gives the torch path's scores."""
    images = [str(p) for p in _images(tiny_root)[:4]]
    expected = run_predict(exported, CAT, tmp_path / "t", images, device="cpu", runtime="torch")
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            BLOCKER,
            "predict",
            "--model",
            str(exported),
            "--category",
            CAT,
            "--out",
            str(tmp_path / "o"),
            *images,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "scoring runtime: onnx" in proc.stderr
    rows = (tmp_path / "o" / "predictions.csv").read_text().splitlines()[1:]
    got = [float(row.split(",")[2]) for row in rows]
    assert got == pytest.approx([r.score for r in expected], rel=RTOL)


def test_a_changed_onnx_file_is_refused(exported: Path, tiny_root: Path, tmp_path: Path) -> None:
    folder = tmp_path / "model"
    shutil.copytree(exported, folder)
    data = bytearray((folder / "backbone.onnx").read_bytes())
    data[-10] ^= 1
    (folder / "backbone.onnx").write_bytes(bytes(data))
    images = _images(tiny_root)[:1]
    with pytest.raises(ModelError, match="backbone.onnx has changed since the model was written"):
        run_predict(folder, CAT, tmp_path / "o", images, runtime="onnx")


def test_a_changed_onnx_record_breaks_the_signature(exported: Path, tmp_path: Path, keys) -> None:
    folder = tmp_path / "model"
    shutil.copytree(exported, folder)
    manifest = json.loads((folder / "model.json").read_text())
    entry = manifest["backbone_onnx"]
    entry["files"][0]["sha256"] = "0" * 64
    sig = (folder / "model.json.sig").read_bytes()
    set_manifest_field(folder, "backbone_onnx", entry)  # no key configured: unsigned
    assert not (folder / "model.json.sig").exists()
    (folder / "model.json.sig").write_bytes(sig)  # the old signature put back
    with pytest.raises(ModelError, match="has changed since it was signed"):
        load_model(folder, trusted_keys=read_public_keys([keys[1]]))


def test_runtime_onnx_needs_an_exported_folder(exported: Path) -> None:
    model = load_model(exported)
    manifest = {k: v for k, v in model.manifest.items() if k != "backbone_onnx"}
    model = dataclasses.replace(model, manifest=manifest)
    with pytest.raises(ConfigError, match="has no ONNX backbone; run `fedpatch export"):
        choose_runtime(model, "onnx")


@pytest.mark.slow
def test_wide_resnet_exports_one_graph_for_every_input_size(tmp_path: Path) -> None:
    """WideResNet-50-2's graph is valid at any size: one file, checked at both sizes
    against the torch network (`export_backbone` refuses a graph that differs)."""
    from fedpatch_app.model.backbone import build_backbone
    from fedpatch_app.model.onnx_backbone import export_backbone

    net = build_backbone("wide_resnet50_2", "none")
    entry = export_backbone(net, tmp_path, [(64, 85), (64, 64)])
    assert [(f["file"], f["inputs"]) for f in entry["files"]] == [
        ("backbone.onnx", [[64, 64], [64, 85]])
    ]


def test_the_documented_line_install_is_the_line_extra() -> None:
    """docs/inspection.md names the line's packages (pip cannot install an extra without
    the main dependencies): the same list as pyproject's `line` extra, without torch."""
    import shlex
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extra = project["optional-dependencies"]["line"]
    doc = (REPO / "docs" / "inspection.md").read_text().splitlines()
    command = next(line for line in doc if line.startswith("pip install numpy"))
    assert shlex.split(command)[2:] == extra
    assert not [p for p in extra if p.startswith(("torch", "torchvision"))]
    assert "onnxruntime" in extra
