"""A model folder that cannot be loaded wrong: every field checked at load naming it,
banks that must belong to their entry, and Ed25519 signatures over model.json."""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from key_utils import write_key_pair

from fedpatch_app.errors import ConfigError, ModelError
from fedpatch_app.inspection import signing
from fedpatch_app.inspection.model_folder import CategoryModel, load_model, write_model
from fedpatch_app.metrics.map_scaling import MapScaling
from fedpatch_app.model.embedding import FeatureSpec
from fedpatch_app.model.patchcore import Bank

SPEC = FeatureSpec(weights="none", image_size=64, embed_dim=8)
CATS = ("pipe_clip", "pipe_staple")


def _write(folder: Path) -> Path:
    rng = np.random.default_rng(0)
    cats = {}
    for i, cat in enumerate(CATS):
        bank = Bank(rng.normal(size=(5 + i, 8)).astype(np.float32), SPEC, cat, 1.5, 40)
        thresholds = {"image": {"raw": 3.0}, "pixel": {"raw": 2.0}}
        cats[cat] = CategoryModel(bank, (400, 400), MapScaling(0.5, 4.0), thresholds, 4)
    write_model(folder, SPEC, cats, {"run_name": "r", "run_kind": "centralized"})
    return folder


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One small two-category model folder, copied by each test that changes it."""
    return _write(tmp_path_factory.mktemp("model") / "model")


def _copy(built: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(built, tmp_path / "model"))


def _edit(folder: Path, change: Callable[[dict[str, Any]], None]) -> None:
    manifest = json.loads((folder / "model.json").read_text())
    change(manifest)
    (folder / "model.json").write_text(json.dumps(manifest))


def _clip(m: dict[str, Any]) -> dict[str, Any]:
    return m["categories"]["pipe_clip"]


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (lambda m: _clip(m)["thresholds"]["image"].update(raw=1e9), "thresholds.image.raw"),
        (lambda m: _clip(m)["thresholds"]["image"].update(raw=math.nan), "thresholds.image.raw"),
        (lambda m: _clip(m)["thresholds"]["pixel"].update(raw="abc"), "thresholds.pixel.raw"),
        (lambda m: _clip(m)["thresholds"]["image"].update(raw=-1.0), "thresholds.image.raw"),
        (lambda m: _clip(m).update(native_size=[60000, 60000]), "pipe_clip.native_size"),
        (lambda m: _clip(m).update(native_size=[400]), "pipe_clip.native_size"),
        (lambda m: _clip(m)["bank"].update(rows=999999), "pipe_clip.bank.rows"),
        (lambda m: _clip(m)["bank"].update(rows=6), "records 5 rows, model.json says 6"),
        (lambda m: _clip(m).update(train_images=-3), "pipe_clip.train_images"),
        (lambda m: _clip(m).update(train_images=True), "pipe_clip.train_images"),
        (lambda m: _clip(m)["bank"].update(dim=9), "pipe_clip.bank.dim"),
        (lambda m: _clip(m)["bank"].update(sha256="xyz"), "pipe_clip.bank.sha256"),
        (lambda m: _clip(m)["bank"].update(covering_radius=2.5), "covering radius"),
        (lambda m: _clip(m).update(train_patches=41), "41"),
    ],
)
def test_each_field_is_checked_at_load_naming_it(
    built: Path, tmp_path: Path, change: Callable, words: str
) -> None:
    folder = _copy(built, tmp_path)
    _edit(folder, change)
    with pytest.raises(ModelError, match=words.replace(".", r"\.")):
        load_model(folder)


def test_banks_swapped_with_their_hashes_are_refused(built: Path, tmp_path: Path) -> None:
    folder = _copy(built, tmp_path)

    def swap(m: dict[str, Any]) -> None:
        a, b = m["categories"]["pipe_clip"]["bank"], m["categories"]["pipe_staple"]["bank"]
        a["file"], b["file"] = b["file"], a["file"]
        a["sha256"], b["sha256"] = b["sha256"], a["sha256"]
        a["rows"], b["rows"] = b["rows"], a["rows"]

    _edit(folder, swap)
    with pytest.raises(ModelError, match="records category 'pipe_staple'.*'pipe_clip'"):
        load_model(folder)


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, tuple[Path, Path]]:
    return {name: write_key_pair(tmp_path, name) for name in ("builder", "stranger")}


def test_a_signed_model_loads_only_unchanged_and_with_its_key(
    tmp_path: Path, keys: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(signing.ENV_KEY, str(keys["builder"][0]))
    folder = _write(tmp_path / "signed")
    assert (folder / signing.SIGNATURE_FILE).is_file()
    trusted = signing.read_public_keys([keys["builder"][1]])
    model = load_model(folder, trusted_keys=trusted)
    assert (
        model.manifest_sha256
        == signing.hashlib.sha256((folder / "model.json").read_bytes()).hexdigest()
    )
    stranger = signing.read_public_keys([keys["stranger"][1]])
    with pytest.raises(ModelError, match="not a trusted key"):
        load_model(folder, trusted_keys=stranger)
    # A changed model.json (a threshold raised, still in range) is refused.
    changed = Path(shutil.copytree(folder, tmp_path / "changed"))
    _edit(changed, lambda m: _clip(m)["thresholds"]["image"].update(raw=3.5))
    load_model(changed)  # without trusted keys the checks pass
    with pytest.raises(ModelError, match="changed since it was signed"):
        load_model(changed, trusted_keys=trusted)
    # A changed bank is refused by its hash, which the signature covers.
    bank = Path(shutil.copytree(folder, tmp_path / "bank")) / "banks" / "pipe_clip.npz"
    data = bytearray(bank.read_bytes())
    data[-100] ^= 0xFF
    bank.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="has changed since the model was written"):
        load_model(bank.parents[1], trusted_keys=trusted)


def test_unsigned_is_refused_with_trusted_keys_and_a_stale_signature_removed(
    tmp_path: Path, keys: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(signing.ENV_KEY, str(keys["builder"][0]))
    folder = _write(tmp_path / "model")
    monkeypatch.delenv(signing.ENV_KEY)
    _write(folder)  # rewritten without a key: the old signature no longer applies
    assert not (folder / signing.SIGNATURE_FILE).exists()
    trusted = signing.read_public_keys([keys["builder"][1]])
    with pytest.raises(ModelError, match="is not signed"):
        load_model(folder, trusted_keys=trusted)


def test_a_given_key_wins_and_bad_keys_are_named(
    tmp_path: Path, keys: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(signing.ENV_KEY, str(keys["stranger"][0]))
    signing.use_signing_key(keys["builder"][0])
    try:
        folder = _write(tmp_path / "model")
    finally:
        signing.use_signing_key(None)
    load_model(folder, trusted_keys=signing.read_public_keys([keys["builder"][1]]))
    with pytest.raises(ConfigError, match="--signing-key .*builder.pub"):
        signing.use_signing_key(keys["builder"][1])
    with pytest.raises(ConfigError, match="--trusted-key .*builder.key"):
        signing.read_public_keys([keys["builder"][0]])


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
def test_the_key_script_makes_a_pair_that_signs_and_verifies(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import subprocess

    script = Path(__file__).resolve().parents[1] / "scripts" / "make-model-key.sh"
    subprocess.run([str(script), str(tmp_path / "keys"), "builder"], check=True)
    private, public = tmp_path / "keys" / "builder.key", tmp_path / "keys" / "builder.pub"
    assert private.stat().st_mode & 0o077 == 0
    monkeypatch.setenv(signing.ENV_KEY, str(private))
    folder = _write(tmp_path / "model")
    load_model(folder, trusted_keys=signing.read_public_keys([public]))


def test_a_bad_signing_key_stops_a_centralized_run_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from fedpatch_app.cli import main

    out = tmp_path / "run"
    args = ["centralized", "--data-root", str(tmp_path), "--out", str(out)]
    assert main([*args, "--signing-key", str(tmp_path / "no.key")]) == 2
    assert "--signing-key" in capsys.readouterr().err and not out.exists()
