"""Experiment presets (conf/experiments/*.yaml): read and validated once.

A preset names its settings with the same snake_case names as results.json
(`coreset_ratio:`), validated by the settings schema; a setting it leaves out keeps the
schema's default (a preset states only what it changes). A sweep names the setting it
varies the same way (`key: dp_epsilon`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fedpatch_app.errors import ConfigError
from fedpatch_app.settings import RunSettings, from_names
from fedpatch_app.settings.fields import BY_NAME

PRESET_DIR = Path(__file__).resolve().parents[2] / "conf" / "experiments"
RUN_KINDS = ("centralized", "federated", "local-only")
#: The schema's choices of the partition and bank-budget settings.
PARTITIONS: tuple[str, ...] = BY_NAME["partition"].choices or ()
BUDGETS: tuple[str, ...] = BY_NAME["bank_budget"].choices or ()


@dataclass(frozen=True)
class RunPlan:
    """One run of a preset."""

    kind: str
    name: str
    partition: str | None = None


@dataclass(frozen=True)
class Sweep:
    """Federated runs over the values of one setting."""

    key: str
    values: tuple[Any, ...]
    partition: str
    settings: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class BudgetStudy:
    """bank-budget on a view of the data where the last category keeps a fraction."""

    budgets: tuple[str, ...]
    partition: str
    smallest_fraction: float


@dataclass(frozen=True)
class Preset:
    name: str
    path: Path
    settings: RunSettings
    runs: tuple[RunPlan, ...]
    ablation_partition: str | None = None
    ablation_oversample: tuple[float, ...] = ()
    sweep: Sweep | None = None
    budget_study: BudgetStudy | None = None

    @property
    def federated(self) -> bool:
        """Whether any run goes through Flower."""
        return bool(
            any(r.kind == "federated" for r in self.runs)
            or self.ablation_oversample
            or self.sweep
            or self.budget_study
        )


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml")) if PRESET_DIR.is_dir() else []


def _path(name_or_path: str) -> Path:
    path = Path(name_or_path)
    if not path.suffix:
        path = PRESET_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        raise ConfigError(
            f"experiment preset {name_or_path!r} not found ({path}); known: {preset_names()}"
        )
    return path


def _runs(raw: Any, where: str) -> tuple[RunPlan, ...]:
    if not isinstance(raw, list):
        raise ConfigError(f"{where}: a preset needs a 'runs' list")
    runs: list[RunPlan] = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict) or item.get("kind") not in RUN_KINDS:
            raise ConfigError(f"{where}: runs[{i}] needs a kind among {RUN_KINDS}")
        run = RunPlan(item["kind"], str(item.get("name", item["kind"])), item.get("partition"))
        if any(r.name == run.name for r in runs):
            raise ConfigError(f"{where}: two runs are named {run.name!r}")
        if run.kind != "centralized" and run.partition not in PARTITIONS:
            raise ConfigError(f"{where}: runs[{i}] ({run.name}) needs a partition")
        runs.append(run)
    return tuple(runs)


def _sweep(raw: Any, where: str) -> Sweep | None:
    if raw is None:
        return None
    if (
        not isinstance(raw, dict)
        or raw.get("key") not in BY_NAME
        or not isinstance(raw.get("values"), list)
        or not raw["values"]
        or raw.get("partition") not in PARTITIONS
    ):
        raise ConfigError(
            f"{where}: sweep needs a setting 'key' (snake_case name), a non-empty 'values' "
            "list and a 'partition'"
        )
    extra = raw.get("settings") or {}
    from_names(extra, where=f"{where}: sweep.settings")
    return Sweep(raw["key"], tuple(raw["values"]), raw["partition"], dict(extra))


def _budget_study(raw: Any, where: str) -> BudgetStudy | None:
    if raw is None:
        return None
    budgets = raw.get("budgets") if isinstance(raw, dict) else None
    if (
        not isinstance(budgets, list)
        or not budgets
        or any(b not in BUDGETS for b in budgets)
        or raw.get("partition") not in PARTITIONS
    ):
        raise ConfigError(
            f"{where}: budget_study needs 'budgets' among {', '.join(BUDGETS)} and a 'partition'"
        )
    fraction = float(raw.get("smallest_fraction", 0.25))
    if not 0 < fraction <= 1:
        raise ConfigError(f"{where}: budget_study.smallest_fraction must be in (0, 1]")
    return BudgetStudy(tuple(budgets), raw["partition"], fraction)


def _ablation(raw: Any, where: str) -> tuple[str | None, tuple[float, ...]]:
    if raw is None:
        return None, ()
    values = raw.get("local_oversample") if isinstance(raw, dict) else None
    if not isinstance(values, list) or not values or raw.get("partition") not in PARTITIONS:
        raise ConfigError(
            f"{where}: ablation needs a non-empty local_oversample list and a 'partition'"
        )
    return raw["partition"], tuple(float(v) for v in values)


def load_preset(name_or_path: str) -> Preset:
    """A preset by name (conf/experiments/<name>.yaml) or path, validated."""
    path = _path(name_or_path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a preset is a mapping")
    where = str(path)
    settings = from_names(data.get("settings") or {}, where=f"{where}: settings")
    partition, oversample = _ablation(data.get("ablation"), where)
    return Preset(
        name=path.stem,
        path=path,
        settings=settings,
        runs=_runs(data.get("runs"), where),
        ablation_partition=partition,
        ablation_oversample=oversample,
        sweep=_sweep(data.get("sweep"), where),
        budget_study=_budget_study(data.get("budget_study"), where),
    )
