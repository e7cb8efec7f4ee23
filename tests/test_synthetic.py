"""Synthetic AutoVI-format data: layout, sizes, ground truth, determinism, locality."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fedpatch_app.cli import main
from fedpatch_app.data.autovi import CATEGORIES, DEFECT_FOLDERS, NATIVE_SIZES, load_category
from fedpatch_app.data.synthetic import DEFECT_CONFIGS, SCALES, generate, is_synthetic
from fedpatch_app.data.synthetic.marker import GENERATOR_VERSION
from fedpatch_app.errors import ConfigError
from fedpatch_app.settings import RunSettings

TINY = SCALES["tiny"]


def _pngs(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.png"))


def _config(root: Path, category: str) -> dict[str, dict]:
    entries = json.loads((root / category / "defects_config.json").read_text())
    return {e["defect_name"]: e for e in entries}


def _read(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        assert im.mode == "RGB", path
        return np.asarray(im)


def test_layout_names_and_sizes(tiny_root: Path) -> None:
    assert sorted(p.name for p in tiny_root.iterdir()) == sorted([*CATEGORIES, "synthetic.json"])
    for cat in CATEGORIES:
        base = tiny_root / cat
        train = _pngs(base / "train" / "good")
        assert [p.name for p in train] == [f"{i:04d}.png" for i in range(TINY.train)]
        assert len(_pngs(base / "test" / "good")) == TINY.test_good
        folders = sorted(p.name for p in (base / "test").iterdir())
        assert folders == sorted(["good", *DEFECT_FOLDERS[cat]])
        gt_folders = sorted(p.name for p in (base / "ground_truth").iterdir())
        assert gt_folders == sorted(DEFECT_FOLDERS[cat])
        for defect in DEFECT_FOLDERS[cat]:
            images = _pngs(base / "test" / defect)
            assert [p.name for p in images] == [f"{i:04d}.png" for i in range(TINY.per_defect)]
            for img in images:
                masks = _pngs(base / "ground_truth" / defect / img.stem)
                assert masks, img
                assert [m.name for m in masks] == [f"{k:04d}.png" for k in range(len(masks))]
        for path in [train[0], _pngs(base / "test" / DEFECT_FOLDERS[cat][0])[0]]:
            with Image.open(path) as im:
                assert im.format == "PNG" and im.mode == "RGB"
                assert im.size == NATIVE_SIZES[cat]


def test_defects_config(tiny_root: Path) -> None:
    relative, absolute = 0, 0
    for cat in CATEGORIES:
        config = _config(tiny_root, cat)
        # every defect folder is listed, except "multiple" whose regions reuse other values
        assert set(config) == set(DEFECT_FOLDERS[cat]) - {"multiple"}
        values = [e["pixel_value"] for e in config.values()]
        assert len(set(values)) == len(values)
        for e in config.values():
            assert 1 <= e["pixel_value"] <= 255
            if e["relative_saturation"]:
                relative += 1
                assert 0 < e["saturation_threshold"] <= 1
            else:
                absolute += 1
                assert isinstance(e["saturation_threshold"], int)
    assert relative > 0 and absolute > 0


def test_masks_carry_pixel_values_and_several_regions(tiny_root: Path) -> None:
    for cat in CATEGORIES:
        config = _config(tiny_root, cat)
        by_value = {e["pixel_value"]: name for name, e in config.items()}
        max_regions = 0
        for defect in DEFECT_FOLDERS[cat]:
            for img_dir in sorted((tiny_root / cat / "ground_truth" / defect).iterdir()):
                masks = _pngs(img_dir)
                max_regions = max(max_regions, len(masks))
                shown = []
                union = np.zeros(NATIVE_SIZES[cat][::-1], dtype=int)
                for mask_path in masks:
                    arr = _read(mask_path)
                    assert arr.shape == (*NATIVE_SIZES[cat][::-1], 3)
                    values = np.unique(arr)
                    assert values.size == 2 and values[0] == 0, mask_path
                    value = int(values[1])
                    # the region holds the value in every channel, zero elsewhere
                    region = arr[..., 0] > 0
                    assert (arr[region] == value).all() and (arr[~region] == 0).all()
                    shown.append(by_value[value])
                    union += region
                assert union.max() == 1, f"regions of {img_dir} overlap"
                if defect == "multiple":
                    assert len(set(shown)) == 2, img_dir
                else:
                    assert set(shown) == {defect}, img_dir
        assert max_regions >= 2, f"{cat} has no test image with several regions"


def test_reader_accepts_every_category(tiny_root: Path) -> None:
    for cat in CATEGORIES:
        category = load_category(tiny_root, cat)
        assert len(category.train) == TINY.train
        assert set(category.defect_types) == set(DEFECT_FOLDERS[cat])
        for sample in category.test:
            regions = category.load_regions(sample)
            assert bool(regions) != sample.is_good
            for region in regions:
                assert region.mask.shape == NATIVE_SIZES[cat][::-1]
                assert 0 < region.saturation_area <= region.mask.sum()


@pytest.mark.parametrize("cat", ["pipe_clip", "tank_screw"])
def test_defects_are_local(tiny_root: Path, cat: str) -> None:
    base = tiny_root / cat
    train = np.stack([_read(p).astype(np.float32) for p in _pngs(base / "train" / "good")])
    mean = train.mean(axis=0)
    good_err = [np.abs(_read(p) - mean).mean() for p in _pngs(base / "test" / "good")]
    h, w = mean.shape[:2]
    for defect in DEFECT_FOLDERS[cat]:
        for img in _pngs(base / "test" / defect):
            union = np.zeros((h, w), dtype=bool)
            for mask_path in _pngs(base / "ground_truth" / defect / img.stem):
                union |= _read(mask_path)[..., 0] > 0
            assert 0 < union.mean() < 0.1, img
            err = np.abs(_read(img) - mean).mean(axis=2)
            outside, inside = err[~union].mean(), err[union].mean()
            # outside its regions a defective image looks like a good one ...
            assert outside < 1.5 * max(good_err) + 1.0, (img, outside, good_err)
            # ... and inside it departs from the good images (the drawn defects are small
            # and of low contrast on purpose, so "clearly" means twice the outside error)
            assert inside > 2 * outside, (img, inside, outside)


def _files(root: Path) -> dict[str, bytes]:
    """The data files under ``root`` (the root's marker aside: it lists what was generated)."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.parent != root
    }


