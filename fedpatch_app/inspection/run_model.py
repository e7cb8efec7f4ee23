"""The model folder of a finished (or interrupted) run: every run kind writes one.

The federated server, the centralized baseline and each client of the local-only baseline
gather their banks, map scalings and thresholds here, with the provenance of the run, and
`model_folder.write_model` writes them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fedpatch_app.inspection.model_folder import CategoryModel, Model, sha256_of
from fedpatch_app.metrics.map_scaling import MapScaling
from fedpatch_app.model.patchcore import Bank
from fedpatch_app.settings import RunSettings
from fedpatch_app.settings.fields import recorded_values


def provenance(
    run_name: str,
    kind: str,
    settings: RunSettings,
    *,
    clients: list[dict[str, Any]] | None = None,
    privacy: dict[str, Any] | None = None,
    parent: Model | None = None,
    training_data: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Where a model comes from: run, kind, partition, contributing clients, privacy,
    the settings that shape it, its parent model when new lines joined one, and what it
    was trained on (`inspection.training_data`)."""
    out: dict[str, Any] = {
        "run_name": run_name,
        "run_kind": kind,
        "partition": None if kind == "centralized" else settings.partition,
        "clients": clients or [],
        "privacy": privacy or {"enabled": settings.dp.enabled},
        "settings": recorded_values(settings),  # the schema's RECORDED settings
        "parent": None,
        "training_data": training_data,
    }
    if parent is not None:
        out["parent"] = {
            "run_name": parent.manifest.get("provenance", {}).get("run_name"),
            "fingerprint": parent.fingerprint,
            "model_sha256": sha256_of(parent.path / "model.json"),
        }
    return out


def category_models(
    banks: Mapping[str, Bank],
    scalings: Mapping[str, MapScaling],
    thresholds: Mapping[str, dict[str, Any] | None],
    train_images: Mapping[str, int],
    sizes: Mapping[str, tuple[int, int]],
) -> dict[str, CategoryModel]:
    """CategoryModel per bank at the run's agreed size of its category; a category never
    evaluated gets a unit scaling stand-in."""
    out = {}
    for cat, bank in banks.items():
        scaling = scalings.get(cat) or MapScaling(0.0, max(bank.radius, 1.0))
        out[cat] = CategoryModel(
            bank=bank,
            native_size=tuple(sizes[cat]),
            scaling=scaling,
            thresholds=thresholds.get(cat),
            train_images=int(train_images.get(cat, 0)),
        )
    return out
