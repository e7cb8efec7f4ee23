"""Photo scenes: AutoVI layout and sizes from real photographs, nuisance variation between
good images, local defects of every kind and size, masks the official metrics accept."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fedpatch_app.cli import main
from fedpatch_app.data.autovi import DEFECT_FOLDERS, NATIVE_SIZES, load_category
from fedpatch_app.data.synthetic import SCALES, generate, is_synthetic, photo
from fedpatch_app.data.synthetic.layout import folder_code, rng_for
from fedpatch_app.data.synthetic.photo_defects import STYLES, make_defect, structure_map
from fedpatch_app.data.synthetic.photo_sources import base_image
from fedpatch_app.metrics.evaluate import evaluate_category
from fedpatch_app.results.schema import LIMIT_KEYS

pytest.importorskip("skimage", reason="the photo scenes need scikit-image's photographs")

CATS = ("pipe_clip", "underbody_pipes")  # one 400x400 and one 1000x750 category
TINY = SCALES["tiny"]


@pytest.fixture(scope="module")
def photo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("photo_tiny")
    generate(root, scale="tiny", seed=0, categories=CATS, kind="photo")
    return root


def _read(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        assert im.mode == "RGB", path
        return np.asarray(im)


def test_layout_sizes_and_marker(photo_root: Path) -> None:
    for cat in CATS:
        base = photo_root / cat
        assert len(list((base / "train" / "good").glob("*.png"))) == TINY.train
        for folder in ("good", *DEFECT_FOLDERS[cat]):
            images = sorted((base / "test" / folder).glob("*.png"))
            assert len(images) == (TINY.test_good if folder == "good" else TINY.per_defect)
            assert _read(images[0]).shape == (*NATIVE_SIZES[cat][::-1], 3)
        config = json.loads((base / "defects_config.json").read_text())
        assert {e["defect_name"] for e in config} == set(DEFECT_FOLDERS[cat]) - {"multiple"}
    marker = is_synthetic(photo_root)
    assert marker is not None
    assert (marker["kind"], marker["scale"], marker["seed"]) == ("photo", "tiny", 0)
    assert marker["categories"] == list(CATS)


def test_masks_are_autovi_regions(photo_root: Path) -> None:
    for cat in CATS:
        category = load_category(photo_root, cat)
        values = {
            e["pixel_value"]
            for e in json.loads((photo_root / cat / "defects_config.json").read_text())
        }
        for sample in category.test:
            regions = category.load_regions(sample)
            assert bool(regions) != sample.is_good
            union = np.zeros(NATIVE_SIZES[cat][::-1], dtype=int)
            for region in regions:
                union += region.mask
                assert 0 < region.saturation_area <= region.mask.sum()
            assert union.max() <= 1, f"regions of {sample.rel_path} overlap"
        for mask_path in (photo_root / cat / "ground_truth").rglob("*.png"):
            arr = _read(mask_path)
            assert set(np.unique(arr)) - {0} <= values


def test_perfect_maps_score_one(photo_root: Path) -> None:
    """The project's implementation of the official metrics accepts the data: maps equal
    to the ground truth give AUC-sPRO 1.0 at every limit and image AUROC 1.0."""
    for cat in CATS:
        category = load_category(photo_root, cat)
        width, height = category.size
        maps = []
        for sample in category.test:
            m = np.zeros((height, width), dtype=np.uint16)
            for region in category.load_regions(sample):
                m[region.mask] = 65535
            maps.append(m)
        block, _ = evaluate_category(category, maps)
        assert block["auc_spro"] == {k: pytest.approx(1.0) for k in LIMIT_KEYS}
        assert block["image_auroc"]["mean"] == pytest.approx(1.0)


def test_deterministic_and_seeded(photo_root: Path, tmp_path: Path) -> None:
    generate(tmp_path / "a", "tiny", 0, ["pipe_clip"], kind="photo")
    for path in (tmp_path / "a" / "pipe_clip").rglob("*.png"):
        same = photo_root / "pipe_clip" / path.relative_to(tmp_path / "a" / "pipe_clip")
        assert path.read_bytes() == same.read_bytes(), path
    other = photo.good_image("pipe_clip", 1, folder_code("pipe_clip", "train/good"), 0)
    assert not np.array_equal(
        other, _read(photo_root / "pipe_clip" / "train" / "good" / "0000.png")
    )


def test_good_images_vary_as_on_a_line(photo_root: Path) -> None:
    paths = sorted((photo_root / "pipe_clip" / "train" / "good").glob("*.png"))
    images = [_read(p).astype(np.float32) for p in paths]
    first = images[0]
    diffs = [np.abs(first - other).mean() for other in images[1:]]
    assert all(3 < d < 60 for d in diffs), diffs  # shifted, relit, noisy: never identical
    # ... but the same scene: strongly correlated once blurred over shifts of a few pixels
    small = [
        np.asarray(Image.fromarray(im.astype(np.uint8)).resize((25, 25))).ravel() for im in images
    ]
    corr = [np.corrcoef(small[0], s)[0, 1] for s in small[1:]]
    assert min(corr) > 0.6, corr


@pytest.mark.parametrize(
    "defect",
    ["missing", "fastening", "unclipped", "blue_hoop", "cardboard", "obstruction", "operator"],
)
def test_each_defect_is_local(defect: str) -> None:
    category = "engine_wiring"
    h, w = NATIVE_SIZES[category][::-1]
    for k, style in enumerate(STYLES[defect]):
        before = base_image(category, rng_for(0, category, 7, k))
        after = before.copy()
        taken = np.zeros((h, w), dtype=bool)
        mask = make_defect(after, style, rng_for(1, category, k), taken, structure_map(before))
        change = np.abs(after - before).max(axis=2)
        assert 0 < mask.mean() < 0.4, style
        assert change[~mask].max() < 1.0, style  # nothing changes outside the region
        assert change[mask].mean() > 3.0, style  # and the region does change


def test_defect_sizes_spread_like_autovi() -> None:
    """From under 0.1% of the image (faint marks, small missing parts) to large regions."""
    fractions = []
    for cat in ("engine_wiring", "pipe_clip", "underbody_pipes", "tank_screw"):
        for folder in DEFECT_FOLDERS[cat]:
            if folder == "multiple":
                continue
            for index in range(3):
                _, regions = photo.defect_image(
                    cat, folder, 0, folder_code(cat, f"test/{folder}"), index
                )
                fractions += [m.mean() for _, m in regions]
    assert min(fractions) < 0.002 and max(fractions) > 0.05, sorted(fractions)
    assert np.mean(np.asarray(fractions) < 0.01) > 0.3  # many small defects


def test_cli_kind_photo(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "synth"
    args = ["synth", "--out", str(out), "--kind", "photo", "--categories", "pipe_staple"]
    assert main(args) == 0
    assert "photo" in capsys.readouterr().out
    assert is_synthetic(out)["kind"] == "photo"
    assert main(["synth", "--out", str(out), "--kind", "sketch"]) == 2
    assert "option '--kind': expected one of drawn, photo, got 'sketch'" in capsys.readouterr().err
