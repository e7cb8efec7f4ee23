"""What the server checks before it believes a reply: counts against the feature grid and
the partition, bounded fields, claims on partitions and on test images (no Flower run)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from flwr.app import MetricRecord

from fedpatch_app.federated import messages as M
from fedpatch_app.federated.data import NodeData
from fedpatch_app.federated.protocol.accept import (
    Expected,
    accept_scores,
    accept_train,
    conflicting_images,
)
from fedpatch_app.federated.registry import MAX_TEXT, ClientRegistry
from fedpatch_app.settings import from_names

DIM = 8
CATS = ("pipe_clip", "tank_screw")


def limits() -> M.TrainLimits:
    settings = from_names({"coreset_ratio": 0.1, "local_oversample": 2.0})
    grid = {"pipe_clip": 64, "tank_screw": 88}  # at image size 64
    return M.TrainLimits(settings, fingerprint="f", categories=CATS, embed_dim=DIM, grid=grid)


def train_reply(partition_id: int, images: int = 4, patches: int | None = None, **info) -> Any:
    rows = np.random.default_rng(partition_id).normal(size=(20, DIM)).astype(np.float32)
    bank = SimpleNamespace(
        features=rows, radius=1.0, n_patches=images * 64 if patches is None else patches
    )
    content = M.encode_train_reply(
        {"pipe_clip": bank}, {"pipe_clip": images}, fingerprint="f", partition_id=partition_id
    )
    for key, value in info.items():
        content[M.INFO][key] = value
    return SimpleNamespace(content=content)


def run_train(replies: dict[int, Any], expected: Expected | None = None, min_clients: int = 1):
    registry = ClientRegistry(min_clients, 10.0)
    registry.register(replies)
    pairs = [(registry.clients[n], r) for n, r in replies.items()]
    return registry, accept_train(registry, pairs, limits(), expected)


def share(partition_id: int, fit: int = 4, test: tuple[str, ...] = (), calibration: int = 0):
    return NodeData(
        partition_id,
        Path("."),
        {"pipe_clip": [f"train/good/{i:03d}.png" for i in range(fit)]},
        {"pipe_clip": [f"train/good/c{i}.png" for i in range(calibration)]} if calibration else {},
        {"pipe_clip": list(test)},
    )


def test_patches_per_image_must_be_the_feature_grid() -> None:
    registry, accepted = run_train({1: train_reply(0), 2: train_reply(1, patches=2_000_000)})
    assert list(accepted) == [1]
    reason = registry.clients[2].reason
    assert "2000000 patches declared for 4 images" in reason
    assert "64 patches per pipe_clip image" in reason


@pytest.mark.parametrize(
    ("info", "reason"),
    [
        ({"seconds": float("inf")}, "seconds is not a time"),
        ({"seconds": -1.0}, "seconds is not a time"),
        ({"device": "x" * 5000}, "device name of 5000 characters"),
        ({"radius.pipe_clip": 1e300}, "covering radius"),
        ({"partition-id": 10**9}, "partition id"),
        ({f"junk.{i}": 1 for i in range(200)}, "keys, more than"),
    ],
)
def test_timing_radius_strings_and_key_counts_are_bounded(info: dict, reason: str) -> None:
    registry, accepted = run_train({1: train_reply(0), 2: train_reply(1, **info)})
    assert list(accepted) == [1] and reason in registry.clients[2].reason
    assert len(registry.clients[2].reason) < MAX_TEXT + 100


def test_counts_are_checked_against_the_partition_where_the_server_knows_it() -> None:
    expected = Expected(shares={0: share(0), 1: share(1, fit=3)})
    replies = {1: train_reply(0), 2: train_reply(1, images=20), 3: train_reply(7)}
    registry, accepted = run_train(replies, expected)
    assert list(accepted) == [1]
    assert "declares 20 training images, partition 1 holds 3" in registry.clients[2].reason
    assert "partition 7 does not exist" in registry.clients[3].reason


def test_a_partition_claimed_twice_believes_neither_claimant() -> None:
    registry, accepted = run_train({1: train_reply(0), 2: train_reply(2), 3: train_reply(2)})
    assert list(accepted) == [1]
    for node in (2, 3):
        assert "partition 2 is also claimed" in registry.clients[node].reason


def test_a_key_bound_partition_refuses_the_impersonator() -> None:
    bound = {1: 0, 2: 1, 3: None}
    replies = {1: train_reply(0), 2: train_reply(0), 3: train_reply(2)}
    registry, accepted = run_train(replies, Expected(bound=bound))
    assert list(accepted) == [1] and registry.clients[1].partition_id == 0
    assert "claims partition 0, but its key is bound to 1" in registry.clients[2].reason
    assert "bound to no partition" in registry.clients[3].reason


def test_an_endless_error_text_is_cut() -> None:
    registry = ClientRegistry(1, 1.0)
    registry.drop(5, "train", "x" * 5_000_000)
    assert len(registry.clients[5].reason) < MAX_TEXT + 100
    assert "more characters cut" in registry.clients[5].reason


def score_reply(paths: list[str], calibration: int = 0) -> Any:
    item = M.CategoryScores(
        1.0, 3.0, np.linspace(1.0, 3.0, len(paths)), [p.split("/")[1] for p in paths], paths
    )
    cal = {"pipe_clip": M.CalibrationRange(calibration, 1.0, 2.0)} if calibration else None
    content = M.encode_score_reply({"pipe_clip": item}, fingerprint="f", calibration=cal)
    return SimpleNamespace(content=content)


def test_test_claims_are_checked_against_the_partition() -> None:
    mine = ["test/good/000.png", "test/unclipped/000.png"]
    expected = Expected(shares={0: share(0, test=tuple(mine), calibration=2)})
    registry = ClientRegistry(1, 1.0)
    registry.register([1, 2, 3])
    for node in (1, 2, 3):
        registry.clients[node].partition_id = 0
    replies = [
        (registry.clients[1], score_reply(mine, calibration=2)),
        (registry.clients[2], score_reply([*mine, "test/good/009.png"], calibration=2)),
        (registry.clients[3], score_reply(mine, calibration=5)),
    ]
    scored = accept_scores(registry, replies, CATS, "f", expected)
    assert list(scored) == [1]
    assert "partition 0 does not hold, e.g. test/good/009.png" in registry.clients[2].reason
    assert "5 calibration images scored, partition 0 holds 2" in registry.clients[3].reason


def scored_claims(claims: dict[int, list[str]]) -> tuple[ClientRegistry, dict]:
    registry = ClientRegistry(1, 1.0)
    registry.register(claims)
    replies = [(registry.clients[n], score_reply(paths)) for n, paths in claims.items()]
    return registry, accept_scores(registry, replies, CATS, "f")


def test_conflicting_test_claims_exclude_the_images_and_flag_every_claimant() -> None:
    """Not "the later one is dropped": which node really holds an image cannot be told."""
    registry, scored = scored_claims(
        {
            1: ["test/good/000.png", "test/good/001.png"],
            2: ["test/good/000.png", "test/good/002.png"],
            3: ["test/good/003.png"],
        }
    )
    excluded = conflicting_images(registry, scored)
    assert excluded == {"pipe_clip": {"test/good/000.png"}}
    assert registry.dropped() == [] and sorted(scored) == [1, 2, 3]
    assert [len(registry.clients[n].flags) for n in (1, 2, 3)] == [1, 1, 0]
    assert "1 of pipe_clip" in registry.clients[2].flags[0]


def test_a_node_claiming_several_nodes_images_is_dropped() -> None:
    """Its claims clash with two nodes that clash with nobody else: it claims theirs."""
    registry, scored = scored_claims(
        {
            1: ["test/good/000.png", "test/good/001.png"],
            2: ["test/good/002.png"],
            3: ["test/good/000.png", "test/good/002.png", "test/good/003.png"],
        }
    )
    assert conflicting_images(registry, scored) == {}
    assert sorted(scored) == [1, 2]
    assert "claims test images that nodes 1, 2 hold" in registry.clients[3].reason
    assert registry.clients[1].flags == registry.clients[2].flags == []


def test_local_metrics_are_known_names_in_range() -> None:
    stats = {"pipe_clip": {"edges": np.arange(3.0), "n_images": np.array(4, dtype=np.int64)}}
    content = M.encode_stats_reply(stats, {"pipe_clip.image_auroc": 0.75}, fingerprint="f")
    assert M.decode_stats_reply(content, fingerprint="f", categories=CATS).local
    content[M.LOCAL_METRICS] = MetricRecord({f"k{i}": 0.5 for i in range(20_000)})
    with pytest.raises(M.InvalidReply, match="20000 unknown name"):
        M.decode_stats_reply(content, fingerprint="f", categories=CATS)
    content[M.LOCAL_METRICS] = MetricRecord({"pipe_clip.image_auroc": 7.0})
    with pytest.raises(M.InvalidReply, match="not a value in"):
        M.decode_stats_reply(content, fingerprint="f", categories=CATS)
    content[M.LOCAL_METRICS] = MetricRecord({"pipe_clip.image_auroc": 1.0001})
    with pytest.raises(M.InvalidReply, match="not a value in"):
        M.decode_stats_reply(content, fingerprint="f", categories=CATS)


def test_a_perfect_local_metric_rounded_above_one_is_an_honest_value() -> None:
    """A perfect detector's AUC-sPRO came out as 1.0000000000000002 on an honest client
    (float sums of an area over its limit) and the client was dropped: it is read as 1."""
    stats = {"pipe_clip": {"edges": np.arange(3.0), "n_images": np.array(4, dtype=np.int64)}}
    rounded = {"pipe_clip.auc_spro.0.3": 1.0000000000000002}
    content = M.encode_stats_reply(stats, rounded, fingerprint="f")
    local = M.decode_stats_reply(content, fingerprint="f", categories=CATS).local
    assert local == {"pipe_clip.auc_spro.0.3": 1.0}
