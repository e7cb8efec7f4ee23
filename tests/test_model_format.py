"""The model.json format has one owner: its fields are pinned to its version, older
versions are read migrated in memory, and what cannot be read is refused by version."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from key_utils import write_key_pair

from fedpatch_app.errors import ModelError
from fedpatch_app.inspection import model_format, signing
from fedpatch_app.inspection.model_folder import CategoryModel, load_model, write_model
from fedpatch_app.metrics.map_scaling import MapScaling
from fedpatch_app.model.embedding import FeatureSpec
from fedpatch_app.model.patchcore import Bank

SPEC = FeatureSpec(weights="none", image_size=64, embed_dim=8)
THRESHOLDS = {"method": "m", "image": {"raw": 3.0, "level": 7}, "pixel": {"raw": 2.0}}


def _write(folder: Path, thresholds: dict[str, Any] | None = THRESHOLDS) -> Path:
    bank = Bank(np.random.default_rng(0).normal(size=(5, 8)).astype(np.float32), SPEC, "c", 1.5, 40)
    cats = {"c": CategoryModel(bank, (400, 300), MapScaling(0.5, 4.0), thresholds, 4)}
    provenance = {"run_name": "r", "run_kind": "centralized", "settings": {"seed": 0}}
    write_model(folder, SPEC, cats, provenance)
    return folder


def _as_version_1(folder: Path, keep_complete: bool = False) -> dict[str, Any]:
    """Rewrite model.json into version 1 as fedpatch wrote it: before the `complete`
    field existed (or, `keep_complete`, after it was added under the same version)."""
    manifest = json.loads((folder / "model.json").read_text())
    manifest["format"] = "fedpatch-model/1"
    if not keep_complete:
        del manifest["complete"]
    (folder / "model.json").write_text(json.dumps(manifest, indent=2))
    return manifest


def test_the_fields_of_model_json_are_pinned_to_its_version() -> None:
    """Changing model.json's fields (or the feature spec's) without bumping the format
    version fails here."""
    description = "\n".join(model_format.schema_description())
    assert model_format.schema_sha256() == model_format.SCHEMA_SHA256, (
        f"model.json's fields changed but {model_format.CURRENT_FORMAT} did not: bump "
        "FORMAT_VERSION in fedpatch_app/inspection/model_format.py, add to MIGRATIONS the "
        "function that reads the previous version as the new one (or list it in "
        "UNREADABLE with the reason), document the change there and in docs/inspection.md, "
        f"and pin SCHEMA_SHA256 = {model_format.schema_sha256()!r}. The fields now:\n"
        f"{description}"
    )


def test_every_older_version_is_migrated_or_refused_with_a_reason() -> None:
    migrated, refused = set(model_format.MIGRATIONS), set(model_format.UNREADABLE)
    assert not migrated & refused
    assert migrated | refused == set(range(1, model_format.FORMAT_VERSION)), (
        "each older format version needs a migration to the next (MIGRATIONS) or a reason "
        "it cannot be read (UNREADABLE)"
    )


def test_what_is_written_is_the_described_format(tmp_path: Path) -> None:
    manifest = json.loads((_write(tmp_path / "model") / "model.json").read_text())
    assert manifest["format"] == model_format.CURRENT_FORMAT
    model_format.ModelJson.model_validate(manifest)
    model_format.check_written(manifest)
    for change in (
        lambda m: m.update(index="knn.faiss"),
        lambda m: m["categories"]["c"]["bank"].update(index="knn.faiss"),
        lambda m: m["feature_spec"].update(resize="bilinear"),
        lambda m: m.pop("complete"),
    ):
        changed = json.loads(json.dumps(manifest))
        change(changed)
        with pytest.raises(ModelError, match="does not match fedpatch-model/"):
            model_format.check_written(changed)


def test_a_version_1_folder_is_read_migrated_with_a_note(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    current = load_model(_write(tmp_path / "current"))
    folder = _write(tmp_path / "old")
    on_disk = _as_version_1(folder)
    with caplog.at_level(logging.INFO, logger=model_format.__name__):
        model = load_model(folder)
    assert "fedpatch-model/1 read as /2" in caplog.text and "counted as complete" in caplog.text
    assert model.manifest["format"] == model_format.CURRENT_FORMAT
    assert model.manifest["complete"] is True and model.incomplete_reason is None
    assert json.loads((folder / "model.json").read_text()) == on_disk, "the file is not rewritten"
    old, new = model.category("c"), current.category("c")
    assert (old.native_size, old.scaling, old.thresholds) == (
        new.native_size,
        new.scaling,
        new.thresholds,
    )
    np.testing.assert_array_equal(old.bank.features, new.bank.features)
    # Written under version 1 after `complete` was added: read as it says.
    late = _write(tmp_path / "late", thresholds=None)
    manifest = json.loads((late / "model.json").read_text())
    manifest |= {"complete": False, "incomplete_reason": "stopped after its merge"}
    (late / "model.json").write_text(json.dumps(manifest))
    _as_version_1(late, keep_complete=True)
    with pytest.raises(ModelError, match="incomplete: stopped after its merge"):
        load_model(late)


def test_a_signed_version_1_folder_still_verifies(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The signature covers the bytes on disk; the migration happens after it is checked."""
    private, public = write_key_pair(tmp_path, "builder")
    monkeypatch.setenv(signing.ENV_KEY, str(private))
    folder = _write(tmp_path / "model")
    _as_version_1(folder)
    signing.sign_or_unsign(folder)  # as the older fedpatch signed it
    model = load_model(folder, trusted_keys=signing.read_public_keys([public]))
    assert model.manifest["complete"] is True


#: The version after the newest this fedpatch reads.
NEWER = f"fedpatch-model/{model_format.FORMAT_VERSION + 1}"


@pytest.mark.parametrize(
    ("version", "message"),
    [
        (NEWER, rf"'{NEWER}', written by a newer fedpatch.*reads up to"),
        ("fedpatch-model/0", r"unknown model format 'fedpatch-model/0'"),
        ("fedpatch-model/x", r"unknown model format 'fedpatch-model/x'"),
    ],
)
def test_versions_this_fedpatch_cannot_read_are_refused_naming_them(
    tmp_path: Path, version: str, message: str
) -> None:
    folder = _write(tmp_path / "model")
    manifest = json.loads((folder / "model.json").read_text())
    manifest["format"] = version
    (folder / "model.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelError, match=message):
        load_model(folder)


def test_an_older_version_without_a_safe_reading_is_refused_with_its_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(model_format, "UNREADABLE", {1: "its banks were scored differently"})
    folder = _write(tmp_path / "model")
    _as_version_1(folder)
    with pytest.raises(
        ModelError, match=r"'fedpatch-model/1', which this fedpatch no longer reads: its banks"
    ):
        load_model(folder)
