"""The settings as a flat list, and every view derived from the schema.

`SETTINGS` lists each setting once with its flat name (`coreset_ratio`, `dp_epsilon`),
its place in `RunSettings` and its field definition. From it:

- `from_run_config` / `to_run_config`: Flower's run config (kebab-case keys);
- `from_names` / `to_names`: files (presets, results.json; snake_case keys);
- `describe`: a setting's help line (type, default, range), used by the CLI and docs.

A bad value raises `ConfigError` naming the key as the user wrote it.
"""

from __future__ import annotations

import functools
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import annotated_types as at
from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError
from pydantic.fields import FieldInfo

from fedpatch_app.errors import ConfigError
from fedpatch_app.settings.schema import ChoicesFrom, RunSettings

#: Groups of settings held as one object in RunSettings: field name -> flat-name prefix.
GROUPS = {"dp": "dp_"}


@dataclass(frozen=True)
class Setting:
    """One setting: flat name, place in RunSettings, and its definition."""

    name: str
    path: tuple[str, ...]
    info: FieldInfo

    @property
    def key(self) -> str:
        """Run-config key and CLI option name (`coreset-ratio`)."""
        return self.name.replace("_", "-")

    @property
    def features(self) -> bool:
        """It defines the patch features (a `FeatureSpec` field the predictor reads back)."""
        return bool((self.info.json_schema_extra or {}).get("features"))

    @property
    def recorded(self) -> bool:
        """model.json's provenance records it (it shapes the banks or thresholds)."""
        return bool((self.info.json_schema_extra or {}).get("recorded"))

    @property
    def default(self) -> Any:
        return self.info.get_default(call_default_factory=True)

    @property
    def choices(self) -> tuple[str, ...] | None:
        """The allowed values of a choice setting, else None."""
        for meta in self.info.metadata:
            if isinstance(meta, ChoicesFrom):
                return meta.names()
        for arg in _flatten(self.info.annotation):
            if typing.get_origin(arg) is Literal:
                return tuple(typing.get_args(arg))
        return None

    @property
    def kind(self) -> type:
        """bool, int, float or str (paths, choices and category lists are strings)."""
        default = self.default
        for kind in (bool, int, float):
            if type(default) is kind:
                return kind
        return str

    @property
    def help(self) -> str:
        """Description, range and default, for `--help` and the settings table."""
        text = self.info.description or ""
        limits = range_text(self.info)
        if limits:
            text += f" ({limits})"
        return text

    def run_config_value(self, value: Any) -> Any:
        """`value` as Flower's run config holds it (TOML scalars)."""
        if value is None:
            return ""
        if isinstance(value, tuple | list):
            return ",".join(str(v) for v in value)
        if isinstance(value, Path):
            return str(value)
        return value


def _flatten(annotation: Any) -> list[Any]:
    """The type and its members, through Annotated and unions."""
    out = [annotation]
    for arg in typing.get_args(annotation):
        out += _flatten(arg)
    return out


def range_text(info: FieldInfo) -> str:
    """Human-readable bounds of a field ("> 0, <= 1")."""
    parts = []
    for meta in info.metadata:
        for cls, symbol in ((at.Gt, ">"), (at.Ge, ">="), (at.Lt, "<"), (at.Le, "<=")):
            if isinstance(meta, cls):
                parts.append(f"{symbol} {getattr(meta, cls.__name__.lower())}")
    return ", ".join(parts)


def _collect(model: type[BaseModel], prefix: str, path: tuple[str, ...]) -> list[Setting]:
    out: list[Setting] = []
    for name, info in model.model_fields.items():
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            out += _collect(annotation, prefix + GROUPS[name], (*path, name))
        else:
            out.append(Setting(prefix + name, (*path, name), info))
    return out


#: Every setting, in schema order.
SETTINGS: tuple[Setting, ...] = tuple(_collect(RunSettings, "", ()))
BY_NAME: dict[str, Setting] = {s.name: s for s in SETTINGS}
BY_KEY: dict[str, Setting] = {s.key: s for s in SETTINGS}
BY_PATH: dict[tuple[str, ...], Setting] = {s.path: s for s in SETTINGS}
#: The settings that define the patch features, and those a model folder records.
FEATURE_SETTINGS: tuple[str, ...] = tuple(s.name for s in SETTINGS if s.features)
RECORDED_SETTINGS: tuple[str, ...] = tuple(s.name for s in SETTINGS if s.recorded)


def _nest(flat: Mapping[str, Any]) -> dict[str, Any]:
    """{flat name: value} -> the nested dict RunSettings validates."""
    nested: dict[str, Any] = {}
    for name, value in flat.items():
        setting = BY_NAME[name]
        target = nested
        for part in setting.path[:-1]:
            target = target.setdefault(part, {})
        target[setting.path[-1]] = value
    return nested


#: pydantic error types that mean "out of range": reported with the field's range.
_RANGE_ERRORS = {"greater_than", "greater_than_equal", "less_than", "less_than_equal"}


def _error(exc: ValidationError, label: dict[tuple[str, ...], str], where: str) -> ConfigError:
    """The first validation error as one line naming the key the user wrote."""
    err = exc.errors()[0]
    loc = tuple(str(p) for p in err["loc"] if not isinstance(p, int))
    path = next((loc[:n] for n in range(len(loc), 0, -1) if loc[:n] in label), None)
    if path is None:
        return ConfigError(f"{where}: {str(err['msg']).removeprefix('Value error, ')}")
    return _field_error(err, BY_PATH[path], f"{where} '{label[path]}'")


