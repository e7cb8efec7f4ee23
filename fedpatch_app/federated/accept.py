"""Which replies the server accepts, phase by phase.

Each function decodes and checks every reply of one phase with the codecs, records what
the client reported, and drops (by name, with the reason) a client whose reply fails a
check, so the run goes on with the others.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from flwr.app import Message

from fedpatch_app.errors import ModelError
from fedpatch_app.evaluation.metrics import SproStatistics, level_edges
from fedpatch_app.evaluation.thresholds import CalibrationStats
from fedpatch_app.federated import messages as M
from fedpatch_app.federated.registry import ClientRegistry, ClientState

log = logging.getLogger(__name__)

Replies = list[tuple[ClientState, Message]]


def _claim_partition(client: ClientState, reply: Message) -> None:
    """Name the client by its partition even when the rest of its reply is bad."""
    info = reply.content.config_records.get(M.INFO)
    claimed = info.get("partition-id") if info is not None else None
    if isinstance(claimed, int) and not isinstance(claimed, bool):
        client.partition_id = claimed


def _record_train(client: ClientState, decoded: M.TrainReply) -> None:
    client.status = "trained"
    client.device = decoded.device
    client.seconds["train_client"] = round(decoded.seconds, 3)
    client.seconds.update(decoded.timings)
    client.categories = list(decoded.coresets)
    for cat, part in decoded.coresets.items():
        client.train_images[cat] = part.n_images
        client.train_patches[cat] = part.n_patches
        client.coreset_rows[cat] = int(part.features.shape[0])
        client.local_radius[cat] = part.radius
    log.info(
        "train: %s accepted: %s",
        client.label,
        ", ".join(
            f"{c} ({p.n_images} images, {p.features.shape[0]}/{p.n_patches} patches)"
            for c, p in decoded.coresets.items()
        )
        or "no training data",
    )


def accept_train(
    registry: ClientRegistry, replies: Replies, limits: M.TrainLimits
) -> dict[int, M.TrainReply]:
    """The valid train replies by node id; a partition claimed twice is dropped."""
    accepted: dict[int, M.TrainReply] = {}
    seen: dict[int, int] = {}
    for client, reply in replies:
        _claim_partition(client, reply)
        try:
            decoded = M.decode_train_reply(reply.content, limits)
        except ModelError as exc:
            registry.drop(client.node_id, "train", f"invalid reply: {exc}")
            continue
        client.partition_id = decoded.partition_id
        if decoded.partition_id in seen:
            registry.drop(
                client.node_id,
                "train",
                f"partition {decoded.partition_id} already reported by node "
                f"{seen[decoded.partition_id]}",
            )
            continue
        if decoded.partition_id >= 0:
            seen[decoded.partition_id] = client.node_id
        _record_train(client, decoded)
        accepted[client.node_id] = decoded
    registry.require("train")
    return accepted


def _drop_duplicates(registry: ClientRegistry, scored: dict[int, M.ScoreReply]) -> None:
    """The same test image must not be counted twice (it would bias the pooled metrics)."""
    owner: dict[tuple[str, str], int] = {}
    for node_id, decoded in sorted(scored.items()):
        clash = [
            (cat, p)
            for cat, item in decoded.categories.items()
            for p in item.rel_paths
            if (cat, p) in owner
        ]
        if clash:
            cat, p = clash[0]
            registry.drop(
                node_id, "evaluate", f"{cat}: test image {p} was already scored by node "
                f"{owner[(cat, p)]}",
            )  # fmt: skip
            continue
        for cat, item in decoded.categories.items():
            owner.update({(cat, p): node_id for p in item.rel_paths})


def accept_scores(
    registry: ClientRegistry, replies: Replies, categories: Sequence[str], fingerprint: str
) -> dict[int, M.ScoreReply]:
    """The valid phase-A replies by node id."""
    scored: dict[int, M.ScoreReply] = {}
    for client, reply in replies:
        try:
            scored[client.node_id] = M.decode_score_reply(
                reply.content, fingerprint=fingerprint, categories=tuple(categories)
            )
        except ModelError as exc:
            registry.drop(client.node_id, "evaluate", f"invalid reply: {exc}")
            continue
        client.seconds.update(scored[client.node_id].timings)
    _drop_duplicates(registry, scored)
    scored = {n: d for n, d in scored.items() if registry.clients[n].status != "dropped"}
    registry.require("evaluate")
    return scored


def _statistics(arrays: Mapping[str, np.ndarray], cat: str, n_scored: int) -> SproStatistics:
    """One category's statistics, on the 16-bit level edges, covering the scored images."""
    try:
        stats = SproStatistics.from_arrays(arrays)
    except (ModelError, ValueError, KeyError, TypeError) as exc:
        raise M.InvalidReply(f"{cat} statistics: {exc}") from None
    if not np.array_equal(np.asarray(stats.edges), np.asarray(level_edges())):
        raise M.InvalidReply(f"{cat} statistics: not on the 16-bit level edges")
    if stats.n_images != n_scored:
        raise M.InvalidReply(
            f"{cat} statistics cover {stats.n_images} images, {n_scored} were scored"
        )
    return stats


@dataclass
class NodeStatistics:
    """One node's accepted phase-B reply."""

    stats: dict[str, SproStatistics]
    calibration: dict[str, CalibrationStats]


def _calibration(
    raw: Mapping[str, Mapping[str, np.ndarray]], expected: Mapping[str, M.CalibrationRange]
) -> dict[str, CalibrationStats]:
    """Calibration histograms for exactly the categories whose calibration images were
    scored, covering that many images and all their pixels."""
    from fedpatch_app.data.autovi import NATIVE_SIZES

    if set(raw) != set(expected):
        raise M.InvalidReply(
            f"calibration histograms for {sorted(raw)}, but calibration images were scored "
            f"for {sorted(expected)}"
        )
    out = {}
    for cat, arrays in raw.items():
        hist = CalibrationStats.from_arrays(arrays, f"{cat} calibration")
        width, height = NATIVE_SIZES[cat]
        count = expected[cat].count
        if hist.images.total != count or hist.pixels.total != count * width * height:
            raise M.InvalidReply(
                f"{cat} calibration: histograms of {hist.images.total} images and "
                f"{hist.pixels.total} pixels, but {count} images of {width}x{height} were scored"
            )
        out[cat] = hist
    return out


def accept_stats(
    registry: ClientRegistry,
    replies: Replies,
    scored: Mapping[int, M.ScoreReply],
    categories: Sequence[str],
    fingerprint: str,
) -> dict[int, NodeStatistics]:
    """The valid phase-B replies by node id: statistics for exactly the scored test
    categories, calibration histograms for exactly the scored calibration images."""
    out: dict[int, NodeStatistics] = {}
    for client, reply in replies:
        expected = scored[client.node_id]
        try:
            decoded = M.decode_stats_reply(
                reply.content, fingerprint=fingerprint, categories=tuple(categories)
            )
            if set(decoded.stats) != set(expected.categories):
                raise M.InvalidReply(
                    f"statistics for {sorted(decoded.stats)}, but scores were sent for "
                    f"{sorted(expected.categories)}"
                )
            out[client.node_id] = NodeStatistics(
                {
                    cat: _statistics(arrays, cat, len(expected.categories[cat].scores))
                    for cat, arrays in decoded.stats.items()
                },
                _calibration(decoded.calibration, expected.calibration),
            )
        except ModelError as exc:
            registry.drop(client.node_id, "query", f"invalid reply: {exc}")
            continue
        client.status = "evaluated"
        client.local_metrics = decoded.local
        client.seconds.update(decoded.timings)
    registry.require("query")
    return out
