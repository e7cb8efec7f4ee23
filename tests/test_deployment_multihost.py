"""docker/compose.yml + docker/compose.tls.yml run as processes, one network namespace
per service, each with its own address on a private bridge; service names resolve
through /etc/netns/<ns>/hosts. Entrypoints, commands, environments, volumes, depends_on
conditions and health checks are read from the compose files themselves, so the files
are what is tested (container paths are mapped to the host folders mounted there).
TLS and SuperNode authentication are on: the one-shot `credentials` service makes the
certificates and keys, the one-shot `register` service registers the five keys. The
run's metrics and banks are compared with the same case run in-process.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import sys
import time
from pathlib import Path

import deployment_utils as du
import pytest
from inprocess_reference import assert_same_figures, reference_run

pytestmark = [pytest.mark.deployment, pytest.mark.slow]

COMPOSE = [du.REPO / "docker" / "compose.yml", du.REPO / "docker" / "compose.tls.yml"]
CLIENTS = [f"supernode-{i}" for i in range(1, 6)]


def _categories(spec: dict) -> list[str]:
    node_config = spec["command"][spec["command"].index("--node-config") + 1]
    match = re.search(r'categories="([^"]*)"', node_config)
    assert match, f"no categories in {node_config!r}"
    return match.group(1).split(",")


def _healthy(lab: du.NetnsLab, service: str, spec: dict, env: dict) -> bool:
    test = (spec.get("healthcheck") or {}).get("test")
    if not test:
        return True
    cmd = test[1:] if test[0] == "CMD" else ["sh", "-c", test[1]]
    proc = du.run_cmd(lab.wrap(service, cmd), env, du.REPO, timeout=30)
    return proc.returncode == 0


def test_compose_services_on_separate_hosts(tmp_path: Path) -> None:
    reason = du.NetnsLab.unavailable()
    if reason:
        print(f"SKIP: {reason}")
        pytest.skip(reason)
    if missing := du.missing_tools("bash"):
        pytest.skip(f"missing {missing}")
    start = time.monotonic()
    env_vars = {f"FEDPATCH_DATA_{i}": str(tmp_path / "data" / f"client-{i}") for i in range(1, 6)}
    env_vars["FEDPATCH_RUNS"] = str(tmp_path / "runs")
    services = du.load_compose(COMPOSE, env_vars)
    order = du.start_order(services)
    for name in ("superlink", "superexec-serverapp", "credentials", "register", *CLIENTS):
        assert name in services
    assert all(f"superexec-clientapp-{i}" in services for i in range(1, 6))
    # Each client mounts only its own data, read-only.
    for i in range(1, 6):
        data_volumes = [v for v in services[f"superexec-clientapp-{i}"]["volumes"] if ":/data" in v]
        assert data_volumes == [f"{env_vars[f'FEDPATCH_DATA_{i}']}:/data:ro"]

    volume_dirs = {"credentials": tmp_path / "vol" / "credentials"}
    volume_dirs["superlink-state"] = tmp_path / "vol" / "superlink-state"
    for folder in volume_dirs.values():
        folder.mkdir(parents=True)
    categories: list[str] = []
    for i, node in enumerate(CLIENTS, start=1):
        cats = _categories(services[node])
        categories += cats
        du.make_client_data(Path(env_vars[f"FEDPATCH_DATA_{i}"]), cats)
    assert len(categories) == len(set(categories)) == 6

    lab = du.NetnsLab(prefix=f"fp{os.getpid() % 1000}")
    group = du.ProcessGroup(tmp_path / "logs")
    try:
        lab.create([*order, "operator"])
        for name in order:
            spec = services[name]
            for dep, cond in (spec.get("depends_on") or {}).items():
                condition = cond.get("condition", "service_started")
                if condition == "service_healthy":
                    dep_env = du.base_env(tmp_path / "home" / dep)
                    du.wait_for(
                        lambda d=dep, e=dep_env: _healthy(lab, d, services[d], e),
                        90,
                        f"{dep} healthy",
                        group,
                    )
            pairs = du.path_map(spec, du.REPO, volume_dirs)
            # A SuperNode's node config is read by the ClientApp, i.e. in the container of
            # the SuperExec attached to it: its paths are that container's mounts.
            for other in services.values():
                command = [str(a) for a in other.get("command", [])]
                if (
                    any(a.startswith(f"{name}:") for a in command)
                    and "--runtime-api-address" in command
                ):
                    # Its own mounts first: a set would let the attached SuperExec's
                    # /app (the repository) win over this service's own /app volume by
                    # chance, and the SuperLink wrote its state database into the
                    # repository.
                    extra = du.path_map(other, du.REPO, volume_dirs)
                    pairs = sorted(
                        [*pairs, *(p for p in extra if p not in pairs)],
                        key=lambda p: -len(p[0]),
                    )
            cmd = [du.translate(str(a), pairs) for a in [*spec["entrypoint"], *spec["command"]]]
            env = du.base_env(tmp_path / "home" / name)
            for key, value in (spec.get("environment") or {}).items():
                env[key] = du.translate(str(value), pairs)
            env["FLWR_HOME"] = str(tmp_path / "home" / name)  # each container has its own
            cwd = Path(du.translate(spec.get("working_dir", "/nonexistent"), pairs))
            if not cwd.is_dir():
                cwd = tmp_path / "cwd" / name
                cwd.mkdir(parents=True, exist_ok=True)
            item = group.start(name, lab.wrap(name, cmd), env, cwd)
            if spec.get("restart") == "no":  # one-shot service
                rc = item.proc.wait(timeout=120)
                assert rc == 0, f"{name} ({shlex.join(cmd)}) failed:\n{item.text()}"

        ca = volume_dirs["credentials"] / "certs" / "ca.crt"
        assert ca.is_file()
        op = lab.wrap("operator", [])
        op_env = du.base_env(tmp_path / "home" / "operator")
        du.write_connection(tmp_path / "home" / "operator", "compose", "superlink:8000", ca)
        nodes = du.node_list(op_env, "compose", op)
        assert len(nodes) == 5, nodes  # the five registered keys
        du.wait_for(
            lambda: du.online_nodes(op_env, "compose", op) == 5, 120, "5 SuperNodes online", group
        )
        # Separate hosts: a client resolves `superlink` to the SuperLink's own address
        # through its hosts file, and finds nothing listening on its own loopback.
        resolved = du.run_cmd(
            lab.wrap("supernode-1", ["getent", "hosts", "superlink"]), op_env, du.REPO
        )
        assert resolved.stdout.split()[:1] == [lab.addresses["superlink"]], resolved.stdout
        probe = "import socket; socket.create_connection(('127.0.0.1', 8000), 3)"
        local = du.run_cmd(lab.wrap("supernode-1", [sys.executable, "-c", probe]), op_env, du.REPO)
        assert local.returncode != 0
        run_config = {
            **du.FAST_RUN_CONFIG,
            "dataset": "autovi",  # each client holds its categories; the server holds none
            "out-dir": str(tmp_path / "runs"),
            "run-name": "compose",
        }
        run_id = du.submit(op_env, "compose", run_config, op)
        status = du.wait_finished(op_env, "compose", run_id, 420, group, op)
        assert status == "finished:completed", group.logs()
        results = json.loads((tmp_path / "runs" / "compose" / "results.json").read_text())
        fed = results["federated"]
        assert sorted(results["categories"]) == sorted(categories)
        assert len(fed["clients"]) == 5 and fed["dropped"] == []
        assert all(c["status"] == "evaluated" for c in fed["clients"])
        # The same figures as the same case run in-process (one thread, as here).
        nodes = []
        for i, node in enumerate(CLIENTS, start=1):
            cats = ",".join(_categories(services[node]))
            nodes.append({"data-root": env_vars[f"FEDPATCH_DATA_{i}"], "categories": cats})
        reference = reference_run({**run_config, "run-name": "inprocess"}, nodes)
        runs = tmp_path / "runs"
        assert_same_figures(results, reference, runs / "compose", runs / "inprocess")
        print(f"compose run {run_id}: {status} in {time.monotonic() - start:.0f} s")
    finally:
        group.stop_all()
        lab.destroy()
    assert not any(du.alive(s.proc.pid) for s in group.started)
    assert not any((Path("/etc/netns") / ns).exists() for ns in lab.created_ns)
