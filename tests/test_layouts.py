"""Any folder of images: the mvtec and folder layouts, any category name, thin data."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import own_data
import pytest
import regression_data

from fedpatch_app.data.layouts import available_categories, category_layout, load_category
from fedpatch_app.errors import DataError
from fedpatch_app.runs.centralized import run_centralized
from fedpatch_app.settings import from_names

NAMES = sorted(own_data.SIZES)


@pytest.fixture(scope="module")
def mvtec_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return own_data.write(tmp_path_factory.mktemp("mvtec"), "mvtec")


def _settings(root: Path, **more: object):
    base = {"data_root": str(root), "weights": "none", "image_size": 64, "device": "cpu"}
    return from_names({**base, **more})


def test_layouts_are_detected_per_category_and_names_follow_the_rule(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = own_data.write(tmp_path / "data", "mvtec", test=False)
    regression_data.write_category(root, "pipe_clip", 40, 40, "unclipped")  # autovi layout
    own_data.save(np.zeros((8, 8, 3), np.uint8), root / "line 3" / "good" / "a.png")
    (root / "empty").mkdir()
    with caplog.at_level(logging.WARNING):
        found = available_categories(root)
    assert found == [*NAMES[:1], "pipe_clip", NAMES[1]]  # sorted names, any of them
    assert [category_layout(root / n) for n in found] == ["mvtec", "autovi", "mvtec"]
    text = caplog.text
    assert "line 3" in text and "letters, digits" in text  # the rule, stated
    assert "empty" in text and "expected" in text
    assert available_categories(root, "folder") == []
    with pytest.raises(DataError, match="not in the folder layout"):
        load_category(root, NAMES[0], "folder")
    with pytest.raises(DataError, match="'../x' is not allowed: use letters"):
        load_category(root, "../x")


def test_mvtec_masks_give_one_region_per_connected_component(mvtec_root: Path, tmp_path: Path):
    cat = load_category(mvtec_root, "my-bracket")
    assert cat.layout == "mvtec" and cat.size == own_data.SIZES["my-bracket"]
    assert cat.train_rel[0] == "train/good/000.png" and cat.has_masks
    sample = cat.find_test("test/dent/000.png")
    (region,) = cat.load_regions(sample)
    assert region.saturation_area == region.area > 0 and region.defect == "dent"
    # Two blobs in one mask: two regions, each fully saturated at its whole area.
    root = tmp_path / "two"
    shutil.copytree(mvtec_root / "my-bracket", root / "my-bracket")
    mask = np.zeros((80, 96), np.uint8)
    mask[2:6, 2:6] = 255
    mask[40:50, 60:70] = 1
    own_data.save(mask, root / "my-bracket" / "ground_truth" / "dent" / "000_mask.png")
    copy = load_category(root, "my-bracket")
    regions = copy.load_regions(copy.find_test("test/dent/000.png"))
    assert sorted(r.area for r in regions) == [16, 100]
    assert all(r.saturation_area == r.area for r in regions)


def test_folder_layout_without_masks_or_tests(tmp_path: Path) -> None:
    root = own_data.write(tmp_path / "a", "folder", masks=False, suffix=".jpg")
    cat = load_category(root, "valve.cover_2")
    assert cat.layout == "folder" and cat.train_rel[0] == "good/000.jpg"
    assert len(cat.test) == 6 and not cat.has_masks
    good_only = own_data.write(tmp_path / "b", "folder", test=False)
    assert load_category(good_only, "valve.cover_2").test == ()


def test_mixed_sizes_are_named_and_resized(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = own_data.write(tmp_path / "data", "folder", test=False)
    odd = own_data.save(np.full((50, 60, 3), 99, np.uint8), root / "my-bracket" / "good" / "x.png")
    with caplog.at_level(logging.WARNING):
        cat = load_category(root, "my-bracket")
    assert cat.size == (96, 80) and str(odd) in caplog.text and "resized" in caplog.text


def test_centralized_on_mvtec_data_with_own_names(mvtec_root: Path, tmp_path: Path) -> None:
    results = run_centralized(_settings(mvtec_root), tmp_path / "run")
    assert sorted(results["categories"]) == NAMES
    for block in results["categories"].values():
        assert 0.0 <= block["auc_spro"]["0.3"] <= 1.0
        assert block["image_auroc"]["mean"] is not None and "not_available" not in block
    assert results["run"]["data"]["name"] == f"{mvtec_root.name} (mvtec layout)"
    model = json.loads((tmp_path / "run" / "model" / "model.json").read_text())
    assert model["categories"]["valve.cover_2"]["native_size"] == [72, 72]
    trained = model["provenance"]["training_data"]
    assert trained["synthetic"] is False and trained["dataset"] == results["run"]["data"]["name"]
    assert trained["categories"]["my-bracket"] == {
        "layout": "mvtec",
        "train_images": 7,
        "calibration_images": 1,
        "test_good": own_data.GOOD_TEST,
        "test_defective": own_data.BAD_TEST,
    }


def test_thin_data_report_what_is_not_available(tmp_path: Path) -> None:
    no_masks = own_data.write(tmp_path / "a", "folder", masks=False)
    results = run_centralized(_settings(no_masks), tmp_path / "run-a")
    block = results["categories"]["my-bracket"]
    assert set(block["auc_spro"].values()) == {None}  # never 0 or NaN
    assert "no ground-truth mask" in block["not_available"]["auc_spro"]
    assert block["image_auroc"]["mean"] is not None
    assert block["thresholds"]["on_test"]["test_defective"] == own_data.BAD_TEST
    # One held-out good image: the threshold rests on 1 score, and the results say so.
    assert block["thresholds"]["image"]["calibration_images"] == 1
    assert any(
        "my-bracket: the image threshold rests on 1 calibration score" in w
        for w in results["warnings"]
    )

    good_only = own_data.write(tmp_path / "b", "folder", test=False)
    results = run_centralized(_settings(good_only), tmp_path / "run-b")
    block = results["categories"]["valve.cover_2"]
    assert block["image_auroc"]["mean"] is None
    assert "nothing to evaluate" in block["not_available"]["image_auroc"]
    assert block["thresholds"]["image"]["raw"] > 0  # the model is calibrated all the same


def test_results_name_the_layout_and_never_call_synthetic_data_autovi(tmp_path: Path) -> None:
    from fedpatch_app.results.schema import data_facts

    synthetic = {"kind": "photo", "scale": "small", "seed": 0}
    facts = data_facts("autovi", tmp_path, ["pipe_clip"], synthetic, {"pipe_clip": "autovi"})
    assert facts["kind"] == "synthetic"
    assert facts["name"] == "built-in synthetic data (photo, scale small, seed 0)"
    own = data_facts("autovi", tmp_path / "parts", ["a"], None, {"a": "mvtec"})
    assert own["name"] == "parts (mvtec layout)" and own["layouts"] == {"a": "mvtec"}


def test_sizes_are_agreed_by_most_clients_and_dissent_is_left_out() -> None:
    from types import SimpleNamespace

    from fedpatch_app.federated.protocol.category_sizes import agree_sizes

    def reply(**sizes: tuple[int, int]) -> SimpleNamespace:
        return SimpleNamespace(sizes=dict(sizes), coresets={c: object() for c in sizes})

    replies = {1: reply(a=(96, 80), b=(72, 72)), 2: reply(a=(96, 80)), 3: reply(a=(50, 50))}
    registry = SimpleNamespace(clients={n: SimpleNamespace(label=f"node {n}") for n in replies})
    agreed = agree_sizes(replies, {}, registry)
    assert agreed == {"a": (96, 80), "b": (72, 72)}
    assert "a" not in replies[3].coresets and "a" in replies[2].coresets
    # A size the plan fixes (the server saw the data) wins over any count of replies.
    replies = {1: reply(a=(96, 80)), 2: reply(a=(96, 80)), 3: reply(a=(50, 50))}
    assert agree_sizes(replies, {"a": (50, 50)}, registry) == {"a": (50, 50)}
    assert list(replies[3].coresets) == ["a"] and not replies[1].coresets


@pytest.mark.slow
def test_a_federation_of_lines_each_with_its_own_folder(tmp_path: Path) -> None:
    """The server sees no data: the categories and their sizes come from the lines."""
    from fedpatch_app.federated.inprocess import run_inprocess

    line_a = own_data.write(tmp_path / "line-a", "folder", suffix=".jpg")
    line_b = own_data.write(tmp_path / "line-b", "mvtec")
    shutil.rmtree(line_b / "valve.cover_2")
    config = {
        "dataset": "autovi",
        "data-root": str(tmp_path / "not-here"),
        "num-clients": 2,
        "min-clients": 2,
        "weights": "none",
        "image-size": 64,
        "device": "cpu",
        "out-dir": str(tmp_path / "runs"),
        "run-name": "lines",
        "wait-timeout": 0,
    }
    nodes = [{"data-root": str(line_a), "layout": "folder"}, {"data-root": str(line_b)}]
    results = run_inprocess(config, node_configs=nodes).results
    assert sorted(results["categories"]) == NAMES
    assert results["categories"]["my-bracket"]["counts"]["test_good"] == 2 * own_data.GOOD_TEST
    model = json.loads((tmp_path / "runs" / "lines" / "model" / "model.json").read_text())
    sizes = {c: tuple(e["native_size"]) for c, e in model["categories"].items()}
    assert sizes == own_data.SIZES


def test_source_check_passes_over_defective_images_without_masks(tmp_path: Path) -> None:
    from fedpatch_app.federated.client import _check_report

    root = own_data.write(tmp_path, "folder", masks=False)
    cat = load_category(root, "my-bracket")
    rel = list(cat.test_rel)
    grids = [np.ones((3, 4, 4), np.float32) for _ in rel]  # (sources + 1, h, w)
    assert _check_report(cat, rel, grids, [np.ones((3, 4, 4), np.float32)], 2) is None


def test_experiment_tables_give_the_reason_of_a_missing_metric() -> None:
    from fedpatch_app.experiment.summary import _metric_table

    block = {
        "auc_spro": dict.fromkeys(("0.01", "0.05", "0.1", "0.3", "1.0")),
        "image_auroc": {"mean": 0.9, "pooled": 0.9},
        "not_available": {"auc_spro": "no masks here"},
    }
    mean = {"auc_spro": block["auc_spro"], "image_auroc": 0.9}
    results = {"run": {"kind": "centralized"}, "categories": {"a": block}, "mean": mean}
    lines = _metric_table([("centralized", results)], ["a"], "0.3", "AUC-sPRO@0.3")
    assert "- a: not available: no masks here" in lines
    assert not any(
        "not available" in x for x in _metric_table([("c", results)], ["a"], "auroc", "x")
    )
