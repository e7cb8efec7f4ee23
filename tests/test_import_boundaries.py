"""Import boundaries of the product, read from the source (ast) and checked at run time.

- flwr stays at the edge: only the modules of `FLWR_ALLOWED` import it (the app files
  `client_app.py` and `server_app.py` at the repository root are the rest of the edge);
- the product never loads drill code: no product file imports `fedpatch_drills`, and
  importing `client_app`, `server_app` and every module of `fedpatch_app` leaves no
  module of it in `sys.modules`.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PRODUCT_PACKAGE = "fedpatch_app"
APP_FILES = ("client_app.py", "server_app.py")
DRILLS = "fedpatch_drills"

#: The modules of fedpatch_app that may import flwr: the client side (handlers and the
#: codecs of its replies), the server side that talks to the Grid, and the in-process
#: Grid. A module that starts or stops importing flwr is added here or removed.
FLWR_ALLOWED = frozenset(
    {
        "fedpatch_app.federated.client",
        "fedpatch_app.federated.client_relay",
        "fedpatch_app.federated.codec_relay",
        "fedpatch_app.federated.codec_score",
        "fedpatch_app.federated.codec_source_check",
        "fedpatch_app.federated.codec_stats",
        "fedpatch_app.federated.codec_train",
        "fedpatch_app.federated.inprocess",
        "fedpatch_app.federated.plan",
        "fedpatch_app.federated.protocol.accept",
        "fedpatch_app.federated.protocol.federation",
        "fedpatch_app.federated.protocol.link",
        "fedpatch_app.federated.protocol.relay",
        "fedpatch_app.federated.protocol.results",
        "fedpatch_app.federated.protocol.server",
        "fedpatch_app.federated.registry",
        "fedpatch_app.federated.wire",
    }
)


def module_name(path: Path) -> str:
    """`fedpatch_app/federated/client.py` -> `fedpatch_app.federated.client`."""
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def product_modules() -> dict[str, Path]:
    """Every module of fedpatch_app, by name."""
    files = sorted((REPO / PRODUCT_PACKAGE).rglob("*.py"))
    return {module_name(p): p for p in files if "__pycache__" not in p.parts}


def imported(path: Path, name: str | None = None) -> Iterator[str]:
    """The absolute names of the modules a file (module `name`, by default read from its
    path) imports, wherever the import statement is (top level, in a function, under
    TYPE_CHECKING); relative imports resolved."""
    package = (name or module_name(path)).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            name = ".".join([*base, node.module] if node.module else base)
            yield name
            # `from pkg import mod` may import the module pkg.mod.
            yield from (f"{name}.{alias.name}" for alias in node.names)


def top_level(name: str) -> str:
    return name.split(".", 1)[0]


def test_imported_reads_every_kind_of_import(tmp_path: Path) -> None:
    """The reader sees imports in functions and relative ones (or the checks below would
    pass on code they should refuse)."""
    fake = tmp_path / "probe.py"
    fake.write_text(
        "def f():\n    from flwr.app import Message\n"
        "from . import client\nfrom ..model import patchcore\nimport fedpatch_drills.faults\n",
        encoding="utf-8",
    )
    names = set(imported(fake, "fedpatch_app.federated.probe"))
    assert "flwr.app" in names
    assert "fedpatch_app.federated.client" in names
    assert "fedpatch_app.model.patchcore" in names
    assert "fedpatch_drills.faults" in names


def test_only_the_listed_modules_import_flwr() -> None:
    modules = product_modules()
    importers = {
        name
        for name, path in modules.items()
        if any(top_level(m) == "flwr" for m in imported(path))
    }
    unlisted = sorted(importers - FLWR_ALLOWED)
    assert not unlisted, (
        f"{unlisted} import flwr but are not in FLWR_ALLOWED (tests/test_import_boundaries.py): "
        "keep Flower at the edge (pass plain data in and out), or add them to the list"
    )
    stale = sorted(FLWR_ALLOWED - importers)
    assert not stale, f"{stale} in FLWR_ALLOWED do not import flwr (any more): remove them"


def test_no_product_file_imports_drill_code() -> None:
    files = [*product_modules().values(), *(REPO / name for name in APP_FILES)]
    offenders = {
        str(p.relative_to(REPO)): sorted({m for m in imported(p) if top_level(m) == DRILLS})
        for p in files
    }
    assert not {k: v for k, v in offenders.items() if v}


_LOAD_EVERYTHING = """
import importlib, json, sys
names = json.loads(sys.argv[1])
for name in names:
    importlib.import_module(name)
loaded = sorted(m for m in sys.modules if m == {drills!r} or m.startswith({drills!r} + "."))
print(json.dumps({{"loaded": loaded, "product": sum(m in sys.modules for m in names)}}))
"""


def test_importing_the_product_loads_no_drill_module() -> None:
    """client_app, server_app and every module of fedpatch_app, imported in a fresh
    interpreter: no module of the drills package comes with them."""
    names = ["client_app", "server_app", *product_modules()]
    code = _LOAD_EVERYTHING.format(drills=DRILLS)
    proc = subprocess.run(
        [sys.executable, "-c", code, json.dumps(names)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["product"] == len(names)
    assert out["loaded"] == [], f"importing the product loaded drill code: {out['loaded']}"
