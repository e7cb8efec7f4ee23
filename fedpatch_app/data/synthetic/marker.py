"""The marker that tells fedpatch's synthetic data from real AutoVI.

`generate` writes ``synthetic.json`` in the data root: the generator and its version, and
per category the kind, scale and seed it was written with. Any command can then tell
synthetic data (where a stand-in backbone is acceptable, and results must say what the
data was) from the real dataset, which never carries this file.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from fedpatch_app.data.autovi_release import CATEGORIES

log = logging.getLogger(__name__)

MARKER_NAME = "synthetic.json"
GENERATOR = "fedpatch synthetic AutoVI-format data"
#: Bumped whenever the same (kind, scale, seed) would give other images.
GENERATOR_VERSION = 2


def is_synthetic(root: str | os.PathLike) -> dict[str, Any] | None:
    """The marker of fedpatch's synthetic data under ``root`` (a dict with ``kind``,
    ``scale``, ``seed``, ``categories``, ``version``...), or None for data without it (the
    real AutoVI). ``kind``/``scale``/``seed`` are ``"mixed"`` when the categories differ."""
    path = Path(root) / MARKER_NAME
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        log.warning("%s is not readable (%s): treating the data as synthetic", path, exc)
        return {"generator": GENERATOR, "unreadable": str(exc)}
    return data if isinstance(data, dict) else {"generator": GENERATOR, "unreadable": path.name}


def _summary(categories: dict[str, dict[str, Any]], key: str) -> Any:
    values = {json.dumps(c.get(key)) for c in categories.values()}
    return json.loads(values.pop()) if len(values) == 1 else "mixed"


def write_marker(root: Path, kind: str, scale: str, seed: int, categories: list[str]) -> dict:
    """Record ``categories`` as written with (kind, scale, seed), keeping the records of
    other categories already in the root; returns the marker."""
    known = is_synthetic(root) or {}
    records = known.get("per_category") if known.get("version") == GENERATOR_VERSION else None
    per_category: dict[str, dict[str, Any]] = dict(records or {})
    for category in categories:
        per_category[category] = {"kind": kind, "scale": scale, "seed": int(seed)}
    marker = {
        "generator": GENERATOR,
        "version": GENERATOR_VERSION,
        "kind": _summary(per_category, "kind"),
        "scale": _summary(per_category, "scale"),
        "seed": _summary(per_category, "seed"),
        "categories": [c for c in CATEGORIES if c in per_category],
        "per_category": per_category,
    }
    tmp = root / (MARKER_NAME + ".tmp")
    tmp.write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, root / MARKER_NAME)
    return marker
