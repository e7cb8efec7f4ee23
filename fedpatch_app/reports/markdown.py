"""Markdown for the report: table cells, tables, and any JSON value rendered as tables.

Results files carry free-form extras (``federated``, ``privacy``, per-category facts); the
report shows them without knowing them in advance, so this module turns any JSON value into
headings and tables: flat dicts as key/value tables, dicts of flat dicts with the same keys as
one table (one row each), lists of dicts as one table.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any


def fmt(value: Any, digits: int = 4) -> str:
    """A table cell for any plain value."""
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return "n/a"
        if value == 0 or 1e-3 <= abs(value) < 1e5:
            return f"{value:.{digits}f}"
        return f"{value:.{digits}g}"
    if isinstance(value, list | tuple):
        if all(not isinstance(v, Mapping | list | tuple) for v in value):
            return ", ".join(fmt(v, digits) for v in value) or "(none)"
        return f"`{json.dumps(value)[:200]}`"
    if isinstance(value, Mapping):
        return f"`{json.dumps(value, sort_keys=True)[:200]}`"
    return str(value).replace("|", "\\|").replace("\n", " ")


def delta(value: Any, base: Any) -> str:
    """``value (+difference)`` to ``base``; just the value when either is missing."""
    if value is None or base is None:
        return fmt(value)
    return f"{fmt(value)} ({value - base:+.4f})"


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """A Markdown table (header, separator, rows) followed by a blank line."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return [*lines, ""]


def is_scalar(value: Any) -> bool:
    """Whether ``value`` fits one table cell: not a container, or a list of such values."""
    return not isinstance(value, Mapping | list | tuple) or (
        isinstance(value, list | tuple)
        and all(not isinstance(v, Mapping | list | tuple) for v in value)
    )


def flatten_one_level(item: Mapping[str, Any]) -> dict[str, Any]:
    """``{"a": 1, "m": {"x": 2}}`` -> ``{"a": 1, "m.x": 2}`` (deeper values stay as they are)."""
    out: dict[str, Any] = {}
    for key, value in item.items():
        if isinstance(value, Mapping) and value:
            for sub, v in value.items():
                out[f"{key}.{sub}"] = v
        else:
            out[str(key)] = value
    return out


def render_value(title: str, value: Any, level: int, name: str | None = None) -> list[str]:
    """Render any JSON value as Markdown tables (generic, for extra sections).

    ``title`` is the heading; ``name`` the value's own key (used for nested headings
    and the first column of a table of per-item dicts, e.g. per-client metrics).
    """
    name = title if name is None else name
    heading = "#" * min(level, 6)
    lines = [f"{heading} {title}", ""]
    if isinstance(value, Mapping):
        if not value:
            return [*lines, "(empty)", ""]
        scalars = {k: v for k, v in value.items() if is_scalar(v)}
        nested = {k: v for k, v in value.items() if not is_scalar(v)}
        if scalars:
            lines += table(["key", "value"], [[str(k), fmt(v)] for k, v in scalars.items()])
        # Flat dicts with the same keys (e.g. per-client or per-category facts) read best
        # as one table, one row each; other dicts get their own key/value table below.
        groups: dict[tuple[str, ...], list[str]] = {}
        for key, child in nested.items():
            if isinstance(child, Mapping) and child and all(is_scalar(x) for x in child.values()):
                groups.setdefault(tuple(str(c) for c in child), []).append(key)
        for columns, keys in groups.items():
            if len(keys) < 2 and len(nested) > 1:
                continue
            rows = [[str(k), *(fmt(nested[k].get(c)) for c in columns)] for k in keys]
            lines += table([name.rsplit(".", 1)[-1], *columns], rows)
            nested = {k: v for k, v in nested.items() if k not in keys}
        for key, child in nested.items():
            sub = f"{name}.{key}"
            if level >= 6:
                lines += [f"{sub}:", "", "```json", json.dumps(child, indent=2)[:4000], "```", ""]
            else:
                lines += render_value(sub, child, level + 1, sub)
        return lines
    if isinstance(value, list):
        if value and all(isinstance(v, Mapping) for v in value):
            items = [flatten_one_level(item) for item in value]
            columns = []
            for item in items:
                columns += [c for c in item if c not in columns]
            rows = [[fmt(item.get(c)) for c in columns] for item in items]
            return [*lines, *table(columns, rows)]
        return [*lines, "```json", json.dumps(value, indent=2)[:4000], "```", ""]
    return [*lines, fmt(value), ""]
