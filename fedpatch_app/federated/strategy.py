"""PatchCoreStrategy: one-shot federated PatchCore as a Flower strategy.

One round of `Strategy.start`:

1. train: every connected node gets the run plan; each replies with a local coreset per
   category it holds (oversampled by `local-oversample`) and its patch/image counts.
2. aggregate_train: every reply is checked (`messages.decode_train_reply`); a failed or
   invalid client is dropped with its reason. Per category the union of the accepted
   coresets is reduced by greedy k-center (`merge_coresets`, the code every run kind uses)
   to `coreset_size(total patches, coreset-ratio)`: the size the centralized bank would
   have. The global banks become the round's arrays.
3. evaluate, phase A: the banks go to every accepted node in ONE RecordDict; each node
   scores its test images, keeps its float maps on its own disk and replies with per
   category map min/max and its image scores (defect labels, relative paths).
4. phase B (inside aggregate_evaluate, a QUERY message): the server sends each category's
   global scaling (min of the minima, max of the maxima); each node quantizes its cached
   maps to the 16 bit levels and replies with sufficient statistics of AUC-sPRO.
   The server merges them per category: the pooled metrics are exactly those of the
   centralized computation on the same quantized maps.

Everything the run learns (clients, bytes, times, banks, metrics, who was dropped and
why) is kept on the strategy for the ServerApp to write.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp.grid import Grid
from flwr.serverapp.strategy import Strategy

from fedpatch_app.errors import DataError, FedpatchError, ModelError
from fedpatch_app.federated import messages as M

log = logging.getLogger(__name__)

#: Flower's error codes (flwr.common.constant.ErrorCode) with readable names.
ERROR_NAMES = {
    0: "unknown error",
    1: "ClientApp could not be loaded",
    2: "ClientApp raised an exception",
    3: "message unavailable",
    4: "reply unavailable (TTL expired)",
    5: "node unavailable",
    6: "mod failed precondition",
    7: "invalid app bundle",
    8: "ClientApp crashed",
}


#: How a ClientApp names itself in its error text (see client.named_errors).
_CLAIMED_PARTITION = re.compile(r"\bpartition (-?\d+) \(node \d+\):")


class FederationError(FedpatchError):
    """The federation cannot go on (too few clients left, nothing to merge)."""


@dataclass
class ClientState:
    """What the server knows about one node."""

    node_id: int
    partition_id: int | None = None
    status: str = "pending"  # pending -> trained -> evaluated, or dropped
    dropped_in: str | None = None
    reason: str | None = None
    categories: list[str] = field(default_factory=list)
    train_images: dict[str, int] = field(default_factory=dict)
    train_patches: dict[str, int] = field(default_factory=dict)
    coreset_rows: dict[str, int] = field(default_factory=dict)
    local_radius: dict[str, float] = field(default_factory=dict)
    test_images: dict[str, int] = field(default_factory=dict)
    bytes_up: dict[str, int] = field(default_factory=dict)
    bytes_down: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    device: str = ""
    local_metrics: dict[str, float] = field(default_factory=dict)

    @property
    def label(self) -> str:
        pid = "?" if self.partition_id is None or self.partition_id < 0 else self.partition_id
        return f"node {self.node_id} (partition {pid})"

    def to_dict(self) -> dict[str, Any]:
        return {
            "node_id": self.node_id,
            "partition_id": self.partition_id,
            "status": self.status,
            "dropped_in": self.dropped_in,
            "reason": self.reason,
            "categories": self.categories,
            "train_images": self.train_images,
            "train_patches": self.train_patches,
            "coreset_rows": self.coreset_rows,
            "local_radius": self.local_radius,
            "test_images": self.test_images,
            "bytes_up": self.bytes_up,
            "bytes_down": self.bytes_down,
            "seconds": self.seconds,
            "device": self.device,
            "local_metrics": self.local_metrics,
        }


@dataclass
class CategoryOutcome:
    """The pooled evaluation of one category."""

    block: dict[str, Any]
    curves: dict[str, np.ndarray]
    rel_paths: list[str]
    defects: list[str]
    scores: np.ndarray


class PatchCoreStrategy(Strategy):
    """Federated PatchCore: local coresets up, k-center merge, global banks down,
    sufficient statistics up, exact pooled metrics.

    `plan` is what every instruction carries; `spec` its FeatureSpec; `min_clients` the
    number of clients that must remain after every phase; `max_rows` the absolute cap on
    a local coreset's rows; `merge_device` where the server's k-center runs.
    """

    def __init__(self, plan: M.Plan, *, merge_device: Any = "cpu") -> None:
        from fedpatch_app.data.autovi import CATEGORIES

        self.plan = plan
        self.spec = plan.spec
        self.settings = plan.settings
        self.min_clients = plan.settings.min_clients
        self.merge_device = merge_device
        self.timeout = plan.settings.round_timeout
        self.dp = plan.settings.dp
        cats = tuple(plan.categories or CATEGORIES)
        self.known_categories = tuple(c for c in CATEGORIES if c in cats)
        self.limits = M.TrainLimits.of(plan, self.known_categories)
        self.clients: dict[int, ClientState] = {}
        self.banks: dict[str, Any] = {}
        self.bank_info: dict[str, dict[str, Any]] = {}
        self.outcomes: dict[str, CategoryOutcome] = {}
        self.scalings: dict[str, tuple[float, float]] = {}
        self.seconds: dict[str, float] = {}
        self.bytes: dict[str, int] = {}
        self._outbox: dict[str, list[Message]] = {}
        self._phase_start: dict[str, float] = {}
        self._grid: Grid | None = None
        self._train: dict[int, M.TrainReply] = {}
        self._scores: dict[int, M.ScoreReply] = {}

    # ------------------------------------------------------------------ bookkeeping

    def summary(self) -> None:
        log.info(
            "PatchCoreStrategy: fingerprint %s, coreset ratio %s, local oversample %s, "
            "min clients %d, categories %s",
            self.plan.fingerprint,
            self.settings.coreset_ratio,
            self.settings.local_oversample,
            self.min_clients,
            ", ".join(self.known_categories),
        )

    def active(self) -> list[ClientState]:
        return [c for c in self.clients.values() if c.status != "dropped"]

    def dropped(self) -> list[dict[str, Any]]:
        return [
            {
                "node_id": c.node_id,
                "partition_id": c.partition_id,
                "phase": c.dropped_in,
                "reason": c.reason,
            }
            for c in self.clients.values()
            if c.status == "dropped"
        ]

    def drop(self, node_id: int, phase: str, reason: str) -> None:
        client = self.clients.setdefault(node_id, ClientState(node_id))
        if client.status == "dropped":
            return
        client.status = "dropped"
        client.dropped_in = phase
        client.reason = reason
        log.warning("%s dropped in %s: %s", client.label, phase, reason)

    def _require_clients(self, phase: str) -> None:
        active = self.active()
        if len(active) < self.min_clients:
            reasons = "; ".join(
                f"{d['phase']}: node {d['node_id']} (partition {d['partition_id']}): {d['reason']}"
                for d in self.dropped()
            )
            raise FederationError(
                f"{phase}: only {len(active)} client(s) remain, min-clients is "
                f"{self.min_clients}" + (f" (dropped: {reasons})" if reasons else "")
            )

    def _send(self, phase: str, messages: list[Message]) -> list[Message]:
        """Remember what was sent (message ids are set when the grid pushes them)."""
        self._outbox[phase] = messages
        self._phase_start[phase] = time.perf_counter()
        per_node = 0
        for msg in messages:
            size = M.record_bytes(msg.content)
            per_node = max(per_node, size)
            self.clients[msg.metadata.dst_node_id].bytes_down[phase] = size
        self.bytes[f"{phase}_down_per_node"] = per_node
        self.bytes[f"{phase}_down_total"] = M.message_bytes(messages)
        self.bytes[f"{phase}_down_uploaded"] = M.message_bytes(messages, broadcast=True)
        return messages

    def _collect(self, phase: str, replies: Iterable[Message]) -> list[tuple[ClientState, Message]]:
        """Match replies to the nodes they answer; error replies and silent nodes are dropped."""
        sent = self._outbox.get(phase, [])
        by_id = {m.metadata.message_id: m.metadata.dst_node_id for m in sent}
        self.seconds[phase] = round(
            time.perf_counter() - self._phase_start.get(phase, time.perf_counter()), 3
        )
        answered: set[int] = set()
        ok: list[tuple[ClientState, Message]] = []
        total_up = 0
        for reply in replies:
            node_id = by_id.get(reply.metadata.reply_to_message_id)
            if node_id is None:
                # Not an answer to anything we sent in this phase: ignore it, loudly.
                log.warning(
                    "%s: ignoring a reply (from node %s) to an unknown message %r",
                    phase,
                    reply.metadata.src_node_id,
                    reply.metadata.reply_to_message_id,
                )
                continue
            if node_id in answered:
                log.warning("%s: ignoring a second reply for node %s", phase, node_id)
                continue
            answered.add(node_id)
            client = self.clients[node_id]
            if client.status == "dropped":
                continue
            if reply.has_error():
                claimed = _CLAIMED_PARTITION.search(reply.error.reason or "")
                if claimed and client.partition_id is None:
                    client.partition_id = int(claimed.group(1))
                code = int(reply.error.code)
                name = ERROR_NAMES.get(code, "error")
                self.drop(
                    node_id, phase, f"error {code} ({name}): {reply.error.reason or ''}".strip()
                )
                continue
            size = M.record_bytes(reply.content)
            client.bytes_up[phase] = size
            total_up += size
            ok.append((client, reply))
        for msg in sent:
            node_id = msg.metadata.dst_node_id
            if node_id not in answered:
                self.drop(node_id, phase, f"no reply within the timeout ({self.timeout:.0f} s)")
        self.bytes[f"{phase}_up_total"] = total_up
        return ok

    # ------------------------------------------------------------------ train

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        node_ids = sorted(grid.get_node_ids())
        for node_id in node_ids:
            self.clients.setdefault(node_id, ClientState(node_id))
        record = self.plan.to_config(phase="train", **dict(config.items()))
        content = RecordDict({M.CONFIG: record})
        log.info("train: sending the plan to %d node(s)", len(node_ids))
        messages = [
            Message(content, node_id, MessageType.TRAIN, group_id=str(server_round))
            for node_id in node_ids
        ]
        return self._send("train", messages)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        accepted: dict[int, M.TrainReply] = {}
        seen_partitions: dict[int, int] = {}
        for client, reply in self._collect("train", replies):
            # Name the client by its partition even when the rest of its reply is bad.
            info = reply.content.config_records.get(M.INFO)
            claimed = info.get("partition-id") if info is not None else None
            if isinstance(claimed, int) and not isinstance(claimed, bool):
                client.partition_id = claimed
            try:
                decoded = M.decode_train_reply(reply.content, self.limits)
            except ModelError as exc:
                self.drop(client.node_id, "train", f"invalid reply: {exc}")
                continue
            client.partition_id = decoded.partition_id
            if decoded.partition_id >= 0:
                if decoded.partition_id in seen_partitions:
                    self.drop(
                        client.node_id,
                        "train",
                        f"partition {decoded.partition_id} already reported by node "
                        f"{seen_partitions[decoded.partition_id]}",
                    )
                    continue
                seen_partitions[decoded.partition_id] = client.node_id
            client.status = "trained"
            client.device = decoded.device
            client.seconds["train_client"] = round(decoded.seconds, 3)
            client.categories = list(decoded.coresets)
            for cat, part in decoded.coresets.items():
                client.train_images[cat] = part.n_images
                client.train_patches[cat] = part.n_patches
                client.coreset_rows[cat] = int(part.features.shape[0])
                client.local_radius[cat] = part.radius
            accepted[client.node_id] = decoded
            log.info(
                "train: %s accepted: %s",
                client.label,
                ", ".join(
                    f"{c} ({p.n_images} images, {p.features.shape[0]}/{p.n_patches} patches)"
                    for c, p in decoded.coresets.items()
                )
                or "no training data",
            )
        self._require_clients("train")
        self._train = accepted

        start = time.perf_counter()
        banks = self._merge(accepted)
        self.seconds["merge"] = round(time.perf_counter() - start, 3)
        if not banks:
            raise FederationError("train: no client sent a coreset for any category")
        arrays = M.encode_banks(
            {c: b.features for c, b in banks.items()}, self.settings.transport_dtype
        )
        metrics = MetricRecord(
            {
                "clients": len(accepted),
                "categories": len(banks),
                "bank-rows": int(sum(b.size for b in banks.values())),
            }
        )
        return arrays, metrics

    def _merge(self, accepted: dict[int, M.TrainReply]) -> dict[str, Any]:
        from fedpatch_app.evaluation.fairness import bank_budget
        from fedpatch_app.model.patchcore import Bank, merge_coresets

        # The union's row order decides the greedy start: order the parts by their content,
        # not by node ids (random in a deployment), so the same data give the same bank
        # whatever the engine, the node ids or the order replies arrived in.
        held = {
            cat: sorted(
                ((nid, r.coresets[cat]) for nid, r in accepted.items() if cat in r.coresets),
                key=lambda item: _digest(item[1].features),
            )
            for cat in self.known_categories
        }
        held = {cat: h for cat, h in held.items() if h}
        budget = bank_budget(
            {cat: sum(p.n_patches for _, p in h) for cat, h in held.items()},
            self.settings.coreset_ratio,
            self.settings.bank_budget,
        )
        for cat, holders in held.items():
            total_patches = sum(p.n_patches for _, p in holders)
            k = budget[cat]
            t0 = time.perf_counter()
            dp_info: dict[str, Any] | None = None
            query_clip = 0.0
            if self.dp.enabled:
                parts, dp_info = _dp_parts(holders)
                query_clip = float(dp_info["clip"])
            else:
                parts = [p.features for _, p in holders]
            union = sum(p.shape[0] for p in parts)
            merged, radius = merge_coresets(parts, k, self.spec, device=self.merge_device)
            bank = Bank(
                features=merged,
                spec=self.spec,
                category=cat,
                radius=float(radius),
                n_patches=int(total_patches),
                query_clip=query_clip,
            )
            self.banks[cat] = bank
            self.bank_info[cat] = {
                "size": bank.size,
                "target_size": int(k),
                "covering_radius": float(radius),
                "union_rows": int(union),
                "total_patches": int(total_patches),
                "train_images": int(sum(p.n_images for _, p in holders)),
                "clients": [self.clients[nid].partition_id for nid, _ in holders],
                "local_radius_max": float(max(p.radius for _, p in holders)),
                "merge_seconds": round(time.perf_counter() - t0, 3),
            }
            if self.settings.bank_budget != "volume":
                self.bank_info[cat]["budget"] = self.settings.bank_budget
            if dp_info is not None:
                self.bank_info[cat]["dp"] = dp_info
            log.info(
                "merge %s: %d clients, union %d rows -> bank of %d (radius %.4f)",
                cat,
                len(holders),
                union,
                bank.size,
                radius,
            )
        return self.banks

    # ------------------------------------------------------------------ evaluate

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        self._grid = grid
        node_ids = [c.node_id for c in self.active()]
        # ONE RecordDict for every node: Flower uploads the banks once.
        extra = dict(config.items())
        # DP banks hold clipped features: the clients clip their queries the same way.
        for cat, bank in self.banks.items():
            if bank.query_clip > 0:
                extra[f"{M.QUERY_CLIP}.{cat}"] = float(bank.query_clip)
        content = RecordDict(
            {M.BANKS: arrays, M.CONFIG: self.plan.to_config(phase=M.PHASE_SCORE, **extra)}
        )
        log.info("evaluate: broadcasting %d bank(s) to %d node(s)", len(arrays), len(node_ids))
        messages = [
            Message(content, node_id, MessageType.EVALUATE, group_id=str(server_round))
            for node_id in node_ids
        ]
        return self._send("evaluate", messages)

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        cats = tuple(self.banks)
        scored: dict[int, M.ScoreReply] = {}
        for client, reply in self._collect("evaluate", replies):
            try:
                decoded = M.decode_score_reply(
                    reply.content, fingerprint=self.plan.fingerprint, categories=cats
                )
            except ModelError as exc:
                self.drop(client.node_id, "evaluate", f"invalid reply: {exc}")
                continue
            scored[client.node_id] = decoded
        # The same test image must not be counted twice (it would bias the pooled metrics).
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
                self.drop(
                    node_id,
                    "evaluate",
                    f"{cat}: test image {p} was already scored by node {owner[(cat, p)]}",
                )
                continue
            for cat, item in decoded.categories.items():
                for p in item.rel_paths:
                    owner[(cat, p)] = node_id
        scored = {n: d for n, d in scored.items() if self.clients[n].status != "dropped"}
        self._require_clients("evaluate")
        self._scores = scored

        scalings: dict[str, tuple[float, float]] = {}
        for decoded in scored.values():
            for cat, item in decoded.categories.items():
                lo, hi = scalings.get(cat, (item.map_min, item.map_max))
                scalings[cat] = (min(lo, item.map_min), max(hi, item.map_max))
        self.scalings = scalings
        stats = self._query_stats(server_round, scalings)
        return self._pool(stats)

    def _query_stats(
        self, server_round: int, scalings: dict[str, tuple[float, float]]
    ) -> dict[int, dict[str, Any]]:
        """Phase B: global scalings down, sufficient statistics up."""
        from fedpatch_app.evaluation.metrics import SproStatistics, level_edges

        if self._grid is None:
            raise FederationError("evaluate: no grid to send the statistics query")
        nodes = [n for n in self._scores if self.clients[n].status != "dropped"]
        content = RecordDict(
            {M.CONFIG: self.plan.to_config(phase=M.PHASE_STATS, **M.scaling_config(scalings))}
        )
        messages = [
            Message(content, node_id, MessageType.QUERY, group_id=str(server_round))
            for node_id in nodes
        ]
        self._send("query", messages)
        replies = self._grid.send_and_receive(messages, timeout=self.timeout)
        edges = level_edges()
        out: dict[int, dict[str, Any]] = {}
        for client, reply in self._collect("query", replies):
            expected = set(self._scores[client.node_id].categories)
            try:
                raw, local = M.decode_stats_reply(
                    reply.content,
                    fingerprint=self.plan.fingerprint,
                    categories=tuple(self.banks),
                )
                if set(raw) != expected:
                    raise M.InvalidReply(
                        f"statistics for {sorted(raw)}, but scores were sent for {sorted(expected)}"
                    )
                parsed: dict[str, Any] = {}
                for cat, arrays in raw.items():
                    try:
                        st = SproStatistics.from_arrays(arrays)
                    except (ModelError, ValueError, KeyError, TypeError) as exc:
                        raise M.InvalidReply(f"{cat} statistics: {exc}") from None
                    if not np.array_equal(np.asarray(st.edges), np.asarray(edges)):
                        raise M.InvalidReply(f"{cat} statistics: not on the 16-bit level edges")
                    n_scored = len(self._scores[client.node_id].categories[cat].scores)
                    n_stats = _image_count(st)
                    if n_stats is not None and n_stats != n_scored:
                        raise M.InvalidReply(
                            f"{cat} statistics cover {n_stats} images, {n_scored} were scored"
                        )
                    parsed[cat] = st
            except ModelError as exc:
                self.drop(client.node_id, "query", f"invalid reply: {exc}")
                continue
            client.status = "evaluated"
            client.local_metrics = local
            out[client.node_id] = parsed
        self._require_clients("query")
        return out

    def _pool(self, stats: dict[int, dict[str, Any]]) -> MetricRecord:
        from fedpatch_app.evaluation.export import MapScaling
        from fedpatch_app.evaluation.metrics import (
            auc_spro_from_statistics,
            image_auroc,
            roc_curve_points,
        )
        from fedpatch_app.evaluation.results import LIMIT_KEYS, category_block

        t0 = time.perf_counter()
        for cat in self.banks:
            parts = [(n, stats[n][cat]) for n in sorted(stats) if cat in stats[n]]
            if not parts:
                log.warning("%s: no client evaluated this category", cat)
                continue
            merged = parts[0][1]
            for _, st in parts[1:]:
                merged = merged.merge(st)
            notes: list[str] = []
            try:
                spro = auc_spro_from_statistics(merged)
                auc, per_defect = dict(spro.auc), dict(getattr(spro, "per_defect", None) or {})
                spro_fpr, spro_tpr = spro.fpr, spro.spro
            except DataError as exc:
                notes.append(f"AUC-sPRO undefined: {exc}")
                auc, per_defect = {k: math.nan for k in LIMIT_KEYS}, {}
                spro_fpr, spro_tpr = np.zeros(0), np.zeros(0)
            scaling = MapScaling(*self.scalings[cat])
            rows: list[tuple[str, str, float]] = []
            for n, _ in parts:
                item = self._scores[n].categories[cat]
                self.clients[n].test_images[cat] = len(item.scores)
                rows.extend(zip(item.rel_paths, item.defects, item.scores.tolist(), strict=True))
            rows.sort()
            rel_paths = [r[0] for r in rows]
            defects = [r[1] for r in rows]
            raw = np.array([r[2] for r in rows], dtype=np.float64)
            # The image score is the map's maximum; on the quantized map that is the
            # level of the float maximum (the quantization is monotone).
            levels = scaling.to_uint16(raw).astype(np.float64)
            try:
                auroc = image_auroc(levels, defects)
                roc_fpr, roc_tpr = roc_curve_points(levels, defects)
            except DataError as exc:
                notes.append(f"image AUROC undefined: {exc}")
                auroc = {"mean": math.nan, "pooled": math.nan}
                roc_fpr, roc_tpr = np.zeros(0), np.zeros(0)
            for note in notes:
                log.warning("%s: %s", cat, note)
            info = self.bank_info[cat]
            counts = {
                "train": info["train_images"],
                "test_good": sum(1 for d in defects if d == "good"),
                "test_defective": sum(1 for d in defects if d != "good"),
            }
            block = category_block(
                auc_spro=auc,
                image_auroc=auroc,
                counts=counts,
                auc_spro_per_defect=per_defect or None,
                bank_size=info["size"],
                covering_radius=info["covering_radius"],
                map_scaling=scaling.to_dict(),
                clients=[self.clients[n].partition_id for n, _ in parts],
                **({"notes": notes} if notes else {}),
            )
            curves = {
                "spro_fpr": np.asarray(spro_fpr, dtype=np.float64),
                "spro": np.asarray(spro_tpr, dtype=np.float64),
                "roc_fpr": np.asarray(roc_fpr, dtype=np.float64),
                "roc_tpr": np.asarray(roc_tpr, dtype=np.float64),
            }
            self.outcomes[cat] = CategoryOutcome(block, curves, rel_paths, defects, levels)
            log.info(
                "%s (pooled over %d clients): AUC-sPRO@0.05 %s, @0.3 %s, image AUROC %s",
                cat,
                len(parts),
                block["auc_spro"]["0.05"],
                block["auc_spro"]["0.3"],
                block["image_auroc"]["mean"],
            )
        self.seconds["pooled_metrics"] = round(time.perf_counter() - t0, 3)
        metrics = MetricRecord({"categories": len(self.outcomes)})
        for cat, outcome in self.outcomes.items():
            value = outcome.block["auc_spro"].get("0.05")
            if value is not None:
                metrics[f"{cat}.auc-spro-0.05"] = float(value)
            value = outcome.block["image_auroc"].get("mean")
            if value is not None:
                metrics[f"{cat}.image-auroc"] = float(value)
        return metrics

    # ------------------------------------------------------------------ facts

    def privacy_facts(self) -> dict[str, Any]:
        """The "privacy" block of results.json: settings and the budget actually spent."""
        from fedpatch_app.model.dp import Accountant, describe

        facts = describe(self.dp)
        if not self.dp.enabled:
            facts["spent"] = None
            return facts
        per: dict[str, dict[str, float]] = {}
        for client in self.clients.values():
            reply = self._train.get(client.node_id)
            if reply is None:
                continue
            for cat, part in reply.coresets.items():
                if part.dp is None:
                    continue
                acc = Accountant(part.dp["delta"])
                for name in ("sums", "counts", "images"):
                    sens = {"sums": math.sqrt(self.dp.clusters_per_image) * part.dp["clip"],
                            "counts": math.sqrt(self.dp.clusters_per_image),
                            "images": 1.0}[name]  # fmt: skip
                    acc.add(name, sens, part.dp[f"sigma-{name}"])
                per[f"{client.label} {cat}"] = {
                    "epsilon": acc.epsilon(),
                    "epsilon_exact": acc.exact_epsilon(),
                    "rho": acc.rho,
                    "delta": acc.delta,
                    "clip": part.dp["clip"],
                    "sigma_sums": part.dp["sigma-sums"],
                    "sigma_counts": part.dp["sigma-counts"],
                    "sigma_images": part.dp["sigma-images"],
                }
        facts["spent"] = {
            # Parallel composition: each image is in one category and on one client.
            "epsilon": Accountant.parallel(v["epsilon"] for v in per.values()),
            "epsilon_exact": Accountant.parallel(v["epsilon_exact"] for v in per.values()),
            "delta": self.dp.delta,
            "composition": "parallel across categories and clients (disjoint images)",
            "per_release": per,
        }
        facts["private_steps"] = [
            "client: per-cluster sums and counts of per-image bounded contributions, and the "
            "image count (Gaussian mechanism, accounted)",
        ]
        facts["public_steps"] = [
            "centres and clip norm: public synthetic reference images (no private data)",
            "server: sum over clients, noisy means, count threshold, greedy k-center "
            "(post-processing)",
        ]
        facts["not_covered"] = [
            "test images: scores and evaluation statistics are not differentially private",
        ]
        return facts

    def federated_facts(self) -> dict[str, Any]:
        """The "federated" block of results.json."""
        return {
            "partition": {
                "scheme": self.settings.partition,
                "num_clients": self.settings.num_clients,
                "dirichlet_alpha": self.settings.dirichlet_alpha
                if self.settings.partition == "dirichlet"
                else None,
            },
            "min_clients": self.min_clients,
            "fingerprint": self.plan.fingerprint,
            "clients": [
                c.to_dict() for c in sorted(self.clients.values(), key=lambda c: c.node_id)
            ],
            "dropped": self.dropped(),
            "banks": self.bank_info,
            "map_scaling": {c: {"low": lo, "high": hi} for c, (lo, hi) in self.scalings.items()},
            "bytes": self.bytes,
            "seconds": self.seconds,
        }


def _digest(array: np.ndarray) -> str:
    """SHA-256 of an array's shape and bytes: a content order for the merge."""
    data = np.ascontiguousarray(array)
    return hashlib.sha256(repr(data.shape).encode() + data.tobytes()).hexdigest()


