"""Which replies the server accepts, phase by phase.

Each function decodes and checks every reply of one phase with the codecs, records what
the client reported, and drops (by name, with the reason) a client whose reply fails a
check, so the run goes on with the others. The accepted replies come back in the order
the data fixes (`ClientRegistry.data_order`: by partition, then by content), never by
node id or arrival, so that what the server sums over them is the same in every run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
from flwr.app import Message

from fedpatch_app.errors import ModelError
from fedpatch_app.federated import messages as M
from fedpatch_app.federated.codec_train import MAX_PARTITIONS
from fedpatch_app.federated.data import NodeData
from fedpatch_app.federated.registry import ClientRegistry, ClientState
from fedpatch_app.metrics import SproStatistics, level_edges
from fedpatch_app.metrics.thresholds import CalibrationStats

log = logging.getLogger(__name__)

Replies = list[tuple[ClientState, Message]]
T = TypeVar("T")


def train_content(decoded: M.TrainReply) -> tuple[Any, ...]:
    """What orders the train replies of nodes that name no partition: per category the
    counts and the coreset's digest."""
    from fedpatch_app.model.merge import content_digest

    return tuple(
        sorted(
            (cat, p.n_images, p.n_patches, content_digest(_content(p)))
            for cat, p in decoded.coresets.items()
        )
    )


def _content(part: Any) -> np.ndarray:
    """A coreset's rows, or under share-mode relay its ciphertext."""
    return part.features if part.sealed is None else np.frombuffer(part.sealed, dtype=np.uint8)


def score_content(decoded: M.ScoreReply) -> tuple[Any, ...]:
    """What orders the evaluation replies of nodes that name no partition: the test
    images scored, then the calibration images' counts and map ranges."""
    tests = sorted((cat, tuple(sorted(i.rel_paths))) for cat, i in decoded.categories.items())
    calibration = sorted(
        (cat, i.count, i.map_min, i.map_max) for cat, i in decoded.calibration.items()
    )
    return (tuple(tests), tuple(calibration))


def in_data_order(
    registry: ClientRegistry, by_node: Mapping[int, T], content: Callable[[T], Any]
) -> dict[int, T]:
    """`by_node` in the order the data fixes (`ClientRegistry.data_order`; `content` of a
    reply is computed only for nodes that name no partition)."""
    order = registry.data_order(by_node, lambda node: content(by_node[node]))
    return {node: by_node[node] for node in order}


def _claim_partition(client: ClientState, reply: Message) -> None:
    """Name the client by its partition even when the rest of its reply is bad."""
    info = reply.content.config_records.get(M.INFO)
    claimed = info.get("partition-id") if info is not None else None
    if (
        isinstance(claimed, int)
        and not isinstance(claimed, bool)
        and -1 <= claimed < MAX_PARTITIONS
    ):
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


@dataclass
class Expected:
    """What the server knows of the nodes before they answer: each partition's share of
    the data (where the server sees the data; None otherwise) and, with node identities,
    the partition each node's key is bound to."""

    shares: Mapping[int, NodeData] | None = None
    bound: Mapping[int, int | None] | None = None
    private: bool = False
    #: Cross-fitted calibration: a node calibrates on its training images, not a held-out share.
    crossfit: bool = False

    def share(self, partition_id: int) -> NodeData | None:
        """The share a claimed partition must match (None: nothing to check against)."""
        if self.shares is None or partition_id < 0:
            return None
        if partition_id not in self.shares:
            raise M.InvalidReply(
                f"partition {partition_id} does not exist in the run's partition of "
                f"{len(self.shares)} clients"
            )
        return self.shares[partition_id]


def _check_identity(expected: Expected, node_id: int, claimed: int) -> None:
    if expected.bound is None:
        return
    bound = expected.bound.get(node_id)
    if bound is None:
        raise M.InvalidReply("its key is bound to no partition in node-identities")
    if claimed not in (bound, -1):  # -1: a node holding whole categories names no partition
        raise M.InvalidReply(f"claims partition {claimed}, but its key is bound to {bound}")


