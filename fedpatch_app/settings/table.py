"""`fedpatch settings`: every setting as a table, or pyproject's run-config table.

`pyproject_table()` is also what the test compares with pyproject.toml, so the defaults
there cannot drift from the schema.
"""

from __future__ import annotations

import argparse
import json

from fedpatch_app.settings.fields import SETTINGS, to_run_config
from fedpatch_app.settings.schema import RunSettings


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(str(value))


def pyproject_table() -> str:
    """`[tool.flwr.app.config]` with every setting at its default, in schema order."""
    lines = ["[tool.flwr.app.config]"]
    lines += [f"{key} = {_toml(value)}" for key, value in to_run_config(RunSettings()).items()]
    return "\n".join(lines) + "\n"


def settings_table() -> str:
    """Markdown table: run-config key, CLI option, default, meaning (with its range)."""
    rows = ["| run-config key | default | meaning |", "|---|---|---|"]
    for s in SETTINGS:
        default = _toml(s.run_config_value(s.default))
        choices = f" One of {', '.join(s.choices)}." if s.choices else ""
        rows.append(f"| `{s.key}` | `{default}` | {s.help}.{choices} |")
    return "\n".join(rows) + "\n"


def run_cli(args: argparse.Namespace) -> int:
    print(pyproject_table() if args.toml else settings_table(), end="")
    return 0
