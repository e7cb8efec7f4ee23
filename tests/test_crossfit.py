"""Cross-fitted calibration: every good image feeds the bank and calibrates, never
scored against a bank that holds its own patches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import own_data

from fedpatch_app.data.calibration import crossfit_folds
from fedpatch_app.data.layouts import load_category
from fedpatch_app.model.crossfit import crossfit_bank
from fedpatch_app.model.embedding import FeatureSpec
from fedpatch_app.model.patchcore import PatchCore


def test_folds_are_balanced_and_fixed_by_the_image_list() -> None:
    names = [f"good/{i:03d}.png" for i in range(11)]
    folds = crossfit_folds("a", names, 4, seed=0)
    assert sorted(folds) == names
    assert sorted(np.bincount(list(folds.values())).tolist()) == [2, 3, 3, 3]
    assert crossfit_folds("a", names[::-1], 4, seed=0) == folds
    assert crossfit_folds("a", names, 4, seed=1) != folds


def test_no_image_is_scored_by_a_bank_holding_its_own_patches(tmp_path: Path) -> None:
    root = own_data.write(tmp_path, "folder", test=False)
    cat = load_category(root, "valve.cover_2")
    spec = FeatureSpec(weights="none", image_size=64, seed=0)
    model = PatchCore(spec, device="cpu")
    folds = {i: i % 4 for i in range(len(cat.train))}
    # Ratio 1: every patch is in the bank, so an image scored by a bank that holds its
    # own patches scores about 0 everywhere (float rounding), the others several units.
    bank, maps = crossfit_bank(model, cat.name, cat.train, folds, 1.0, cat.size)
    own = model.predict(bank, list(cat.train), cat.size).maps
    assert len(maps) == len(cat.train)
    assert max(float(m.max()) for m in own) < 0.05 * min(float(m.min()) for m in maps)
    same = model.fit(list(cat.train), cat.name, 1.0, native_size=cat.size)
    assert np.array_equal(same.features, bank.features)  # the bank keeps every image


def test_a_private_federated_run_refuses_cross_fitting(tmp_path: Path) -> None:
    import pytest

    from fedpatch_app.errors import ConfigError
    from fedpatch_app.federated.protocol.server import _prepare
    from fedpatch_app.settings import from_run_config

    config = {"calibration-folds": 5, "dp-epsilon": 2.0, "out-dir": str(tmp_path)}
    settings = from_run_config(config)
    with pytest.raises(ConfigError, match="'calibration-folds'.*differentially private"):
        _prepare(settings, "run", tmp_path / "run")
