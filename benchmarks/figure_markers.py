"""The pure part of `benchmarks/figures.py`: markers, numbers, comparison, rewriting.

No file is read and nothing is run here: `parse` reads a document's text, `check` compares
it with values it is given, `rewrite` returns the new text.
"""

from __future__ import annotations

import fnmatch
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from figure_sets import FigureSet, Values

TOLERANCE = 0.0005
TIMING_TOLERANCE = 0.30

NUMBER = r"[+-]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?"
NUMBER_RE = re.compile(NUMBER)
INLINE = re.compile(
    r"<!--\s*fig:(?P<set>[\w.-]+)/(?P<key>\S+?)\s*-->(?P<bold>\**)(?P<num>" + NUMBER + ")"
)
MARKER = re.compile(r"<!--\s*fig:")
OPEN = re.compile(r"^\s*<!--\s*figures:(?P<set>[\w.-]+)/(?P<table>[\w.-]+)\s*-->\s*$")
CLOSE = re.compile(r"^\s*<!--\s*/figures\s*-->\s*$")


class MarkerError(ValueError):
    """A marker the docs cannot mean: unclosed block, a figure marker without a number."""


@dataclass(frozen=True)
class Figure:
    """A marked figure: `text` at columns start:end of line `line` (from 1) of `doc`."""

    doc: str
    line: int
    set: str
    key: str
    text: str
    start: int
    end: int


@dataclass(frozen=True)
class Block:
    """A generated table: its lines `body`, the first at line `first` (from 1) of `doc`."""

    doc: str
    first: int
    set: str
    table: str
    body: tuple[str, ...]


@dataclass(frozen=True)
class Difference:
    doc: str
    line: int
    figure: str
    doc_text: str
    measured: str
    kind: str  # "figure", "timing", "archived" or "error"


# ---------------------------------------------------------------------- markers


def _in_code(line: str, column: int) -> bool:
    """Whether `column` is inside an inline code span (`...`) of `line`."""
    return line.count("`", 0, column) % 2 == 1


def _inline(line: str, doc: str, line_no: int) -> list[Figure]:
    """The marked figures of one line (markers inside code spans are examples, not figures)."""
    found = [m for m in INLINE.finditer(line) if not _in_code(line, m.start())]
    markers = [m for m in MARKER.finditer(line) if not _in_code(line, m.start())]
    if len(found) != len(markers):
        raise MarkerError(f"{doc}:{line_no}: a '<!-- fig:SET/KEY -->' not followed by a number")
    return [
        Figure(doc, line_no, m["set"], m["key"], m["num"], m.start("num"), m.end("num"))
        for m in found
    ]


def _block(doc: str, lines: Sequence[str], opened: tuple[int, re.Match[str]], end: int) -> Block:
    """The table between an opening marker and its closing one at line index `end`; blank
    lines around the table (which keep Markdown from reading a marker as a table row) are
    not part of it."""
    start, m = opened
    body = list(lines[start + 1 : end])
    lead = next((k for k, line in enumerate(body) if line.strip()), len(body))
    body = body[lead:]
    while body and not body[-1].strip():
        body.pop()
    return Block(doc, start + 2 + lead, m["set"], m["table"], tuple(body))


def parse(text: str, doc: str) -> tuple[list[Figure], list[Block]]:
    """The marked figures and generated tables of one document."""
    figures: list[Figure] = []
    blocks: list[Block] = []
    lines = text.splitlines()
    opened: tuple[int, re.Match[str]] | None = None
    fenced = False
    for i, line in enumerate(lines):
        if line.lstrip().startswith("```"):
            fenced = not fenced
        if fenced or line.lstrip().startswith("```"):
            continue
        if m := OPEN.match(line):
            if opened is not None:
                raise MarkerError(
                    f"{doc}:{i + 1}: a table marker inside the table opened at line {opened[0] + 1}"
                )
            opened = (i, m)
        elif CLOSE.match(line):
            if opened is None:
                raise MarkerError(f"{doc}:{i + 1}: '<!-- /figures -->' without an opening marker")
            blocks.append(_block(doc, lines, opened, i))
            opened = None
        else:
            figures += _inline(line, doc, i + 1)
    if opened is not None:
        raise MarkerError(f"{doc}:{opened[0] + 1}: table marker without '<!-- /figures -->'")
    return figures, blocks


# ---------------------------------------------------------------------- numbers


def number(text: str) -> float:
    return float(text.replace(",", ""))


def decimals(text: str) -> int:
    return len(text.split(".", 1)[1]) if "." in text else 0


def allowed(text: str, tolerance: float = TOLERANCE) -> float:
    """How far a measurement may be from the doc's figure `text`."""
    return max(tolerance, 0.5 * 10 ** -decimals(text))


def differs(text: str, measured: float, timing: bool = False) -> bool:
    limit = allowed(text)
    if timing:
        limit = max(limit, TIMING_TOLERANCE * abs(measured))
    return not math.isfinite(measured) or abs(number(text) - measured) > limit + 1e-9


def format_like(value: float, text: str) -> str:
    """`value` written as the doc wrote `text`: its decimals, its sign, its commas."""
    spec = ("+" if text.startswith("+") else "") + ("," if "," in text else "")
    return f"{value:{spec}.{decimals(text)}f}"


# ---------------------------------------------------------------------- tables


