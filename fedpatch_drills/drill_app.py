"""Write a drill app: the project's Flower app with the drill ClientApp.

`flwr run APP-DIR` takes the ClientApp named in APP-DIR/pyproject.toml, so a drill is
submitted as an app folder of its own: the project's code and its pyproject.toml with
one line changed, `clientapp = "fedpatch_drills.client_app:app"` (the product's
handlers under the fault mod, `fedpatch_drills.faults`). The run config and everything
else stay the project's. The SuperNodes then choose their fault in their node config:

    python -m fedpatch_drills.drill_app runs/drill-app
    flower-supernode ... --node-config '... fault="crash-on-train"'
    flwr run runs/drill-app <connection> --run-config '...'
"""

from __future__ import annotations

import argparse
import logging
import shutil
from pathlib import Path

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
PRODUCT_CLIENTAPP = 'clientapp = "client_app:app"'
DRILL_CLIENTAPP = 'clientapp = "fedpatch_drills.client_app:app"'
#: What a run loads: the apps, both packages and the partition schemes.
COPIED = ("server_app.py", "client_app.py", "fedpatch_app", "fedpatch_drills", "conf")
_IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc")


def drill_pyproject(text: str, source: str = "pyproject.toml") -> str:
    """The project's pyproject.toml text with the drill ClientApp as its component."""
    if text.count(PRODUCT_CLIENTAPP) != 1:
        raise ValueError(f"{source}: expected one line `{PRODUCT_CLIENTAPP}` to replace")
    return text.replace(PRODUCT_CLIENTAPP, DRILL_CLIENTAPP)


def write_drill_app(out: Path, repo: Path = REPO) -> Path:
    """Write the drill app folder `out` (replaced if it exists) from the project at
    `repo`; returns `out`, ready for `flwr run`."""
    out = Path(out)
    if out.resolve() == repo.resolve():
        raise ValueError(f"{out}: the drill app cannot replace the project itself")
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    for name in COPIED:
        source = repo / name
        if source.is_dir():
            shutil.copytree(source, out / name, ignore=_IGNORED)
        else:
            shutil.copy2(source, out / name)
    pyproject = repo / "pyproject.toml"
    text = drill_pyproject(pyproject.read_text(encoding="utf-8"), str(pyproject))
    (out / "pyproject.toml").write_text(text, encoding="utf-8")
    log.info("drill app written to %s", out)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="app folder to write (replaced if it exists)")
    args = parser.parse_args(argv)
    print(write_drill_app(args.out))


if __name__ == "__main__":
    main()