def test_deterministic_per_seed(tmp_path: Path, tiny_root: Path) -> None:
    a = generate(tmp_path / "a", "tiny", 0, ["pipe_staple"], kind="drawn")
    generate(tmp_path / "b", "tiny", 0, ["pipe_staple"], kind="drawn")
    generate(tmp_path / "c", "tiny", 1, ["pipe_staple"], kind="drawn")
    files_a, files_b = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert files_a == files_b
    # a subset of categories gives the same files as the full generation
    assert files_a == {k: v for k, v in _files(tiny_root).items() if k.startswith("pipe_staple/")}
    files_c = _files(tmp_path / "c")
    assert files_c.keys() == files_a.keys()
    images = [k for k in files_a if "/train/" in k or "/test/" in k]
    assert all(files_a[k] != files_c[k] for k in images)
    assert a["categories"]["pipe_staple"] == {
        "train": TINY.train,
        "test_good": TINY.test_good,
        "test_defect": {"missing": TINY.per_defect},
        "regions": sum(1 for k in files_a if "/ground_truth/" in k),
    }
    assert a["images"] == TINY.train + TINY.test_good + TINY.per_defect


def test_good_images_vary_but_resemble(tiny_root: Path) -> None:
    paths = _pngs(tiny_root / "engine_wiring" / "train" / "good")
    images = [_read(p).astype(np.float32) for p in paths[:3]]
    diffs = [np.abs(images[0] - other).mean() for other in images[1:]]
    assert all(0 < d < 25 for d in diffs), diffs
    assert images[0].std() > 10  # a structured scene, not a flat image


