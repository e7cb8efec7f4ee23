"""A setting that changes predictions is one schema field: the schema marks it, and from
the mark it reaches the feature spec, model.json and the predictor (which scores with what
model.json says, never with an option of its own). pyproject's run config equals the
schema's (tests/test_config.py)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedpatch_app.commands import PREDICT, SERVE
from fedpatch_app.inspection.model_folder import CategoryModel, load_model, write_model
from fedpatch_app.inspection.run_model import provenance
from fedpatch_app.metrics.map_scaling import MapScaling
from fedpatch_app.model.embedding import FeatureSpec
from fedpatch_app.model.feature_choice import feature_spec
from fedpatch_app.model.patchcore import Bank
from fedpatch_app.settings import from_names
from fedpatch_app.settings.fields import (
    BY_NAME,
    FEATURE_SETTINGS,
    RECORDED_SETTINGS,
    SETTINGS,
    Setting,
    check_value,
)

#: Changed values no rule below can pick (other weights must name weights that exist).
SPECIAL: dict[str, Any] = {"weights": "none"}


def changed_value(setting: Setting) -> Any:
    """A valid value other than the default: another choice, the other boolean, the
    default moved by 2 (whole numbers: odd stays odd) or by half (fractions)."""
    if setting.name in SPECIAL:
        return SPECIAL[setting.name]
    default = setting.default
    if setting.choices:
        return next(c for c in setting.choices if c != default)
    if setting.kind is bool:
        return not default
    if setting.kind in (int, float):
        return default + 2 if setting.kind is int else default * 1.5
    raise AssertionError(f"add a changed value of {setting.name!r} to SPECIAL")


MARKED = sorted(set(FEATURE_SETTINGS) | set(RECORDED_SETTINGS))
CHANGED: dict[str, Any] = {name: changed_value(BY_NAME[name]) for name in MARKED}


def test_every_marked_setting_has_a_changed_value() -> None:
    for name, value in CHANGED.items():
        assert value != BY_NAME[name].default, name
        assert check_value(name, value, name) == value


def test_feature_settings_are_the_feature_spec_fields_the_schema_defines() -> None:
    """A FeatureSpec field named like a setting must be marked FEATURES (else the run's
    value would never reach the spec), and every FEATURES setting must be a spec field."""
    spec_fields = {f.name for f in dataclasses.fields(FeatureSpec)}
    assert set(FEATURE_SETTINGS) <= spec_fields
    assert {s.name for s in SETTINGS if s.name in spec_fields} == set(FEATURE_SETTINGS)


def _model_folder(folder: Path, settings: Any) -> FeatureSpec:
    spec, _ = feature_spec(settings, synthetic_data=True)
    rows = np.random.default_rng(0).normal(size=(4, spec.embed_dim)).astype(np.float32)
    bank = Bank(rows, spec, "pipe_clip", 1.5, 40)
    thresholds = {"image": {"raw": 3.0}, "pixel": {"raw": 2.0}}
    cats = {"pipe_clip": CategoryModel(bank, (400, 400), MapScaling(0.5, 4.0), thresholds, 4)}
    facts = provenance("r", "centralized", settings)
    write_model(folder, spec, cats, facts)
    return spec


def test_marked_settings_reach_model_json_and_the_predictor(tmp_path: Path) -> None:
    settings = from_names(CHANGED)
    spec = _model_folder(tmp_path / "model", settings)
    manifest = json.loads((tmp_path / "model" / "model.json").read_text())
    # RECORDED: in the provenance, with the run's values
    assert manifest["provenance"]["settings"] == {n: CHANGED[n] for n in RECORDED_SETTINGS}
    # FEATURES: in the feature spec, read back into the spec the predictor scores with
    model = load_model(tmp_path / "model")
    runtime = model.runtime_spec()
    assert runtime == spec
    for name in FEATURE_SETTINGS:
        assert getattr(runtime, name) == CHANGED[name], name
        assert manifest["feature_spec"][name] == getattr(spec.with_weights_id(), name)


@pytest.mark.parametrize("command", [PREDICT, SERVE], ids=lambda c: c.name)
def test_the_predictor_takes_no_marked_setting_as_an_option(command) -> None:
    """Scoring uses what model.json records: predict and serve take only settings that do
    not change the scores (device, batch size, outputs)."""
    assert not set(command.settings) & (set(FEATURE_SETTINGS) | set(RECORDED_SETTINGS))
