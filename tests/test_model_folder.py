"""The model folder: written by every run kind, verified on load, refused when changed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fedpatch_app.errors import ModelError
from fedpatch_app.inspection.model_folder import CategoryModel, load_model, write_model
from fedpatch_app.metrics.map_scaling import MapScaling
from fedpatch_app.model.embedding import FeatureSpec
from fedpatch_app.model.patchcore import Bank

SPEC = FeatureSpec(weights="none", image_size=64, embed_dim=8)


def _model(folder: Path) -> Path:
    rng = np.random.default_rng(0)
    bank = Bank(rng.normal(size=(5, 8)).astype(np.float32), SPEC, "pipe_clip", 1.5, 40)
    thresholds = {"image": {"raw": 3.0}, "pixel": {"raw": 2.0}}
    cats = {"pipe_clip": CategoryModel(bank, (400, 400), MapScaling(0.5, 4.0), thresholds, 4)}
    write_model(folder, SPEC, cats, {"run_name": "r", "run_kind": "centralized"})
    return folder


def test_round_trip(tmp_path: Path) -> None:
    folder = _model(tmp_path / "model")
    model = load_model(folder)
    cat = model.category("pipe_clip")
    assert model.fingerprint == SPEC.fingerprint()
    assert cat.image_threshold == 3.0 and cat.pixel_threshold == 2.0
    assert cat.native_size == (400, 400) and cat.scaling == MapScaling(0.5, 4.0)
    np.testing.assert_array_equal(
        cat.bank.features, np.random.default_rng(0).normal(size=(5, 8)).astype(np.float32)
    )
    manifest = json.loads((folder / "model.json").read_text())
    assert manifest["provenance"]["versions"]["fedpatch"]
    # No path of the machine: every string value is free of the folder's location.
    text = (folder / "model.json").read_text()
    assert str(tmp_path) not in text


def test_a_changed_byte_in_a_bank_is_refused(tmp_path: Path) -> None:
    folder = _model(tmp_path / "model")
    bank = folder / "banks" / "pipe_clip.npz"
    data = bytearray(bank.read_bytes())
    data[len(data) // 2] ^= 0x01
    bank.write_bytes(bytes(data))
    with pytest.raises(ModelError, match=r"pipe_clip\.npz has changed"):
        load_model(folder)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda m: m.update(format="fedpatch-model/99"), "written by a newer fedpatch"),
        (lambda m: m.update(format="something-else/1"), "unknown model format"),
        (lambda m: m.update(fingerprint="0" * 16), "fingerprint"),
        (lambda m: m["categories"]["pipe_clip"]["bank"].update(file="../x.npz"), "outside"),
        (lambda m: m["categories"]["pipe_clip"].pop("map_scaling"), "pipe_clip.map_scaling"),
        (lambda m: m.update(categories={}), "no categories"),
    ],
)
def test_a_changed_manifest_is_refused(tmp_path: Path, change, message: str) -> None:
    folder = _model(tmp_path / "model")
    manifest = json.loads((folder / "model.json").read_text())
    change(manifest)
    (folder / "model.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelError, match=message):
        load_model(folder)


def test_missing_folder_or_bank(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="not a fedpatch model folder"):
        load_model(tmp_path / "nothing")
    folder = _model(tmp_path / "model")
    (folder / "banks" / "pipe_clip.npz").unlink()
    with pytest.raises(ModelError, match="missing"):
        load_model(folder)
    with pytest.raises(ModelError, match="no category 'tank_screw'"):
        load_model(_model(tmp_path / "again")).category("tank_screw")
