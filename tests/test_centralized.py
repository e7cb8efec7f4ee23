"""`fedpatch centralized` end to end on tiny synthetic data (random weights)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from fedpatch_app.cli import main
from fedpatch_app.data.autovi import load_category
from fedpatch_app.model.patchcore import Bank
from fedpatch_app.settings import from_names


@pytest.mark.slow
def test_centralized_cli_writes_results_maps_and_banks(tiny_root, tmp_path, capsys) -> None:
    out = tmp_path / "central"
    args = ["centralized", "--data-root", str(tiny_root), "--out", str(out), "--categories"]
    args += ["pipe_staple", "underbody_pipes", "--weights", "none", "--image-size", "96"]
    assert main(args) == 0
    assert "mean" in capsys.readouterr().out
    results = json.loads((out / "results.json").read_text())
    assert results["run"]["kind"] == "centralized"
    assert results["run"]["weights"] == "none"
    assert set(results["categories"]) == {"pipe_staple", "underbody_pipes"}
    for name, block in results["categories"].items():
        category = load_category(tiny_root, name)
        assert set(block["auc_spro"]) == {"0.01", "0.05", "0.1", "0.3", "1.0"}
        assert all(0.0 <= v <= 1.0 for v in block["auc_spro"].values())
        # Training images: in the bank, or held out (10%, at least one) for the thresholds.
        assert block["counts"]["calibration"] == max(1, round(0.1 * len(category.train)))
        assert block["counts"]["train"] + block["counts"]["calibration"] == len(category.train)
        assert block["thresholds"]["image"]["calibration_images"] == block["counts"]["calibration"]
        assert block["counts"]["test_good"] + block["counts"]["test_defective"] == len(
            category.test
        )
        assert block["bank"]["size"] == Bank.load(out / "model" / "banks" / f"{name}.npz").size
        # One 16-bit single-channel map at native size for every test image.
        width, height = category.size
        for sample in category.test:
            png = out / "maps" / name / "test" / sample.defect / f"{sample.image_id}.png"
            with Image.open(png) as im:
                assert im.mode in ("I;16", "I")
                assert im.size == (width, height)
        assert (out / "maps" / name / "scaling.json").is_file()
        # Defective images score above good ones on average (scores/<cat>.csv).
        rows = (out / "scores" / f"{name}.csv").read_text().splitlines()[1:]
        scores = [(r.split(",")[1], float(r.split(",")[2])) for r in rows]
        good = np.mean([s for d, s in scores if d == "good"])
        bad = np.mean([s for d, s in scores if d != "good"])
        assert bad > good
    means = results["mean"]["auc_spro"]
    assert means["0.3"] == pytest.approx(
        np.mean([b["auc_spro"]["0.3"] for b in results["categories"].values()])
    )

    # `fedpatch evaluate` on the exported maps reproduces the run's metrics exactly.
    ev = tmp_path / "eval"
    args = ["evaluate", "--data-root", str(tiny_root), "--maps", str(out / "maps"), "--out"]
    assert main([*args, str(ev)]) == 0
    again = json.loads((ev / "results.json").read_text())
    for name, block in results["categories"].items():
        assert again["categories"][name]["auc_spro"] == block["auc_spro"]
        assert again["categories"][name]["image_auroc"] == block["image_auroc"]


def test_centralized_rejects_bad_settings(tiny_root, tmp_path, capsys) -> None:
    code = main(
        [
            "centralized",
            "--data-root",
            str(tiny_root),
            "--out",
            str(tmp_path / "o"),
            "--categories",
            "no_such_cat",
            "--weights",
            "none",
        ]
    )
    assert code == 2
    assert "no_such_cat" in capsys.readouterr().err
    code = main(
        [
            "centralized",
            "--data-root",
            str(tmp_path / "missing"),
            "--out",
            str(tmp_path / "o"),
            "--weights",
            "none",
        ]
    )
    assert code == 2
    assert "missing" in capsys.readouterr().err
    code = main(
        [
            "centralized",
            "--data-root",
            str(tiny_root),
            "--out",
            str(tmp_path / "o"),
            "--coreset-ratio",
            "0",
            "--weights",
            "none",
        ]
    )
    assert code == 2
    assert "coreset-ratio" in capsys.readouterr().err


@pytest.mark.slow
def test_local_only_scores_every_test_image_with_its_clients_bank(tiny_root, tmp_path) -> None:
    from fedpatch_app.data.partition import make_partition
    from fedpatch_app.runs.local_only import run_local_only

    cats = ["pipe_staple"]
    partition = make_partition(tiny_root, "category", 5, 0.5, 0, cats, layout="auto")
    out = tmp_path / "local"
    settings = from_names(
        {
            "data_root": str(tiny_root),
            "categories": cats,
            "weights": "none",
            "image_size": 64,
            "device": "cpu",
        }
    )
    results = run_local_only(settings, out, partition)
    assert results["run"]["kind"] == "local-only"
    block = results["categories"]["pipe_staple"]
    category = load_category(tiny_root, "pipe_staple")
    # Every test image has a map, scored by the client that holds it.
    rows = (out / "scores" / "pipe_staple.csv").read_text().splitlines()[1:]
    assert sorted(r.split(",")[0] for r in rows) == sorted(s.rel_path for s in category.test)
    holders = {str(c.client) for c in partition.clients if c.train.get("pipe_staple")}
    assert set(block["clients"]) <= holders
    for client, entry in block["clients"].items():
        share = partition.clients[int(client)]
        assert entry["train_images"] == len(share.train["pipe_staple"])
        assert entry["test_images"] == len(share.test["pipe_staple"])
        assert ("auc_spro" in entry) != ("note" in entry)
    assert sum(e["test_images"] for e in block["clients"].values()) == len(category.test)
