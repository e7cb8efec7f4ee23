"""Launch a real `flwr run` simulation (local SuperLink + Ray SuperNodes) and wait for it.

Used by `fedpatch run` (the main job), `fedpatch experiment` and the end-to-end test.
Each launch gets its own FLWR_HOME, runs with runtime dependency installation switched
off (offline machines), checks the run's final status with `flwr list --format json`
(`flwr run` exits 0 even when the run failed), and stops the detached local SuperLink
that `flwr run` starts, by PID and only when this launch started it.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from fedpatch_app.errors import ConfigError, FedpatchError

log = logging.getLogger(__name__)

#: Ports of the local SuperLink that `flwr run` starts for a simulation.
SUPERLINK_PORTS = (39091, 39093)


class SimulationError(FedpatchError):
    """A `flwr run` simulation failed or did not complete."""


@dataclass
class SimulationRun:
    """What a finished simulation left: its status, its log and its run folder."""

    run_id: int | None
    status: str
    log: str
    seconds: float


def project_root() -> Path:
    """The Flower app folder (holding pyproject.toml with [tool.flwr.app])."""
    root = Path(__file__).resolve().parents[2]
    if not (root / "pyproject.toml").is_file() or not (root / "server_app.py").is_file():
        raise ConfigError(
            f"the Flower app (pyproject.toml, server_app.py) was not found at {root}: "
            "install fedpatch from its source folder (pip install -e .)"
        )
    return root


def toml_value(value: Any) -> str:
    """A run-config value as TOML (`flwr run --run-config "k=v ..."`)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps("" if value is None else str(value))


def run_config_arg(run_config: Mapping[str, Any]) -> str:
    return " ".join(f"{key}={toml_value(value)}" for key, value in run_config.items())


