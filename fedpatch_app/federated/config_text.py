"""Run and federation configs as the text `flwr run --run-config` takes: `key=value ...`.

`parse_pairs` reads what people type: TOML values (`num-clients=3`, `write-maps=true`,
`data-root="data/autovi"`), and also bare words that are not TOML (`data-root=data/autovi`,
`weights=none`), taken as strings, where Flower itself stops with a traceback. A single
`*.toml` path is read as a file of overrides, as Flower reads it. `run_config_arg` writes
a config back as text that Flower reads exactly (strings always quoted).
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fedpatch_app.errors import ConfigError

#: One `key=value`, split as Flower splits them (flwr.common.config.parse_config_args): a
#: value is a quoted string or has no blanks.
PAIR = re.compile(r"""(\S+?)=('[^']*'|"[^"]*"|\S+)""")
#: A key as a TOML bare key.
KEY = re.compile(r"[A-Za-z0-9_-]+")
EXAMPLE = '"num-clients=3 data-root=data/autovi"'


def _value(raw: str, key: str, what: str) -> Any:
    """`raw` as TOML reads it when it is a TOML string, number or boolean; else the word
    itself (a path, a name)."""
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        if raw[:1] in "\"'":
            raise ConfigError(
                f"{what}: the value of {key!r} has an unclosed quote: {raw}"
            ) from None
        return raw
    return value if isinstance(value, str | bool | int | float) else raw


def _only_blanks(gap: str, what: str) -> None:
    if gap.strip():
        raise ConfigError(
            f"{what}: cannot read {gap.strip()!r} as key=value (e.g. {EXAMPLE}; a value "
            "with blanks needs quotes)"
        )


def _toml_file(path: Path, what: str) -> dict[str, Any]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{what}: cannot read the TOML file {path}: {exc}") from None
    nested = [key for key, value in data.items() if isinstance(value, dict)]
    if nested:
        raise ConfigError(f"{what}: {path} has tables ({', '.join(nested)}): give plain keys")
    return data


def parse_pairs(text: str | None, what: str) -> dict[str, Any]:
    """The `key=value ...` pairs of `text` (see the module doc); a ConfigError names
    what `what` (e.g. "--run-config") holds that cannot be read."""
    stripped = (text or "").strip()
    if not stripped:
        return {}
    if stripped.endswith(".toml") and "=" not in stripped:
        return _toml_file(Path(stripped).expanduser(), what)
    pairs: dict[str, Any] = {}
    pos = 0
    for match in PAIR.finditer(stripped):
        _only_blanks(stripped[pos : match.start()], what)
        key, raw = match.groups()
        if not KEY.fullmatch(key):
            raise ConfigError(f"{what}: {key!r} is not a setting name (e.g. {EXAMPLE})")
        pairs[key] = _value(raw, key, what)
        pos = match.end()
    _only_blanks(stripped[pos:], what)
    return pairs


def toml_value(value: Any) -> str:
    """A value as TOML that Flower's `key=value` split keeps whole: a string in double
    quotes, or in single quotes when it holds a double quote."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    text = "" if value is None else str(value)
    if '"' not in text:
        return json.dumps(text)
    if "'" in text or "\n" in text:
        raise ConfigError(f"a run-config value cannot hold both kinds of quote: {text!r}")
    return f"'{text}'"


def run_config_arg(run_config: Mapping[str, Any]) -> str:
    """`run_config` as the text of `flwr run --run-config`."""
    return " ".join(f"{key}={toml_value(value)}" for key, value in run_config.items())
