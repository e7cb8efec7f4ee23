"""Output folders: a run never mixes its files with an earlier run's.

Every command that writes a run folder calls `prepare_output`: a missing or empty folder
is used as it is; a folder holding files is refused unless `overwrite` is set, and then it
is cleared only if it is a fedpatch output folder (it holds one of `MARKERS`), so that a
mistyped `--out` can never delete a user's own files.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from fedpatch_app.errors import ConfigError

#: Files by which a folder is recognised as a fedpatch output folder.
MARKERS = ("results.json", "status.json", "experiment.md", "predictions.csv", "model.json")


def is_output_folder(path: Path) -> bool:
    return (
        any((path / name).is_file() for name in MARKERS)
        or (path / "model" / "model.json").is_file()
    )


def prepare_output(path: str | Path, *, overwrite: bool, option: str = "--out") -> Path:
    """Make `path` ready to receive a run's files (see the module doc); returns it."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{option} {path}: exists and is not a folder")
    if path.is_dir() and any(path.iterdir()):
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
