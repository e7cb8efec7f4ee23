"""Launch a real `flwr run` simulation (local SuperLink + Ray SuperNodes) and wait for it.

Used by `fedpatch experiment` (the federated runs go through Flower, not a shortcut) and
by the end-to-end test. Each launch gets its own FLWR_HOME, runs with runtime dependency
installation switched off (offline machines), checks the run's final status with
`flwr list --format json`, and stops the detached local SuperLink that `flwr run` starts.
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
from typing import Any

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


def superlink_pids(flwr_home: Path) -> list[int]:
    """PIDs of local SuperLink processes started with this FLWR_HOME."""
    pids = []
    marker = str(flwr_home).encode()
    proc = Path("/proc")
    if not proc.is_dir():
        return pids
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if b"flower-superlink" in cmdline and (marker in cmdline or marker in environ):
            pids.append(int(entry.name))
    return pids


def local_superlinks() -> list[int]:
    """PIDs of every local SuperLink process of this user (for messages; never killed)."""
    pids = []
    proc = Path("/proc")
    if not proc.is_dir():
        return pids
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if b"flower-superlink" in cmdline:
            pids.append(int(entry.name))
    return sorted(pids)


def busy_message() -> str:
    """Why a simulation cannot start now, and how to free the port safely."""
    pids = local_superlinks()
    which = f" (PID {', '.join(map(str, pids))})" if pids else ""
    return (
        f"a local SuperLink{which} is already listening on 127.0.0.1:{SUPERLINK_PORTS[0]}: "
        "one simulation runs at a time on a machine. If it is yours (an earlier "
        "`flwr run` leaves it running), stop it by its PID (`kill PID`); or run without "
        "a SuperLink (`fedpatch experiment --engine inprocess`)"
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
) -> SimulationRun:
    """`flwr run APP --stream` with `num_supernodes` simulated SuperNodes; waits for the end.

    Raises `SimulationError` when the run does not finish as `finished:completed` (the
    exit code of `flwr run` alone does not tell). One simulation runs at a time on a
    machine (the local SuperLink's ports are fixed): `port_wait` seconds are spent waiting
    for another one to end before giving up.
    """
    app_dir = Path(app_dir) if app_dir is not None else project_root()
    flwr_home = Path(flwr_home).resolve()
    flwr_home.mkdir(parents=True, exist_ok=True)
    wait_for_free_ports(port_wait)
    bin_dir = Path(sys.executable).parent
    flwr = bin_dir / "flwr"
    env = {
        **os.environ,
        "FLWR_HOME": str(flwr_home),
        "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "RAY_DEDUP_LOGS": "0",
    }
    federation = f"num-supernodes={int(num_supernodes)} client-resources-num-cpus={cpus_per_client}"
    if gpus_per_client:
        federation += f" client-resources-num-gpus={gpus_per_client}"
    cmd = [str(flwr), "run", str(app_dir), "--stream", "--federation-config", federation]
    if run_config:
        cmd += ["--run-config", run_config_arg(run_config)]
    log.info("flwr run with %d SuperNodes: %s", num_supernodes, run_config_arg(run_config))
    start = time.perf_counter()
    try:
        proc = subprocess.run(
            cmd, cwd=app_dir, env=env, capture_output=True, text=True, timeout=timeout, check=False
        )
        output = proc.stdout + proc.stderr
        listed = subprocess.run(
            [str(flwr), "list", "--format", "json"],
            cwd=app_dir,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise SimulationError(f"flwr run did not finish within {timeout:.0f} s") from exc
    finally:
        stop_processes(superlink_pids(flwr_home))
    seconds = time.perf_counter() - start
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        log_file.write_text(output, encoding="utf-8")
    try:
        runs = json.loads(listed.stdout)["runs"]
    except (ValueError, KeyError, TypeError):
        runs = []
    if not runs:
        raise SimulationError(
            f"flwr run (exit {proc.returncode}) left no run to check; last output:\n{output[-3000:]}"
        )
    last = runs[-1]
    status = str(last.get("status", "unknown"))
    run_id = last.get("run-id", last.get("run_id"))
    if proc.returncode != 0 or status != "finished:completed":
        raise SimulationError(
            f"flwr run {run_id} ended as {status!r} (exit {proc.returncode}); last output:\n"
            f"{output[-3000:]}"
        )
    return SimulationRun(run_id=run_id, status=status, log=output, seconds=seconds)
