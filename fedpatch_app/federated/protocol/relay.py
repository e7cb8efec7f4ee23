"""The server's phases of a relay run (`share-mode = relay`): it never holds a row.

1. train (as in raw mode): every reply carries sealed coresets; the server checks what it
   can (counts, sizes of the ciphertexts against the allowed coreset sizes, the feature
   width) and that every client sealed with the same share key (`agree_key`: a client
   whose key is not the one most clients hold is dropped, naming both key ids).
2. relay + evaluate (one exchange): every ciphertext of every category, with its holder's
   partition and counts in the server's data order, to every client; each client opens
   them all, merges with the same rule the raw mode's server runs (robust merge included),
   scores its images and replies with its scores, map ranges and a digest and the facts
   of every bank it merged. The clients must agree on every bank (`agree_banks`): one whose
   digest differs from the one most clients report is dropped by name.
3. scale, statistics, pool: as in raw mode, from the facts the clients report (the robust
   map scaling needs only the banks' covering radius).
4. model: the map scalings, thresholds and provenance to every client, which writes the
   complete model folder under its node config `model-dir`. The server writes no banks.

Refused in relay mode (`RunSettings._relay_consistent`): the source check (the server
labels bank rows by source), DP (post-processed on the server), init-model (a join).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections import Counter
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from flwr.app import MessageType, RecordDict

from fedpatch_app.federated import messages as M
from fedpatch_app.federated.client_relay import PHASE_MODEL
from fedpatch_app.federated.codec_relay import (
    KEY_ID,
    RELAY,
    BankReport,
    RelayedPart,
    read_bank_facts,
    relay_record,
)
from fedpatch_app.federated.protocol.accept import accept_scores, conflicting_images
from fedpatch_app.federated.protocol.link import GridLink
from fedpatch_app.federated.protocol.results import (
    BankInfo,
    CategoryMerge,
    Merged,
    Scored,
    Trained,
)
from fedpatch_app.federated.registry import ClientRegistry, FederationError

if TYPE_CHECKING:
    from fedpatch_app.federated.protocol.federation import Federation
    from fedpatch_app.federated.protocol.outputs import ServerRun
    from fedpatch_app.federated.protocol.results import FederationState

log = logging.getLogger(__name__)


def _majority(values: Mapping[int, str], what: str) -> str:
    """The value most nodes hold; a tie is a FederationError (no side can be believed)."""
    counts = Counter(values.values()).most_common()
    if len(counts) > 1 and counts[0][1] == counts[1][1]:
        raise FederationError(
            f"the clients disagree on {what} with no majority: "
            + ", ".join(f"{v} ({n} client(s))" for v, n in counts)
        )
    return counts[0][0]


def agree_key(registry: ClientRegistry, trained: Trained) -> str:
    """The share key the coresets are sealed with: the one most clients hold; a client
    that sealed with another is dropped by name (the others could not open its rows)."""
    ids = {node: reply.key_id for node, reply in trained.replies.items()}
    key_id = _majority(ids, "the share key")
    for node, other in ids.items():
        if other != key_id:
            registry.drop(
                node,
                "train",
                f"sealed its coresets with share key {other}, the federation's (the other "
                f"clients') is {key_id}: wrong node config 'share-key'",
            )
            del trained.replies[node]
    registry.require("train")
    return key_id


def _relayed(trained: Trained, registry: ClientRegistry) -> dict[str, list[RelayedPart]]:
    """Every category's ciphertexts in the server's data order (the clients order them
    again, by partition and content, as the raw merge does)."""
    out: dict[str, list[RelayedPart]] = {}
    for cat in trained.plan.categories:
        parts = []
        for node, reply in trained.replies.items():
            if cat not in reply.coresets:
                continue
            p = reply.coresets[cat]
            pid = registry.clients[node].partition_id
            rows = int(p.features.shape[0])
            assert p.sealed is not None
            parts.append(
                RelayedPart(
                    node,
                    -1 if pid is None else pid,
                    p.n_patches,
                    p.n_images,
                    p.radius,
                    rows,
                    p.sealed,
                    reply.sealed_as,
                )
            )
        if parts:
            out[cat] = parts
    return out


def agree_banks(
    registry: ClientRegistry, reports: dict[int, BankReport]
) -> dict[str, CategoryMerge]:
    """The banks every client merged, described by their facts; a client whose bank of a
    category differs from the one most clients report is dropped by name."""
    cats = sorted({c for r in reports.values() for c in r.digests})
    agreed: dict[str, CategoryMerge] = {}
    for cat in cats:
        digests = {n: r.digests.get(cat, "none") for n, r in reports.items()}
        digest = _majority(digests, f"the merged bank of {cat}")
        for node, other in digests.items():
            if other != digest and node in reports:
                registry.drop(
                    node,
                    "evaluate",
                    f"merged another bank of {cat} (digest {other[:16]}) than the other clients "
                    f"({digest[:16]})",
                )
                del reports[node]
        first = next(r for r in reports.values() if r.digests.get(cat) == digest)
        known = {f.name for f in dataclasses.fields(BankInfo)} - {"inherited", "digest"}
        facts = {k: v for k, v in first.infos[cat].items() if k in known}
        agreed[cat] = CategoryMerge(None, BankInfo(**facts, digest=digest))
    for node, reasons in (next(iter(reports.values())).flags if reports else {}).items():
        for reason in reasons:
            phase, _, text = reason.partition(": ")
            registry.flag(node, phase or "merge", text or reason)
    registry.require("evaluate")
    return agreed


def relay_evaluate(fed: Federation, link: GridLink, trained: Trained) -> tuple[Scored, Merged]:
    """The ciphertexts to every client, their scores and the banks they merged."""
    key_id = agree_key(fed.registry, trained)
    arrays, extra = relay_record(_relayed(trained, fed.registry))
    config = trained.plan.to_config(phase=M.PHASE_SCORE, **extra, **{KEY_ID: key_id})
    log.info(
        "evaluate: relaying %d sealed coreset(s) to %d node(s)",
        len(arrays),
        len(fed.registry.active()),
    )
    answered = link.exchange(
        "evaluate", RecordDict({RELAY: arrays, M.CONFIG: config}), MessageType.EVALUATE
    )
    known = list(trained.plan.categories)
    reports: dict[int, BankReport] = {}
    for client, reply in answered:
        try:
            reports[client.node_id] = read_bank_facts(reply.content, known)
        except M.InvalidReply as exc:
            fed.registry.drop(client.node_id, "evaluate", f"invalid reply: {exc}")
    merged = Merged(agree_banks(fed.registry, reports))
    answered = [(c, r) for c, r in answered if c.node_id in reports]
    replies = accept_scores(
        fed.registry, answered, tuple(merged.categories), trained.plan.fingerprint, trained.expected
    )
    excluded = conflicting_images(fed.registry, replies)
    fed.registry.require("evaluate")
    return Scored(replies, excluded, {}), merged


def relay_model(link: GridLink, run: ServerRun, state: FederationState) -> None:
    """The run's last message: scalings, thresholds and provenance to every client, which
    writes its complete model folder; a client that fails is dropped by name."""
    from fedpatch_app.federated.protocol.facts import privacy_facts
    from fedpatch_app.federated.protocol.outputs import federated_training_data
    from fedpatch_app.inspection.run_model import provenance

    clients = [
        {"partition_id": c.partition_id, "train_images": c.train_images}
        for c in state.registry.active()
        if c.train_images
    ]
    facts: dict[str, Any] = provenance(
        run.name,
        "federated",
        run.settings,
        clients=clients,
        privacy=privacy_facts(state),
        training_data=federated_training_data(run, state),
    )
    facts["thresholds"] = {cat: o.thresholds for cat, o in state.outcomes.items()}
    ranges = {cat: (s.low, s.high) for cat, s in state.scalings.items()}
    config = state.plan.to_config(
        phase=PHASE_MODEL, **M.scaling_config(ranges), **{"relay-model": json.dumps(facts)}
    )
    link.exchange("model", RecordDict({M.CONFIG: config}), MessageType.QUERY)
