"""Command-line options derived from the settings schema.

`add_options(parser, names)` gives a subcommand one `--option` per setting it uses, with
the schema's help text, range and default; `settings_from_args` builds RunSettings from
what the user typed on top of a base (the defaults, or a preset's settings). Values are
parsed by the schema itself, so a bad option is refused with the same message as a bad
run-config value.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable, Mapping
from typing import Any

from fedpatch_app.settings.fields import BY_NAME, Setting, check_value, from_names, to_names
from fedpatch_app.settings.schema import RunSettings


def _default_text(setting: Setting) -> str:
    value = setting.run_config_value(setting.default)
    return "all" if setting.name == "categories" and value == "" else repr(value)


def option_flag(setting: Setting, flags: Mapping[str, str] | None = None) -> str:
    """The option of `setting` (`--coreset-ratio`), or the shorter word a command uses."""
    return (flags or {}).get(setting.name) or f"--{setting.key}"


def add_option(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    setting: Setting,
    *,
    flag: str | None = None,
    required: bool = False,
) -> None:
    """One `--key` option for `setting` (booleans get `--key/--no-key`); `flag` renames
    the option where a command has a shorter word for it (`synth --scale`)."""
    default = "required" if required else f"default: {_default_text(setting)}"
    help_text = f"{setting.help} [{default}]"
    kwargs: dict = {"dest": setting.name, "default": argparse.SUPPRESS, "help": help_text}
    if required:
        kwargs["required"] = True
    if setting.kind is bool:
        kwargs["action"] = argparse.BooleanOptionalAction
    elif setting.name == "categories":
        kwargs.update(nargs="+", metavar="CATEGORY")
    elif setting.choices:
        kwargs["metavar"] = "{" + ",".join(setting.choices) + "}"
    else:
        kwargs["metavar"] = setting.kind.__name__.upper() if setting.kind is not str else "VALUE"
    parser.add_argument(flag or option_flag(setting), **kwargs)


def add_options(
    parser: argparse.ArgumentParser,
    names: Iterable[str],
    *,
    flags: Mapping[str, str] | None = None,
    required: Iterable[str] = (),
) -> None:
    """Options for the settings `names` (snake_case), in the order given."""
    group = parser.add_argument_group("settings (the same as the run-config keys)")
    must = set(required)
    for name in names:
        add_option(group, BY_NAME[name], flag=(flags or {}).get(name), required=name in must)


def given(args: argparse.Namespace) -> dict:
    """The settings the user typed on the command line (snake_case names)."""
    return {k: v for k, v in vars(args).items() if k in BY_NAME}


def settings_from_args(args: argparse.Namespace, base: RunSettings | None = None) -> RunSettings:
    """`base` (default: the schema's defaults) with the options the user gave."""
    values = to_names(base or RunSettings())
    values.update(given(args))
    return from_names(values, where="option", as_options=True)


def option_values(
    args: argparse.Namespace, names: Iterable[str], flags: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """The settings `names` of a command that takes them on their own (`synth`,
    `partition`, `evaluate`): what the user typed, else the schema's default, each checked
    by its field; a bad value is a ConfigError naming the option."""
    typed = given(args)
    out = {}
    for name in names:
        setting = BY_NAME[name]
        if name in typed:
            label = f"option '{option_flag(setting, flags)}'"
            out[name] = check_value(name, typed[name], label)
        else:
            out[name] = setting.default
    return out
