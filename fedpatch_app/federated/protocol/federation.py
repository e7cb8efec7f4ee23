"""The one-shot federated PatchCore protocol, phase by phase.

`Federation` holds what is fixed for a run (the plan as first sent, the merge rule, the
client registry, a parent model); each phase takes the results of the phases before it
and returns its own (`results`), and talks to the nodes only through a `link.GridLink`.
It writes no file: the ServerApp's run (`server.run_server`) calls the phases in order and
hands what they return to the outputs layer.

1. train: every connected node gets the run plan; each replies with a local coreset per
   category it holds (oversampled by `local-oversample`) and its patch/image counts.
2. accept: every reply is checked (`accept.accept_train`); the plan gets the categories
   the replies hold and their agreed sizes (`category_sizes`).
3. merge: per category the accepted coresets become the global bank (`merge_rule`: the
   robust merge, then greedy k-center to the size the centralized bank would have).
4. evaluate (phase A, "score"): the banks go to every accepted node in ONE RecordDict,
   with which rows came from the same client (run labels, `source-check`); each node
   scores its test images, keeps its float maps on its own disk and replies with map
   ranges, image scores and how well its labelled defects stand out with the bank less
   each source (`evaluation.source_check`).
5. source check: a source whose rows hide the others' defects is flagged by name; scale:
   one global map scaling per category. Under `source-check-action = exclude`, re-merge:
   the flagged rows are left out, the category merged again and evaluated again
   ("rescore").
6. statistics (phase B, a QUERY message): each category's map scaling down; each node
   quantizes its maps to 16-bit levels and replies with sufficient statistics of
   AUC-sPRO. Nodes that answered phase A but were dropped get, in the same push, a
   release: remove your cached maps.
7. pool: the statistics pooled per category (`evaluation.pooling`): exactly the metrics of
   the centralized computation on the same quantized maps.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from flwr.app import ArrayRecord, MessageType, RecordDict

from fedpatch_app.defences.robust_scaling import RADIUS_FACTOR, global_scaling
from fedpatch_app.defences.source_check_verdicts import (
    checked_sources,
    excluded_holders,
    judge_category,
    pseudonyms,
)
from fedpatch_app.federated import messages as M
from fedpatch_app.federated.codec_source_check import SOURCES, encode_sources
from fedpatch_app.federated.protocol.accept import (
    Expected,
    NodeStatistics,
    accept_scores,
    accept_stats,
    accept_train,
    conflicting_images,
)
from fedpatch_app.federated.protocol.category_sizes import agreed_plan
from fedpatch_app.federated.protocol.link import GridLink
from fedpatch_app.federated.protocol.merge_rule import MergeRule, inherited_banks
from fedpatch_app.federated.protocol.results import (
    CategoryMerge,
    Merged,
    Pooled,
    Scaled,
    Scored,
    TrainAnswers,
    Trained,
)
from fedpatch_app.federated.registry import ClientRegistry, FederationError
from fedpatch_app.metrics.pooling import CategoryOutcome, ScoredImages, pool_category
from fedpatch_app.metrics.thresholds import category_thresholds
from fedpatch_app.model.merge import stable_order
from fedpatch_app.model.row_store import RowStore, release

if TYPE_CHECKING:
    from fedpatch_app.inspection.model_folder import Model

log = logging.getLogger(__name__)

__all__ = ["RESCORE", "Federation", "FederationError"]

#: The second evaluate exchange, after the source check left a client's rows out.
RESCORE = "rescore"


class Federation:
    """The protocol's phases for one run (see the module doc)."""

    def __init__(
        self,
        plan: M.Plan,
        rule: MergeRule,
        registry: ClientRegistry,
        *,
        parent: Model | None = None,
        store: RowStore | None = None,
    ) -> None:
        self.plan = plan
        self.settings = plan.settings
        self.rule = rule
        self.registry = registry
        self.parent = parent
        self.limits = M.TrainLimits.of(plan)
        #: Where the accepted coresets live (memory-mapped) until the run ends; None: in
        #: memory. A rule with a `store` attribute writes its unions there too.
        self.store = store
        if store is not None and hasattr(rule, "store"):
            rule.store = store

    # ------------------------------------------------------------------ train, accept

    def train(self, link: GridLink) -> TrainAnswers:
        """The plan to every connected node; their replies, matched to them, and what
        their claims are checked against."""
        s = self.settings
        log.info(
            "federation: fingerprint %s, coreset ratio %s, local oversample %s, "
            "min clients %d, categories %s",
            self.plan.fingerprint,
            s.coreset_ratio,
            s.local_oversample,
            s.min_clients,
            ", ".join(self.plan.categories),
        )
        link.register()
        expected = self._expected(link)
        content = RecordDict({M.CONFIG: self.plan.to_config(phase="train")})
        log.info("train: sending the plan to %d node(s)", len(self.registry.active()))
        return TrainAnswers(link.exchange("train", content, MessageType.TRAIN), expected)

    def _expected(self, link: GridLink) -> Expected:
        """What the nodes' claims are checked against: the partition's shares (where the
        server sees the data) and the partitions the nodes' keys are bound to."""
        from fedpatch_app.federated.data import expected_shares
        from fedpatch_app.federated.identity import bind_nodes, load_identities

        bound = None
        if self.settings.node_identities:
            identities = load_identities(self.settings.node_identities)
            bound = bind_nodes(link.nodes(), identities)
        s = self.settings
        return Expected(expected_shares(self.plan), bound, s.dp.enabled, s.calibration_folds >= 2)

    def accept(self, answers: TrainAnswers) -> Trained:
        """The valid train replies and the plan agreed from them."""
        expected = answers.expected
        replies = accept_train(
            self.registry, answers.answered, self.limits, expected, keep=self._spill
        )
        return Trained(replies, agreed_plan(self.plan, replies, self.registry), expected)

    def _spill(self, decoded: M.TrainReply) -> None:
        """A decoded reply's coresets to the run's store, mapped from there."""
        if self.store is None:
            return
        for cat, part in decoded.coresets.items():
            part.features = self.store.put(cat, part.features)

    # ------------------------------------------------------------------ merge

    def merge(self, trained: Trained) -> Merged:
        """Each category's global bank from its holders' coresets (`self.rule`); a parent
        model's banks of categories no client holds are kept."""
        start = time.perf_counter()
        held = {}
        for cat in trained.plan.categories:
            held[cat] = stable_order(
                [(n, r.coresets[cat]) for n, r in trained.replies.items() if cat in r.coresets],
                lambda node: self.registry.clients[node].partition_id,
            )
            release(*(p.features for _, p in held[cat]))  # read for their digests
        merged = self._stored(self.rule.merge(held))
        inherited = inherited_banks(self.parent, set(merged), trained.plan.categories)
        self.registry.seconds["merge"] = round(time.perf_counter() - start, 3)
        if not merged and not inherited:
            raise FederationError("train: no client sent a coreset for any category")
        return Merged({**inherited, **merged})

    def _stored(self, merged: dict[str, CategoryMerge]) -> dict[str, CategoryMerge]:
        """Each merged bank's rows to the run's store as soon as it is made (the same
        bytes, mapped from there): the banks are read from disk where they are sent or
        written, one at a time, instead of all held in memory beside the broadcast."""
        if self.store is not None:
            for cat, m in merged.items():
                m.bank.features = self.store.put(f"bank-{cat}", m.bank.features)
        return merged

    # ------------------------------------------------------------------ evaluate (A)

    def evaluate(
        self, link: GridLink, trained: Trained, merged: Merged, *, check: bool = True
    ) -> Scored:
        """The banks to every active node (with each row's source under run labels when
        `check`: the source check runs once, on the banks as first merged); their image
        scores and map ranges, checked."""
        phase = "evaluate" if check else RESCORE
        banks = merged.banks
        extra: dict[str, Any] = {}
        # DP banks hold clipped features: the clients clip their queries the same way.
        for cat, bank in banks.items():
            if bank.query_clip > 0:
                extra[f"{M.QUERY_CLIP}.{cat}"] = float(bank.query_clip)
        arrays = ArrayRecord()
        for cat, bank in banks.items():  # one bank read at a time
            arrays[cat] = M.encode_banks({cat: bank.features}, self.settings.transport_dtype)[cat]
            release(bank.features)
        log.info(
            "evaluate: broadcasting %d bank(s) to %d node(s)",
            len(arrays),
            len(self.registry.active()),
        )
        config = trained.plan.to_config(phase=M.PHASE_SCORE, **extra)
        content = RecordDict({M.BANKS: arrays, M.CONFIG: config})
        checked = checked_sources(merged.row_sources(), self.settings.source_check and check)
        labelled = {cat: pseudonyms(rows) for cat, rows in checked.items()}
        if labelled:
            labels = {cat: rows for cat, (rows, _) in labelled.items()}
            content.array_records[SOURCES] = encode_sources(labels)
        answered = link.exchange(phase, content, MessageType.EVALUATE)
        judged = {cat: len(to_partition) for cat, (_, to_partition) in labelled.items()}
        replies = accept_scores(
            self.registry,
            answered,
            tuple(banks),
            trained.plan.fingerprint,
            trained.expected,
            judged,
        )
        excluded = conflicting_images(self.registry, replies)
        self.registry.require("evaluate")
        return Scored(replies, excluded, labelled)

    def source_check(self, scored: Scored) -> dict[str, dict[str, Any]]:
        """Each checked category's verdicts; a client whose rows hide the others'
        labelled defects is flagged by name."""
        return {
            cat: judge_category(
                self.registry, cat, labelled, scored.replies, self.settings.source_check_gain
            )
            for cat, labelled in scored.labelled.items()
        }

    def scale(self, merged: Merged, scored: Scored, before: Scaled | None = None) -> Scaled:
        """Each scored category's global map scaling (replacing `before`'s); clients above
        the robust bound are named."""
        ranges: dict[str, dict[int, tuple[float, float]]] = {}
        for node, decoded in scored.replies.items():
            for cat, item in [*decoded.categories.items(), *decoded.calibration.items()]:
                lo, hi = ranges.setdefault(cat, {}).get(node, (item.map_min, item.map_max))
                ranges[cat][node] = (min(lo, item.map_min), max(hi, item.map_max))
        scalings = dict(before.scalings) if before is not None else {}
        facts = dict(before.facts) if before is not None else {}
        for cat, per_node in ranges.items():
            radius = float(merged.categories[cat].info.covering_radius)
            decision = global_scaling(per_node, mode=self.settings.map_scaling, radius=radius)
            scalings[cat], facts[cat] = decision.scaling, decision.facts()
            for node in decision.above:
                self.registry.flag(
                    node,
                    "evaluate",
                    f"{cat}: map maximum {per_node[node][1]:.4g} above the bound "
                    f"{decision.bound:.4g} ({RADIUS_FACTOR:g} x the bank's covering radius): "
                    "its values above it share the top level",
                )
        return Scaled(scalings, facts)

    def remerge(self, merged: Merged) -> Merged | None:
        """Under `source-check-action = exclude`: the categories where the source check
        flagged clients merged again without their rows (the bank's size target counts
        the others' patches only); None when no bank changes."""
        if self.settings.source_check_action != "exclude":
            return None
        entered = merged.entered()
        # `excluded_holders` records the left-out partitions in the verdicts it reads.
        verdicts = {
            cat: {"source_check": m.info.source_check or {}} for cat, m in merged.categories.items()
        }
        changed = excluded_holders(self.registry, verdicts, entered)
        if not changed:
            return None
        again = self._stored(
            self.rule.merge({**entered, **changed}, screen=False, only=set(changed))
        )
        out = dict(merged.categories)
        for cat, remade in again.items():
            remade.info.support = merged.categories[cat].info.support
            remade.info.source_check = merged.categories[cat].info.source_check
            out[cat] = remade
        log.info("source check: %s merged again and scored again", ", ".join(sorted(changed)))
        return Merged(out)

    # ------------------------------------------------------------------ statistics (B)

    def statistics(
        self, link: GridLink, trained: Trained, merged: Merged, scored: Scored, scaled: Scaled
    ) -> dict[int, NodeStatistics]:
        """The map scalings to every active node, a release to every node dropped after
        scoring; the statistics replies, checked."""
        ranges = {cat: (s.low, s.high) for cat, s in scaled.scalings.items()}
        extra = {**M.scaling_config(ranges), **M.exclusion_config(scored.excluded)}
        config = trained.plan.to_config(phase=M.PHASE_STATS, **extra)
        release = RecordDict({M.CONFIG: trained.plan.to_config(phase=M.PHASE_RELEASE)})
        answered_a = self.registry.answered
        scored_by = answered_a.get("evaluate", set()) | answered_a.get(RESCORE, set())
        dropped = [n for n in sorted(scored_by) if self.registry.clients[n].status == "dropped"]
        answered = link.exchange(
            "query",
            RecordDict({M.CONFIG: config}),
            MessageType.QUERY,
            unread=[(node, release) for node in dropped],
        )
        return accept_stats(
            self.registry,
            answered,
            scored.replies,
            tuple(merged.banks),
            trained.plan.fingerprint,
            scored.excluded,
            trained.plan.sizes,
        )

    # ------------------------------------------------------------------ pool

    def pool(
        self,
        merged: Merged,
        scored: Scored,
        scaled: Scaled,
        stats: dict[int, NodeStatistics],
    ) -> Pooled:
        """The pooled metrics per category from the clients' statistics."""
        t0 = time.perf_counter()
        outcomes: dict[str, CategoryOutcome] = {}
        for cat in merged.categories:
            # In the data's order (accept_stats), not by node id: float sums follow it.
            holders = [n for n in stats if cat in stats[n].stats]
            if not holders and not any(cat in s.calibration for s in stats.values()):
                log.warning("%s: no client evaluated or calibrated this category", cat)
                continue
            outcomes[cat] = self._pool(cat, holders, merged, scored, scaled, stats)
        self.registry.seconds["pooled_metrics"] = round(time.perf_counter() - t0, 3)
        return Pooled(stats, outcomes)

    def _thresholds(
        self, cat: str, scaled: Scaled, stats: dict[int, NodeStatistics]
    ) -> dict[str, Any] | None:
        """Thresholds from every client's calibration histograms of this category, or the
        parent model's where no calibration image of it was scored in this run."""
        parts = [s.calibration[cat] for s in stats.values() if cat in s.calibration]
        s = self.settings
        found = category_thresholds(
            parts, scaled.scalings[cat], s.target_false_reject, s.target_pixel_fpr
        )
        if found is not None and s.calibration_folds >= 2:
            found["cross_fitted_folds"] = s.calibration_folds
        if found is None and self.parent is not None and cat in self.parent.categories:
            inherited = self.parent.categories[cat].thresholds
            return None if inherited is None else {**inherited, "inherited": True}
        return found

    def _images(self, cat: str, holders: list[int], scored: Scored) -> list[ScoredImages]:
        """Each holder's scored test images of `cat`, less those claimed twice."""
        images = []
        excluded = scored.excluded.get(cat, set())
        for n in holders:
            item = scored.replies[n].categories[cat]
            kept = [i for i, p in enumerate(item.rel_paths) if p not in excluded]
            self.registry.clients[n].test_images[cat] = len(kept)
            images.append(
                ScoredImages(
                    [item.rel_paths[i] for i in kept],
                    [item.defects[i] for i in kept],
                    item.scores[kept],
                )
            )
        return images

    def _pool(
        self,
        cat: str,
        holders: list[int],
        merged: Merged,
        scored: Scored,
        scaled: Scaled,
        stats: dict[int, NodeStatistics],
    ) -> CategoryOutcome:
        info = merged.categories[cat].info
        outcome = pool_category(
            cat,
            [stats[n].stats[cat] for n in holders],
            self._images(cat, holders, scored),
            scaled.scalings[cat],
            train_images=info.train_images,
            calibration_images=sum(
                r.calibration[cat].count for r in scored.replies.values() if cat in r.calibration
            ),
            thresholds=self._thresholds(cat, scaled, stats),
            bank_size=info.size,
            covering_radius=info.covering_radius,
            clients=[self.registry.clients[n].partition_id for n in holders],
        )
        block = outcome.block
        log.info(
            "%s (pooled over %d clients): AUC-sPRO@0.05 %s, @0.3 %s, image AUROC %s",
            cat,
            len(holders),
            block["auc_spro"]["0.05"],
            block["auc_spro"]["0.3"],
            block["image_auroc"]["mean"],
        )
        return outcome
