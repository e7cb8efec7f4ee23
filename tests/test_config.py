"""The settings schema: typed run config, every bad value named by its key, and every
view (pyproject, CLI, files) derived from the one definition."""

from __future__ import annotations

import argparse
import tomllib
from pathlib import Path

import pytest

from fedpatch_app.cli import build_parser
from fedpatch_app.errors import ConfigError
from fedpatch_app.settings import (
    SETTINGS,
    RunSettings,
    from_names,
    from_run_config,
    replace,
    to_names,
    to_run_config,
)
from fedpatch_app.settings.options import add_options, settings_from_args
from fedpatch_app.settings.table import pyproject_table

ROOT = Path(__file__).resolve().parents[1]


def test_pyproject_defaults_are_the_schema_defaults() -> None:
    """pyproject's [tool.flwr.app.config] may not drift from the schema: same keys, same
    values, same order (it is printed by `fedpatch settings --toml`)."""
    data = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    config = data["tool"]["flwr"]["app"]["config"]
    assert config == to_run_config(RunSettings())
    assert list(config) == [s.key for s in SETTINGS]
    assert tomllib.loads(pyproject_table())["tool"]["flwr"]["app"]["config"] == config


def test_values_are_typed_and_normalised() -> None:
    settings = from_run_config(
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
    assert from_run_config({"categories": ""}).categories is None


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
        ({"image-size": 100_000}, "image-size"),
        ({"seed": -1}, "seed"),
        ({"seed": 2**70}, "seed"),
        ({"device": "tpu"}, "device"),
        ({"categories": "pipe_clip,../etc"}, "categories"),
        ({"run-name": "../escape"}, "run-name"),
        ({"transport-dtype": "int8"}, "transport-dtype"),
        ({"write-maps": "maybe"}, "write-maps"),
        ({"max-coreset-rows": 0}, "max-coreset-rows"),
        ({"weights": ""}, "weights"),
        ({"dirichlet-alpha": -1}, "dirichlet-alpha"),
        ({"dp-delta": 1.5}, "dp-delta"),
    ],
)
def test_bad_values_name_their_key(config: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=f"'{key}'"):
        from_run_config(config)


def test_unknown_keys_are_refused_with_a_suggestion() -> None:
    with pytest.raises(ConfigError, match=r"'coreset-ration' \(did you mean 'coreset-ratio'\?\)"):
        from_run_config({"coreset-ration": 0.2})
    with pytest.raises(ConfigError, match="'colour'"):
        from_names({"colour": "red"})


def test_file_and_run_config_views_round_trip() -> None:
    settings = from_run_config(
        {"categories": "tank_screw", "out-dir": "somewhere", "seed": 3, "dp-epsilon": 2}
    )
    assert from_run_config(to_run_config(settings)) == settings
    names = to_names(settings)
    assert from_names(names) == settings
    assert names["categories"] == ["tank_screw"] and names["dp_epsilon"] == 2.0
    assert set(names) == {s.name for s in SETTINGS}
    assert set(to_run_config(settings)) == {s.key for s in SETTINGS}
    assert replace(settings, seed=4).seed == 4 and replace(settings, seed=4).dp.epsilon == 2.0


def test_dp_settings_are_one_object() -> None:
    settings = from_run_config({"dp-epsilon": 1.5, "dp-centres": 32})
    assert settings.dp.epsilon == 1.5 and settings.dp.centres == 32 and settings.dp.enabled


def test_run_name() -> None:
    assert (
        RunSettings().resolved_run_name("20250101-000000") == "federated-category-20250101-000000"
    )
    assert from_run_config({"run-name": "r1"}).resolved_run_name("x") == "r1"


def test_cli_options_come_from_the_schema() -> None:
    parser = argparse.ArgumentParser()
    add_options(parser, ["coreset_ratio", "write_maps", "categories", "dp_epsilon"])
    text = parser.format_help()
    assert "--coreset-ratio" in text and "> 0, <= 1" in text and "[default: 0.1]" in text
    assert "--no-write-maps" in text and "--dp-epsilon" in text
    args = parser.parse_args(["--coreset-ratio", "0.25", "--categories", "pipe_clip"])
    settings = settings_from_args(args)
    assert settings.coreset_ratio == 0.25 and settings.categories == ("pipe_clip",)
    assert settings.image_size == RunSettings().image_size
    with pytest.raises(ConfigError, match="option '--coreset-ratio'"):
        settings_from_args(parser.parse_args(["--coreset-ratio", "2"]))


def _walk(parser: argparse.ArgumentParser, path: str):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _walk(sub, f"{path} {name}")


def test_every_option_has_help_and_shows_its_default() -> None:
    """A test walks the whole parser: every option explains itself, and every option
    that takes a value is required or says its default."""
    from fedpatch_app.cli import Formatter

    for path, parser in _walk(build_parser(), "fedpatch"):
        formatter = Formatter(path)
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction) or not action.option_strings:
                continue
            name = f"{path} {action.option_strings[0]}"
            assert action.help, f"{name} has no help text"
            if action.required or action.nargs == 0 or action.dest in ("help", "version"):
                continue
            shown = formatter._get_help_string(action) or ""
            assert "default" in shown, f"{name} shows no default"


def test_the_container_image_installs_every_dependency() -> None:
    """docker/requirements.txt lists what the images need besides flwr and torch: every
    dependency of pyproject.toml, so a container never lacks what a pip install has."""
    import re

    data = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))

    def name(spec: str) -> str:
        return re.split(r"[\[<>=!~ ]", spec, maxsplit=1)[0].lower()

    needed = {name(d) for d in data["project"]["dependencies"]} - {"flwr", "torch", "torchvision"}
    lines = (ROOT / "docker" / "requirements.txt").read_text(encoding="utf-8").splitlines()
    listed = {name(x) for x in lines if x.strip() and not x.startswith("#")}
    assert needed <= listed, f"missing from docker/requirements.txt: {sorted(needed - listed)}"
