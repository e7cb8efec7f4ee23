"""Output folders: a run never mixes its files with an earlier run's.

Every command that writes a run folder calls `prepare_output`: a missing or empty folder
is used as it is; a folder holding files is refused unless `overwrite` is set, and then it
is cleared only if it is a fedpatch output folder (it holds one of `MARKERS`), so that a
mistyped `--out` can never delete a user's own files.

A folder that holds a run (its status.json, and those of the runs one level down, as in
an experiment folder) is named for what it is: an interrupted run is refused with what it
kept and how to start again (`--overwrite`), and a run still writing into the folder is
never cleared.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from fedpatch_app.errors import ConfigError
from fedpatch_app.run_status import STATUS_FILE, describe, effective_status

#: Files by which a folder is recognised as a fedpatch output folder.
MARKERS = ("results.json", "status.json", "experiment.md", "predictions.csv", "model.json")


def is_output_folder(path: Path) -> bool:
    return (
        any((path / name).is_file() for name in MARKERS)
        or (path / "model" / "model.json").is_file()
    )


def _runs_in(path: Path) -> list[tuple[Path, dict]]:
    """(folder, effective status) of the run in `path` and, when `path` is a run or
    experiment folder itself (it holds a status.json), of the runs one level down."""
    if not (path / STATUS_FILE).is_file():
        return []
    folders = [path, *sorted(p for p in path.iterdir() if p.is_dir() and not p.is_symlink())]
    found = []
    for folder in folders:
        if (folder / STATUS_FILE).is_file():
            status = effective_status(folder)
            if status is not None:
                found.append((folder, status))
    return found


def _check_runs(path: Path, overwrite: bool, option: str) -> None:
    """Refuse a folder a run still writes into; name an interrupted run and how to go on."""
    runs = _runs_in(path)
    for folder, status in runs:
        if status.get("status") == "running":
            raise ConfigError(
                f"{option} {path}: a run is still writing into {folder} ({describe(status)}); "
                "wait for it or stop it, or choose a new folder"
            )
    stopped = [(f, s) for f, s in runs if s.get("status") == "interrupted"]
    if stopped and not overwrite:
        where = " ".join(
            f"{'This folder' if folder == path else folder.name}: {describe(status)}."
            for folder, status in stopped
        )
        raise ConfigError(
            f"{option} {path}: holds an interrupted run. {where} Its kept files stay "
            "there until the folder is cleared: run again with --overwrite (run config: "
            "overwrite=true) to clear it and start over, or choose a new folder"
        )


def prepare_output(path: str | Path, *, overwrite: bool, option: str = "--out") -> Path:
    """Make `path` ready to receive a run's files (see the module doc); returns it."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{option} {path}: exists and is not a folder")
    if path.is_dir() and any(path.iterdir()):
        _check_runs(path, overwrite, option)
        if not overwrite:
            raise ConfigError(
                f"{option} {path}: the folder is not empty (an earlier run's files would be "
                "mixed with this one's); choose a new folder, or pass --overwrite "
                "(run config: overwrite=true) to clear it first"
            )
        if not is_output_folder(path):
            raise ConfigError(
                f"{option} {path}: not cleared, it does not look like a fedpatch output "
                f"folder (none of {', '.join(MARKERS)}); choose an empty or new folder"
            )
        for entry in path.iterdir():
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
    path.mkdir(parents=True, exist_ok=True)
    return path