def port_busy(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _superlinks(marker: bytes | None = None) -> list[int]:
    """PIDs of local SuperLink processes (with `marker` in their command line or
    environment when given)."""
    pids = []
    proc = Path("/proc")
    if not proc.is_dir():
        return pids
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            environ = (entry / "environ").read_bytes() if marker else b""
        except OSError:
            continue
        if b"flower-superlink" in cmdline and (marker is None or marker in cmdline + environ):
            pids.append(int(entry.name))
    return sorted(pids)


def superlink_pids(flwr_home: Path) -> list[int]:
    """PIDs of local SuperLink processes started with this FLWR_HOME."""
    return _superlinks(str(flwr_home).encode())


def busy_message() -> str:
    """Why a simulation cannot start now, and how to free the port safely."""
    pids = _superlinks()
    which = f" (PID {', '.join(map(str, pids))})" if pids else ""
    return (
        f"a local SuperLink{which} is already listening on 127.0.0.1:{SUPERLINK_PORTS[0]}: "
        "one simulation runs at a time on a machine. If it is yours (a plain `flwr run` "
        "leaves it running), stop it by its PID (`kill PID`); or run without a SuperLink "
        "(`fedpatch experiment --engine inprocess`)"
    )


def check_ports_free() -> None:
    """SimulationError now if a local SuperLink holds the simulation ports."""
    if any(port_busy(p) for p in SUPERLINK_PORTS):
        raise SimulationError(busy_message())


def wait_for_free_ports(timeout: float, poll: float = 5.0) -> None:
    """Wait until no local SuperLink holds the simulation ports, at most `timeout` s."""
    deadline = time.monotonic() + timeout
    announced = False
    while any(port_busy(p) for p in SUPERLINK_PORTS):
        if time.monotonic() >= deadline:
            raise SimulationError(busy_message())
        if not announced:
            log.warning("another simulation holds 127.0.0.1:39091: waiting up to %.0f s", timeout)
            announced = True
        time.sleep(poll)


def stop_processes(pids: list[int], grace: float = 20.0) -> None:
    """SIGTERM, then SIGKILL what is still alive after `grace` seconds."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace
    for pid in pids:
        while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
            time.sleep(0.2)
        if Path(f"/proc/{pid}").exists():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def flwr_env(flwr_home: Path) -> dict[str, str]:
    bin_dir = Path(sys.executable).parent
    return {
        **os.environ,
        "FLWR_HOME": str(flwr_home),
        "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "RAY_DEDUP_LOGS": "0",
    }


def flwr_command(
    app_dir: Path, run_config: Mapping[str, Any], num_supernodes: int, cpus: float, gpus: float
) -> list[str]:
    federation = f"num-supernodes={int(num_supernodes)} client-resources-num-cpus={cpus:g}"
    if gpus:
        federation += f" client-resources-num-gpus={gpus:g}"
    cmd = [str(Path(sys.executable).parent / "flwr"), "run", str(app_dir), "--stream"]
    cmd += ["--federation-config", federation]
    if run_config:
        cmd += ["--run-config", run_config_arg(run_config)]
    return cmd


def _stream(
    cmd: list[str], app_dir: Path, env: dict, timeout: float, echo: TextIO | None
) -> tuple[int, str]:
    """Run `cmd`, echoing its output line by line when `echo` is given."""
    proc = subprocess.Popen(
        cmd, cwd=app_dir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line)
        if echo is not None:
            echo.write(line)
            echo.flush()
        if time.monotonic() > deadline:
            proc.kill()
            raise SimulationError(f"flwr run did not finish within {timeout:.0f} s")
    return proc.wait(), "".join(lines)


def final_status(app_dir: Path, env: dict) -> tuple[Any, str]:
    """(run id, status) of the last run the local SuperLink knows."""
    flwr = str(Path(sys.executable).parent / "flwr")
    listed = subprocess.run(
        [flwr, "list", "--format", "json"], cwd=app_dir, env=env, capture_output=True,
        text=True, timeout=120, check=False,
    )  # fmt: skip
    try:
        runs = json.loads(listed.stdout)["runs"]
    except (ValueError, KeyError, TypeError):
        return None, "unknown"
    if not runs:
        return None, "unknown"
    last = runs[-1]
    return last.get("run-id", last.get("run_id")), str(last.get("status", "unknown"))


def run_simulation(
    run_config: Mapping[str, Any],
    *,
    flwr_home: Path,
    app_dir: Path | None = None,
    num_supernodes: int = 5,
    cpus_per_client: float = 1,
    gpus_per_client: float = 0,
    timeout: float = 3600,
    log_file: Path | None = None,
    port_wait: float = 0.0,
    echo: TextIO | None = None,
) -> SimulationRun:
    """`flwr run APP --stream` with `num_supernodes` simulated SuperNodes; waits for the end.

    Raises `SimulationError` when the run does not finish as `finished:completed`. One
    simulation runs at a time on a machine (the local SuperLink's ports are fixed):
    `port_wait` seconds are spent waiting for another one to end before giving up. The
    output goes to `echo` as it comes (e.g. sys.stdout) and to `log_file`.
    """
    app_dir = Path(app_dir) if app_dir is not None else project_root()
    flwr_home = Path(flwr_home).resolve()
    flwr_home.mkdir(parents=True, exist_ok=True)
    wait_for_free_ports(port_wait)
    env = flwr_env(flwr_home)
    cmd = flwr_command(app_dir, run_config, num_supernodes, cpus_per_client, gpus_per_client)
    log.info("flwr run with %d SuperNodes: %s", num_supernodes, run_config_arg(run_config))
    start = time.perf_counter()
    try:
        code, output = _stream(cmd, app_dir, env, timeout, echo)
        run_id, status = final_status(app_dir, env)
    finally:
        stop_processes(superlink_pids(flwr_home))
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        log_file.write_text(output, encoding="utf-8")
    if code != 0 or status != "finished:completed":
        raise SimulationError(
            f"flwr run {run_id} ended as {status!r} (exit {code}); last output:\n{output[-3000:]}"
        )
    return SimulationRun(
        run_id=run_id, status=status, log=output, seconds=time.perf_counter() - start
    )
