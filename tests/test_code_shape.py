"""The code's shape as ruff formats it: no packed lines, short functions, short modules.

Over every Python file of the project (the packages, tests, benchmarks, scripts and the
top-level apps; not the environment, caches, or the data and run folders at the top):

- no ``# fmt: skip`` or ``# fmt: off`` comment (they pack lines to dodge the limits below);
- the file is as ``ruff format`` writes it.

Over every module of fedpatch_app and fedpatch_drills (``SIZED``), also:

- the formatted module has at most ``MAX_MODULE_LINES`` lines;
- no function has more than ``MAX_FUNCTION_CODE_LINES`` code lines (lines holding code, not
  docstrings, comments or blank lines; nested functions count with the function around them).

Over fedpatch_app: no two modules import each other, directly or round a loop, at module
level (imports under ``if TYPE_CHECKING:`` included: a loop of types is a loop of design).

The limits flag a design smell; a module or function over them is split into named pieces.
"""

from __future__ import annotations

import ast
import io
import os
import shutil
import subprocess
import sys
import tokenize
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "fedpatch_app"
MAX_MODULE_LINES = 500
MAX_FUNCTION_CODE_LINES = 60
FMT_MARKERS = ("fmt: skip", "fmt: off", "fmt:skip", "fmt:off")
# Folders whose modules also keep to the size limits, relative to the repository root.
SIZED = ("fedpatch_app", "fedpatch_drills")
# Folders that hold no project code, relative to the repository root: data, run outputs
# and build products (hidden folders, __pycache__ and *.egg-info are skipped everywhere).
NOT_PROJECT = {"data", "runs", "build", "dist", "docker/data", "docker/runs"}

# Modules that break a rule today, relative to the repository root. This set must only
# shrink: the test also fails when a listed module meets every rule, so remove it then.
KNOWN_VIOLATIONS: set[str] = set()


def _ruff() -> str:
    """The ruff next to the running interpreter (the project's environment), else on PATH."""
    local = Path(sys.executable).parent / "ruff"
    found = str(local) if local.is_file() else shutil.which("ruff")
    if found is None:
        pytest.fail("ruff is not installed (pip install -e '.[dev]'); the shape test needs it")
    return found


def _is_project_folder(folder: Path, root: Path) -> bool:
    name = folder.name
    if name.startswith(".") or name == "__pycache__" or name.endswith(".egg-info"):
        return False
    return folder.relative_to(root).as_posix() not in NOT_PROJECT


def project_files(root: Path = ROOT) -> list[Path]:
    """Every Python file of the project under ``root``, in a stable order."""
    found: list[Path] = []
    for folder, dirs, files in os.walk(root):
        here = Path(folder)
        dirs[:] = sorted(d for d in dirs if _is_project_folder(here / d, root))
        found.extend(here / f for f in sorted(files) if f.endswith(".py"))
    return found


