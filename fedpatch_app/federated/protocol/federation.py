"""PatchCoreStrategy: one-shot federated PatchCore as a Flower strategy.

`start` runs the whole protocol and reads top to bottom as its phases:

1. train: every connected node gets the run plan; each replies with a local coreset per
   category it holds (oversampled by `local-oversample`) and its patch/image counts.
2. merge: every reply is checked (`accept.accept_train`); per category the union of the
   accepted coresets is reduced by greedy k-center (`model.merge`) to the size the
   centralized bank would have. The banks are handed to `on_banks` at once (the server
   writes them before anything else can fail).
3. evaluate, phase A ("score"): the banks go to every accepted node in ONE RecordDict,
   with which rows came from the same client (run labels, `source-check`); each node scores its
   test images, keeps its float maps on its own disk and replies with per-category map
   ranges, its image scores and how well its labelled defects stand out with the bank
   less each source (`evaluation.source_check`); a source whose rows hide the others'
   defects is flagged by name. Under `source-check-action = exclude` its rows are left
   out, the category merged again and the new banks scored in a second round ("rescore").
4. evaluate, phase B ("stats", a QUERY message): the server sends each category's global
   map scaling; each node quantizes its maps to 16-bit levels and replies with sufficient
   statistics of AUC-sPRO, which the server pools (`evaluation.pooling`): the pooled
   metrics are exactly those of the centralized computation on the same quantized maps.

Everything the run learns (clients, bytes, times, banks, metrics, who was dropped and
why) is kept here for the ServerApp to write.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp.grid import Grid
from flwr.serverapp.strategy import Result, Strategy

from fedpatch_app.evaluation.export import MapScaling
from fedpatch_app.evaluation.pooling import CategoryOutcome, ScoredImages, pool_category
from fedpatch_app.evaluation.robust_scaling import RADIUS_FACTOR, global_scaling
from fedpatch_app.evaluation.thresholds import category_thresholds
from fedpatch_app.federated import messages as M
from fedpatch_app.federated.protocol.accept import (
    Expected,
    NodeStatistics,
    accept_scores,
    accept_stats,
    accept_train,
    conflicting_images,
)
from fedpatch_app.federated.protocol.category_sizes import agreed_plan
from fedpatch_app.federated.codec_check import SOURCES, encode_sources
from fedpatch_app.federated.registry import ClientRegistry, FederationError
from fedpatch_app.federated.source_vetting import (
    checked_sources,
    excluded_holders,
    judge_category,
    pseudonyms,
    row_partitions,
)
from fedpatch_app.federated.vetting import vet_category
from fedpatch_app.model.merge import MergedBank, merge_category, stable_order
from fedpatch_app.model.patchcore import Bank

if TYPE_CHECKING:
    from fedpatch_app.inspection.model_folder import Model

log = logging.getLogger(__name__)

__all__ = ["FederationError", "PatchCoreStrategy"]

ROUND = 1
#: The second evaluate round, after the source check left a client's rows out.
RESCORE = "rescore"


class PatchCoreStrategy(Strategy):
    """Federated PatchCore: local coresets up, k-center merge, global banks down,
    sufficient statistics up, exact pooled metrics (see the module doc)."""

    def __init__(
        self,
        plan: M.Plan,
        *,
        merge_device: Any = "cpu",
        on_banks: Callable[[dict[str, Bank]], None] | None = None,
        parent: Model | None = None,
    ) -> None:
        self.plan = plan
        self.settings = plan.settings
        self.merge_device = merge_device
        self.on_banks = on_banks
        self.parent = parent
        self.known_categories = tuple(plan.categories)
        self.limits = M.TrainLimits.of(plan)
        self.registry = ClientRegistry(plan.settings.min_clients, plan.settings.round_timeout)
        self.banks: dict[str, Bank] = {}
        self.bank_info: dict[str, dict[str, Any]] = {}
        self.outcomes: dict[str, CategoryOutcome] = {}
        self.scalings: dict[str, MapScaling] = {}
        self.scaling_facts: dict[str, dict[str, Any]] = {}
        self.expected = Expected(private=plan.settings.dp.enabled)
        #: Test images claimed by several nodes, per category: left out of the evaluation.
        self.excluded: dict[str, set[str]] = {}
        self.train_replies: dict[int, M.TrainReply] = {}
        self._scores: dict[int, M.ScoreReply] = {}
        self._release: list[Message] = []
        #: Per category, the partition each bank row came from (None: not known, DP).
        self.row_sources: dict[str, np.ndarray | None] = {}
        #: The categories the source check judges: rows under this run's labels, and
        #: label -> partition.
        self._labelled: dict[str, tuple[np.ndarray, dict[int, int]]] = {}
        #: Per category, the checked coresets that entered its merge.
        self._vetted: dict[str, list] = {}

    # ------------------------------------------------------------------ the run

    def start(
        self,
        grid: Grid,
        initial_arrays: ArrayRecord | None = None,
        num_rounds: int = 1,
        timeout: float | None = None,
        train_config: ConfigRecord | None = None,
        evaluate_config: ConfigRecord | None = None,
        evaluate_fn: Any = None,
    ) -> Result:
        """The whole one-shot protocol: train -> merge -> score -> statistics -> pool."""
        self.summary()
        self.registry.register(grid.get_node_ids())
        self.know(grid)
        train = self.configure_train(ROUND, ArrayRecord(), ConfigRecord(), grid)
        banks, train_metrics = self.aggregate_train(ROUND, self._exchange(grid, train))
        score = self.configure_evaluate(ROUND, banks, ConfigRecord(), grid)
        self.aggregate_evaluate(ROUND, self._exchange(grid, score))
        if self._exclude_flagged():
            banks = self._bank_arrays()
            again = self.configure_evaluate(ROUND, banks, ConfigRecord(), grid, phase=RESCORE)
            self.aggregate_evaluate(ROUND, self._exchange(grid, again), phase=RESCORE)
        query = self.configure_query(ROUND)
        metrics = self.aggregate_query(self._exchange(grid, query))
        return Result(
            arrays=banks,
            train_metrics_clientapp={ROUND: train_metrics},
            evaluate_metrics_clientapp={ROUND: metrics},
        )  # fmt: skip

    def know(self, grid: Grid) -> None:
        """What the nodes' claims are checked against: the partition's shares (where the
        server sees the data) and the partitions the nodes' keys are bound to."""
        from fedpatch_app.federated.data import expected_shares
        from fedpatch_app.federated.identity import bind_nodes, load_identities

        bound = None
        if self.settings.node_identities:
            identities = load_identities(self.settings.node_identities)
            bound = bind_nodes(grid.get_nodes(), identities)
        shares = expected_shares(self.plan)
        self.expected = Expected(shares, bound, self.settings.dp.enabled)

    def _exchange(self, grid: Grid, messages: Iterable[Message]) -> list[Message]:
        return list(grid.send_and_receive(list(messages), timeout=self.settings.round_timeout))

    def summary(self) -> None:
        s = self.settings
        log.info(
            "PatchCoreStrategy: fingerprint %s, coreset ratio %s, local oversample %s, "
            "min clients %d, categories %s", self.plan.fingerprint, s.coreset_ratio,
            s.local_oversample, s.min_clients, ", ".join(self.known_categories),
        )  # fmt: skip

    def _messages(self, phase: str, content: RecordDict, kind: str) -> list[Message]:
        """One instruction per active node, all sharing `content` (uploaded once),
        recorded so that `aggregate_*` can match the replies to them."""
        messages = [
            Message(content, client.node_id, kind, group_id=str(ROUND))
            for client in self.registry.active()
        ]
        return self.registry.send(phase, messages)

    # ------------------------------------------------------------------ train + merge

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        self.registry.register(grid.get_node_ids())
        content = RecordDict({M.CONFIG: self.plan.to_config(phase="train", **dict(config))})
        log.info("train: sending the plan to %d node(s)", len(self.registry.active()))
        return self._messages("train", content, MessageType.TRAIN)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord, MetricRecord]:
        """Check the replies, then merge per category; the global banks as arrays."""
        answered = self.registry.collect("train", replies)
        self.train_replies = accept_train(self.registry, answered, self.limits, self.expected)
        self.plan = agreed_plan(self.plan, self.train_replies, self.registry)
        self.known_categories = self.plan.categories
        start = time.perf_counter()
        for cat, merged in self._merge().items():
            self.banks[cat], self.bank_info[cat] = merged.bank, merged.info
        self.registry.seconds["merge"] = round(time.perf_counter() - start, 3)
        if not self.banks:
            raise FederationError("train: no client sent a coreset for any category")
        if self.on_banks is not None:
            self.on_banks(dict(self.banks))
        arrays = self._bank_arrays()
        rows = int(sum(b.size for b in self.banks.values()))
        metrics = {
            "clients": len(self.train_replies),
            "categories": len(self.banks),
            "bank-rows": rows,
        }
        return arrays, MetricRecord(metrics)

    def _bank_arrays(self) -> ArrayRecord:
        return M.encode_banks(
            {c: b.features for c, b in self.banks.items()}, self.settings.transport_dtype
        )

    def _merge(self) -> dict[str, MergedBank]:
        held = {
            cat: stable_order(
                [
                    (nid, r.coresets[cat])
                    for nid, r in self.train_replies.items()
                    if cat in r.coresets
                ],
                lambda node: self.registry.clients[node].partition_id,
            )
            for cat in self.known_categories
        }
        vetted: dict[str, list] = {}
        support: dict[str, dict[str, Any]] = {}
        for cat, holders in held.items():
            if holders:
                parent = self._parent_bank(cat)
                kept, support[cat] = vet_category(
                    self.registry, cat, holders, self.settings,
                    parent=None if parent is None else parent.features, device=self.merge_device,
                )  # fmt: skip
                vetted[cat] = [(n, p) for n, p in kept if len(p.features)]
                if not vetted[cat]:
                    log.warning("%s: no coreset row is left after the robust merge", cat)
        vetted = {cat: v for cat, v in vetted.items() if v}
        self._vetted = vetted
        budget = self._budget(vetted)
        merged = {
            cat: self._merge_one(cat, v, budget[cat], support[cat]) for cat, v in vetted.items()
        }
        return {**self._inherited(set(vetted)), **merged}

    def _budget(self, vetted: dict[str, list]) -> dict[str, int]:
        """Each category's bank size from the patches of the coresets that enter its merge."""
        from fedpatch_app.evaluation.fairness import bank_budget

        patches = {
            cat: sum(p.n_patches for _, p in v) + self._parent_patches(cat)
            for cat, v in vetted.items()
        }
        return bank_budget(patches, self.settings.coreset_ratio, self.settings.bank_budget)

    def _exclude_flagged(self) -> bool:
        """Under `source-check-action = exclude`: the categories where the source check
        flagged clients are merged again without their rows (the bank's size target counts
        the others' patches only) and written at once; True when any bank changed."""
        if self.settings.source_check_action != "exclude":
            return False
        changed = excluded_holders(self.registry, self.bank_info, self._vetted)
        if not changed:
            return False
        self._vetted.update(changed)
        budget = self._budget(self._vetted)
        for cat in changed:
            check = self.bank_info[cat]["source_check"]
            merged = self._merge_one(cat, changed[cat], budget[cat], self.bank_info[cat]["support"])
            self.banks[cat], self.bank_info[cat] = merged.bank, merged.info
            merged.info["source_check"] = check
        if self.on_banks is not None:
            self.on_banks(dict(self.banks))
        log.info("source check: %s merged again and scored again", ", ".join(sorted(changed)))
        return True

    def _merge_one(self, cat: str, holders: list, k: int, support: dict[str, Any]) -> MergedBank:
        parent = self._parent_bank(cat)
        merged = merge_category(
            cat, [p for _, p in holders], k, self.plan.spec,
            device=self.merge_device, private=self.settings.dp.enabled, parent=parent,
        )  # fmt: skip
        info = merged.info
        info["clients"] = [self.registry.clients[n].partition_id for n, _ in holders]
        if merged.sources is not None:
            self.row_sources[cat] = row_partitions(merged.sources, info["clients"])
        info["support"] = support
        if parent is not None:
            info["train_images"] += self.parent.categories[cat].train_images
        if self.settings.bank_budget != "volume":
            info["budget"] = self.settings.bank_budget
        return merged

    def _parent_patches(self, cat: str) -> int:
        parent = self._parent_bank(cat)
        return 0 if parent is None else parent.n_patches

    def _parent_bank(self, cat: str) -> Bank | None:
        if self.parent is None or cat not in self.parent.categories:
            return None
        return self.parent.categories[cat].bank

    def _inherited(self, merged: set[str]) -> dict[str, MergedBank]:
        """The parent model's banks of categories no new client holds, unchanged."""
        if self.parent is None:
            return {}
        out = {}
        for cat, entry in self.parent.categories.items():
            if cat in merged or cat not in self.known_categories:
                continue
            bank = entry.bank
            out[cat] = MergedBank(bank, {
                "size": bank.size, "covering_radius": bank.radius, "total_patches": bank.n_patches,
                "train_images": entry.train_images, "inherited": True, "clients": [],
            })  # fmt: skip
        return out

    # ------------------------------------------------------------------ evaluate: phase A

    def configure_evaluate(
        self,
        server_round: int,
        arrays: ArrayRecord,
        config: ConfigRecord,
        grid: Grid,
        phase: str = "evaluate",
    ) -> Iterable[Message]:
        extra = dict(config)
        # DP banks hold clipped features: the clients clip their queries the same way.
        for cat, bank in self.banks.items():
            if bank.query_clip > 0:
                extra[f"{M.QUERY_CLIP}.{cat}"] = float(bank.query_clip)
        plan = self.plan.to_config(phase=M.PHASE_SCORE, **extra)
        log.info(
            "evaluate: broadcasting %d bank(s) to %d node(s)",
            len(arrays),
            len(self.registry.active()),
        )
        content = RecordDict({M.BANKS: arrays, M.CONFIG: plan})
        # The source check runs once, on the banks as first merged.
        checked = checked_sources(
            self.row_sources, self.settings.source_check and phase == "evaluate"
        )
        self._labelled = {cat: pseudonyms(rows) for cat, rows in checked.items()}
        if checked:
            labels = {cat: rows for cat, (rows, _) in self._labelled.items()}
            content.array_records[SOURCES] = encode_sources(labels)
        return self._messages(phase, content, MessageType.EVALUATE)

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message], phase: str = "evaluate"
    ) -> MetricRecord:
        """Phase A: image scores and map ranges; each category's global map scaling."""
        answered = self.registry.collect(phase, replies)
        self._scores = accept_scores(
            self.registry, answered, tuple(self.banks), self.plan.fingerprint, self.expected,
            {cat: len(to_partition) for cat, (_, to_partition) in self._labelled.items()},
        )  # fmt: skip
        self.excluded = conflicting_images(self.registry, self._scores)
        self.registry.require("evaluate")
        for cat, labelled in self._labelled.items():
            self.bank_info[cat]["source_check"] = judge_category(
                self.registry, cat, labelled, self._scores, self.settings.source_check_gain
            )
        self._release = self._release_messages()
        ranges: dict[str, dict[int, tuple[float, float]]] = {}
        for node, decoded in self._scores.items():
            for cat, item in [*decoded.categories.items(), *decoded.calibration.items()]:
                lo, hi = ranges.setdefault(cat, {}).get(node, (item.map_min, item.map_max))
                ranges[cat][node] = (min(lo, item.map_min), max(hi, item.map_max))
        for cat, per_node in ranges.items():
            self._scale(cat, per_node)
        return MetricRecord({"clients": len(self._scores)})

    def _scale(self, cat: str, ranges: dict[int, tuple[float, float]]) -> None:
        """The category's global map scaling; clients above the robust bound are named."""
        radius = float(self.bank_info[cat]["covering_radius"])
        decision = global_scaling(ranges, mode=self.settings.map_scaling, radius=radius)
        self.scalings[cat] = decision.scaling
        self.scaling_facts[cat] = decision.facts()
        for node in decision.above:
            self.registry.flag(
                node, "evaluate", f"{cat}: map maximum {ranges[node][1]:.4g} above the bound "
                f"{decision.bound:.4g} ({RADIUS_FACTOR:g} x the bank's covering radius): its "
                "values above it share the top level",
            )  # fmt: skip

    # ------------------------------------------------------------------ evaluate: phase B

    def _release_messages(self) -> list[Message]:
        """For nodes that answered phase A but were dropped: remove your cached maps (sent
        with phase B; their replies are not waited for beyond it, nor read)."""
        plan = RecordDict({M.CONFIG: self.plan.to_config(phase=M.PHASE_RELEASE)})
        return [
            Message(plan, node, MessageType.QUERY, group_id=str(ROUND))
            for node in sorted(
                self.registry.answered.get("evaluate", set())
                | self.registry.answered.get(RESCORE, set())
            )
            if self.registry.clients[node].status == "dropped"
        ]

    def configure_query(self, server_round: int) -> list[Message]:
        ranges = {cat: (s.low, s.high) for cat, s in self.scalings.items()}
        extra = {**M.scaling_config(ranges), **M.exclusion_config(self.excluded)}
        plan = self.plan.to_config(phase=M.PHASE_STATS, **extra)
        query = self._messages("query", RecordDict({M.CONFIG: plan}), MessageType.QUERY)
        return query + self._release

    def aggregate_query(self, replies: Iterable[Message]) -> MetricRecord:
        """Phase B: pooled metrics per category from the clients' statistics."""
        release = {m.metadata.message_id for m in self._release}
        replies = [r for r in replies if r.metadata.reply_to_message_id not in release]
        answered = self.registry.collect("query", replies)
        stats = accept_stats(
            self.registry, answered, self._scores, tuple(self.banks), self.plan.fingerprint,
            self.excluded, self.plan.sizes,
        )  # fmt: skip
        t0 = time.perf_counter()
        for cat in self.banks:
            # In the data's order (accept_stats), not by node id: float sums follow it.
            holders = [n for n in stats if cat in stats[n].stats]
            if not holders and not any(cat in s.calibration for s in stats.values()):
                log.warning("%s: no client evaluated or calibrated this category", cat)
                continue
            self.outcomes[cat] = self._pool(cat, holders, stats)
        self.registry.seconds["pooled_metrics"] = round(time.perf_counter() - t0, 3)
        metrics = MetricRecord({"categories": len(self.outcomes)})
        for cat, outcome in self.outcomes.items():
            for key, value in (
                ("auc-spro-0.05", outcome.block["auc_spro"].get("0.05")),
                ("image-auroc", outcome.block["image_auroc"].get("mean")),
            ):
                if value is not None:
                    metrics[f"{cat}.{key}"] = float(value)
        return metrics

    def _thresholds(self, cat: str, stats: dict[int, NodeStatistics]) -> dict[str, Any] | None:
        """Thresholds from every client's calibration histograms of this category, or the
        parent model's where no calibration image of it was scored in this run."""
        parts = [s.calibration[cat] for s in stats.values() if cat in s.calibration]
        s = self.settings
        found = category_thresholds(
            parts, self.scalings[cat], s.target_false_reject, s.target_pixel_fpr
        )
        if found is None and self._parent_bank(cat) is not None:
            inherited = self.parent.categories[cat].thresholds
            return None if inherited is None else {**inherited, "inherited": True}
        return found

    def _pool(self, cat: str, holders: list[int], stats: dict) -> CategoryOutcome:
        images = []
        excluded = self.excluded.get(cat, set())
        for n in holders:
            item = self._scores[n].categories[cat]
            kept = [i for i, p in enumerate(item.rel_paths) if p not in excluded]
            self.registry.clients[n].test_images[cat] = len(kept)
            images.append(
                ScoredImages(
                    [item.rel_paths[i] for i in kept],
                    [item.defects[i] for i in kept],
                    item.scores[kept],
                )
            )
        info = self.bank_info[cat]
        outcome = pool_category(
            cat,
            [stats[n].stats[cat] for n in holders],
            images,
            self.scalings[cat],
            train_images=info["train_images"],
            calibration_images=sum(
                r.calibration[cat].count for r in self._scores.values() if cat in r.calibration
            ),
            thresholds=self._thresholds(cat, stats),
            bank_size=info["size"],
            covering_radius=info["covering_radius"],
            clients=[self.registry.clients[n].partition_id for n in holders],
        )
        block = outcome.block
        log.info(
            "%s (pooled over %d clients): AUC-sPRO@0.05 %s, @0.3 %s, image AUROC %s",
            cat, len(holders), block["auc_spro"]["0.05"], block["auc_spro"]["0.3"],
            block["image_auroc"]["mean"],
        )  # fmt: skip
        return outcome

    # ------------------------------------------------------------------ facts

    def dropped(self) -> list[dict[str, Any]]:
        return self.registry.dropped()