def _field_error(err: Any, setting: Setting, where: str) -> ConfigError:
    message = str(err["msg"]).removeprefix("Value error, ")
    if err["type"] in _RANGE_ERRORS:
        message = f"must be {range_text(setting.info)}"
    elif err["type"] == "literal_error":
        message = f"expected one of {', '.join(setting.choices or ())}"
    return ConfigError(f"{where}: {message}, got {err.get('input')!r}")


@functools.cache
def _adapter(name: str) -> TypeAdapter:
    info = BY_NAME[name].info
    kind = typing.Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation
    return TypeAdapter(kind, config=ConfigDict(allow_inf_nan=False))


def check_value(name: str, value: Any, label: str) -> Any:
    """`value` of setting `name` checked by its field alone (type, range, choices), as the
    schema parses it; a ConfigError names it as `label`. For commands that take a few
    settings, not a run's whole set (whose cross-setting rules `from_names` applies)."""
    setting = BY_NAME[name]
    if isinstance(value, bool) and setting.kind in (int, float):
        raise ConfigError(f"{label}: expected a number, got {value!r}")
    try:
        return _adapter(name).validate_python(value)
    except ValidationError as exc:
        raise _field_error(exc.errors()[0], setting, label) from None


def _check_bools(flat: Mapping[str, Any], label_of, where: str) -> None:
    """true/false is not a number (pydantic would read it as 1 or 0)."""
    for name, value in flat.items():
        setting = BY_NAME[name]
        if isinstance(value, bool) and setting.kind in (int, float):
            raise ConfigError(f"{where} '{label_of(setting)}': expected a number, got {value!r}")


def _build(flat: Mapping[str, Any], label_of, where: str) -> RunSettings:
    labels = {s.path: label_of(s) for s in SETTINGS}
    _check_bools(flat, label_of, where)
    try:
        return RunSettings.model_validate(_nest(flat))
    except ValidationError as exc:
        raise _error(exc, labels, where) from None


def _unknown(keys: list[str], known: Mapping[str, Setting], where: str, style: str) -> None:
    if keys:
        close = {k: _closest(k, known) for k in keys}
        hints = ", ".join(
            f"'{k}'" + (f" (did you mean '{c}'?)" if c else "") for k, c in close.items()
        )
        raise ConfigError(
            f"{where}: unknown setting {hints}; `fedpatch settings` lists the {style} names"
        )


def _closest(key: str, known: Mapping[str, Setting]) -> str | None:
    import difflib

    match = difflib.get_close_matches(key, list(known), n=1, cutoff=0.75)
    return match[0] if match else None


def from_run_config(config: Mapping[str, Any], where: str = "run config") -> RunSettings:
    """RunSettings from a Flower run config (kebab-case keys); missing keys take their
    defaults; an unknown key or a bad value is a ConfigError naming the key."""
    if not isinstance(config, Mapping):
        raise ConfigError(f"{where}: expected a mapping, got {type(config).__name__}")
    _unknown([k for k in config if k not in BY_KEY], BY_KEY, where, "run-config")
    flat = {BY_KEY[k].name: v for k, v in config.items()}
    return _build(flat, lambda s: s.key, where)


def from_names(
    values: Mapping[str, Any], where: str = "settings", *, as_options: bool = False
) -> RunSettings:
    """RunSettings from snake_case names (presets, results.json); `as_options` names a
    bad value by its command-line option (`--coreset-ratio`)."""
    if not isinstance(values, Mapping):
        raise ConfigError(f"{where}: expected a mapping, got {type(values).__name__}")
    _unknown([k for k in values if k not in BY_NAME], BY_NAME, where, "snake_case")
    label = (lambda s: f"--{s.key}") if as_options else (lambda s: s.name)
    return _build(dict(values), label, where)


def value_of(settings: RunSettings, setting: Setting) -> Any:
    value: Any = settings
    for part in setting.path:
        value = getattr(value, part)
    return value


def feature_values(settings: RunSettings) -> dict[str, Any]:
    """{name: value} of the settings that define the patch features (`FeatureSpec`'s)."""
    return {name: value_of(settings, BY_NAME[name]) for name in FEATURE_SETTINGS}


def recorded_values(settings: RunSettings) -> dict[str, Any]:
    """{name: value} of the settings model.json's provenance records."""
    return {name: value_of(settings, BY_NAME[name]) for name in RECORDED_SETTINGS}


def to_run_config(settings: RunSettings) -> dict[str, Any]:
    """The run config (kebab-case keys, TOML scalar values) of `settings`."""
    return {s.key: s.run_config_value(value_of(settings, s)) for s in SETTINGS}


def to_names(settings: RunSettings) -> dict[str, Any]:
    """JSON-ready {snake_case name: value} of `settings` (results.json `run.config`)."""
    out: dict[str, Any] = {}
    for s in SETTINGS:
        value = value_of(settings, s)
        if isinstance(value, Path):
            value = str(value)
        elif isinstance(value, tuple):
            value = list(value)
        out[s.name] = value
    return out


def replace(settings: RunSettings, **changes: Any) -> RunSettings:
    """A copy of `settings` with some settings changed (snake_case names), validated."""
    flat = {s.name: value_of(settings, s) for s in SETTINGS}
    flat.update(changes)
    return from_names(flat)


@functools.cache
def defaults() -> RunSettings:
    return RunSettings()
