"""RunSettings: typed run config, every bad value named by its key."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from fedpatch_app.config import RunSettings
from fedpatch_app.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def test_defaults_of_pyproject_parse() -> None:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    config = data["tool"]["flwr"]["app"]["config"]
    settings = RunSettings.from_run_config(config)
    assert settings.unknown_keys == ()
    assert settings.partition == config["partition"]
    assert settings.num_clients == config["num-clients"]
    assert settings.coreset_ratio == pytest.approx(config["coreset-ratio"])
    assert settings.local_oversample == pytest.approx(config["local-oversample"])
    assert settings.out_dir == Path(config["out-dir"])


def test_values_are_typed_and_normalised() -> None:
    settings = RunSettings.from_run_config(
        {
            "dataset": "Synthetic",
            "coreset-ratio": 1,  # TOML integer where a float is expected
            "num-clients": 3,
            "min-clients": 2,
            "categories": "pipe_clip, engine_wiring pipe_clip",
            "write-maps": "true",
            "device": "cuda:1",
            "transport-dtype": "float16",
        }
    )
    assert settings.dataset == "synthetic"
    assert settings.coreset_ratio == 1.0 and isinstance(settings.coreset_ratio, float)
    # fixed category order, duplicates dropped
    assert settings.categories == ("engine_wiring", "pipe_clip")
    assert settings.write_maps is True
    assert settings.device == "cuda:1"
    assert settings.transport_dtype == "float16"
    assert RunSettings.from_run_config({"categories": ""}).categories is None


@pytest.mark.parametrize(
    ("config", "key"),
    [
        ({"dataset": "mvtec"}, "dataset"),
        ({"partition": "random"}, "partition"),
        ({"num-clients": 0, "min-clients": 0}, "num-clients"),
        ({"num-clients": 2, "min-clients": 3}, "min-clients"),
        ({"num-clients": "five"}, "num-clients"),
        ({"coreset-ratio": 0.0}, "coreset-ratio"),
        ({"coreset-ratio": 1.5}, "coreset-ratio"),
        ({"coreset-ratio": "nan"}, "coreset-ratio"),
        ({"coreset-ratio": True}, "coreset-ratio"),
        ({"local-oversample": 0.5}, "local-oversample"),
        ({"image-size": 8}, "image-size"),
        ({"device": "tpu"}, "device"),
        ({"categories": "pipe_clip,bogus"}, "categories"),
        ({"run-name": "../escape"}, "run-name"),
        ({"transport-dtype": "int8"}, "transport-dtype"),
        ({"write-maps": "maybe"}, "write-maps"),
        ({"max-coreset-rows": 0}, "max-coreset-rows"),
        ({"weights": ""}, "weights"),
        ({"dirichlet-alpha": -1}, "dirichlet-alpha"),
    ],
)
def test_bad_values_name_their_key(config: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=f"'{key}'"):
        RunSettings.from_run_config(config)


def test_unknown_keys_are_kept_not_fatal() -> None:
    settings = RunSettings.from_run_config({"coreset-ration": 0.2})
    assert settings.unknown_keys == ("coreset-ration",)
    assert settings.coreset_ratio == 0.1


def test_to_dict_round_trips() -> None:
    settings = RunSettings.from_run_config(
        {"categories": "tank_screw", "out-dir": "somewhere", "seed": 3}
    )
    again = RunSettings.from_run_config(settings.to_dict())
    assert again == settings
    assert settings.to_dict()["categories"] == ["tank_screw"]
    assert set(settings.to_dict()) == set(RunSettings.keys())


def test_run_name() -> None:
    assert (
        RunSettings().resolved_run_name("20250101-000000") == "federated-category-20250101-000000"
    )
    assert RunSettings.from_run_config({"run-name": "r1"}).resolved_run_name("x") == "r1"
