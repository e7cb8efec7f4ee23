"""The source check's part of the evaluate exchange (phase A; `defences.source_check`).

down: ArrayRecord "sources" = {category: (M,) int64, the source of each row of the
      category's global bank under a label drawn for this run (-1: a parent model's
      row)}; only for the categories the server checks.
up:   ArrayRecord "source-check" = {category: (1 + S,) float64 AUROCs, with the whole
      bank and with each of the S judged sources left out (`bank_sources` order)};
      ArrayRecord "source-check-affected" = {category: (S,) int64, per source the defect
      patches that score higher without it};
      ConfigRecord "info" += "check-pos.<cat>", "check-neg.<cat>": the defect and good
      patches they rest on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from flwr.app import ArrayRecord, RecordDict

from fedpatch_app.defences.source_check import PARENT, Report
from fedpatch_app.errors import ModelError
from fedpatch_app.federated import wire

SOURCES = "sources"
CHECK = "source-check"
AFFECTED = "source-check-affected"
#: At most this many patches behind a report (a sanity cap far above AutoVI's test sets).
MAX_CHECK_PATCHES = 2**40


def encode_sources(sources: Mapping[str, np.ndarray]) -> ArrayRecord:
    return ArrayRecord(
        {cat: wire.array_of(np.asarray(s, dtype=np.int64)) for cat, s in sources.items()}
    )


def decode_sources(content: RecordDict, bank_rows: Mapping[str, int]) -> dict[str, np.ndarray]:
    """The sources of each checked category's bank rows (the client checks them too: one
    per bank row, labels >= 0 or the parent's -1)."""
    arrays = content.array_records.get(SOURCES)
    if arrays is None:
        return {}
    out: dict[str, np.ndarray] = {}
    for cat in arrays.keys():
        if cat not in bank_rows:
            raise ModelError(f"the server sent row sources for {cat!r} but no bank")
        values = wire.decode_array(
            arrays[cat],
            f"{cat} row sources",
            dtypes=["int64", "int32"],
            ndim=1,
            max_elements=bank_rows[cat],
        ).astype(np.int64)
        if len(values) != bank_rows[cat] or (len(values) and values.min() < PARENT):
            raise ModelError(
                f"{cat} row sources: {len(values)} values for {bank_rows[cat]} bank rows, "
                "each a source label or -1 expected"
            )
        out[cat] = values
    return out


def add_reports(content: RecordDict, reports: Mapping[str, Report]) -> None:
    """Put a client's reports into its phase-A reply."""
    if not reports:
        return
    info = content.config_records[wire.INFO]
    content.array_records[CHECK] = ArrayRecord(
        {cat: wire.array_of(np.asarray(r.values, dtype=np.float64)) for cat, r in reports.items()}
    )
    content.array_records[AFFECTED] = ArrayRecord(
        {cat: wire.array_of(np.asarray(r.affected, dtype=np.int64)) for cat, r in reports.items()}
    )
    for cat, r in reports.items():
        info[f"check-pos.{cat}"] = int(r.positives)
        info[f"check-neg.{cat}"] = int(r.negatives)


def _count(info: Mapping, key: str) -> int:
    try:
        value = wire.typed(info, key, int)
    except (KeyError, TypeError) as exc:
        raise wire.InvalidReply(f"source check: {exc}") from None
    if not 1 <= value <= MAX_CHECK_PATCHES:
        raise wire.InvalidReply(f"source check: {key} = {value} is not plausible")
    return int(value)


def _affected(content: RecordDict, cat: str, sources: int, positives: int) -> np.ndarray:
    arrays = content.array_records.get(AFFECTED)
    if arrays is None or cat not in arrays:
        raise wire.InvalidReply(f"source check of {cat}: affected patch counts missing")
    values = wire.decode_array(
        arrays[cat], f"{cat} affected patches", dtypes=["int64"], ndim=1, max_elements=sources
    )
    if len(values) != sources or (sources and not 0 <= values.min() <= values.max() <= positives):
        raise wire.InvalidReply(
            f"source check of {cat}: {sources} affected counts in [0, {positives}] expected"
        )
    return values.astype(np.int64)


def read_reports(
    content: RecordDict, judged: Mapping[str, int], scored: Sequence[str]
) -> dict[str, Report]:
    """A phase-A reply's reports: only for categories the server checks (`judged`: the
    number of judged sources) and the client scored test images of; 1 + S AUROCs each,
    finite and in [0, 1], and S affected counts within its defect patches."""
    arrays = content.array_records.get(CHECK)
    if arrays is None:
        return {}
    info = content.config_records[wire.INFO]
    out: dict[str, Report] = {}
    for cat in arrays.keys():
        if cat not in judged or cat not in scored:
            raise wire.InvalidReply(f"source check of {cat!r}: not asked for, or not scored")
        values = wire.decode_array(
            arrays[cat],
            f"{cat} source check",
            dtypes=["float64"],
            ndim=1,
            max_elements=1 + judged[cat],
        )
        if len(values) != 1 + judged[cat]:
            raise wire.InvalidReply(
                f"source check of {cat}: {len(values)} values, {1 + judged[cat]} expected"
            )
        if not all(0.0 <= v <= 1.0 for v in values.tolist()):
            raise wire.InvalidReply(f"source check of {cat}: values must lie in [0, 1]")
        pos, neg = _count(info, f"check-pos.{cat}"), _count(info, f"check-neg.{cat}")
        affected = _affected(content, cat, judged[cat], pos)
        out[cat] = Report(values.astype(np.float64), affected, pos, neg)
    return out