def _check_train_share(decoded: M.TrainReply, expected: Expected) -> None:
    """A reply's categories and image counts against the partition it claims."""
    share = expected.share(decoded.partition_id)
    if share is None:
        return
    pid = decoded.partition_id
    for cat, part in decoded.coresets.items():
        if cat not in share.fit:
            raise M.InvalidReply(f"sends a {cat} coreset, but partition {pid} trains no {cat}")
        if not expected.private and part.n_images != len(share.fit[cat]):
            raise M.InvalidReply(
                f"{cat}: declares {part.n_images} training images, partition {pid} holds "
                f"{len(share.fit[cat])}"
            )


def _drop_shared_partitions(registry: ClientRegistry, accepted: dict[int, M.TrainReply]) -> None:
    """A partition claimed by two nodes or more: none of them is believed."""
    claims: dict[int, list[int]] = {}
    for node_id, decoded in accepted.items():
        if decoded.partition_id >= 0:
            claims.setdefault(decoded.partition_id, []).append(node_id)
    for pid, nodes in claims.items():
        if len(nodes) < 2:
            continue
        for node_id in nodes:
            others = ", ".join(str(n) for n in nodes if n != node_id)
            registry.drop(
                node_id,
                "train",
                f"partition {pid} is also claimed by node(s) {others}: "
                "none of the claimants is believed (node-identities binds partitions to keys)",
            )
            del accepted[node_id]


def accept_train(
    registry: ClientRegistry,
    replies: Replies,
    limits: M.TrainLimits,
    expected: Expected | None = None,
    keep: Callable[[M.TrainReply], None] | None = None,
) -> dict[int, M.TrainReply]:
    """The valid train replies by node id: well formed, from the partition the node's key
    is bound to, matching that partition's share, and no partition claimed twice.
    `replies` is consumed: each message leaves the list once decoded (the decoded arrays
    are copies, so its payload can be freed), and `keep` is given each valid decoded
    reply then (the server stores its coresets on disk): no more than one reply's arrays
    are held twice."""
    expected = expected or Expected()
    accepted: dict[int, M.TrainReply] = {}
    while replies:
        client, reply = replies.pop(0)
        _claim_partition(client, reply)
        try:
            decoded = M.decode_train_reply(reply.content, limits)
            _check_identity(expected, client.node_id, decoded.partition_id)
            _check_train_share(decoded, expected)
        except ModelError as exc:
            registry.drop(client.node_id, "train", f"invalid reply: {exc}")
            continue
        del reply
        if keep is not None:
            keep(decoded)
        if expected.bound is not None:
            decoded.partition_id = int(expected.bound[client.node_id])
        client.partition_id = decoded.partition_id
        accepted[client.node_id] = decoded
    _drop_shared_partitions(registry, accepted)
    accepted = in_data_order(registry, accepted, train_content)
    for node_id, decoded in accepted.items():
        _record_train(registry.clients[node_id], decoded)
    registry.require("train")
    return accepted


def _check_score_share(decoded: M.ScoreReply, partition_id: int, expected: Expected) -> None:
    """Test images and calibration counts against the partition the node trained as."""
    share = expected.share(partition_id)
    if share is None:
        return
    for cat, item in decoded.categories.items():
        held = set(share.test.get(cat, []))
        foreign = [p for p in item.rel_paths if p not in held]
        if foreign:
            raise M.InvalidReply(
                f"{cat}: {len(foreign)} scored test image(s) that partition {partition_id} does "
                f"not hold, e.g. {foreign[0]}"
            )
    for cat, item in decoded.calibration.items():
        if expected.crossfit:  # at most every training image (one fold alone: none)
            if item.count > len(share.fit.get(cat, [])):
                raise M.InvalidReply(
                    f"{cat}: {item.count} cross-fitted calibration images scored, partition "
                    f"{partition_id} trains on {len(share.fit.get(cat, []))}"
                )
            continue
        count = len(share.calibration.get(cat, []))
        if item.count != count:
            raise M.InvalidReply(
                f"{cat}: {item.count} calibration images scored, partition {partition_id} "
                f"holds {count}"
            )


