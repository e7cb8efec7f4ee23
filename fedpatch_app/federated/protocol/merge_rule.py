"""How the accepted coresets of a category become its global bank: the merge rule.

The protocol (`federation.Federation`) receives a `MergeRule` and calls its one method;
any object with that method plugs in without a change to the protocol. `RobustKCenter`
is fedpatch's rule: each category's coresets are screened by the robust merge
(`vetting.vet_category`: rows no other client supports are left out, the clients named),
each category's bank size follows from the patches that enter its merge
(`fairness.bank_budget`, as the centralized bank would have), and greedy k-center reduces
the union to that size (`model.merge.merge_category`), keeping a parent model's rows.
One category at a time: with the run's `RowStore`, a category's rows are read from disk
while it is screened and merged, and released before the next.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from fedpatch_app.defences.merge_support import vet_category
from fedpatch_app.defences.source_check_verdicts import row_partitions
from fedpatch_app.federated.protocol.results import BankInfo, CategoryMerge, Holders
from fedpatch_app.federated.registry import ClientRegistry
from fedpatch_app.model.embedding import FeatureSpec
from fedpatch_app.model.merge import MergedBank, merge_category
from fedpatch_app.model.patchcore import Bank
from fedpatch_app.model.row_store import RowStore, release
from fedpatch_app.settings import RunSettings

if TYPE_CHECKING:
    from fedpatch_app.inspection.model_folder import Model

log = logging.getLogger(__name__)


class MergeRule(Protocol):
    """From each category's accepted coresets to its global bank."""

    def merge(
        self,
        held: Mapping[str, Holders],
        *,
        screen: bool = True,
        only: Collection[str] | None = None,
    ) -> dict[str, CategoryMerge]:
        """The merged bank of each category of `held` (those in `only`, when given: the
        others count toward the bank sizes only), with its facts, the coresets that entered
        (the rows left out, and why, in `BankInfo.support`) and each row's partition.
        `held` maps a category to its holders `(node id, coreset)` in data order; with
        `screen` False they were screened before and enter as they are. A category left
        without rows is left out of the result."""
        ...


@dataclass
class RobustKCenter:
    """Robust merge, then greedy k-center to the centralized bank's size (module doc)."""

    settings: RunSettings
    spec: FeatureSpec
    registry: ClientRegistry
    parent: Model | None = None
    device: Any = "cpu"
    #: Where each category's union is written and memory-mapped during its merge (None:
    #: in memory); the protocol sets its run's store (`Federation`).
    store: RowStore | None = None

    def merge(
        self,
        held: Mapping[str, Holders],
        *,
        screen: bool = True,
        only: Collection[str] | None = None,
    ) -> dict[str, CategoryMerge]:
        if screen:
            entering, support = self._screen(held)
        else:
            entering, support = {cat: h for cat, h in held.items() if h}, {}
        budget = self._budget(entering)
        return {
            cat: self._merge_one(cat, holders, budget[cat], support.get(cat))
            for cat, holders in entering.items()
            if only is None or cat in only
        }

    def _screen(
        self, held: Mapping[str, Holders]
    ) -> tuple[dict[str, Holders], dict[str, dict[str, Any]]]:
        """Each category's coresets less the rows the robust merge leaves out."""
        vetted: dict[str, Holders] = {}
        support: dict[str, dict[str, Any]] = {}
        for cat, holders in held.items():
            if not holders:
                continue
            parent = self._parent_bank(cat)
            kept, support[cat] = vet_category(
                self.registry,
                cat,
                holders,
                self.settings,
                parent=None if parent is None else parent.features,
                device=self.device,
            )
            vetted[cat] = [(n, p) for n, p in kept if len(p.features)]
            release(*(p.features for _, p in holders))
            if not vetted[cat]:
                log.warning("%s: no coreset row is left after the robust merge", cat)
        return {cat: v for cat, v in vetted.items() if v}, support

    def _budget(self, entering: Mapping[str, Holders]) -> dict[str, int]:
        """Each category's bank size from the patches of the coresets that enter its merge."""
        from fedpatch_app.defences.bank_size import bank_budget

        patches = {
            cat: sum(p.n_patches for _, p in holders) + self._parent_patches(cat)
            for cat, holders in entering.items()
        }
        return bank_budget(patches, self.settings.coreset_ratio, self.settings.bank_budget)

    def _merge_one(
        self, cat: str, holders: Holders, k: int, support: dict[str, Any] | None
    ) -> CategoryMerge:
        parent = self._parent_bank(cat)
        merged: MergedBank = merge_category(
            cat,
            [p for _, p in holders],
            k,
            self.spec,
            device=self.device,
            private=self.settings.dp.enabled,
            parent=parent,
            store=self.store,
        )
        release(*(p.features for _, p in holders))
        info = BankInfo.of_merge(
            merged.info, [self.registry.clients[n].partition_id for n, _ in holders]
        )
        info.support = support
        if parent is not None and self.parent is not None:
            info.train_images += self.parent.categories[cat].train_images
        if self.settings.bank_budget != "volume":
            info.budget = self.settings.bank_budget
        sources = None
        if merged.sources is not None:
            sources = row_partitions(merged.sources, info.clients)
        return CategoryMerge(merged.bank, info, list(holders), sources)

    def _parent_patches(self, cat: str) -> int:
        parent = self._parent_bank(cat)
        return 0 if parent is None else parent.n_patches

    def _parent_bank(self, cat: str) -> Bank | None:
        if self.parent is None or cat not in self.parent.categories:
            return None
        return self.parent.categories[cat].bank


def inherited_banks(
    parent: Model | None, merged: Collection[str], known: Collection[str]
) -> dict[str, CategoryMerge]:
    """The parent model's banks of the run's categories no new client holds, unchanged."""
    if parent is None:
        return {}
    out = {}
    for cat, entry in parent.categories.items():
        if cat in merged or cat not in known:
            continue
        bank = entry.bank
        info = BankInfo(
            size=bank.size,
            covering_radius=bank.radius,
            total_patches=bank.n_patches,
            train_images=entry.train_images,
            clients=[],
            inherited=True,
        )
        out[cat] = CategoryMerge(bank, info)
    return out
