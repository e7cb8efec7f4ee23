"""The source check on the server: which client each bank row came from (sent with the
banks under labels drawn for the run), the clients' reports judged, and the clients whose
rows hide labelled defects flagged by name.

The statistics are in `defences.source_check` (pure); this module ties them to the
clients of the run and records the verdicts (results.json
`federated.banks.<cat>.source_check`, and a flag per client).
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from fedpatch_app.defences.source_check import PARENT, Report, bank_sources, judge

if TYPE_CHECKING:  # the server's types; a defence does not load Flower
    from fedpatch_app.federated.codec_score import ScoreReply
    from fedpatch_app.federated.registry import ClientRegistry

log = logging.getLogger(__name__)


def row_partitions(parts: np.ndarray, partitions: Sequence[int]) -> np.ndarray:
    """The partition of each bank row from the index of the part it came from (-1, the
    parent's rows, stays -1)."""
    lookup = np.asarray([*partitions, PARENT], dtype=np.int64)
    return lookup[np.asarray(parts, dtype=np.int64)]


def checked_sources(
    sources: Mapping[str, np.ndarray | None], enabled: bool
) -> dict[str, np.ndarray]:
    """The categories the check can judge: on, rows of known sources (not under DP), and
    at least two sources (one left out leaves something to compare with)."""
    if not enabled:
        return {}
    return {c: s for c, s in sources.items() if s is not None and bank_sources(s)}


def pseudonyms(rows: np.ndarray) -> tuple[np.ndarray, dict[int, int]]:
    """The rows' sources under labels drawn at random for this run, and label ->
    partition. The clients need to group the rows by source, not to know whose they
    are: a client recognises its own rows, the others stay anonymous (the parent's rows
    keep `PARENT`: that bank was shared before)."""
    rows = np.asarray(rows, dtype=np.int64)
    clients = rows != PARENT
    partitions = np.unique(rows[clients])
    labels = np.array(secrets.SystemRandom().sample(range(1, 2**31), len(partitions)))
    out = np.full(len(rows), PARENT, dtype=np.int64)
    out[clients] = labels[np.searchsorted(partitions, rows[clients])]
    return out, {int(lab): int(p) for p, lab in zip(partitions, labels, strict=True)}


def _partition_nodes(registry: ClientRegistry) -> dict[int, int]:
    return {
        c.partition_id: c.node_id
        for c in registry.active()
        if c.partition_id is not None and c.partition_id >= 0
    }


def judge_category(
    registry: ClientRegistry,
    cat: str,
    labelled: tuple[np.ndarray, dict[int, int]],
    scores: Mapping[int, ScoreReply],
    threshold: float,
) -> dict[str, Any]:
    """One category's verdicts from the reports of the clients still in the run (their
    values follow the order of the labels sent, `labelled` = `pseudonyms(rows)`); every
    flagged source's client is named."""
    partition = {node: registry.clients[node].partition_id for node in scores}
    reports = {partition[n]: r.checks[cat] for n, r in scores.items() if cat in r.checks}
    labels, to_partition = labelled
    order = bank_sources(labels)
    sources = [to_partition[label] for label in order]
    rows = {to_partition[label]: int(np.sum(labels == label)) for label in order}
    verdicts = judge(sources, reports, threshold)
    nodes = _partition_nodes(registry)
    for source, verdict in sorted(verdicts.items()):
        if verdict["flagged"] and source in nodes:
            registry.flag(
                nodes[source],
                "evaluate",
                f"{cat}: the bank less its {rows[source]} rows shows the other "
                f"clients' labelled defects better (AUROC of defect against good patches up "
                f"by {verdict['gain']:.3f}, lower median over {verdict['reporters']} "
                f"client(s) with {verdict['defect_patches']} defect patches; threshold "
                f"{threshold:g}): its rows may hide defects",
            )
    log.info(
        "%s: source check over %d report(s): %s",
        cat,
        len(reports),
        ", ".join(f"partition {s} gain {v['gain']}" for s, v in sorted(verdicts.items())),
    )
    return {
        "threshold": threshold,
        "reports": {str(p): _report_facts(r, sources) for p, r in sorted(reports.items())},
        "sources": {str(s): _readable(verdicts[s]) for s in sorted(verdicts)},
    }


def _report_facts(report: Report, sources: Sequence[int]) -> dict[str, Any]:
    """A client's report keyed by partition (it came in the order of this run's labels)."""
    order = sorted(range(len(sources)), key=lambda j: sources[j])
    return {
        "auroc": round(float(report.values[0]), 6),
        "auroc_without": {str(sources[j]): round(float(report.values[1 + j]), 6) for j in order},
        "affected": {str(sources[j]): int(report.affected[j]) for j in order},
        "defect_patches": report.positives,
        "good_patches": report.negatives,
    }


def _readable(verdict: dict[str, Any]) -> dict[str, Any]:
    gains = {str(k): round(g, 6) for k, g in verdict["gains"].items()}
    return {**verdict, "gains": gains}


def excluded_holders(
    registry: ClientRegistry, bank_info: Mapping[str, dict[str, Any]], vetted: Mapping[str, list]
) -> dict[str, list]:
    """Per category whose source check flagged clients: the coresets that stay once their
    rows are left out (`source-check-action = exclude`); the clients are told so by name
    and the category's `source_check` facts record them as `excluded`. A category whose
    every holder was flagged keeps its bank."""
    out: dict[str, list] = {}
    for cat, holders in vetted.items():
        verdicts = bank_info.get(cat, {}).get("source_check", {}).get("sources", {})
        flagged = {int(p) for p, v in verdicts.items() if v["flagged"]}
        if not flagged:
            continue
        kept = [(n, p) for n, p in holders if registry.clients[n].partition_id not in flagged]
        if not kept:
            log.warning("%s: every holder was flagged by the source check; bank kept", cat)
            continue
        for node, _ in holders:
            if registry.clients[node].partition_id in flagged:
                registry.flag(
                    node,
                    "evaluate",
                    f"{cat}: its rows were left out of the bank "
                    "(source-check-action = exclude); the category was merged again from the "
                    "others' rows and scored again",
                )
        bank_info[cat]["source_check"]["excluded"] = sorted(flagged)
        out[cat] = kept
    return out
