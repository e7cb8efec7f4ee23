"""Cross-fitted calibration in a federated run: every good training image calibrates, no
image is scored against a bank that holds its own patches, the bank is the one a run
without held-out images builds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flwr.app import Context, RecordDict

import client_app
from fedpatch_app.data.layouts import load_category
from fedpatch_app.federated import client_crossfit
from fedpatch_app.federated.inprocess import InProcessGrid
from fedpatch_app.federated.protocol.server import run_server

CAT = "pipe_clip"


def _run(root: Path, out: Path, name: str, **extra: Any) -> dict[str, Any]:
    run_config = {
        "weights": "none",
        "image-size": 64,
        "device": "cpu",
        "categories": CAT,
        "dataset": "autovi",
        "data-root": str(root),
        "out-dir": str(out),
        "run-name": name,
        "partition": "iid",
        "num-clients": 3,
        "min-clients": 3,
        "wait-timeout": 0,
        **extra,
    }
    nodes = [{"partition-id": i, "num-partitions": 3} for i in range(3)]
    grid = InProcessGrid(client_app.app, nodes, run_config)
    context = Context(
        run_id=7, node_id=1, node_config={}, state=RecordDict(), run_config=run_config
    )
    outcome = run_server(grid, context)
    return json.loads((outcome.run_dir / "results.json").read_text())


@pytest.fixture(scope="module")
def crossfit_runs(tiny_root: Path, tmp_path_factory: pytest.TempPathFactory):
    """Every patch in every bank (coreset ratio 1): an image scored by a bank holding its
    own patches would score about 0. The cross-fitted calibration maps are recorded."""
    out = tmp_path_factory.mktemp("fed_crossfit")
    seen: list[np.ndarray] = []
    original = client_crossfit.fold_maps

    def recording(*args: Any, **kwargs: Any) -> list:
        found = original(*args, **kwargs)
        seen.extend(m for m in found if m is not None)
        return found

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(client_crossfit, "fold_maps", recording)
        folds = _run(tiny_root, out, "folds", **{"calibration-folds": 3, "coreset-ratio": 1.0})
    plain = _run(tiny_root, out, "all", **{"calibration-fraction": 0.0, "coreset-ratio": 1.0})
    return {"out": out, "folds": folds, "plain": plain, "maps": seen}


def test_thresholds_rest_on_every_good_training_image(crossfit_runs, tiny_root: Path) -> None:
    block = crossfit_runs["folds"]["categories"][CAT]
    n_train = len(load_category(tiny_root, CAT).train_rel)
    assert block["counts"]["train"] == n_train
    assert block["thresholds"]["image"]["calibration_images"] == n_train
    assert block["thresholds"]["cross_fitted_folds"] == 3
    assert any(
        f"{CAT}: the image threshold rests on" in w for w in crossfit_runs["folds"]["warnings"]
    )


def test_no_fold_is_scored_against_its_own_patches(crossfit_runs) -> None:
    maps = crossfit_runs["maps"]
    assert len(maps) == crossfit_runs["folds"]["categories"][CAT]["counts"]["train"]
    # An image whose own patches are in the bank scores ~0 at every pixel (float rounding).
    lowest = min(float(m.max()) for m in maps)
    assert lowest > 0.2 * float(np.median([float(m.max()) for m in maps]))
    assert lowest > 1e-3


def test_the_bank_is_the_one_without_held_out_images(crossfit_runs) -> None:
    out = crossfit_runs["out"]
    with_folds = np.load(out / "folds" / "model" / "banks" / f"{CAT}.npz")
    without = np.load(out / "all" / "model" / "banks" / f"{CAT}.npz")
    assert sorted(with_folds.files) == sorted(without.files)
    for key in with_folds.files:
        assert np.array_equal(with_folds[key], without[key])


def test_own_rows_are_found_bit_for_bit_in_the_transport_dtype() -> None:
    rng = np.random.default_rng(0)
    sent = rng.normal(size=(5, 4)).astype(np.float16)
    theirs = rng.normal(size=(3, 4)).astype(np.float32)
    bank = np.concatenate([theirs[:2], sent[[3, 0]].astype(np.float32), theirs[2:]])
    assert client_crossfit.own_rows(bank, sent).tolist() == [False, False, True, True, False]
