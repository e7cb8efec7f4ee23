"""What each phase of the federated protocol returns: typed results, passed on explicitly.

`Trained` (the accepted train replies and the agreed plan) -> `Merged` (one `CategoryMerge`
per category: bank, `BankInfo`, the coresets that entered, each row's partition) ->
`Scored` (the accepted evaluate replies, the test images left out, the source-check labels
sent) -> `Scaled` (each category's global map scaling) -> `Pooled` (the pooled metrics).
`FederationState` gathers them for the outputs layer, which writes them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from flwr.app import Message

from fedpatch_app.federated import messages as M
from fedpatch_app.federated.codec_train import LocalCoreset
from fedpatch_app.federated.protocol.accept import Expected, NodeStatistics
from fedpatch_app.federated.registry import ClientRegistry, ClientState
from fedpatch_app.metrics.map_scaling import MapScaling
from fedpatch_app.metrics.pooling import CategoryOutcome
from fedpatch_app.model.patchcore import Bank

#: One client's accepted coreset of a category: (node id, coreset).
Holder = tuple[int, LocalCoreset]
Holders = list[Holder]
#: The source-check labels sent for a category: each row's label, and label -> partition.
Labelled = tuple[np.ndarray, dict[int, int]]


@dataclass
class BankInfo:
    """What results.json says of one category's global bank (`federated.banks.<cat>`)."""

    size: int
    covering_radius: float
    total_patches: int
    train_images: int
    #: The partitions whose coresets entered the merge (none for an inherited bank).
    clients: list[int]
    target_size: int | None = None
    union_rows: int | None = None
    local_radius_max: float | None = None
    parent_rows: int | None = None
    merge_seconds: float | None = None
    #: The server's post-processing of the noisy releases (differential privacy).
    dp: dict[str, Any] | None = None
    #: The robust merge's facts: rows checked, left out and why, per client.
    support: dict[str, Any] | None = None
    #: The bank-size rule when it is not the default "volume".
    budget: str | None = None
    #: The source check's verdicts (and the partitions whose rows were left out).
    source_check: dict[str, Any] | None = None
    #: The parent model's bank, kept unchanged (no client of this run holds the category).
    inherited: bool = False
    #: Under share-mode relay: the SHA-256 of the bank every client merged (the server
    #: holds no bank).
    digest: str | None = None

    @classmethod
    def of_merge(cls, facts: dict[str, Any], clients: list[int]) -> BankInfo:
        """From `model.merge.merge_category`'s facts and the partitions merged."""
        return cls(
            size=facts["size"],
            covering_radius=facts["covering_radius"],
            total_patches=facts["total_patches"],
            train_images=facts["train_images"],
            clients=clients,
            target_size=facts["target_size"],
            union_rows=facts["union_rows"],
            local_radius_max=facts["local_radius_max"],
            parent_rows=facts["parent_rows"],
            merge_seconds=facts["merge_seconds"],
            dp=facts.get("dp"),
        )

    def to_dict(self) -> dict[str, Any]:
        """The results.json form, in its established key order."""
        if self.inherited:
            keys = ("size", "covering_radius", "total_patches", "train_images", "inherited")
            return {**{k: getattr(self, k) for k in keys}, "clients": self.clients}
        keys = (
            "size",
            "target_size",
            "covering_radius",
            "union_rows",
            "total_patches",
            "train_images",
            "local_radius_max",
            "parent_rows",
            "merge_seconds",
        )
        out = {k: getattr(self, k) for k in keys}
        if self.dp is not None:
            out["dp"] = self.dp
        out["clients"] = self.clients
        out["support"] = self.support
        for key in ("budget", "source_check", "digest"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        return out


@dataclass
class CategoryMerge:
    """One category's global bank and how it was made."""

    #: None under share-mode relay: the bank is on the clients only.
    bank: Bank | None
    info: BankInfo
    #: The (screened) coresets that entered the merge, in data order.
    holders: Holders = field(default_factory=list)
    #: The partition each bank row came from (-1: a parent model's row); None: not
    #: known (differential privacy, an inherited bank).
    row_sources: np.ndarray | None = None


@dataclass(frozen=True)
class TrainAnswers:
    """The train exchange: the replies matched to their nodes, and what the nodes'
    claims are checked against (each partition's share, the partitions keys are bound to)."""

    answered: list[tuple[ClientState, Message]]
    expected: Expected


@dataclass(frozen=True)
class Trained:
    """The train phase accepted: each node's checked reply (data order), the plan with
    the categories the replies hold and their agreed sizes, and what the later replies'
    claims are checked against."""

    replies: dict[int, M.TrainReply]
    plan: M.Plan
    expected: Expected


@dataclass(frozen=True)
class Merged:
    """Every category's global bank (inherited ones first, then the merged ones)."""

    categories: dict[str, CategoryMerge]

    @property
    def banks(self) -> dict[str, Bank]:
        return {cat: m.bank for cat, m in self.categories.items()}

    @property
    def infos(self) -> dict[str, BankInfo]:
        return {cat: m.info for cat, m in self.categories.items()}

    def entered(self) -> dict[str, Holders]:
        """The coresets that entered each merged (not inherited) category."""
        return {c: m.holders for c, m in self.categories.items() if not m.info.inherited}

    def row_sources(self) -> dict[str, np.ndarray | None]:
        return {c: m.row_sources for c, m in self.categories.items() if not m.info.inherited}

    def with_source_checks(self, checks: dict[str, dict[str, Any]]) -> Merged:
        """These banks with the source check's verdicts recorded in their facts."""
        out = dict(self.categories)
        for cat, facts in checks.items():
            info = dataclasses.replace(out[cat].info, source_check=facts)
            out[cat] = dataclasses.replace(out[cat], info=info)
        return Merged(out)


@dataclass(frozen=True)
class Scored:
    """The evaluate phase (A) accepted: image scores and map ranges per node (data
    order), the test images claimed twice (left out), the source-check labels sent."""

    replies: dict[int, M.ScoreReply]
    excluded: dict[str, set[str]]
    labelled: dict[str, Labelled]


@dataclass(frozen=True)
class Scaled:
    """Each category's global map scaling and the facts of its decision."""

    scalings: dict[str, MapScaling]
    facts: dict[str, dict[str, Any]]


@dataclass(frozen=True)
class Pooled:
    """The statistics phase (B) accepted and pooled: the metrics per category."""

    stats: dict[int, NodeStatistics]
    outcomes: dict[str, CategoryOutcome]


@dataclass(frozen=True)
class FederationState:
    """What the federation has learned so far, for the outputs layer to write."""

    registry: ClientRegistry
    trained: Trained
    merged: Merged
    scored: Scored | None = None
    scaled: Scaled | None = None
    pooled: Pooled | None = None

    @property
    def plan(self) -> M.Plan:
        return self.trained.plan

    @property
    def outcomes(self) -> dict[str, CategoryOutcome]:
        return {} if self.pooled is None else self.pooled.outcomes

    @property
    def scalings(self) -> dict[str, MapScaling]:
        return {} if self.scaled is None else self.scaled.scalings

    @property
    def excluded(self) -> dict[str, set[str]]:
        return {} if self.scored is None else self.scored.excluded
