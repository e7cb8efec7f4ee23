"""status.json: how a run ended, written by every run that creates a run folder.

A run folder is never left without saying why: `status.json` holds the state
("running", "completed", "failed" or "interrupted"), the phases that finished, the reason
of a failure and what was kept (e.g. the merged banks), and a failed run's report.md says
the same in its first line.

While a run is `running` its status.json also names the process (`pid`, `host`) and a
`heartbeat` that a daemon thread rewrites every `HEARTBEAT_SECONDS`; the beat stops when
the run writes its final state and can never overwrite it. A run killed without a chance
to write its final state (SIGKILL, power loss) leaves `running` behind: `effective_status`
judges it `interrupted` when its process is gone on this host or its heartbeat is older
than `STALE_SECONDS`. Every command that reads a run's status reads it through
`effective_status`.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

STATUS_FILE = "status.json"
#: Seconds between two heartbeats of a running run.
HEARTBEAT_SECONDS = 10.0
#: A running run without a heartbeat for this long is judged interrupted.
STALE_SECONDS = 60.0
#: States after which nothing more is written.
FINAL_STATES = ("completed", "failed", "interrupted")

#: Guards every write of a status.json by this process (the run's and the heartbeat's).
_LOCK = threading.Lock()
#: The heartbeat of every run of this process still `running`, by its folder.
_BEATS: dict[Path, _Heartbeat] = {}


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _beat_time() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _write(run_dir: Path, data: Mapping[str, Any]) -> Path:
    path = run_dir / STATUS_FILE
    fd, tmp = tempfile.mkstemp(dir=run_dir, prefix=".status.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=2, default=str)
            handle.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


class _Heartbeat:
    """Rewrites a running run's status.json with a fresh `heartbeat` every `every` s."""

    def __init__(self, run_dir: Path, every: float) -> None:
        self.run_dir = run_dir
        self.every = every
        self.data: dict[str, Any] = {}
        self.stopped = threading.Event()
        self.thread = threading.Thread(
            target=self._loop, name=f"heartbeat {run_dir.name}", daemon=True
        )

    def _loop(self) -> None:
        while not self.stopped.wait(self.every):
            try:
                with _LOCK:
                    if self.stopped.is_set():
                        return
                    if not self.run_dir.is_dir():
                        log.warning("run folder %s is gone: heartbeat stopped", self.run_dir)
                        return
                    self.data["heartbeat"] = _beat_time()
                    _write(self.run_dir, self.data)
            except Exception as exc:  # noqa: BLE001 - a missed beat must never stop the run
                log.warning("heartbeat of %s not written: %s", self.run_dir, exc)


def write_status(
    run_dir: Path, state: str, *, beat_every: float = HEARTBEAT_SECONDS, **facts: Any
) -> Path:
    """Write run_dir/status.json atomically; `facts` are plain JSON values.

    `running` adds the process (pid, host), the start time and a heartbeat, and starts (or
    feeds) the run's heartbeat thread, beating every `beat_every` seconds; any other state
    is final: the heartbeat stops before it is written, and never writes again."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    key = run_dir.resolve()
    with _LOCK:
        if state != "running":
            beat = _BEATS.pop(key, None)
            if beat is not None:
                beat.stopped.set()
            return _write(run_dir, {"status": state, "updated": _now(), **facts})
        beat = _BEATS.get(key)
        started = beat.data.get("started") if beat is not None else None
        data: dict[str, Any] = {"status": state, "updated": _now(), "pid": os.getpid()}
        data |= {"host": socket.gethostname(), "started": started or _now()}
        data |= {"heartbeat": _beat_time(), "heartbeat_seconds": beat_every, **facts}
        path = _write(run_dir, data)
        if beat is None:
            beat = _BEATS[key] = _Heartbeat(run_dir, beat_every)
            beat.thread.start()
        beat.data = data
        return path


def still_beating(run_dir: Path) -> bool:
    """Whether this process still beats for the run in `run_dir` (it is `running`)."""
    with _LOCK:
        return Path(run_dir).resolve() in _BEATS


def read_status(run_dir: Path) -> dict[str, Any] | None:
    path = Path(run_dir) / STATUS_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def process_alive(pid: int) -> bool:
    """Whether process `pid` of this host still runs (a zombie, killed but not yet
    reaped by its parent, does not)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8")
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[:1] != ["Z"]


