"""A federation where some lines' defective test images have ground-truth masks and
others' do not: the pooled AUC-sPRO rests on the masked images (and says how many), the
image AUROC on all; a category without any mask reports AUC-sPRO as not available."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import own_data

from fedpatch_app.data.layouts import load_category
from fedpatch_app.federated.client import _test_statistics
from fedpatch_app.metrics.map_scaling import MapScaling

BRACKET, VALVE = "my-bracket", "valve.cover_2"


def test_a_defective_image_without_mask_is_left_out_of_the_statistics(tmp_path: Path) -> None:
    root = own_data.write(tmp_path, "folder", masks=False)
    cat = load_category(root, BRACKET)
    samples = list(cat.test)
    height, width = cat.size[1], cat.size[0]
    maps = np.random.default_rng(0).random((len(samples), height, width)).astype(np.float32)
    stats = _test_statistics(maps, list(range(len(samples))), cat, samples, MapScaling(0.0, 1.0))
    # Counted as good, its defect pixels would pass for normal ones.
    assert stats.n_images == stats.n_good == own_data.GOOD_TEST
    assert stats.n_regions == 0


def test_pooled_auc_spro_rests_on_the_masked_lines_only(tmp_path: Path) -> None:
    from fedpatch_app.federated.inprocess import run_inprocess

    unmasked = own_data.write(tmp_path / "line-a", "folder", masks=False, suffix=".jpg")
    masked = own_data.write(tmp_path / "line-b", "mvtec")
    shutil.rmtree(masked / VALVE)  # the valve cover is made on the unmasked line only
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
    nodes = [{"data-root": str(unmasked), "layout": "folder"}, {"data-root": str(masked)}]
    results = run_inprocess(config, node_configs=nodes).results
    bracket, valve = results["categories"][BRACKET], results["categories"][VALVE]
    assert bracket["counts"]["test_defective"] == 2 * own_data.BAD_TEST
    assert bracket["image_auroc"]["mean"] is not None  # from every image
    assert bracket["auc_spro_rests_on"] == {
        "images": 2 * own_data.GOOD_TEST + own_data.BAD_TEST,
        "good": 2 * own_data.GOOD_TEST,
        "defective_with_mask": own_data.BAD_TEST,
        "defective_without_mask": own_data.BAD_TEST,
    }
    said = [w for w in results["warnings"] if w.startswith(f"{BRACKET}: AUC-sPRO rests on")]
    assert len(said) == 1 and f"{own_data.BAD_TEST} defective images without one" in said[0]
    spro = bracket["auc_spro"]
    assert all(v is not None and 0 < v <= 1 for v in spro.values()), spro
    assert "auc_spro" not in bracket.get("not_available", {})
    assert set(valve["auc_spro"].values()) == {None}
    assert "ground-truth mask" in valve["not_available"]["auc_spro"]
    assert valve["image_auroc"]["mean"] is not None
