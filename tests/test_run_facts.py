"""What a run used, read from results.json in the current layout and in the older ones."""

from __future__ import annotations

from typing import Any

from fedpatch_app.results import run_facts
from fedpatch_app.results.schema import build_results, category_block

LIMITS = ("0.01", "0.05", "0.1", "0.3", "1.0")


def _results(kind: str, config: dict[str, Any], weights: str, **extra: Any) -> dict[str, Any]:
    block = category_block(
        auc_spro=dict.fromkeys(LIMITS, 0.5),
        image_auroc={"mean": 0.6, "pooled": 0.6},
        counts={"train": 3, "test_good": 2, "test_defective": 2},
    )
    return build_results(kind, "r", config, weights, {"total": 1.0}, {"pipe_clip": block}, **extra)


def _new_layout(synthetic: bool, weights: str = "imagenet-v1") -> dict[str, Any]:
    results = _results("centralized", {"coreset_ratio": 0.1, "image_size": 128}, weights)
    spec = {"backbone": "wide_resnet50_2", "weights": weights, "image_size": 128}
    results["run"]["features"] = {
        "backbone": "wide_resnet50_2",
        "weights": weights,
        "random_weights": weights == "none",
        "fingerprint": "abc123",
        "spec": spec,
    }
    results["run"]["data"] = {
        "kind": "synthetic" if synthetic else "autovi",
        "synthetic": {"kind": "photo", "scale": "small", "seed": 4} if synthetic else None,
        "root": "data/x",
        "categories": ["pipe_clip"],
    }
    results["run"]["outputs"] = {"maps": "maps"}
    results["run"]["status"] = "completed"
    return results


def test_new_layout_is_read_as_recorded() -> None:
    results = _new_layout(synthetic=True)
    f = run_facts.features(results)
    assert (f.backbone, f.weights, f.random_weights, f.fingerprint) == (
        "wide_resnet50_2",
        "imagenet-v1",
        False,
        "abc123",
    )
    assert f.image_size == 128
    d = run_facts.data(results)
    assert d.is_synthetic and d.root == "data/x" and d.categories == ["pipe_clip"]
    assert d.synthetic == run_facts.SyntheticFacts("photo", "small", 4)
    assert d.synthetic.describe() == "photo, scale small, seed 4"
    assert run_facts.maps_folder(results) == "maps"
    assert run_facts.status(results) == "completed"
    assert run_facts.config(results) == {"coreset_ratio": 0.1, "image_size": 128}

    real = run_facts.data(_new_layout(synthetic=False))
    assert real.kind == "autovi" and real.synthetic is None and not real.is_synthetic
    assert run_facts.features(_new_layout(False, weights="none")).random_weights


def test_older_federated_layout_with_kebab_case_settings() -> None:
    """The layout federated runs wrote before ``run.features`` and ``run.data``."""
    config = {
        "dataset": "auto",
        "data-root": "data/autovii",
        "weights": "imagenet",
        "coreset-ratio": 0.1,
        "image-size": 64,
        "synthetic-scale": "tiny",
        "seed": 3,
        "dataset_used": "synthetic",
        "data_root_used": "runs/.synthetic/tiny-seed3",
        "categories_used": ["pipe_clip", "pipe_staple"],
        "feature_spec": {"weights": "none", "image_size": 64, "backbone": "wide_resnet50_2"},
        "fingerprint": "f00d",
    }
    results = _results("federated", config, "none", dataset="synthetic")
    f = run_facts.features(results)
    assert (f.weights, f.random_weights, f.fingerprint, f.image_size) == ("none", True, "f00d", 64)
    d = run_facts.data(results)
    assert d.kind == "synthetic"
    assert d.synthetic == run_facts.SyntheticFacts("drawn", "tiny", 3)
    assert d.root == "runs/.synthetic/tiny-seed3"  # what was used, not what was asked
    assert d.categories == ["pipe_clip", "pipe_staple"]
    cfg = run_facts.config(results)
    assert cfg["coreset_ratio"] == 0.1 and cfg["image_size"] == 64
    assert not any("-" in key for key in cfg)
    assert run_facts.weights_asked(results) == "imagenet-v1"
    assert run_facts.status(results) is None
    assert run_facts.maps_folder(results) is None


def test_older_centralized_and_evaluate_layouts() -> None:
    central = _results(
        "centralized",
        {"data_root": "data/autovi", "categories": ["pipe_clip"], "weights": "imagenet"},
        "imagenet-v1",
    )
    f = run_facts.features(central)
    assert (f.backbone, f.weights, f.random_weights, f.fingerprint) == (
        "wide_resnet50_2",
        "imagenet-v1",
        False,
        None,
    )
    d = run_facts.data(central)
    assert d.kind == "unknown" and d.root == "data/autovi" and d.synthetic is None

    evaluated = _results("evaluate", {"data_root": "/d", "maps": "/m/maps"}, "imagenet-v1, none")
    assert run_facts.features(evaluated).random_weights
    assert run_facts.maps_folder(evaluated) == "/m/maps"
    assert run_facts.data(evaluated).categories == ["pipe_clip"]  # from the category blocks


def test_snake_case_keeps_the_snake_key_when_both_exist() -> None:
    assert run_facts.snake_case({"data-root": "asked", "data_root": "kept", "x-y": 1}) == {
        "data_root": "kept",
        "x_y": 1,
    }