def _age(stamp: Any, now: datetime) -> float | None:
    """Seconds since an ISO time of status.json (None when it is not one)."""
    try:
        then = datetime.fromisoformat(str(stamp))
    except ValueError:
        return None
    if then.tzinfo is None:
        then = then.replace(tzinfo=UTC)
    return (now - then).total_seconds()


def interruption(
    status: Mapping[str, Any], *, stale_after: float = STALE_SECONDS, now: datetime | None = None
) -> str | None:
    """Why a `running` status belongs to a run that is gone, or None when it may be alive:
    its process is gone on this host, or its last sign of life (heartbeat; `updated` for
    files written before heartbeats) is older than `stale_after` seconds."""
    if status.get("status") != "running":
        return None
    pid, host = status.get("pid"), status.get("host")
    if isinstance(pid, int) and host == socket.gethostname() and not process_alive(pid):
        return f"its process {pid} on {host} is gone"
    beat = status.get("heartbeat") or status.get("updated")
    age = _age(beat, now or datetime.now(UTC))
    if age is None:
        return "it records no heartbeat"
    if age > stale_after:
        what = "heartbeat" if status.get("heartbeat") else "sign of life (no heartbeat recorded)"
        return f"its last {what} was {age:.0f} s ago ({beat})"
    return None


def effective_status(
    run_dir: Path, *, stale_after: float = STALE_SECONDS, now: datetime | None = None
) -> dict[str, Any] | None:
    """run_dir/status.json as it stands: a `running` status whose run is gone (see
    `interruption`) comes back as `interrupted`, with `interrupted_because` saying why and
    `recorded_status` what the file says; None when there is no readable status.json."""
    status = read_status(run_dir)
    if status is None:
        return None
    why = interruption(status, stale_after=stale_after, now=now)
    if why is None:
        return status
    marks = {"status": "interrupted", "recorded_status": "running", "interrupted_because": why}
    return {**status, **marks}


def _listed(items: Any, empty: str) -> str:
    return ", ".join(str(i) for i in items) if items else empty


def describe(status: Mapping[str, Any]) -> str:
    """One sentence for messages: the state, why, the finished phases and what was kept."""
    state = status.get("status", "unknown")
    why = status.get("interrupted_because") or status.get("reason")
    text = f"{state}" + (f" ({why})" if why else "")
    if state == "running":
        text += f", process {status.get('pid')} on {status.get('host')}, "
        text += f"last heartbeat {status.get('heartbeat')}"
    text += f"; finished phases: {_listed(status.get('finished_phases'), 'none')}"
    return text + f"; kept: {_listed(status.get('kept'), 'nothing')}"


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


@contextmanager
def final_state(
    run_dir: Path, name: str, progress: Callable[[], tuple[Sequence[str], Sequence[str]]]
) -> Iterator[None]:
    """Whatever ends the run inside, status.json says how: `interrupted` on Ctrl-C,
    `failed` with the reason on any other exception (with report.md); `progress()` gives
    the finished phases and what was kept. A run that wrote its final state is left as is."""
    try:
        yield
    except BaseException as exc:
        if still_beating(run_dir):
            finished, kept = (list(x) for x in progress())
            if isinstance(exc, KeyboardInterrupt):
                reason = "stopped by the user (Ctrl-C)"
                facts = {"reason": reason, "finished_phases": finished, "kept": kept}
                write_status(run_dir, "interrupted", **facts)
            else:
                write_failure(run_dir, name, str(exc) or type(exc).__name__, finished, kept)
        raise
