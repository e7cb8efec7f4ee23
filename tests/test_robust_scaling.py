"""The global map scaling: one client's extreme cannot set it; honest replies give the
exact scaling."""

from __future__ import annotations

import numpy as np
import pytest

from fedpatch_app.defences.robust_scaling import RADIUS_FACTOR, global_scaling

HONEST = {1: (1.2, 9.0), 2: (1.5, 11.0), 3: (1.3, 10.0)}


def test_honest_ranges_give_the_exact_scaling() -> None:
    exact = global_scaling(HONEST, mode="exact", radius=4.0)
    robust = global_scaling(HONEST, mode="robust", radius=4.0)
    assert robust.scaling == exact.scaling
    assert (robust.scaling.low, robust.scaling.high) == (1.2, 11.0)
    assert robust.above == [] and robust.bound == RADIUS_FACTOR * 4.0


def test_an_extreme_maximum_is_clipped_and_its_sender_named() -> None:
    ranges = {**HONEST, 4: (1.4, 1e30)}
    exact = global_scaling(ranges, mode="exact", radius=4.0)
    assert exact.scaling.high == 1e30  # every honest map would fall on level 0
    robust = global_scaling(ranges, mode="robust", radius=4.0)
    assert robust.scaling.high == RADIUS_FACTOR * 4.0
    assert robust.above == [4]
    # The honest maps keep almost all of their 16-bit resolution.
    assert robust.scaling.to_uint16(np.array([11.0]))[0] > 10_000


def test_without_a_radius_the_median_client_sets_the_bound() -> None:
    robust = global_scaling({**HONEST, 4: (1.4, 1e30)}, mode="robust", radius=0.0)
    assert robust.bound == pytest.approx(RADIUS_FACTOR * 10.5)
    assert robust.above == [4] and "median" in robust.note


def test_a_radius_too_small_for_the_maps_gives_way_to_the_median_client() -> None:
    robust = global_scaling({**HONEST, 4: (1.4, 1e30)}, mode="robust", radius=0.01)
    assert robust.bound == pytest.approx(RADIUS_FACTOR * 10.5) and robust.above == [4]


def test_maps_of_constant_value_keep_the_exact_scaling() -> None:
    flat = {1: (0.0, 0.0), 2: (0.0, 0.0)}
    robust = global_scaling(flat, mode="robust", radius=0.0)
    assert (robust.scaling.low, robust.scaling.high) == (0.0, 0.0)
    assert robust.bound is None and "exact scaling used" in robust.note
