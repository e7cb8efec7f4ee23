"""The checks a model folder passes at load, beyond its hashes: every field of model.json
in range and consistent, and every bank file agreeing with the entry that names it.

A model that loads scores: thresholds are finite and inside their category's map scaling
(they are set on its 16-bit levels, so a threshold outside it was not calibrated there),
sizes and counts are bounded and agree with each other, and each bank records inside
itself the category, feature fingerprint and row count that model.json gives it (two
bank files swapped together with their SHA-256 entries are refused). Each refusal is a
`ModelError` naming model.json, the category and the field.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedpatch_app.errors import ModelError
from fedpatch_app.metrics.map_scaling import MapScaling
from fedpatch_app.model.bank import Bank
from fedpatch_app.model.feature_spec import FeatureSpec

#: Bounds of a category's native size, per side, in pixels (warm-up scores an image of it).
MIN_SIDE, MAX_SIDE = 32, 4096
#: Bound of the counts (training images, patches, bank rows).
MAX_COUNT = 100_000_000
#: A covering radius or query clip recorded in model.json and in the bank may differ by this.
REL_TOLERANCE = 1e-9


@dataclass(frozen=True)
class EntryFacts:
    """The checked fields of one category's entry in model.json."""

    bank_file: str
    sha256: str
    rows: int
    dim: int
    native_size: tuple[int, int]
    scaling: MapScaling
    thresholds: dict[str, Any] | None
    train_images: int
    train_patches: int


def _where(path: Path, cat: str, name: str) -> str:
    return f"{path}: categories.{cat}.{name}"


def _integer(value: Any, where: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ModelError(f"{where} must be a whole number from {low:,} to {high:,}, got {value!r}")
    return value


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ModelError(f"{where} must be a finite number, got {value!r}")
    return float(value)


def _native_size(value: Any, where: str) -> tuple[int, int]:
    if not isinstance(value, list) or len(value) != 2:
        raise ModelError(f"{where} must be [width, height], got {value!r}")
    width, height = (_integer(v, where, MIN_SIDE, MAX_SIDE) for v in value)
    return width, height


def check_thresholds(thresholds: Any, scaling: MapScaling, where: str) -> None:
    """Image and pixel thresholds finite and inside the map scaling [low, high]."""
    if thresholds is None:
        return
    if not isinstance(thresholds, dict):
        raise ModelError(f"{where} must be an object or null, got {thresholds!r}")
    slack = REL_TOLERANCE * max(1.0, abs(scaling.high))
    for kind in ("image", "pixel"):
        item = thresholds.get(kind)
        raw = _number(item.get("raw") if isinstance(item, dict) else None, f"{where}.{kind}.raw")
        if not scaling.low - slack <= raw <= scaling.high + slack or raw <= 0:
            raise ModelError(
                f"{where}.{kind}.raw is {raw!r}, outside the category's map scaling "
                f"[{scaling.low!r}, {scaling.high!r}] (and > 0) where it was calibrated"
            )


def check_entry(cat: str, entry: Any, spec: FeatureSpec, path: Path) -> EntryFacts:
    """The fields of one category's entry, each checked; ModelError naming the field."""
    if not isinstance(entry, dict) or not isinstance(entry.get("bank"), dict):
        raise ModelError(f"{path}: categories.{cat} must be an object with a 'bank' object")
    bank = entry["bank"]
    sha = bank.get("sha256")
    if not isinstance(sha, str) or not re.fullmatch(r"[0-9a-f]{64}", sha):
        raise ModelError(f"{_where(path, cat, 'bank.sha256')} must be 64 hex digits")
    if not isinstance(bank.get("file"), str):
        raise ModelError(f"{_where(path, cat, 'bank.file')} must be a file name")
    rows = _integer(bank.get("rows"), _where(path, cat, "bank.rows"), 1, MAX_COUNT)
    dim = _integer(bank.get("dim"), _where(path, cat, "bank.dim"), 1, MAX_COUNT)
    if dim != spec.embed_dim:
        raise ModelError(
            f"{_where(path, cat, 'bank.dim')} is {dim}, the features have {spec.embed_dim}"
        )
    patches = _integer(entry.get("train_patches"), _where(path, cat, "train_patches"), 1, MAX_COUNT)
    if rows > patches:
        raise ModelError(
            f"{_where(path, cat, 'bank.rows')} is {rows:,}, more than the {patches:,} training "
            "patches (train_patches) it was chosen from"
        )
    images = _integer(entry.get("train_images", 0), _where(path, cat, "train_images"), 0, patches)
    try:
        scaling = MapScaling.from_dict(entry["map_scaling"])
    except (KeyError, TypeError, ValueError, ModelError) as exc:
        raise ModelError(f"{_where(path, cat, 'map_scaling')}: {exc}") from None
    check_thresholds(entry.get("thresholds"), scaling, _where(path, cat, "thresholds"))
    native = _native_size(entry.get("native_size"), _where(path, cat, "native_size"))
    return EntryFacts(
        bank["file"], sha, rows, dim, native, scaling, entry.get("thresholds"), images, patches
    )


def _close(a: float, b: Any) -> bool:
    return isinstance(b, int | float) and math.isclose(a, b, rel_tol=REL_TOLERANCE, abs_tol=1e-12)


def check_bank_matches(
    bank: Bank, cat: str, entry: dict[str, Any], facts: EntryFacts, bank_path: Path
) -> None:
    """The bank file records the category, rows, patches, radius and clip model.json
    gives it (its fingerprint was checked when it was read)."""
    recorded = entry["bank"]
    problems = []
    if bank.category != cat:
        problems.append(f"category {bank.category!r}, model.json says {cat!r}")
    if bank.size != facts.rows:
        problems.append(f"{bank.size} rows, model.json says {facts.rows} (bank.rows)")
    if bank.n_patches != facts.train_patches:
        problems.append(f"{bank.n_patches} patches, model.json says {facts.train_patches}")
    if not _close(bank.radius, recorded.get("covering_radius", bank.radius)):
        problems.append(
            f"covering radius {bank.radius}, model.json says {recorded.get('covering_radius')!r}"
        )
    if not _close(bank.query_clip, recorded.get("query_clip", bank.query_clip)):
        problems.append(
            f"query clip {bank.query_clip}, model.json says {recorded.get('query_clip')!r}"
        )
    if problems:
        raise ModelError(
            f"bank file {bank_path} does not belong to category {cat} of this model: it "
            f"records {'; '.join(problems)}"
        )


def check_search_index(entry: dict[str, Any], cat: str, path: Path) -> tuple[str, str] | None:
    """The file and SHA-256 of the category's approximate search index (`search_index`),
    or None when the category is searched exactly (no such field)."""
    found = entry.get("search_index")
    if found is None:
        return None
    where = _where(path, cat, "search_index")
    if not isinstance(found, dict):
        raise ModelError(f"{where} must be an object or absent, got {found!r}")
    sha, name = found.get("sha256"), found.get("file")
    if not isinstance(sha, str) or not re.fullmatch(r"[0-9a-f]{64}", sha):
        raise ModelError(f"{where}.sha256 must be 64 hex digits")
    if not isinstance(name, str) or not re.fullmatch(r"banks/[^/\\]+\.ivf\.npz", name):
        raise ModelError(f"{where}.file must be banks/<name>.ivf.npz, got {name!r}")
    return name, sha
