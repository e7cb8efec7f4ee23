"""Held-out calibration images: the same images whatever the run kind or the client."""

from __future__ import annotations

from fedpatch_app.data.calibration import calibration_set, split_calibration

IMAGES = [f"train/good/{i:04d}.png" for i in range(40)]


def test_clients_hold_out_exactly_the_centralized_calibration_images() -> None:
    central = split_calibration("pipe_clip", IMAGES, 0.1, 0)
    shares = [IMAGES[0:7], IMAGES[7:21], IMAGES[21:40]]
    held = [
        r
        for share in shares
        for r in split_calibration("pipe_clip", share, 0.1, 0, universe=IMAGES).calibration
    ]
    assert sorted(held) == sorted(central.calibration)
    assert len(central.calibration) == 4 and set(central.fit).isdisjoint(central.calibration)
    assert sorted(central.fit + central.calibration) == IMAGES


def test_share_size_and_edge_cases() -> None:
    assert len(calibration_set("c", IMAGES[:8], 0.1, 0)) == 1  # at least one when f > 0
    assert len(calibration_set("c", IMAGES[:2], 0.9, 0)) == 1  # never every image
    assert calibration_set("c", IMAGES, 0.0, 0) == set()
    assert calibration_set("c", IMAGES[:1], 0.5, 0) == set()
    assert calibration_set("c", IMAGES, 0.25, 0) == calibration_set("c", IMAGES[::-1], 0.25, 0)
    assert calibration_set("c", IMAGES, 0.25, 0) != calibration_set("c", IMAGES, 0.25, 1)
    assert calibration_set("c", IMAGES, 0.25, 0) != calibration_set("d", IMAGES, 0.25, 0)
