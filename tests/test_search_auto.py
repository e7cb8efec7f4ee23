"""`search = auto` (the default): a category's bank is searched through the approximate index from
`AUTO_MIN_ROWS` rows, exactly below; calibration (cross-fitted folds included), the model
folder and the line make the same choice."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from fedpatch_app.model import crossfit
from fedpatch_app.model.ann_index import (
    AUTO_MIN_ROWS,
    IvfIndex,
    IvfParams,
    built_index,
    for_bank,
    search_kind,
    search_params,
)
from fedpatch_app.settings import RunSettings


def rows(n: int, dim: int = 8, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)


def test_auto_sets_the_threshold():
    assert RunSettings().search == "auto"
    params = search_params(RunSettings(search="auto"))
    assert params == IvfParams(min_rows=AUTO_MIN_ROWS)
    assert search_params(RunSettings(search="approximate")).min_rows == 0
    # The benchmark's default-size bank is searched approximately, the small studies'
    # banks (a few thousand rows) exactly.
    assert search_kind(19_968, params) == "approximate"
    assert search_kind(4_954, params) == "exact"
    assert search_kind(10**9, None) == "exact"


def test_the_index_is_built_only_for_banks_at_or_above_the_threshold():
    params = IvfParams(seed=2, min_rows=400)
    assert built_index(rows(399), params) is None
    big = rows(400)
    index = built_index(big, params)
    assert index is not None and index.params.min_rows == 0
    # The choice is not part of the index: the same bytes as an index built outright.
    assert index.to_bytes() == IvfIndex.build(big, IvfParams(seed=2)).to_bytes()
    assert b"min_rows" not in index.to_bytes()


def test_for_bank_fixes_the_choice_of_the_category():
    params = IvfParams(probe=3, min_rows=100)
    assert for_bank(99, params) is None
    assert for_bank(100, params) == IvfParams(probe=3)
    assert for_bank(10**6, None) is None


def test_crossfit_folds_follow_the_category_banks_choice(monkeypatch):
    """A fold's bank is smaller than the category's: under auto it must still be searched
    the way the category is (its calibration maps set the line's thresholds)."""
    used: list[IvfParams | None] = []

    def bank_of(feats, name, ratio):
        flat = feats.reshape(-1, feats.shape[-1])
        return SimpleNamespace(features=flat, size=len(flat))

    model = SimpleNamespace(
        device="cpu",
        search=IvfParams(min_rows=300),
        features=lambda paths, desc, size: rows(len(paths) * 100).reshape(len(paths), 100, 8),
        bank_of=bank_of,
        maps_of=lambda bank, index, feats, size: [np.zeros((2, 2))] * len(feats),
    )
    monkeypatch.setattr(crossfit, "bank_index", lambda f, device, search: used.append(search))
    folds = {0: 0, 1: 0, 2: 1, 3: 1}  # the bank: 400 rows, each fold's: 200
    crossfit.crossfit_bank(model, "pipe_clip", ["a", "b", "c", "d"], folds, 1.0, (2, 2))
    assert used == [IvfParams(), IvfParams()]
    used.clear()
    model.search = IvfParams(min_rows=500)  # the category itself below: exact folds
    crossfit.crossfit_bank(model, "pipe_clip", ["a", "b", "c", "d"], folds, 1.0, (2, 2))
    assert used == [None, None]


NO_TORCH = """
import importlib.abc, sys
class NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "torchvision"):
            raise ImportError("torch is blocked in this test: " + name)
sys.meta_path.insert(0, NoTorch())
import numpy as np
from fedpatch_app.model.ann_index import IvfIndex, IvfSearch
bank = np.random.default_rng(0).normal(size=(3000, 8)).astype(np.float32)
queries = np.random.default_rng(1).normal(size=(600, 8)).astype(np.float32)
np.save(sys.argv[1], IvfSearch(IvfIndex.build(bank), bank).patch_scores(queries))
"""


def test_the_index_searches_where_torch_cannot_be_imported(tmp_path):
    """The line runtime has no PyTorch: the approximate search must not need it, and give
    the scores it gives in a process with torch."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from fedpatch_app.model.ann_index import IvfSearch

    repo = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=str(repo))
    out = tmp_path / "scores.npy"
    proc = subprocess.run(
        [sys.executable, "-c", NO_TORCH, str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    bank = np.random.default_rng(0).normal(size=(3000, 8)).astype(np.float32)
    queries = np.random.default_rng(1).normal(size=(600, 8)).astype(np.float32)
    expected = IvfSearch(IvfIndex.build(bank), bank).patch_scores(queries)
    assert np.array_equal(np.load(out), expected)
