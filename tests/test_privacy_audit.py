"""The privacy audit and the share protections it measures (fedpatch_app/privacy)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from fedpatch_app.errors import ConfigError
from fedpatch_app.model.embedding import FeatureSpec
from fedpatch_app.model.memory_bank import MemoryBank
from fedpatch_app.model.merge import merge_category
from fedpatch_app.privacy import relay
from fedpatch_app.privacy.keys import ShareKey, read_key, write_key
from fedpatch_app.privacy.rotation import Rotation, check_key, same_key


def _parts(rng: np.random.Generator, dim: int) -> list[np.ndarray]:
    return [rng.gamma(2.0, 1.0, size=(n, dim)).astype(np.float32) for n in (120, 90, 30)]


def _merge(rows: list[np.ndarray], spec: FeatureSpec):
    items = [
        SimpleNamespace(features=r, n_patches=10 * len(r), n_images=3, radius=1.0, dp=None)
        for r in rows
    ]
    return merge_category("pipe_clip", items, 60, spec, device="cpu")


def test_rotation_keeps_exact_merge_and_scores() -> None:
    """Rotated rows merge to the rotated bank of the clear rows (exact k-center: distances
    are kept) and score every query as the clear ones do."""
    rng = np.random.default_rng(0)
    dim = 48
    rot = Rotation.of(ShareKey.generate(), dim)
    spec = FeatureSpec(weights="none", image_size=64, embed_dim=dim, projection_dim=None)
    parts = _parts(rng, dim)
    clear = _merge(parts, spec)
    rotated = _merge([rot.apply(p) for p in parts], spec)
    assert np.array_equal(clear.sources, rotated.sources)
    back = rot.undo(rotated.bank.features, rot.key_id, "bank")
    np.testing.assert_allclose(back, clear.bank.features, atol=1e-4)
    queries = rng.gamma(2.0, 1.0, size=(500, dim)).astype(np.float32)
    plain = MemoryBank(clear.bank.features).patch_scores(queries)
    turned = MemoryBank(rotated.bank.features).patch_scores(rot.apply(queries))
    np.testing.assert_allclose(turned, plain, rtol=1e-4, atol=1e-4)


def test_relayed_rows_merge_to_the_identical_bank() -> None:
    rng = np.random.default_rng(1)
    key = ShareKey.generate()
    spec = FeatureSpec(weights="none", image_size=64, embed_dim=32)
    parts = _parts(rng, 32)
    sealed = [relay.seal(p, key, f"client {i}", "pipe_clip") for i, p in enumerate(parts)]
    assert all(p.tobytes() not in s.ciphertext for p, s in zip(parts, sealed, strict=True))
    opened = [relay.open_rows(s, key) for s in sealed]
    assert np.array_equal(_merge(opened, spec).bank.features, _merge(parts, spec).bank.features)


def test_wrong_or_missing_key_is_refused_by_name(tmp_path: Path) -> None:
    key = read_key(write_key(tmp_path / "share.key").source)
    other = ShareKey.generate()
    with pytest.raises(ConfigError, match="--share-key is not set"):
        read_key(None)
    with pytest.raises(ConfigError, match=re.escape(str(tmp_path / "none.key"))):
        read_key(tmp_path / "none.key")
    (tmp_path / "bad.key").write_text("not a key\n")
    with pytest.raises(ConfigError, match="bad.key is not a share key file"):
        read_key(tmp_path / "bad.key")
    sealed = relay.seal(np.ones((3, 4), np.float32), key, "client 2", "pipe_clip")
    with pytest.raises(ConfigError, match=f"client 2 .*{key.key_id}.*{other.key_id}"):
        relay.open_rows(sealed, other)
    with pytest.raises(ConfigError, match=f"{key.key_id}, and no share key was given"):
        relay.open_rows(sealed, None)
    tampered = relay.Sealed(**{**sealed.__dict__, "category": "pipe_staple"})
    with pytest.raises(ConfigError, match="altered in transit"):
        relay.open_rows(tampered, key)
    rot = Rotation.of(other, 4)
    with pytest.raises(
        ConfigError, match=f"rotated with share key {key.key_id}, but .*{other.key_id}"
    ):
        rot.undo(np.ones((2, 4)), key.key_id, "the bank of pipe_clip")
    with pytest.raises(ConfigError, match="no share key was given"):
        check_key(None, key.key_id, "the bank of pipe_clip")
    with pytest.raises(ConfigError, match=f"client 3 \\({other.key_id}\\)"):
        same_key([("client 2", key.key_id), ("client 3", other.key_id)], "pipe_clip")


def test_the_server_attacks_on_a_rotation_work_where_they_can() -> None:
    """Known pairs recover the rotation; norms tell members without it."""
    from fedpatch_app.privacy.alignment import known_pairs
    from fedpatch_app.privacy.membership import norm_scores

    rng = np.random.default_rng(2)
    dim = 24
    rot = Rotation.of(ShareKey.generate(), dim)
    clear = rng.gamma(2.0, 1.0, size=(40, dim))
    np.testing.assert_allclose(known_pairs(clear, rot.apply(clear)), rot.matrix.T, atol=1e-4)
    members = rng.gamma(2.0, 1.0, size=(3, 50, dim)).astype(np.float32)
    others = rng.gamma(2.0, 1.0, size=(3, 50, dim)).astype(np.float32)
    rows = rot.apply(members[:, ::10].reshape(-1, dim))
    scores = norm_scores(np.concatenate([members, others]), rows)
    assert scores[:3].min() > scores[3:].max()


def test_public_images_share_no_source_with_the_generator() -> None:
    from fedpatch_app.data.synthetic import photo_sources
    from fedpatch_app.privacy import public

    text = Path(photo_sources.__file__).read_text()
    used = set(re.findall(r"[\w]+\.(?:png|jpg)", text))
    assert used <= public.GENERATOR_SOURCES
    names = {p.name for p in public.default_public_images()}
    assert len(names) >= 10
    assert not names & public.GENERATOR_SOURCES


@pytest.mark.slow
def test_audit_on_tiny_data_shows_the_raw_membership_attack(tiny_root: Path, tmp_path: Path):
    from fedpatch_app.cli import main

    out = tmp_path / "audit"
    argv = ["privacy-audit", "--data-root", str(tiny_root), "--out", str(out)]
    argv += ["--categories", "pipe_clip", "--weights", "none", "--image-size", "64"]
    argv += ["--device", "cpu", "--public-crops", "6", "--training-pairs", "600"]
    argv += ["--epochs", "1", "--max-rows", "60", "--candidates", "4"]
    argv += ["--modes", "raw", "relay", "dp", "dp_projection"]
    code = main([*argv, "--public-pairs", "8", "--projection-dim", "8"])
    assert code == 0
    audit = json.loads((out / "audit.json").read_text())
    raw, sealed = audit["modes"]["raw"], audit["modes"]["relay"]
    for key in ("reconstruction_psnr", "baseline_psnr", "membership_auc", "image_auroc"):
        assert key in raw and key in sealed
    assert raw["attacks"]["direct"]["membership_auc"] >= 0.9
    assert raw["attacks"]["norms"]["membership_auc"] >= 0.9
    assert sealed["membership_auc"] < 0.9
    assert sealed["image_auroc"] == raw["image_auroc"]
    dp = audit["modes"]["dp"]
    assert dp["dp"]["epsilon"] == 8.0 and dp["image_auroc"] is not None
    assert dp["curious_client"]["membership_candidates"] > 0
    projected = audit["modes"]["dp_projection"]
    assert set(dp) - {"attacks"} <= set(projected)
    assert projected["dp"]["noise"]["dimension"] == 8
    assert projected["dp"]["noise"]["epsilon_spent"] == pytest.approx(8.0, rel=1e-6)
    assert set(projected["attacks"]) == {"pinv", "pinv_public_mean"}
    assert projected["image_auroc"] is not None and "holds" in projected
    assert projected["curious_client"]["membership_candidates"] > 0
    assert (out / "audit.md").read_text().startswith("# Privacy audit")
    assert (out / "figures" / "raw.png").stat().st_size > 0
    # No --share-key: the key is derived from the seed, so the audit can be repeated.
    assert audit["share_key_id"] == ShareKey.for_audit(audit["settings"]["seed"]).key_id


def test_the_audit_key_is_fixed_by_the_seed_and_differs_between_seeds() -> None:
    assert ShareKey.for_audit(0).secret == ShareKey.for_audit(0).secret
    assert ShareKey.for_audit(0).key_id != ShareKey.for_audit(1).key_id
    assert len(ShareKey.for_audit(7).secret) == 32


def test_a_rotated_extractor_passes_the_native_size_on_and_rotates() -> None:
    """A rotated client's scoring goes through `PatchCore.predict`, which hands the
    category's native size to the extractor: the wrapper must take and pass it."""
    from fedpatch_app.privacy.rotation import RotatedExtractor

    feats = np.random.default_rng(0).normal(size=(2, 3, 3, 8)).astype(np.float32)
    seen: list = []

    class Inner:
        def extract_iter(self, paths, desc="features", native_size=None):
            seen.append(native_size)
            yield 0, feats

        def extract(self, paths, desc="features", native_size=None):
            seen.append(native_size)
            return feats

    rot = Rotation.of(ShareKey.generate(), 8)
    wrapped = RotatedExtractor(Inner(), rot)
    [(start, out)] = list(wrapped.extract_iter(["a.png"], "scoring", (400, 300)))
    assert start == 0 and seen == [(400, 300)]
    np.testing.assert_allclose(out.reshape(-1, 8), rot.apply(feats.reshape(-1, 8)), atol=1e-6)
    assert wrapped.extract(["a.png"], "x", (10, 20)).shape == feats.shape
    assert seen[-1] == (10, 20)