def _claims(
    scored: Mapping[int, M.ScoreReply], order: Sequence[int]
) -> dict[tuple[str, str], list[int]]:
    """Who claims each test image claimed twice or more (the claimants in `order`)."""
    owners: dict[tuple[str, str], list[int]] = {}
    for node_id in order:
        if node_id not in scored:
            continue
        for cat, item in scored[node_id].categories.items():
            for path in item.rel_paths:
                owners.setdefault((cat, path), []).append(node_id)
    return {key: nodes for key, nodes in owners.items() if len(nodes) > 1}


def _claiming_from_many(conflicts: dict[tuple[str, str], list[int]]) -> int | None:
    """The one node whose claims clash with two nodes or more while each of those clashes
    with it alone (it claims the others' images), or None."""
    partners: dict[int, set[int]] = {}
    for nodes in conflicts.values():
        for node in nodes:
            partners.setdefault(node, set()).update(n for n in nodes if n != node)
    if not partners:
        return None
    top = max(partners, key=lambda n: len(partners[n]))
    others_alone = all(partners[n] == {top} for n in partners[top])
    if len(partners[top]) >= 2 and others_alone:
        return top
    return None


def conflicting_images(
    registry: ClientRegistry, scored: dict[int, M.ScoreReply]
) -> dict[str, set[str]]:
    """Test images claimed by two nodes or more. A node whose claims clash with several
    nodes that clash with nobody else claims their images: it is dropped (and removed from
    `scored`). The images still claimed twice are left out of the evaluation, per category
    (counted twice they would bias it; who holds them cannot be told), and every claimant
    is flagged."""
    # Ties between possible thieves go to the first in the data's order.
    order = list(in_data_order(registry, scored, score_content))
    conflicts = _claims(scored, order)
    while (thief := _claiming_from_many(conflicts)) is not None:
        partners = sorted({n for nodes in conflicts.values() if thief in nodes for n in nodes})
        registry.drop(
            thief,
            "evaluate",
            "claims test images that nodes "
            f"{', '.join(str(n) for n in partners if n != thief)} hold",
        )
        del scored[thief]
        conflicts = _claims(scored, order)
    excluded: dict[str, set[str]] = {}
    claimants: dict[int, dict[str, int]] = {}
    for (cat, path), nodes in conflicts.items():
        excluded.setdefault(cat, set()).add(path)
        for node_id in nodes:
            per_cat = claimants.setdefault(node_id, {})
            per_cat[cat] = per_cat.get(cat, 0) + 1
    for node_id, per_cat in claimants.items():
        what = ", ".join(f"{n} of {cat}" for cat, n in per_cat.items())
        registry.flag(
            node_id,
            "evaluate",
            f"claims test images that other nodes claim too ({what}): left out of the evaluation",
        )
    return excluded


def accept_scores(
    registry: ClientRegistry,
    replies: Replies,
    categories: Sequence[str],
    fingerprint: str,
    expected: Expected | None = None,
    judged: Mapping[str, int] | None = None,
) -> dict[int, M.ScoreReply]:
    """The valid phase-A replies by node id, their claims checked against the partition
    where the server knows it (claims conflicting between nodes: `conflicting_images`);
    `judged`: the sources judged per checked category (source-check reports)."""
    expected = expected or Expected()
    scored: dict[int, M.ScoreReply] = {}
    for client, reply in replies:
        try:
            decoded = M.decode_score_reply(
                reply.content,
                fingerprint=fingerprint,
                categories=tuple(categories),
                judged=judged,
            )
            _check_score_share(decoded, client.partition_id, expected)
        except ModelError as exc:
            registry.drop(client.node_id, "evaluate", f"invalid reply: {exc}")
            continue
        client.seconds.update(decoded.timings)
        scored[client.node_id] = decoded
    registry.require("evaluate")
    return in_data_order(registry, scored, score_content)


