"""Export of anomaly maps in the official AutoVI format (16-bit PNG, one scaling per category)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fedpatch_app.errors import DataError, ModelError
from fedpatch_app.metrics.map_scaling import MapScaling, fit_scaling
from fedpatch_app.results.official_maps import read_category_maps, read_map_png, write_category_maps


@dataclass(frozen=True)
class Sample:
    defect: str
    image_id: str

    @property
    def rel_path(self) -> str:
        return f"test/{self.defect}/{self.image_id}.png"

    @property
    def is_good(self) -> bool:
        return self.defect == "good"


SIZE = (400, 400)  # native size of pipe_clip (width, height)


def _maps() -> tuple[list[Sample], list[np.ndarray]]:
    rng = np.random.default_rng(0)
    samples = [Sample("good", "000"), Sample("good", "001"), Sample("unclipped", "000")]
    low = rng.uniform(0.0, 1.0, size=(SIZE[1], SIZE[0]))  # scores in [0, 1]
    high = rng.uniform(0.0, 3.0, size=(SIZE[1], SIZE[0]))  # scores in [0, 3]
    mid = np.full((SIZE[1], SIZE[0]), 0.5)
    low[0, 0], low[1, 1] = 0.0, 1.0
    high[0, 0], high[1, 1] = 0.0, 3.0
    return samples, [low, mid, high]


def test_scaling_to_uint16_is_affine_clipped_rounded() -> None:
    scaling = MapScaling(0.5, 2.5)
    levels = scaling.to_uint16(np.array([0.5, 2.5, 1.5, -1.0, 10.0, 0.5 + 2 / 65535 * 1.4]))
    assert levels.dtype == np.uint16
    assert levels.tolist() == [0, 65535, 32768, 0, 65535, 1]
    back = scaling.from_uint16(levels[:3])
    np.testing.assert_allclose(back, [0.5, 2.5, 1.5], atol=scaling.step / 2)


def test_constant_scaling_and_bad_bounds() -> None:
    assert MapScaling(1.0, 1.0).to_uint16(np.ones((2, 2))).tolist() == [[0, 0], [0, 0]]
    with pytest.raises(ModelError):
        MapScaling(2.0, 1.0)
    with pytest.raises(ModelError):
        MapScaling(0.0, 1.0).to_uint16(np.array([np.nan]))


def test_fit_scaling_is_min_and_max_over_all_maps() -> None:
    _, maps = _maps()
    scaling = fit_scaling(maps)
    assert scaling == MapScaling(0.0, 3.0)
    with pytest.raises(ModelError):
        fit_scaling([])


def test_round_trip_layout_mode_size_and_one_scale(tmp_path: Path) -> None:
    samples, maps = _maps()
    scaling = fit_scaling(maps)
    test_dir = write_category_maps(
        tmp_path, "pipe_clip", samples, maps, scaling, meta={"weights": "none"}
    )
    assert test_dir == tmp_path / "pipe_clip" / "test"
    files = sorted(p.relative_to(test_dir).as_posix() for p in test_dir.rglob("*.png"))
    assert files == ["good/000.png", "good/001.png", "unclipped/000.png"]
    for path in test_dir.rglob("*.png"):
        with Image.open(path) as image:
            assert image.mode in ("I;16", "I")
            assert image.size == SIZE
            assert np.array(image).ndim == 2

    read, read_scaling = read_category_maps(tmp_path, "pipe_clip")
    assert read_scaling == scaling
    assert [m.dtype for m in read] == [np.float64] * 3
    # Sorted by (defect, image_id), i.e. the same order as the samples here.
    for levels, raw in zip(read, maps, strict=True):
        np.testing.assert_array_equal(levels, scaling.to_uint16(raw).astype(np.float64))
        np.testing.assert_allclose(scaling.from_uint16(levels), raw, atol=scaling.step / 2 + 1e-12)
    # One scale for the category: the [0, 1] map tops out at a third of the levels,
    # the [0, 3] map at the full range, so the image scores keep their order.
    assert read[0].max() == round(65535 / 3)
    assert read[2].max() == 65535
    assert read[1].max() == round(65535 / 6)
    assert read[0].max() < read[2].max()
    # Pixel order across images is kept by the shared scale.
    assert read[1][5, 5] < read[2][1, 1]


def test_scaling_json(tmp_path: Path) -> None:
    samples, maps = _maps()
    write_category_maps(tmp_path, "pipe_clip", samples, maps, MapScaling(-1.0, 4.0))
    info = json.loads((tmp_path / "pipe_clip" / "scaling.json").read_text())
    assert info["low"] == -1.0 and info["high"] == 4.0
    assert info["category"] == "pipe_clip"
    assert info["format"] == "uint16 affine"
    assert info["size"] == [400, 400]
    assert info["counts"] == {"good": 2, "unclipped": 1}


def test_write_rejects_non_native_size(tmp_path: Path) -> None:
    samples, maps = _maps()
    maps[1] = np.zeros((200, 200))
    with pytest.raises(ModelError, match="native size is 400x400"):
        write_category_maps(tmp_path, "pipe_clip", samples, maps, fit_scaling(maps))
    with pytest.raises(ModelError, match="3 test images"):
        write_category_maps(tmp_path, "pipe_clip", samples, maps[:2], MapScaling(0, 1))


def test_read_errors_name_the_file(tmp_path: Path) -> None:
    samples, maps = _maps()
    write_category_maps(tmp_path, "pipe_clip", samples, maps, fit_scaling(maps))
    test_dir = tmp_path / "pipe_clip" / "test"

    # A test image without a map.
    with pytest.raises(DataError, match=r"unclipped.001\.png is missing"):
        read_category_maps(tmp_path, "pipe_clip", [*samples, Sample("unclipped", "001")])

    # A map of the wrong size.
    Image.fromarray(np.zeros((100, 120), dtype=np.uint16)).save(test_dir / "good" / "001.png")
    with pytest.raises(DataError, match=r"good.001\.png is 120x100"):
        read_category_maps(tmp_path, "pipe_clip")

    # A map in the wrong mode (RGB crashes the official evaluator).
    Image.new("RGB", SIZE).save(test_dir / "good" / "001.png")
    with pytest.raises(DataError, match=r"good.001\.png has PIL mode 'RGB'"):
        read_map_png(test_dir / "good" / "001.png")

    # A map that matches no test image.
    Image.fromarray(np.zeros((400, 400), dtype=np.uint16)).save(test_dir / "good" / "001.png")
    with pytest.raises(DataError, match=r"match no test image.*good/001\.png"):
        read_category_maps(tmp_path, "pipe_clip", [samples[0], samples[2]])

    # No scaling.json.
    (tmp_path / "pipe_clip" / "scaling.json").unlink()
    with pytest.raises(DataError, match="scaling.json is missing"):
        read_category_maps(tmp_path, "pipe_clip")
