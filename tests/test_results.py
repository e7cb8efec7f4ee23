"""The results schema shared by every run kind: build, write, load, curves, scores."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from fedpatch_app.errors import DataError
from fedpatch_app.results.schema import (
    build_results,
    category_block,
    load_curves,
    load_results,
    load_scores,
    write_curves,
    write_results,
    write_scores,
)


def _block(spro: list[float], auroc_mean: float | None, **extra: object) -> dict:
    return category_block(
        auc_spro=dict(zip((0.01, 0.05, 0.1, 0.3, 1.0), spro, strict=True)),
        image_auroc={"mean": auroc_mean, "pooled": 0.5, "missing": auroc_mean},
        counts={"train": 10, "test_good": 4, "test_defective": 3},
        **extra,
    )


def _results() -> dict:
    cats = {
        "tank_screw": _block([0.1, 0.2, 0.3, 0.4, 0.5], 0.9),
        "pipe_clip": _block(
            [0.3, 0.4, 0.5, 0.6, 0.7],
            0.7,
            auc_spro_per_defect={"unclipped": {"0.01": 1, "0.05": 1, "0.1": 1, "0.3": 1, "1.0": 1}},
            bank_size=np.int64(123),
        ),
    }
    return build_results(
        "centralized",
        "baseline",
        config={"seed": 0, "data_root": Path("data")},
        weights="imagenet-v1",
        seconds={"total": 12.5},
        categories=cats,
        warnings=["random weights"],
        federated={"clients": 5},
    )


def test_category_block_normalises_keys_and_values() -> None:
    block = _block([np.float32(0.25), 0.5, 0.5, 0.5, 0.5], float("nan"))
    assert list(block["auc_spro"]) == ["0.01", "0.05", "0.1", "0.3", "1.0"]
    assert block["auc_spro"]["0.01"] == 0.25 and type(block["auc_spro"]["0.01"]) is float
    assert block["image_auroc"]["mean"] is None  # NaN is stored as null
    with pytest.raises(ValueError, match="0.3"):
        category_block(
            {"0.01": 1, "0.05": 1, "0.1": 1, "1.0": 1},
            {"mean": 1, "pooled": 1},
            {"train": 1, "test_good": 1, "test_defective": 1},
        )


def test_build_results_mean_by_hand() -> None:
    results = _results()
    assert list(results["categories"]) == ["pipe_clip", "tank_screw"]
    mean = results["mean"]
    assert mean["auc_spro"]["0.01"] == pytest.approx((0.1 + 0.3) / 2)
    assert mean["auc_spro"]["0.05"] == pytest.approx((0.2 + 0.4) / 2)
    assert mean["auc_spro"]["0.1"] == pytest.approx((0.3 + 0.5) / 2)
    assert mean["auc_spro"]["0.3"] == pytest.approx((0.4 + 0.6) / 2)
    assert mean["auc_spro"]["1.0"] == pytest.approx((0.5 + 0.7) / 2)
    assert mean["image_auroc"] == pytest.approx((0.9 + 0.7) / 2)
    assert results["run"] == {
        "kind": "centralized",
        "name": "baseline",
        "config": {"seed": 0, "data_root": "data"},
        "weights": "imagenet-v1",
        "seconds": {"total": 12.5},
    }
    assert results["warnings"] == ["random weights"]
    assert results["federated"] == {"clients": 5}
    assert results["categories"]["pipe_clip"]["bank_size"] == 123


def test_mean_skips_undefined_values() -> None:
    cats = {"a": _block([1, 1, 1, 1, 1], None), "b": _block([0, 0, 0, 0, 0], 0.6)}
    results = build_results("evaluate", "x", {}, None, {}, cats)
    assert results["mean"]["image_auroc"] == pytest.approx(0.6)
    assert results["mean"]["auc_spro"]["0.3"] == pytest.approx(0.5)
    assert results["warnings"] == []


def test_write_and_load_round_trip(tmp_path: Path) -> None:
    results = _results()
    path = write_results(tmp_path / "run", results)
    assert path == tmp_path / "run" / "results.json"
    text = path.read_text()
    raw = json.loads(text)
    assert list(raw["categories"]) == ["pipe_clip", "tank_screw"]
    assert isinstance(raw["categories"]["tank_screw"]["auc_spro"]["1.0"], float)
    assert "NaN" not in text
    loaded = load_results(tmp_path / "run")
    assert loaded == results
    assert load_results(path) == results
    assert not list((tmp_path / "run").glob(".*tmp"))  # atomic write leaves no temp file


def test_load_rejects_missing_key(tmp_path: Path) -> None:
    results = _results()
    del results["categories"]["tank_screw"]["auc_spro"]["0.3"]
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results))
    with pytest.raises(
        DataError, match=r"results\.json lacks the key 'categories\.tank_screw\.auc_spro\.0\.3'"
    ):
        load_results(path)
    del results["run"]["weights"]
    path.write_text(json.dumps(results))
    with pytest.raises(DataError, match="'run.weights'"):
        load_results(path)
    with pytest.raises(DataError, match="missing"):
        load_results(tmp_path / "nowhere")
    # write_results validates too, and writes nothing then.
    with pytest.raises(DataError, match="run.weights"):
        write_results(tmp_path / "out", results)
    assert not (tmp_path / "out" / "results.json").exists()


def test_curves_round_trip(tmp_path: Path) -> None:
    curves = {
        "pipe_clip": {
            "spro_fpr": np.linspace(0, 1, 5),
            "spro": np.linspace(0, 1, 5) ** 0.5,
            "roc_fpr": np.array([0.0, 0.5, 1.0]),
            "roc_tpr": np.array([0.0, 1.0, 1.0], dtype=np.float32),
        }
    }
    write_curves(tmp_path, curves)
    with np.load(tmp_path / "curves.npz", allow_pickle=False) as npz:
        assert sorted(npz.files) == [
            "pipe_clip/roc_fpr",
            "pipe_clip/roc_tpr",
            "pipe_clip/spro",
            "pipe_clip/spro_fpr",
        ]
    loaded = load_curves(tmp_path)
    assert set(loaded) == {"pipe_clip"}
    for key, value in curves["pipe_clip"].items():
        np.testing.assert_array_equal(loaded["pipe_clip"][key], value)
        assert loaded["pipe_clip"][key].dtype == np.float64
    with pytest.raises(DataError, match="curves.npz is missing"):
        load_curves(tmp_path / "none")


@dataclass(frozen=True)
class Sample:
    defect: str
    image_id: str

    @property
    def rel_path(self) -> str:
        return f"test/{self.defect}/{self.image_id}.png"


def test_scores_round_trip(tmp_path: Path) -> None:
    samples = [Sample("good", "000"), Sample("missing", "003")]
    scores = [0.1 + 0.2, math.pi]
    path = write_scores(tmp_path, "tank_screw", samples, scores)
    assert path.read_text().splitlines()[0] == "rel_path,defect,score,normalized_score"
    loaded = load_scores(tmp_path, "tank_screw")
    assert loaded.rel_paths == ["test/good/000.png", "test/missing/003.png"]
    assert loaded.defects == ["good", "missing"]
    assert loaded.scores.tolist() == scores  # exact: written with repr
    with pytest.raises(DataError, match="pipe_clip.csv is missing"):
        load_scores(tmp_path, "pipe_clip")