def test_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="scale"):
        generate(tmp_path, "huge", 0, kind="drawn")
    with pytest.raises(ConfigError, match="not_a_category"):
        generate(tmp_path, "tiny", 0, ["not_a_category"], kind="drawn")


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "synth"
    assert main(["synth", "--out", str(out), "--categories", "pipe_clip", "--seed", "3"]) == 0
    text = capsys.readouterr().out
    assert "pipe_clip" in text and "unclipped 2" in text
    assert len(_pngs(out / "pipe_clip" / "train" / "good")) == TINY.train
    # the options are the run settings': the same defaults (photo scenes, tiny)
    marker = is_synthetic(out)
    assert (marker["kind"], marker["scale"]) == (RunSettings().synthetic_kind, "tiny")
    assert main(["synth", "--out", str(out), "--categories", "nope"]) == 2
    assert main(["synth", "--out", str(out), "--kind", "painted"]) == 2
    assert "option '--kind': expected one of drawn, photo" in capsys.readouterr().err


def test_config_table_matches_folders() -> None:
    for cat in CATEGORIES:
        names = [d[0] for d in DEFECT_CONFIGS[cat]]
        assert set(names) == set(DEFECT_FOLDERS[cat]) - {"multiple"}


def test_rewrite_and_refuse_foreign_files(tmp_path: Path, tiny_root: Path) -> None:
    out = tmp_path / "data"
    generate(out, "tiny", 1, ["pipe_staple"], kind="drawn")
    generate(
        out, "tiny", 0, ["pipe_staple"], kind="drawn"
    )  # a rerun overwrites, leaving nothing stale
    assert _files(out) == {
        k: v for k, v in _files(tiny_root).items() if k.startswith("pipe_staple/")
    }
    foreign = out / "pipe_staple" / "train" / "good" / "0099.png"
    foreign.write_bytes(b"not ours")
    before = _files(out)
    with pytest.raises(ConfigError, match="0099.png is not part of the synthetic data"):
        generate(out, "tiny", 2, ["pipe_staple"], kind="drawn")
    assert _files(out) == before


def test_marker_tells_synthetic_from_real(tiny_root: Path, tmp_path: Path) -> None:
    marker = is_synthetic(tiny_root)
    assert marker is not None
    assert (marker["kind"], marker["scale"], marker["seed"]) == ("drawn", "tiny", 0)
    assert marker["categories"] == list(CATEGORIES)
    assert marker["version"] == GENERATOR_VERSION
    assert is_synthetic(tmp_path) is None  # real AutoVI carries no marker
    # adding categories of another kind keeps the earlier records and says "mixed"
    out = tmp_path / "mixed"
    generate(out, "tiny", 0, ["pipe_clip"], kind="drawn")
    generate(out, "tiny", 0, ["pipe_staple"], kind="photo")
    marker = is_synthetic(out)
    assert marker["categories"] == ["pipe_clip", "pipe_staple"]
    assert marker["kind"] == "mixed" and marker["scale"] == "tiny"
    assert marker["per_category"]["pipe_staple"] == {"kind": "photo", "scale": "tiny", "seed": 0}


def test_autovi_scale_has_autovis_counts() -> None:
    scale = SCALES["autovi"]
    counts = {cat: scale.counts(cat) for cat in CATEGORIES}
    assert sum(c["train/good"] for c in counts.values()) == 1523
    assert sum(c["test/good"] for c in counts.values()) == 1521
    defective = sum(
        n
        for c in counts.values()
        for k, n in c.items()
        if k.startswith("test/") and k != "test/good"
    )
    assert defective == 878
    assert counts["engine_wiring"]["test/fastening"] == 277
    for cat in CATEGORIES:
        assert set(counts[cat]) == {
            "train/good",
            "test/good",
            *(f"test/{d}" for d in DEFECT_FOLDERS[cat]),
        }
    with pytest.raises(ConfigError, match="kind"):
        generate(Path("unused"), "tiny", 0, kind="sketch")


def test_generator_names_are_the_settings_choices() -> None:
    """The kinds and scales the generator knows are the synthetic settings' choices."""
    from fedpatch_app.data.synthetic import KINDS
    from fedpatch_app.settings.fields import BY_NAME

    assert set(KINDS) == set(BY_NAME["synthetic_kind"].choices or ())
    assert set(SCALES) == set(BY_NAME["synthetic_scale"].choices or ())
