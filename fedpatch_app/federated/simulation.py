"""Launch a real `flwr run` simulation (local SuperLink + Ray SuperNodes) and wait for it.

Used by `fedpatch run` (the main job), `fedpatch experiment` and the end-to-end test.
Each launch starts its own local SuperLink, as `flwr run` would, but on ports that are
free (Flower's fixed 39091 would let a second simulation on the machine use the first
one's SuperLink) and with its state in the launch's own FLWR_HOME. It runs with runtime
dependency installation switched off (offline machines), follows the run that its `flwr
run` started, by the id `flwr run` prints, checks that run's final status with `flwr
list --run-id ID --format json` (`flwr run` exits 0 even when the run failed), and stops
its SuperLink by PID at the end.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from fedpatch_app.errors import ConfigError, FedpatchError
from fedpatch_app.federated.config_text import run_config_arg

try:
    import fcntl
except ImportError:  # pragma: no cover - non-POSIX
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

#: Environment variables that set the ports of Flower's local SuperLink (flwr/cli/constant.py):
#: its HTTP API (SuperNodes, the CLI and the ServerApp; in Flower 1.42 the only port a
#: simulation's SuperLink binds) and its legacy gRPC Control API (bound only when
#: FLWR_INTERNAL_GRPC_CONTROL_API=1). Each launch sets both to ports that are free.
HTTP_PORT_VAR = "FLWR_LOCAL_SUPERLINK_HTTP_API_PORT"
CONTROL_PORT_VAR = "FLWR_LOCAL_CONTROL_API_PORT"
#: Seconds a SuperLink gets to answer on its port (Flower's own CLI gives it 15).
STARTUP_TIMEOUT = 60.0
#: `flwr run`'s line naming the run it started (flwr/cli/run/run.py).
STARTED_RUN = re.compile(r"Successfully started run (\d+)")
ANSI = re.compile(r"\x1b\[[0-9;]*m")


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


def free_ports(count: int) -> list[int]:
    """`count` distinct TCP ports of 127.0.0.1 that nothing listens on now."""
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            socks.append(sock)
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


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


@contextlib.contextmanager
def home_lock(flwr_home: Path) -> Iterator[None]:
    """This launch's hold on its FLWR_HOME, where the local SuperLink keeps its state
    (local-superlink/state.db) and Flower installs the app: two launches never share one."""
    flwr_home.mkdir(parents=True, exist_ok=True)
    with open(flwr_home / ".fedpatch.lock", "a+") as handle:
        if fcntl is not None:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise ConfigError(
                    f"another simulation is using the Flower home {flwr_home} (its "
                    "SuperLink keeps its state there): give this run its own (--flwr-home)"
                ) from None
        yield


def listens_on(pid: int, port: int) -> bool:
    """Whether process `pid` holds the listening TCP socket of `port` (Linux, read in
    /proc); True where that cannot be read."""
    inodes = set()
    for table in ("tcp", "tcp6"):
        try:
            rows = Path(f"/proc/net/{table}").read_text().splitlines()[1:]
        except OSError:
            return True
        for row in rows:
            fields = row.split()
            if fields[1].rsplit(":", 1)[1] == f"{port:04X}" and fields[3] == "0A":
                inodes.add(f"socket:[{fields[9]}]")
    if not inodes:
        return False
    try:
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return True
    for fd in fds:
        with contextlib.suppress(OSError):  # closed meanwhile
            if os.readlink(fd) in inodes:
                return True
    return False


@dataclass
class LocalSuperLink:
    """The local SuperLink one launch started: its process, its HTTP port, its log."""

    process: subprocess.Popen
    port: int
    log_file: Path

    def answers(self) -> bool:
        """Whether something answers `GET /health` on this SuperLink's port."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=0.5)
        try:
            conn.request("GET", "/health")
            return conn.getresponse().status == 200
        except OSError:
            return False
        finally:
            conn.close()

    def wait_ready(self, timeout: float) -> bool:
        """True once it answers on its port; False when it exited first or another
        process answers there (the port was taken between the pick and the start)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            if self.answers():
                # Its own port, not a process that took the port in the meantime.
                return self.process.poll() is None and listens_on(self.process.pid, self.port)
            time.sleep(0.2)
        self.stop()
        raise SimulationError(
            f"the local SuperLink (PID {self.process.pid}) did not answer on "
            f"127.0.0.1:{self.port} within {timeout:.0f} s: see {self.log_file}"
        )

    def stop(self, grace: float = 20.0) -> None:
        """SIGTERM, then SIGKILL after `grace` s; reaped, so no zombie is left."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(grace)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def superlink_command(flwr_home: Path, port: int, control_port: int) -> list[str]:
    """The command `flwr run` itself uses to start a local SuperLink for a simulation
    (flwr/cli/local_superlink.py), on the given ports and with its state in `flwr_home`."""
    state = flwr_home / "local-superlink"
    cmd = [str(Path(sys.executable).parent / "flower-superlink"), "--insecure", "--simulation"]
    cmd += ["--isolation", "subprocess", "--control-api-address", f"127.0.0.1:{control_port}"]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--database", str(state / "state.db")]
    return cmd + ["--log-file", str(state / "superlink.log")]


