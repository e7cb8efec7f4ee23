"""Thresholds from held-out images: histograms, quantiles, and what a threshold achieves."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from fedpatch_app.errors import ModelError
from fedpatch_app.metrics.map_scaling import MapScaling
from fedpatch_app.metrics.thresholds import (
    CalibrationStats,
    LevelHistogram,
    calibrate,
    raw_of_level,
    threshold_on_test,
)


def test_histograms_add_up_like_the_data_they_count() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 65536, 500), rng.integers(0, 300, 700)
    merged = LevelHistogram.of(a).merge(LevelHistogram.of(b))
    levels, counts = np.unique(np.concatenate([a, b]), return_counts=True)
    np.testing.assert_array_equal(merged.levels, levels)
    np.testing.assert_array_equal(merged.counts, counts)
    assert merged.total == 1200


@pytest.mark.parametrize("rate", [0.0, 0.01, 0.1, 0.37, 1.0])
def test_level_at_rate_is_the_smallest_level_with_at_most_rate_above(rate: float) -> None:
    values = np.random.default_rng(1).integers(0, 50, 200)
    level, achieved = LevelHistogram.of(values).level_at_rate(rate)
    brute = min(v for v in range(50) if np.mean(values > v) <= rate)
    assert level == brute
    assert achieved == pytest.approx(np.mean(values > level))


def test_calibrated_threshold_rejects_at_most_the_target_share_of_calibration_images() -> None:
    rng = np.random.default_rng(2)
    maps = [rng.gamma(2.0, 1.0, size=(20, 30)) for _ in range(300)]
    scaling = MapScaling(min(m.min() for m in maps), max(m.max() for m in maps))
    stats = CalibrationStats.of_maps(maps, scaling)
    facts = calibrate(stats, scaling, 0.05, 0.01)
    scores = np.array([m.max() for m in maps])
    image_t = facts["image"]["raw"]
    assert np.mean(scores > image_t) <= 0.05
    # The next lower level would reject more than the target: the threshold is tight.
    lower = raw_of_level(scaling, facts["image"]["level"] - 1)
    assert np.mean(scores > lower) > 0.05
    pixels = np.concatenate([m.ravel() for m in maps])
    assert np.mean(pixels > facts["pixel"]["raw"]) <= 0.01
    assert facts["image"]["calibration_images"] == 300 and "note" not in facts["image"]


def test_too_few_calibration_images_are_said_plainly() -> None:
    maps = [np.full((4, 4), v) for v in (1.0, 2.0, 3.0)]
    scaling = MapScaling(0.0, 4.0)
    facts = calibrate(CalibrationStats.of_maps(maps, scaling), scaling, 0.01, 0.001)
    assert facts["image"]["smallest_resolvable_rate"] == pytest.approx(1 / 3)
    assert "coarser than the target 0.01" in facts["image"]["note"]
    # Highest calibration score: every calibration image is accepted.
    assert 3.0 <= facts["image"]["raw"] < 3.0 + scaling.step


def test_calibration_arrays_round_trip_and_bad_ones_are_refused() -> None:
    maps = [np.arange(12, dtype=float).reshape(3, 4)]
    scaling = MapScaling(0.0, 11.0)
    stats = CalibrationStats.of_maps(maps, scaling)
    back = CalibrationStats.from_arrays(stats.to_arrays(), "x")
    np.testing.assert_array_equal(back.pixels.counts, stats.pixels.counts)
    np.testing.assert_array_equal(back.images.levels, stats.images.levels)
    good = stats.to_arrays()
    bad_cases = [
        {**good, "pixel_levels": np.array([5, 3]), "pixel_counts": np.array([1, 1])},
        {**good, "pixel_levels": np.array([3, 5]), "pixel_counts": np.array([-1, 2])},
        {**good, "image_levels": np.array([70000]), "image_counts": np.array([1])},
        {**good, "image_levels": np.array([1.5]), "image_counts": np.array([1])},
        {k: v for k, v in good.items() if k != "pixel_counts"},
    ]
    for arrays in bad_cases:
        with pytest.raises(ModelError):
            CalibrationStats.from_arrays(arrays, "x")


def test_threshold_on_test_counts_by_hand() -> None:
    scores = [1.0, 2.0, 3.0, 4.0, 2.2]
    defects = ["good", "good", "missing", "missing", "good"]
    got = threshold_on_test(scores, defects, 2.1)
    # Rejected: 2.2 (good), 3, 4 (defective): FRR 1/3, detection 2/2, precision 2/3.
    assert got["false_reject_rate"] == pytest.approx(1 / 3)
    assert got["detection_rate"] == 1.0
    assert got["precision"] == pytest.approx(2 / 3)
    assert got["f1"] == pytest.approx(0.8)
    # Any threshold in [2.2, 3) separates them: F1 1 at the threshold 2.2.
    assert got["f1_optimal"] == {"threshold": 2.2, "f1": 1.0}


def test_threshold_on_test_of_defective_parts_only_is_finite_and_rejects_all() -> None:
    # A client's test split may hold defective parts only: the F1-optimal threshold then
    # rejects every part, and it must still be a number JSON (and model.json) can hold.
    scores = [3.0, 1.5, 2.0]
    got = threshold_on_test(scores, ["missing"] * 3, 10.0)
    best = got["f1_optimal"]
    assert best["f1"] == 1.0
    assert math.isfinite(best["threshold"]) and best["threshold"] < 1.5
    json.dumps(got, allow_nan=False)