def table_cells(line: str) -> list[str]:
    stripped = line.strip()
    if stripped.startswith("|"):
        return [c.strip() for c in stripped.strip("|").split("|")]
    return [stripped]


def compare_table(body: Sequence[str], rendered: Sequence[str]) -> list[tuple[int, str, str, str]]:
    """(line index, cell label, doc text, rendered text) of every figure or cell that differs
    between a generated table in a doc and the same table rendered from measurements."""
    out: list[tuple[int, str, str, str]] = []
    header = table_cells(rendered[0]) if rendered else []
    for i in range(max(len(body), len(rendered))):
        if i >= len(body) or i >= len(rendered):
            doc_line = body[i] if i < len(body) else "(no line)"
            out.append((i, "line", doc_line, rendered[i] if i < len(rendered) else "(no line)"))
            continue
        doc_cells, new_cells = table_cells(body[i]), table_cells(rendered[i])
        if len(doc_cells) != len(new_cells):
            out.append((i, "line", body[i], rendered[i]))
            continue
        for j, (a, b) in enumerate(zip(doc_cells, new_cells, strict=True)):
            label = doc_cells[0] + (f" | {header[j]}" if 0 < j < len(header) else "")
            if NUMBER_RE.sub("#", a) != NUMBER_RE.sub("#", b):
                out.append((i, label, a, b))
                continue
            for x, y in zip(NUMBER_RE.findall(a), NUMBER_RE.findall(b), strict=True):
                if differs(x, number(y)):
                    out.append((i, label, x, y))
    return out


def _is_timing(figure_set: FigureSet, key: str) -> bool:
    return any(fnmatch.fnmatchcase(key, pattern) for pattern in figure_set.timing)


def _kind(figure_set: FigureSet, key: str = "") -> str:
    if figure_set.archived:
        return "archived"
    return "timing" if key and _is_timing(figure_set, key) else "figure"


# ---------------------------------------------------------------------- check


def _check_figure(f: Figure, s: FigureSet, values: Values) -> Difference | None:
    name = f"{f.set}/{f.key}"
    if f.key not in values:
        return Difference(f.doc, f.line, name, f.text, "no such value measured", "error")
    value = values[f.key]
    if differs(f.text, value, timing=_is_timing(s, f.key)):
        return Difference(f.doc, f.line, name, f.text, f"{value:.6g}", _kind(s, f.key))
    return None


def _check_block(b: Block, s: FigureSet, values: Values) -> list[Difference]:
    name = f"{b.set}/{b.table}"
    if b.table not in s.tables:
        return [Difference(b.doc, b.first - 1, name, "", "no such table in the set", "error")]
    try:
        rendered = s.tables[b.table](values)
    except KeyError as exc:
        return [Difference(b.doc, b.first - 1, name, "", f"no value {exc} measured", "error")]
    return [
        Difference(b.doc, b.first + i, f"{name}: {label}", a, c, _kind(s))
        for i, label, a, c in compare_table(b.body, rendered)
    ]


def check(
    docs: Mapping[str, str],
    values_of: Callable[[str], Values | None],
    sets: Mapping[str, FigureSet],
) -> tuple[list[Difference], dict[str, set[str]]]:
    """Every marked figure of `docs` ({name: text}) against the measurements; returns the
    differences and, per set not measured yet, the docs that use it."""
    diffs: list[Difference] = []
    unmeasured: dict[str, set[str]] = {}
    for doc, text in docs.items():
        figures, blocks = parse(text, doc)
        for item in [*figures, *blocks]:
            line = item.line if isinstance(item, Figure) else item.first - 1
            if item.set not in sets:
                diffs.append(Difference(doc, line, item.set, "", "no such figure set", "error"))
                continue
            values = values_of(item.set)
            if values is None:
                unmeasured.setdefault(item.set, set()).add(doc)
            elif isinstance(item, Figure):
                diffs += [d for d in [_check_figure(item, sets[item.set], values)] if d]
            else:
                diffs += _check_block(item, sets[item.set], values)
    return diffs, unmeasured


# ---------------------------------------------------------------------- write


def rewrite(
    text: str,
    doc: str,
    values_of: Callable[[str], Values | None],
    chosen: Iterable[str],
    sets: Mapping[str, FigureSet],
) -> tuple[str, int]:
    """`text` with the figures and tables of the `chosen` sets written from their values;
    and how many lines changed."""
    chosen = set(chosen)
    figures, blocks = parse(text, doc)
    lines = text.splitlines()
    for f in sorted(figures, key=lambda f: (f.line, -f.start)):
        values = values_of(f.set) if f.set in chosen else None
        if values is not None and f.key in values:
            line = lines[f.line - 1]
            lines[f.line - 1] = line[: f.start] + format_like(values[f.key], f.text) + line[f.end :]
    for b in sorted(blocks, key=lambda b: -b.first):
        values = values_of(b.set) if b.set in chosen else None
        if values is not None and b.table in sets[b.set].tables:
            start = b.first - 1
            lines[start : start + len(b.body)] = sets[b.set].tables[b.table](values)
    old = text.splitlines()
    changed = sum(a != c for a, c in zip(old, lines, strict=False)) + abs(len(old) - len(lines))
    return "\n".join(lines) + ("\n" if text.endswith("\n") else ""), changed