def _formatted_copy(sources: dict[Path, str], work: Path) -> dict[Path, str]:
    """Each file as ``ruff format`` writes it once its formatter switches are taken out.

    One ruff run over a copy of the files, with the project's configuration.
    """
    copies: dict[Path, Path] = {}
    for path, source in sources.items():
        copy = work / path.relative_to(ROOT)
        copy.parent.mkdir(parents=True, exist_ok=True)
        copy.write_text(_without_markers(source), encoding="utf-8")
        copies[path] = copy
    proc = subprocess.run(
        [
            _ruff(),
            "format",
            "--quiet",
            "--no-cache",
            "--config",
            str(ROOT / "pyproject.toml"),
            str(work),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if proc.returncode != 0:
        pytest.fail(f"ruff format failed: {proc.stderr.strip()}")
    return {path: copy.read_text(encoding="utf-8") for path, copy in copies.items()}


def _without_markers(source: str) -> str:
    """``source`` with every formatter switch comment removed (the code kept)."""
    lines = source.splitlines(keepends=True)
    for row, col in reversed(_fmt_markers(source)):
        lines[row - 1] = lines[row - 1][:col].rstrip() + "\n"
    return "".join(lines)


def _fmt_markers(source: str) -> list[tuple[int, int]]:
    """(line, column) of each comment that switches the formatter off."""
    if "fmt:" not in source:
        return []
    return [
        tok.start
        for tok in tokenize.generate_tokens(io.StringIO(source).readline)
        if tok.type == tokenize.COMMENT and any(m in tok.string for m in FMT_MARKERS)
    ]


def _docstring_lines(tree: ast.Module) -> set[int]:
    """Line numbers taken by the docstrings of the module, its classes and functions."""
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if (
                body
                and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)
            ):
                lines.update(range(body[0].lineno, body[0].end_lineno + 1))
    return lines


def _code_lines(source: str) -> set[int]:
    """Line numbers that hold a code token (not only comments, blank lines or layout)."""
    skip = {
        tokenize.COMMENT,
        tokenize.NL,
        tokenize.NEWLINE,
        tokenize.INDENT,
        tokenize.DEDENT,
        tokenize.ENDMARKER,
    }
    lines: set[int] = set()
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type not in skip:
            lines.update(range(tok.start[0], tok.end[0] + 1))
    return lines


def long_functions(source: str, limit: int = MAX_FUNCTION_CODE_LINES) -> list[tuple[str, int]]:
    """(qualified name, code lines) of every function over ``limit`` code lines."""
    tree = ast.parse(source)
    code = _code_lines(source) - _docstring_lines(tree)
    out: list[tuple[str, int]] = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                name = f"{prefix}{child.name}"
                if not isinstance(child, ast.ClassDef):
                    n = len(code & set(range(child.lineno, child.end_lineno + 1)))
                    if n > limit:
                        out.append((name, n))
                visit(child, name + ".")
            else:
                visit(child, prefix)

    visit(tree, "")
    return out


def _sized(path: Path) -> bool:
    return path.relative_to(ROOT).parts[0] in SIZED


def shape_violations(work: Path, files: list[Path] | None = None) -> dict[str, list[str]]:
    """What each file (by default every project file) breaks, keyed by its repository path.

    Lengths are measured on the module as ruff formats it; ``work`` is a scratch folder.
    """
    files = project_files() if files is None else files
    sources = {path: path.read_text(encoding="utf-8") for path in files}
    formatted = _formatted_copy(sources, work)
    found: dict[str, list[str]] = {}
    for path in files:
        source = sources[path]
        shaped = formatted[path]
        why: list[str] = []
        markers = [row for row, _ in _fmt_markers(source)]
        if markers:
            why.append(f"formatter switched off on lines {markers}")
        elif shaped != source:
            why.append("not as `ruff format` writes it")
        if _sized(path):
            why.extend(_size_violations(shaped))
        if why:
            found[path.relative_to(ROOT).as_posix()] = why
    return found


def _size_violations(shaped: str) -> list[str]:
    """How a module, as ruff formats it, goes over the size limits."""
    why: list[str] = []
    n = len(shaped.splitlines())
    if n > MAX_MODULE_LINES:
        why.append(f"{n} lines as formatted (limit {MAX_MODULE_LINES})")
    for name, n in long_functions(shaped):
        why.append(f"function {name}: {n} code lines (limit {MAX_FUNCTION_CODE_LINES})")
    return why


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _top_level_imports(tree: ast.Module, known: set[str]) -> set[str]:
    """Package modules imported outside functions (module body, its ifs and trys)."""
    out: set[str] = set()
    todo: list[ast.stmt] = list(tree.body)
    while todo:
        node = todo.pop()
        if isinstance(node, ast.If | ast.Try):
            todo.extend(ast.iter_child_nodes(node))  # type: ignore[arg-type]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                out.add(sub if sub in known else node.module)
        elif isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
    return out & known


def import_cycles(root: Path = PACKAGE) -> list[list[str]]:
    """Groups of package modules that import each other at module level (Tarjan's SCCs)."""
    paths = {_module_name(p): p for p in sorted(root.rglob("*.py"))}
    known = set(paths)
    graph = {
        name: _top_level_imports(ast.parse(p.read_text(encoding="utf-8")), known) - {name}
        for name, p in paths.items()
    }
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = [stack.pop()]
            while group[-1] != v:
                group.append(stack.pop())
            if len(group) > 1:
                cycles.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return cycles


def test_code_lines_skip_docstrings_comments_and_blank_lines() -> None:
    body = "\n".join(f"    x{i} = {i}  # note" for i in range(61))
    source = f'def f():\n    """Doc\n\n    string."""\n\n    # comment\n{body}\n'
    assert long_functions(source) == [("f", 62)]  # the def line and 61 statements
    short = 'def g():\n    """Doc."""\n' + "\n".join(f"    y{i} = {i}" for i in range(59))
    assert long_functions(short) == []
    nested = "class C:\n    def m(self):\n" + "\n".join(f"        z{i} = {i}" for i in range(60))
    assert long_functions(nested) == [("C.m", 61)]


def test_project_files_are_every_folder_but_environment_data_and_outputs(tmp_path: Path) -> None:
    kept = ["app.py", "tests/test_x.py", "benchmarks/b.py", "pkg/data/d.py", "pkg/runs/r.py"]
    dropped = [
        ".venv/lib/m.py",
        "data/d.py",
        "runs/r.py",
        "docker/runs/r.py",
        "pkg/__pycache__/c.py",
        "x.egg-info/e.py",
    ]
    for name in [*kept, *dropped, "notes.txt"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x = 1\n")
    found = {p.relative_to(tmp_path).as_posix() for p in project_files(tmp_path)}
    assert found == set(kept)


def test_project_shape(tmp_path: Path) -> None:
    found = shape_violations(tmp_path)
    new = {p: why for p, why in found.items() if p not in KNOWN_VIOLATIONS}
    fixed = sorted(KNOWN_VIOLATIONS - set(found))
    lines = [f"{p}: {'; '.join(why)}" for p, why in sorted(new.items())]
    assert not new, "files that break the shape rules:\n" + "\n".join(lines)
    assert not fixed, (
        f"these modules now meet every shape rule; remove them from KNOWN_VIOLATIONS: {fixed}"
    )


def test_no_import_cycles() -> None:
    assert import_cycles() == []
