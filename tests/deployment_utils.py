"""Helpers for the deployment tests: real SuperLink, SuperNode and `flwr` processes.

Every process is started in its own session and recorded; `ProcessGroup.stop_all` stops
it and every descendant by PID (SIGTERM, then SIGKILL), so nothing outlives a test.
Certificates and SuperNode keys come from the project's scripts (openssl, ssh-keygen);
`have_tools` tells which of them exist so a test can skip with the reason.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from inprocess_reference import ONE_THREAD

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "scripts"
BIN = Path(sys.executable).parent

#: Run config of the deployment tests: tiny synthetic-format data, random weights, CPU.
FAST_RUN_CONFIG: dict[str, Any] = {
    "weights": "none",
    "image-size": 64,
    "device": "cpu",
    "batch-size": 8,
    "wait-timeout": 90.0,
    "round-timeout": 150.0,
}


def missing_tools(*names: str) -> list[str]:
    return [name for name in names if shutil.which(name) is None]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def base_env(flwr_home: Path) -> dict[str, str]:
    """Environment of every process: the venv's bin first on PATH (the SuperLink and the
    SuperNodes start `flower-superexec` by name), its own FLWR_HOME, offline runs, one
    CPU thread (as the in-process reference runs: the figures are compared)."""
    return {
        **os.environ,
        **ONE_THREAD,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "FLWR_HOME": str(flwr_home),
        "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
        "PYTHONUNBUFFERED": "1",
    }


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(str(value))


def config_arg(config: Mapping[str, Any]) -> str:
    return " ".join(f"{key}={toml_value(value)}" for key, value in config.items())


def _proc_table() -> list[tuple[int, int, int]]:
    """(pid, parent pid, session id) of every process, from /proc."""
    table = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        table.append((int(entry.name), int(fields[1]), int(fields[3])))
    return table


def descendants(pid: int) -> list[int]:
    """`pid`'s descendants, and the processes of its session (`pid` is a session leader:
    ProcessGroup starts every process in a new session), even those orphaned when
    their parent died (a SuperNode that exits leaves its SuperExec behind)."""
    table = _proc_table()
    tree: dict[int, list[int]] = {}
    for child, parent, _ in table:
        tree.setdefault(parent, []).append(child)
    out: list[int] = [p for p, _, sid in table if sid == pid and p != pid]
    todo = [pid, *out]
    while todo:
        for child in tree.get(todo.pop(), []):
            if child not in out:
                out.append(child)
                todo.append(child)
    return out


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def kill_pids(pids: Sequence[int], grace: float = 10.0) -> None:
    """SIGTERM every PID, then SIGKILL whatever is still alive after `grace` seconds."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            pass
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        time.sleep(0.1)
    for pid in pids:
        if alive(pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


@dataclass
class Started:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    def text(self) -> str:
        try:
            return self.log.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""


@dataclass
class ProcessGroup:
    """The processes of one test; `stop_all` stops them and their descendants by PID."""

    log_dir: Path
    started: list[Started] = field(default_factory=list)

    def start(self, name: str, cmd: Sequence[str], env: Mapping[str, str], cwd: Path) -> Started:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_dir / f"{name}.log"
        with open(log, "ab") as handle:
            proc = subprocess.Popen(
                list(cmd),
                env=dict(env),
                cwd=cwd,
                stdout=handle,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        item = Started(name, proc, log)
        self.started.append(item)
        return item

    def stop(self, item: Started, sig: int = signal.SIGTERM, grace: float = 10.0) -> None:
        pids = [item.proc.pid, *descendants(item.proc.pid)]
        if sig == signal.SIGKILL:
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        else:
            kill_pids(pids, grace)
        try:
            item.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass

    def stop_all(self) -> None:
        pids: list[int] = []
        for item in self.started:
            pids += [item.proc.pid, *descendants(item.proc.pid)]
        kill_pids(list(dict.fromkeys(pids)))
        for item in self.started:
            try:
                item.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass

    def logs(self, tail: int = 2500) -> str:
        return "\n".join(f"===== {s.name} =====\n{s.text()[-tail:]}" for s in self.started)


def run_cmd(
    cmd: Sequence[str], env: Mapping[str, str], cwd: Path, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(cmd),
        env=dict(env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def make_certs(out: Path, names: Sequence[str]) -> Path:
    """CA + server certificate through scripts/make-certs.sh (openssl)."""
    env = {**os.environ, "KEY_BITS": "2048"}
    proc = run_cmd(["bash", str(SCRIPTS / "make-certs.sh"), str(out), *names], env, REPO)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out


def make_keys(out: Path, names: Sequence[str]) -> Path:
    """One ECDSA key pair per name through scripts/make-node-keys.sh (ssh-keygen)."""
    proc = run_cmd(["bash", str(SCRIPTS / "make-node-keys.sh"), str(out), *names], os.environ, REPO)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out


def write_connection(flwr_home: Path, name: str, address: str, ca: Path | None) -> None:
    """A SuperLink connection named `name` in FLWR_HOME/config.toml (the default one)."""
    flwr_home.mkdir(parents=True, exist_ok=True)
    lines = [
        "[superlink]",
        f'default = "{name}"',
        "",
        f"[superlink.{name}]",
        f'address = "{address}"',
    ]
    if ca is None:
        lines.append("insecure = true")
    else:
        lines.append(f'root-certificates = "{ca}"')
    (flwr_home / "config.toml").write_text("\n".join(lines) + "\n", encoding="utf-8")


def flwr(
    args: Sequence[str], env: Mapping[str, str], timeout: float = 120, prefix: Sequence[str] = ()
) -> str:
    proc = run_cmd([*prefix, str(BIN / "flwr"), *args], env, REPO, timeout=timeout)
    assert proc.returncode == 0, f"flwr {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def wait_for(predicate: Any, timeout: float, what: str, group: ProcessGroup | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    logs = group.logs() if group is not None else ""
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}\n{logs}")


def superlink_ready(env: Mapping[str, str], connection: str, prefix: Sequence[str] = ()) -> bool:
    proc = run_cmd(
        [*prefix, str(BIN / "flwr"), "list", connection, "--format", "json"], env, REPO, timeout=60
    )
    return proc.returncode == 0 and '"success": true' in proc.stdout.replace(" ", " ")


def register_keys(
    env: Mapping[str, str], connection: str, pubs: Sequence[Path], prefix: Sequence[str] = ()
) -> None:
    for pub in pubs:
        flwr(["supernode", "register", str(pub), connection], env, prefix=prefix)


def node_list(env: Mapping[str, str], connection: str, prefix: Sequence[str] = ()) -> list[dict]:
    proc = run_cmd(
        [*prefix, str(BIN / "flwr"), "supernode", "list", connection, "--format", "json"],
        env,
        REPO,
        timeout=60,
    )
    if proc.returncode != 0:
        return []
    try:
        return list(json.loads(proc.stdout).get("nodes", []))
    except ValueError:
        return []


def online_nodes(env: Mapping[str, str], connection: str, prefix: Sequence[str] = ()) -> int:
    nodes = node_list(env, connection, prefix)
    return sum(1 for n in nodes if str(n.get("status", "")).lower() == "online")


def submit(
    env: Mapping[str, str],
    connection: str,
    run_config: Mapping[str, Any],
    prefix: Sequence[str] = (),
    app: Path = REPO,
) -> int:
    """`flwr run APP CONNECTION --run-config ...` (no stream; APP: the project, or a
    drill app): returns the run id."""
    out = flwr(
        ["run", str(app), connection, "--format", "json", "--run-config", config_arg(run_config)],
        env,
        timeout=180,
        prefix=prefix,
    )
    info = json.loads(out[out.index("{") :])
    assert info.get("success"), out
    return int(info["run-id"])


def run_status(
    env: Mapping[str, str], connection: str, run_id: int, prefix: Sequence[str] = ()
) -> str:
    proc = run_cmd(
        [
            *prefix,
            str(BIN / "flwr"),
            "list",
            connection,
            "--run-id",
            str(run_id),
            "--format",
            "json",
        ],
        env,
        REPO,
        timeout=60,
    )
    try:
        runs = json.loads(proc.stdout)["runs"]
    except (ValueError, KeyError):
        return "unknown"
    return str(runs[0].get("status", "unknown")) if runs else "unknown"


def wait_finished(
    env: Mapping[str, str],
    connection: str,
    run_id: int,
    timeout: float,
    group: ProcessGroup,
    prefix: Sequence[str] = (),
) -> str:
    status = "unknown"

    def done() -> bool:
        nonlocal status
        status = run_status(env, connection, run_id, prefix)
        return status.startswith("finished")

    wait_for(done, timeout, f"run {run_id} to finish (last status {status})", group)
    return status


def make_client_data(root: Path, categories: Sequence[str], seed: int = 0) -> Path:
    """Tiny synthetic data in the AutoVI layout holding only `categories` (one client's)."""
    from fedpatch_app.data.synthetic import generate

    generate(root, scale="tiny", seed=seed, categories=list(categories))
    return root


# --- docker/compose.yml as processes in network namespaces ---------------------------

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def interpolate(value: Any, env: Mapping[str, str]) -> Any:
    """Compose's `${VAR}` / `${VAR:-default}` substitution, recursively."""
    if isinstance(value, str):
        return _VAR.sub(lambda m: env.get(m.group(1)) or (m.group(2) or ""), value)
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    return value


def load_compose(files: Sequence[Path], env: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """The services of compose files merged as `docker compose -f A -f B` does for the keys
    used here: scalars and `command`/`entrypoint` replaced, `volumes` merged by target,
    `environment` and `depends_on` merged by key."""
    services: dict[str, dict[str, Any]] = {}
    for path in files:
        data = interpolate(yaml.safe_load(path.read_text(encoding="utf-8")), env)
        for name, spec in (data.get("services") or {}).items():
            base = services.setdefault(name, {})
            for key, value in spec.items():
                if key == "volumes":
                    merged = {str(v).split(":")[1]: str(v) for v in base.get("volumes", [])}
                    merged.update({str(v).split(":")[1]: str(v) for v in value})
                    base["volumes"] = list(merged.values())
                elif key in ("environment", "depends_on") and isinstance(value, dict):
                    base[key] = {**base.get(key, {}), **value}
                else:
                    base[key] = value
    return services


def start_order(services: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Services ordered so that each comes after what it depends on."""
    order: list[str] = []

    def visit(name: str, stack: tuple[str, ...] = ()) -> None:
        if name in order:
            return
        assert name not in stack, f"dependency cycle through {name}"
        for dep in services[name].get("depends_on", {}) or {}:
            visit(dep, (*stack, name))
        order.append(name)

    for name in services:
        visit(name)
    return order


def path_map(
    spec: Mapping[str, Any], app_root: Path, volume_dirs: Mapping[str, Path]
) -> list[tuple[str, str]]:
    """(container path, host path) pairs of a service, longest container path first:
    its volumes (named volumes -> `volume_dirs`, relative binds -> under docker/) and, for
    the image built from docker/Dockerfile, /app -> the repository."""
    pairs: list[tuple[str, str]] = []
    for volume in spec.get("volumes", []) or []:
        parts = str(volume).split(":")
        source, target = parts[0], parts[1]
        if source in volume_dirs:
            host = volume_dirs[source]
        elif source.startswith("/"):
            host = Path(source)
        else:
            host = (REPO / "docker" / source).resolve()
        pairs.append((target, str(host)))
    if "build" in spec or str(spec.get("image", "")).startswith("fedpatch-superexec"):
        pairs.append(("/app", str(app_root)))
    return sorted(pairs, key=lambda p: -len(p[0]))


def translate(arg: str, pairs: Sequence[tuple[str, str]]) -> str:
    """Container paths in one argument replaced by the host paths they are mounted from."""
    for target, host in pairs:
        arg = re.sub(rf"(?<![\w/.-]){re.escape(target)}(?=/|\"|'|\s|$)", host, arg)
    return arg


@dataclass
class NetnsLab:
    """Network namespaces on one bridge, each with its own address; service names resolve
    through /etc/netns/<ns>/hosts. Addresses come from a private subnet that exists only on
    this bridge (the bridge itself has no address, so the host does not route to it)."""

    prefix: str
    subnet: str = "10.213.77"
    bridge: str = ""
    names: dict[str, str] = field(default_factory=dict)  # service -> namespace
    addresses: dict[str, str] = field(default_factory=dict)  # service -> IP
    created_ns: list[str] = field(default_factory=list)
    created_links: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.bridge = f"{self.prefix}br"

    def _ip(self, *args: str) -> None:
        proc = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
        assert proc.returncode == 0, f"ip {' '.join(args)}: {proc.stderr}"

    def create(self, services: Sequence[str]) -> None:
        self._ip("link", "add", self.bridge, "type", "bridge")
        self.created_links.append(self.bridge)
        self._ip("link", "set", self.bridge, "up")
        for index, service in enumerate(services, start=2):
            ns = f"{self.prefix}{index}"
            self._ip("netns", "add", ns)
            self.created_ns.append(ns)
            host_end, ns_end = f"{self.prefix}{index}h", f"{self.prefix}{index}n"
            self._ip("link", "add", host_end, "type", "veth", "peer", "name", ns_end)
            self.created_links.append(host_end)
            self._ip("link", "set", ns_end, "netns", ns)
            self._ip("link", "set", host_end, "master", self.bridge)
            self._ip("link", "set", host_end, "up")
            address = f"{self.subnet}.{index}"
            self._ip("-n", ns, "addr", "add", f"{address}/24", "dev", ns_end)
            self._ip("-n", ns, "link", "set", ns_end, "up")
            self._ip("-n", ns, "link", "set", "lo", "up")
            self.names[service] = ns
            self.addresses[service] = address
        hosts = "127.0.0.1 localhost\n" + "".join(
            f"{ip} {service}\n" for service, ip in self.addresses.items()
        )
        for ns in self.created_ns:
            folder = Path("/etc/netns") / ns
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "hosts").write_text(hosts, encoding="utf-8")

    def wrap(self, service: str, cmd: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.names[service], *cmd]

    def destroy(self) -> None:
        for ns in self.created_ns:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)
            shutil.rmtree(Path("/etc/netns") / ns, ignore_errors=True)
        for link in reversed(self.created_links):
            subprocess.run(["ip", "link", "del", link], capture_output=True, check=False)

    @staticmethod
    def unavailable() -> str | None:
        """Why namespaces cannot be made here (None when they can)."""
        if os.geteuid() != 0:
            return "network namespaces need root"
        if shutil.which("ip") is None:
            return "the `ip` command (iproute2) is missing"
        probe = f"fpprobe{os.getpid() % 100000}"
        proc = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
        if proc.returncode != 0:
            return f"cannot create a network namespace: {proc.stderr.strip()}"
        subprocess.run(["ip", "netns", "del", probe], capture_output=True)
        proc = subprocess.run(
            ["ip", "link", "add", f"{probe}b", "type", "bridge"], capture_output=True, text=True
        )
        if proc.returncode != 0:
            return f"cannot create a bridge: {proc.stderr.strip()}"
        subprocess.run(["ip", "link", "del", f"{probe}b"], capture_output=True)
        return None