def _dp_parts(holders: list[tuple[int, Any]]) -> tuple[list[np.ndarray], dict[str, Any]]:
    """Bank rows from the clients' DP releases (post-processing).

    Releases that share the public centres and clip (same digest) are summed, so their
    noise averages out; the rows are the public centres and the noisy means of the
    clusters whose summed noisy count passes the threshold. The clients of a run derive
    the centres the same way, so they share one digest; should they not, only the largest
    group is used (rows clipped to different norms cannot be searched with one query
    clip) and the others are counted as ignored.
    """
    from fedpatch_app.model.dp import noisy_means

    groups: dict[str, list[Any]] = {}
    for _, part in holders:
        groups.setdefault(part.dp["digest"], []).append(part)
    digest = min(groups, key=lambda d: (-len(groups[d]), d))
    members = groups[digest]
    if len(groups) > 1:
        log.warning(
            "DP releases with %d different public centres/clips: using the %d release(s) "
            "of the largest group, ignoring %d",
            len(groups),
            len(members),
            len(holders) - len(members),
        )
    rows, counts, threshold = noisy_means(
        [m.features for m in members],
        [m.dp["counts"] for m in members],
        [m.dp["sigma-counts"] for m in members],
        centres=members[0].dp["centres"],
    )
    return [rows], {
        "groups": len(groups),
        "releases_ignored": len(holders) - len(members),
        "clusters_kept": int(counts.shape[0]),
        "public_centres": int(rows.shape[0] - counts.shape[0]),
        "clusters_sent": int(sum(p.features.shape[0] for _, p in holders)),
        "count_threshold": threshold,
        "clip": float(members[0].dp["clip"]),
    }


def _image_count(stats: Any) -> int | None:
    """Number of images a SproStatistics covers, if it records it."""
    for name in ("n_images", "num_images"):
        value = getattr(stats, name, None)
        if value is not None:
            return int(value)
    return None
