"""status.json: how a run ended, written by every run that creates a run folder.

A run folder is never left without saying why: `status.json` holds the state
("running", "completed" or "failed"), the phases that finished, the reason of a failure
and what was kept (e.g. the merged banks), and a failed run's report.md says the same in
its first line.
"""

from __future__ import annotations

import json
import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

STATUS_FILE = "status.json"


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def write_status(run_dir: Path, state: str, **facts: Any) -> Path:
    """Write run_dir/status.json atomically; `facts` are plain JSON values."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    data = {"status": state, "updated": _now(), **facts}
    path = run_dir / STATUS_FILE
    fd, tmp = tempfile.mkstemp(dir=run_dir, prefix=".status.", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2, default=str)
        handle.write("\n")
    os.replace(tmp, path)
    return path


def read_status(run_dir: Path) -> dict[str, Any] | None:
    path = Path(run_dir) / STATUS_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def write_failure(
    run_dir: Path, name: str, reason: str, finished: list[str], kept: list[str]
) -> None:
    """status.json and a report.md whose first line says the run failed and why."""
    write_status(run_dir, "failed", reason=reason, finished_phases=finished, kept=kept)
    lines = [
        f"**Run `{name}` FAILED**: {reason}",
        "",
        f"Finished phases: {', '.join(finished) or 'none'}.",
        f"Kept in this folder: {', '.join(kept) or 'nothing but this report and status.json'}.",
        "",
    ]
    (Path(run_dir) / "report.md").write_text("\n".join(lines), encoding="utf-8")