def start_superlink(
    flwr_home: Path, env: dict[str, str], cwd: Path, attempts: int = 3
) -> LocalSuperLink:
    """Start this launch's own local SuperLink on free ports and write those ports into
    `env`, so that `flwr run` and `flwr list` run with `env` find it and never start or
    reach another simulation's. A port taken between the pick and the start (the
    SuperLink exits) is picked again, up to `attempts` times."""
    log_file = flwr_home / "local-superlink" / "superlink.log"
    log_file.parent.mkdir(parents=True, exist_ok=True)
    code = None
    for _ in range(attempts):
        port, control_port = free_ports(2)
        env[HTTP_PORT_VAR], env[CONTROL_PORT_VAR] = str(port), str(control_port)
        process = subprocess.Popen(
            superlink_command(flwr_home, port, control_port),
            cwd=cwd,
            env={**env, "FLWR_DISABLE_UPDATE_CHECK": "1"},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        link = LocalSuperLink(process, port, log_file)
        try:
            ready = link.wait_ready(STARTUP_TIMEOUT)
        except BaseException:  # Ctrl-C while it starts: it must not outlive the launch
            link.stop()
            raise
        if ready:
            log.info("local SuperLink PID %d on 127.0.0.1:%d", process.pid, port)
            return link
        link.stop()
        code = process.returncode
    raise SimulationError(
        f"the local SuperLink exited at start (exit code {code}) {attempts} times: see {log_file}"
    )


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


def started_run_id(output: str) -> int | None:
    """The id of the run that `flwr run` started, from its own output (None when it
    started none)."""
    match = STARTED_RUN.search(ANSI.sub("", output))
    return int(match.group(1)) if match else None


def status_in_listing(listing: str, run_id: int) -> str:
    """The status of run `run_id` in `flwr list --format json` output; "unknown" when
    the listing cannot be read or does not hold that run."""
    try:
        runs = json.loads(listing)["runs"]
    except (ValueError, KeyError, TypeError):
        return "unknown"
    for run in runs or []:
        if str(run.get("run-id", run.get("run_id"))) == str(run_id):
            return str(run.get("status", "unknown"))
    return "unknown"


def final_status(app_dir: Path, env: dict[str, str], run_id: int, settle: float = 30.0) -> str:
    """The status of run `run_id` on this launch's SuperLink (`env` names its port).
    `flwr run --stream` returns when the run's log ends; the run may take a moment more
    to be marked finished, so a status that is not final is asked again for `settle` s."""
    cmd = [str(Path(sys.executable).parent / "flwr"), "list", "--run-id", str(run_id)]
    deadline = time.monotonic() + settle
    while True:
        listed = subprocess.run(
            [*cmd, "--format", "json"],
            cwd=app_dir,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        status = status_in_listing(listed.stdout, run_id)
        if status.startswith("finished") or time.monotonic() >= deadline:
            return status
        time.sleep(1.0)


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
    echo: TextIO | None = None,
) -> SimulationRun:
    """`flwr run APP --stream` with `num_supernodes` simulated SuperNodes; waits for the end.

    The launch starts its own local SuperLink on free ports with its state in
    `flwr_home` (which no other launch may use at the same time), follows the run that
    its `flwr run` started (by the id it prints) and stops that SuperLink at the end, so
    simulations on one machine never meet. Raises `SimulationError` when the run does
    not finish as `finished:completed`. The output goes to `echo` as it comes (e.g.
    sys.stdout) and to `log_file`.
    """
    app_dir = Path(app_dir) if app_dir is not None else project_root()
    flwr_home = Path(flwr_home).resolve()
    env = flwr_env(flwr_home)
    cmd = flwr_command(app_dir, run_config, num_supernodes, cpus_per_client, gpus_per_client)
    log.info("flwr run with %d SuperNodes: %s", num_supernodes, run_config_arg(run_config))
    start = time.perf_counter()
    with home_lock(flwr_home):
        superlink = start_superlink(flwr_home, env, app_dir)
        try:
            code, output = _stream(cmd, app_dir, env, timeout, echo)
            run_id = started_run_id(output)
            status = "not started" if run_id is None else final_status(app_dir, env, run_id)
        finally:
            superlink.stop()
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