def _statistics(arrays: Mapping[str, np.ndarray], cat: str, n_scored: tuple[int, int]):
    """One category's statistics, on the 16-bit level edges, covering the scored images
    `n_scored` = (images, good images) with pixel truth: every good image and the defective
    ones with a ground-truth mask (a defective image without one is left out)."""
    try:
        stats = SproStatistics.from_arrays(arrays)
    except (ModelError, ValueError, KeyError, TypeError) as exc:
        raise M.InvalidReply(f"{cat} statistics: {exc}") from None
    if not np.array_equal(np.asarray(stats.edges), np.asarray(level_edges())):
        raise M.InvalidReply(f"{cat} statistics: not on the 16-bit level edges")
    images, good = n_scored
    if stats.n_good != good or not good <= stats.n_images <= images:
        raise M.InvalidReply(
            f"{cat} statistics cover {stats.n_images} images ({stats.n_good} good), "
            f"{images} are evaluated ({good} good)"
        )
    return stats


@dataclass
class NodeStatistics:
    """One node's accepted phase-B reply."""

    stats: dict[str, SproStatistics]
    calibration: dict[str, CalibrationStats]


def _calibration(
    raw: Mapping[str, Mapping[str, np.ndarray]],
    expected: Mapping[str, M.CalibrationRange],
    sizes: Mapping[str, tuple[int, int]],
) -> dict[str, CalibrationStats]:
    """Calibration histograms for exactly the categories whose calibration images were
    scored, covering that many images and all their pixels (at the run's agreed size)."""
    if set(raw) != set(expected):
        raise M.InvalidReply(
            f"calibration histograms for {sorted(raw)}, but calibration images were scored "
            f"for {sorted(expected)}"
        )
    out = {}
    for cat, arrays in raw.items():
        hist = CalibrationStats.from_arrays(arrays, f"{cat} calibration")
        if cat not in sizes:
            raise M.InvalidReply(f"{cat} calibration: the run has no agreed size for {cat}")
        width, height = sizes[cat]
        count = expected[cat].count
        if hist.images.total != count or hist.pixels.total != count * width * height:
            raise M.InvalidReply(
                f"{cat} calibration: histograms of {hist.images.total} images and "
                f"{hist.pixels.total} pixels, but {count} images of {width}x{height} were scored"
            )
        out[cat] = hist
    return out


def remaining(item: M.CategoryScores, excluded: set[str]) -> int:
    """Scored test images of a category that stay in the evaluation."""
    return sum(1 for p in item.rel_paths if p not in excluded)


def _remaining_good(item: M.CategoryScores, excluded: set[str]) -> int:
    pairs = zip(item.rel_paths, item.defects, strict=True)
    return sum(1 for p, d in pairs if p not in excluded and d == "good")


def accept_stats(
    registry: ClientRegistry,
    replies: Replies,
    scored: Mapping[int, M.ScoreReply],
    categories: Sequence[str],
    fingerprint: str,
    excluded: Mapping[str, set[str]] | None = None,
    sizes: Mapping[str, tuple[int, int]] | None = None,
) -> dict[int, NodeStatistics]:
    """The valid phase-B replies by node id: statistics for exactly the scored test
    categories (covering the images not excluded), calibration histograms for exactly the
    scored calibration images."""
    excluded = excluded or {}
    out: dict[int, NodeStatistics] = {}
    for client, reply in replies:
        sent = scored[client.node_id]
        counts = {
            cat: (n, _remaining_good(item, excluded.get(cat, set())))
            for cat, item in sent.categories.items()
            if (n := remaining(item, excluded.get(cat, set()))) > 0
        }
        try:
            decoded = M.decode_stats_reply(
                reply.content, fingerprint=fingerprint, categories=tuple(categories)
            )
            if set(decoded.stats) != set(counts):
                raise M.InvalidReply(
                    f"statistics for {sorted(decoded.stats)}, but {sorted(counts)} have "
                    "evaluated test images"
                )
            out[client.node_id] = NodeStatistics(
                {cat: _statistics(a, cat, counts[cat]) for cat, a in decoded.stats.items()},
                _calibration(decoded.calibration, sent.calibration, sizes or {}),
            )
        except ModelError as exc:
            registry.drop(client.node_id, "query", f"invalid reply: {exc}")
            continue
        client.status = "evaluated"
        client.local_metrics = decoded.local
        client.seconds.update(decoded.timings)
    registry.require("query")
    return {
        node: out[node] for node in in_data_order(registry, scored, score_content) if node in out
    }
