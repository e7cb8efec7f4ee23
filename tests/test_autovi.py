"""The AutoVI reader: layouts, lazy listing, regions, and a clear error for each bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from fedpatch_app.data import autovi
from fedpatch_app.data.autovi import (
    CATEGORIES,
    NATIVE_SIZES,
    DefectSpec,
    available_categories,
    load_category,
    read_image,
)
from fedpatch_app.errors import DataError

CAT = "engine_wiring"
SIZE = NATIVE_SIZES[CAT]  # (400, 400)

CONFIG = [
    {
        "defect_name": "fastening",
        "pixel_value": 255,
        "saturation_threshold": 1.0,
        "relative_saturation": True,
    },
    {
        "defect_name": "blue_hoop",
        "pixel_value": 254,
        "saturation_threshold": 100,
        "relative_saturation": False,
    },
    {
        "defect_name": "cardboard",
        "pixel_value": 253,
        "saturation_threshold": 0.5,
        "relative_saturation": True,
    },
]

# (defect folder, image id) -> list of (pixel value, box x0, y0, x1, y1), one per region PNG
REGIONS: dict[tuple[str, str], list[tuple[int, tuple[int, int, int, int]]]] = {
    ("fastening", "0000"): [(255, (10, 10, 30, 30))],
    ("fastening", "0001"): [(255, (0, 0, 10, 5)), (255, (100, 100, 103, 110))],
    ("blue_hoop", "0000"): [(254, (50, 60, 70, 80))],
    ("multiple", "0000"): [(255, (5, 5, 15, 15)), (254, (200, 200, 205, 202))],
}


def write_png(
    path: Path, size: tuple[int, int] = SIZE, color=(90, 90, 90), mode: str = "RGB"
) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path)
    return path


def write_mask(
    path: Path,
    value: int,
    box: tuple[int, int, int, int],
    size: tuple[int, int] = SIZE,
    mode: str = "RGB",
) -> Path:
    channels = len(mode)
    arr = np.zeros((size[1], size[0], channels), np.uint8)
    x0, y0, x1, y1 = box
    arr[y0:y1, x0:x1, :3] = value
    if mode == "RGBA":
        arr[..., 3] = 255
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr.squeeze() if channels == 1 else arr, mode).save(path)
    return path


def build_category(root: Path, name: str = CAT, *, nested: bool = False, n_train: int = 3) -> Path:
    """A small AutoVI category at native size; returns the folder holding train/."""
    cat_root = root / name / name if nested else root / name
    size = NATIVE_SIZES[name]
    for i in range(n_train):
        write_png(cat_root / "train" / "good" / f"{i:04d}.png", size, (i, i, i))
    for i in range(2):
        write_png(cat_root / "test" / "good" / f"{i:04d}.png", size, (i, 0, 0))
    for (defect, image_id), regions in REGIONS.items():
        write_png(cat_root / "test" / defect / f"{image_id}.png", size, (0, 200, 0))
        for k, (value, box) in enumerate(regions):
            write_mask(
                cat_root / "ground_truth" / defect / image_id / f"{k:04d}.png", value, box, size
            )
    (cat_root / "defects_config.json").write_text(json.dumps(CONFIG))
    return cat_root


@pytest.fixture
def cat_root(tmp_path: Path) -> Path:
    return build_category(tmp_path)


# ------------------------------------------------------------------------------ reading


def test_load_category_lists_everything_sorted(cat_root: Path) -> None:
    cat = load_category(cat_root.parent, CAT)
    assert cat.name == CAT
    assert cat.root == cat_root
    assert cat.size == (400, 400)
    assert [p.name for p in cat.train] == ["0000.png", "0001.png", "0002.png"]
    assert cat.train_rel == ("train/good/0000.png", "train/good/0001.png", "train/good/0002.png")
    keys = [(s.defect, s.image_id) for s in cat.test]
    assert keys == sorted(keys)
    assert keys == [
        ("blue_hoop", "0000"),
        ("fastening", "0000"),
        ("fastening", "0001"),
        ("good", "0000"),
        ("good", "0001"),
        ("multiple", "0000"),
    ]
    assert cat.defect_types == ("blue_hoop", "fastening", "multiple")
    assert set(cat.defects) == {"fastening", "blue_hoop", "cardboard"}
    assert cat.defects["blue_hoop"] == DefectSpec("blue_hoop", 254, 100, False)
    by_key = {(s.defect, s.image_id): s for s in cat.test}
    assert by_key[("good", "0000")].is_good and by_key[("good", "0000")].mask_paths == ()
    two = by_key[("fastening", "0001")]
    assert not two.is_good
    assert [p.name for p in two.mask_paths] == ["0000.png", "0001.png"]
    assert two.rel_path == "test/fastening/0001.png"
    assert cat.find_test("test/fastening/0001.png") is two
    assert cat.test_rel[1] == "test/fastening/0000.png"
    with pytest.raises(DataError, match="test/fastening/9999.png"):
        cat.find_test("test/fastening/9999.png")


def test_double_nested_layout_of_the_zip(tmp_path: Path) -> None:
    nested = build_category(tmp_path, nested=True)
    assert nested == tmp_path / CAT / CAT
    cat = load_category(tmp_path, CAT)
    assert cat.root == nested
    assert len(cat.train) == 3 and len(cat.test) == 6
    regions = cat.load_regions(cat.find_test("test/fastening/0000.png"))
    assert regions[0].source == nested / "ground_truth" / "fastening" / "0000" / "0000.png"
    assert available_categories(tmp_path) == [CAT]


def test_available_categories_in_fixed_order(tmp_path: Path) -> None:
    build_category(tmp_path, "pipe_clip", n_train=1)
    build_category(tmp_path, CAT, nested=True, n_train=1)
    (tmp_path / "tank_screw").mkdir()  # no train/: not a category
    assert available_categories(tmp_path) == ["engine_wiring", "pipe_clip"]
    with pytest.raises(DataError, match="nowhere"):
        available_categories(tmp_path / "nowhere")


def test_load_regions_reads_masks_values_and_saturation(cat_root: Path) -> None:
    cat = load_category(cat_root.parent, CAT)
    (fastening,) = cat.load_regions(cat.find_test("test/fastening/0000.png"))
    assert fastening.mask.dtype == np.bool_ and fastening.mask.shape == (400, 400)
    assert fastening.area == 400 and fastening.mask[10:30, 10:30].all()
    assert fastening.defect == "fastening"
    assert fastening.saturation_area == 400  # relative 1.0 -> floor(1.0 * 400)
    two = cat.load_regions(cat.find_test("test/fastening/0001.png"))
    assert [r.area for r in two] == [50, 30]
    (hoop,) = cat.load_regions(cat.find_test("test/blue_hoop/0000.png"))
    assert hoop.area == 400 and hoop.saturation_area == 100  # absolute: min(100, 400)
    assert cat.load_regions(cat.find_test("test/good/0000.png")) == []


def test_multiple_folder_takes_each_regions_defect_from_its_pixel_value(cat_root: Path) -> None:
    cat = load_category(cat_root.parent, CAT)
    regions = cat.load_regions(cat.find_test("test/multiple/0000.png"))
    assert [(r.defect, r.area, r.saturation_area) for r in regions] == [
        ("fastening", 100, 100),
        ("blue_hoop", 10, 10),  # absolute 100 capped by the area
    ]


def test_multiple_listed_in_config_still_accepts_any_config_value(cat_root: Path) -> None:
    config = CONFIG + [
        {
            "defect_name": "multiple",
            "pixel_value": 9,
            "saturation_threshold": 1.0,
            "relative_saturation": True,
        }
    ]
    (cat_root / "defects_config.json").write_text(json.dumps(config))
    cat = load_category(cat_root.parent, CAT)
    assert [r.defect for r in cat.load_regions(cat.find_test("test/multiple/0000.png"))] == [
        "fastening",
        "blue_hoop",
    ]


def test_rgba_masks_are_read(cat_root: Path) -> None:
    mask = cat_root / "ground_truth" / "fastening" / "0000" / "0000.png"
    write_mask(mask, 255, (1, 2, 4, 6), mode="RGBA")
    cat = load_category(cat_root.parent, CAT)
    (region,) = cat.load_regions(cat.find_test("test/fastening/0000.png"))
    assert region.area == 12 and region.mask[2:6, 1:4].all()


def test_saturation_area_rules() -> None:
    rel = DefectSpec("a", 1, 0.3, True)
    assert rel.saturation_area(10) == 3  # floor(3.0000000000000004)
    assert DefectSpec("b", 2, 0.5, True).saturation_area(7) == 3
    absolute = DefectSpec("c", 3, 800, False)
    assert absolute.saturation_area(500) == 500
    assert absolute.saturation_area(1000) == 800
    assert isinstance(absolute.saturation_area(np.int64(5)), int)


def test_read_image_returns_rgb_uint8(tmp_path: Path) -> None:
    gray = write_png(tmp_path / "g.png", (7, 5), 128, mode="L")
    arr = read_image(gray)
    assert arr.shape == (5, 7, 3) and arr.dtype == np.uint8 and (arr == 128).all()
    rgba = write_png(tmp_path / "a.png", (3, 2), (1, 2, 3, 4), mode="RGBA")
    assert read_image(rgba)[0, 0].tolist() == [1, 2, 3]


def test_load_category_is_lazy(cat_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    decoded: list[str] = []
    original = ImageFile.ImageFile.load

    def spy(self):  # type: ignore[no-untyped-def]
        decoded.append(str(getattr(self, "filename", "")))
        return original(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", spy)
    cat = load_category(cat_root.parent, CAT)
    assert decoded == []  # only directory listings, the JSON and PNG headers
    read_image(cat.train[0])
    assert set(decoded) == {str(cat.train[0])}
    sample = cat.find_test("test/fastening/0001.png")
    cat.load_regions(sample)
    assert set(decoded) == {str(cat.train[0])} | {str(p) for p in sample.mask_paths}


def test_sizes_are_checked_against_the_first_train_image(tmp_path: Path) -> None:
    cat_root = tmp_path / CAT
    write_png(cat_root / "train" / "good" / "0000.png", (40, 30))
    write_png(cat_root / "test" / "good" / "0000.png", (40, 30))
    write_png(cat_root / "test" / "fastening" / "0000.png", (40, 30))
    write_mask(
        cat_root / "ground_truth" / "fastening" / "0000" / "0000.png", 255, (0, 0, 4, 4), (40, 30)
    )
    (cat_root / "defects_config.json").write_text(json.dumps(CONFIG))
    cat = load_category(tmp_path, CAT)
    assert cat.size == (40, 30)
    (region,) = cat.load_regions(cat.find_test("test/fastening/0000.png"))
    assert region.mask.shape == (30, 40) and region.area == 16
    write_png(cat_root / "test" / "good" / "0001.png", (41, 30))
    with pytest.raises(DataError, match=r"test/good/0001.png is 41x30"):
        load_category(tmp_path, CAT)


def test_stray_files_are_skipped_not_read(cat_root: Path) -> None:
    (cat_root / "train" / "good" / "notes.txt").write_text("x")
    (cat_root / "train" / "good" / ".DS_Store").write_bytes(b"\0")
    (cat_root / "readme.md").write_text("AutoVI")
    write_png(cat_root / "defect_example.png")
    cat = load_category(cat_root.parent, CAT)
    assert len(cat.train) == 3


# ------------------------------------------------------------------------------ bad input


def test_missing_root(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="AutoVI root .*nowhere does not exist"):
        load_category(tmp_path / "nowhere", CAT)


def test_any_category_name_is_looked_for(cat_root: Path) -> None:
    with pytest.raises(DataError, match="category engine_wires not found under"):
        load_category(cat_root.parent, "engine_wires")


def test_missing_category(cat_root: Path) -> None:
    with pytest.raises(
        DataError, match=r"category pipe_clip not found under .* \(no folder .*pipe_clip\)"
    ):
        load_category(cat_root.parent, "pipe_clip")


@pytest.mark.parametrize(
    ("remove", "message"),
    [
        ("train", "missing split folder .*engine_wiring/train"),
        ("train/good", "missing split folder of category engine_wiring: .*train/good"),
        ("test", "missing split folder of category engine_wiring: .*engine_wiring/test"),
        ("test/good", "missing test folder of category engine_wiring: .*test/good"),
    ],
)
def test_missing_split(cat_root: Path, remove: str, message: str) -> None:
    shutil.rmtree(cat_root / remove)
    with pytest.raises(DataError, match=message):
        load_category(cat_root.parent, CAT)


def test_empty_train_folder(cat_root: Path) -> None:
    for p in (cat_root / "train" / "good").iterdir():
        p.unlink()
    with pytest.raises(DataError, match="no image in .*train/good"):
        load_category(cat_root.parent, CAT)


def test_defective_image_without_ground_truth(cat_root: Path) -> None:
    shutil.rmtree(cat_root / "ground_truth" / "fastening" / "0001")
    with pytest.raises(
        DataError, match=r"defective test image .*test/fastening/0001.png has no ground truth"
    ):
        load_category(cat_root.parent, CAT)


def test_empty_ground_truth_folder(cat_root: Path) -> None:
    for p in (cat_root / "ground_truth" / "blue_hoop" / "0000").iterdir():
        p.unlink()
    with pytest.raises(
        DataError, match=r"ground-truth folder .*ground_truth/blue_hoop/0000 .* holds no PNG"
    ):
        load_category(cat_root.parent, CAT)


def test_ground_truth_without_image(cat_root: Path) -> None:
    (cat_root / "test" / "fastening" / "0001.png").unlink()
    with pytest.raises(
        DataError,
        match=r"ground truth .*ground_truth/fastening/0001 has no test image .*test/fastening/0001.png",
    ):
        load_category(cat_root.parent, CAT)


def test_ground_truth_for_a_missing_defect_folder(cat_root: Path) -> None:
    write_mask(cat_root / "ground_truth" / "cardboard" / "0000" / "0000.png", 253, (0, 0, 2, 2))
    with pytest.raises(
        DataError, match=r"ground_truth/cardboard/0000 has no test image .*test/cardboard/0000.png"
    ):
        load_category(cat_root.parent, CAT)


def test_mvtec_ad_style_mask_file_is_rejected(cat_root: Path) -> None:
    write_mask(cat_root / "ground_truth" / "fastening" / "0000_mask.png", 255, (0, 0, 2, 2))
    with pytest.raises(DataError, match=r"0000_mask.png is not in a per-image folder"):
        load_category(cat_root.parent, CAT)


def test_unreadable_png_in_listing(cat_root: Path) -> None:
    (cat_root / "test" / "good" / "0001.png").write_bytes(b"not a png at all")
    with pytest.raises(DataError, match=r"cannot read image .*test/good/0001.png"):
        load_category(cat_root.parent, CAT)


def test_truncated_png_fails_when_decoded(cat_root: Path) -> None:
    path = cat_root / "train" / "good" / "0001.png"
    noise = np.random.default_rng(0).integers(0, 255, (400, 400, 3), dtype=np.uint8)
    Image.fromarray(noise).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    cat = load_category(cat_root.parent, CAT)  # the header is intact
    with pytest.raises(DataError, match=r"cannot read image .*train/good/0001.png"):
        read_image(path)
    assert cat.train[1] == path


def test_unreadable_mask_is_found_when_the_category_is_listed(cat_root: Path) -> None:
    """Before any feature is extracted, not after training and scoring."""
    mask = cat_root / "ground_truth" / "fastening" / "0000" / "0000.png"
    mask.write_bytes(b"\x89PNG garbage")
    with pytest.raises(DataError, match=r"cannot read .*fastening/0000/0000.png"):
        load_category(cat_root.parent, CAT)


def test_mask_of_another_size_is_found_when_the_category_is_listed(cat_root: Path) -> None:
    path = cat_root / "ground_truth" / "fastening" / "0000" / "0000.png"
    write_mask(path, 255, (0, 0, 2, 2), (40, 40))
    with pytest.raises(
        DataError,
        match=r"ground-truth mask .*fastening/0000/0000.png is 40x40, but the first "
        r"train image of engine_wiring is 400x400",
    ):
        load_category(cat_root.parent, CAT)


def test_missing_image_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"image .*gone.png does not exist"):
        read_image(tmp_path / "gone.png")


def test_defect_folder_missing_from_config(cat_root: Path) -> None:
    write_png(cat_root / "test" / "scratch" / "0000.png")
    write_mask(cat_root / "ground_truth" / "scratch" / "0000" / "0000.png", 255, (0, 0, 2, 2))
    with pytest.raises(
        DataError, match=r"defect folder .*test/scratch missing from .*defects_config.json"
    ):
        load_category(cat_root.parent, CAT)


def test_mask_value_is_not_the_defects_pixel_value(cat_root: Path) -> None:
    write_mask(cat_root / "ground_truth" / "fastening" / "0001" / "0001.png", 254, (0, 0, 2, 2))
    cat = load_category(cat_root.parent, CAT)
    cat.load_regions(cat.find_test("test/fastening/0000.png"))
    with pytest.raises(
        DataError,
        match=r"mask .*fastening/0001/0001.png has pixel value 254, but defect folder fastening expects 255",
    ):
        cat.load_regions(cat.find_test("test/fastening/0001.png"))


def test_multiple_mask_value_not_in_config(cat_root: Path) -> None:
    write_mask(cat_root / "ground_truth" / "multiple" / "0000" / "0001.png", 7, (0, 0, 2, 2))
    cat = load_category(cat_root.parent, CAT)
    with pytest.raises(
        DataError,
        match=r"multiple/0000/0001.png has pixel value 7, .*expects one of 253 \(cardboard\)",
    ):
        cat.load_regions(cat.find_test("test/multiple/0000.png"))


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("empty", "is empty"),
        ("two values", r"holds several values \[200, 255\]"),
        ("other channels", "channels 1-2 hold values other than 0 and 255"),
        ("mode L", "has mode L; AutoVI masks are RGB or RGBA"),
    ],
)
def test_malformed_mask(cat_root: Path, kind: str, message: str) -> None:
    path = cat_root / "ground_truth" / "fastening" / "0000" / "0000.png"
    arr = np.zeros((400, 400, 3), np.uint8)
    if kind == "two values":
        arr[:2, :2] = 255
        arr[5:7, 5:7] = 200
    elif kind == "other channels":
        arr[:2, :2] = 255
        arr[10, 10, 1] = 3
    if kind == "mode L":
        write_png(path, SIZE, 255, mode="L")
    else:
        Image.fromarray(arr).save(path)
    cat = load_category(cat_root.parent, CAT)
    with pytest.raises(DataError, match=r"mask .*fastening/0000/0000.png:? " + message):
        cat.load_regions(cat.find_test("test/fastening/0000.png"))


def _entry(**changes: object) -> dict[str, object]:
    entry = dict(CONFIG[0])
    entry.update(changes)
    return entry


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ("{not json", "is not valid JSON"),
        ({"fastening": 255}, "expected a JSON list"),
        (["fastening"], "entry 0: expected an object"),
        ([{"defect_name": "fastening", "pixel_value": 255}], "missing key.*saturation_threshold"),
        ([_entry(defect_name="")], "defect_name must be a non-empty folder name"),
        ([_entry(pixel_value=0)], "pixel_value must be an integer in 1..255, got 0"),
        ([_entry(pixel_value=256)], "pixel_value must be an integer in 1..255, got 256"),
        ([_entry(pixel_value=True)], "pixel_value must be an integer in 1..255, got True"),
        ([_entry(pixel_value=25.0)], "pixel_value must be an integer"),
        ([_entry(relative_saturation="yes")], "relative_saturation must be true or false"),
        (
            [_entry(saturation_threshold=1.5)],
            r"relative saturation_threshold must be a float in \(0, 1\]",
        ),
        (
            [_entry(saturation_threshold=0.0)],
            r"relative saturation_threshold must be a float in \(0, 1\]",
        ),
        (
            [_entry(saturation_threshold=1)],
            r"relative saturation_threshold must be a float in \(0, 1\], got 1$",
        ),
        (
            [_entry(relative_saturation=False, saturation_threshold=0)],
            "absolute saturation_threshold must be a positive integer",
        ),
        (
            [_entry(relative_saturation=False, saturation_threshold=2.5)],
            "absolute saturation_threshold must be a positive integer",
        ),
        ([_entry(), _entry(defect_name="other")], "pixel_value 255 already used by 'fastening'"),
        ([_entry(), _entry(pixel_value=3)], "defect 'fastening': defect_name listed twice"),
        ([_entry(defect_name="good")], "'good' is not a defect type"),
    ],
)
def test_malformed_defects_config(cat_root: Path, config: object, message: str) -> None:
    path = cat_root / "defects_config.json"
    path.write_text(config if isinstance(config, str) else json.dumps(config))
    with pytest.raises(DataError, match=r".*defects_config.json.*" + message):
        load_category(cat_root.parent, CAT)


def test_missing_defects_config(cat_root: Path) -> None:
    (cat_root / "defects_config.json").unlink()
    with pytest.raises(DataError, match=r"defects_config.json does not exist"):
        load_category(cat_root.parent, CAT)


def test_load_regions_rejects_a_sample_of_another_category(cat_root: Path, tmp_path: Path) -> None:
    cat = load_category(cat_root.parent, CAT)
    other = autovi.TestSample("pipe_clip", "unclipped", "0000", tmp_path / "x.png", ())
    with pytest.raises(DataError, match="belongs to pipe_clip, not to engine_wiring"):
        cat.load_regions(other)


# ------------------------------------------------------------------- synthetic data


def test_reads_all_six_synthetic_categories(tiny_root: Path) -> None:
    """The reader's listing against the files themselves, walked with os.walk and decoded
    with PIL here: every image and every mask PNG, no more, with the masks' non-zero pixels
    and the saturation rule of defects_config.json."""
    import os

    assert available_categories(tiny_root) == list(CATEGORIES)
    for name in CATEGORIES:
        cat = load_category(tiny_root, name)
        base = tiny_root / name
        on_disk = {
            str(Path(d, f).relative_to(base)) for d, _, files in os.walk(base) for f in files
        }
        assert {f"train/good/{p.name}" for p in cat.train} == {
            f for f in on_disk if f.startswith("train/")
        }
        assert {s.rel_path for s in cat.test} == {f for f in on_disk if f.startswith("test/")}
        masks = {f for f in on_disk if f.startswith("ground_truth/")}
        assert {str(p.relative_to(base)) for s in cat.test for p in s.mask_paths} == masks
        with Image.open(base / "train" / "good" / cat.train[0].name) as im:
            assert cat.size == im.size == NATIVE_SIZES[name]
        config = {
            d["defect_name"]: d for d in json.loads((base / "defects_config.json").read_text())
        }
        assert cat.defect_types and any(s.is_good for s in cat.test)
        for sample in cat.test:
            regions = cat.load_regions(sample)
            assert len(regions) == len(sample.mask_paths) and (regions == []) == sample.is_good
            for region in regions:
                with Image.open(region.source) as im:
                    channel0 = np.asarray(im.convert("RGB"))[:, :, 0]
                np.testing.assert_array_equal(region.mask, channel0 > 0)
                entry = config[region.defect]
                assert entry["pixel_value"] == int(channel0.max())
                area = int((channel0 > 0).sum())
                t = entry["saturation_threshold"]
                expected = int(t * area) if entry["relative_saturation"] else min(int(t), area)
                assert region.saturation_area == expected > 0
