"""docker/compose.yml run for real, in containers: podman (runc) and podman-compose.

The images are built here from a local Debian base (no registry is reachable): the pinned
flwr on it as the SuperLink, SuperNode and SuperExec image (docker/Dockerfile.flwr), and
fedpatch on that (docker/Dockerfile), selected through the compose variables that
otherwise name the official flwr images. On tiny synthetic data (each client holding the
categories its node config names), with `flwr run` from the host against the published
SuperLink port:

- compose.yml: five clients complete a run, results land in the host's runs folder,
  each ClientApp container mounts only its own data read-only, every health check passes;
- compose.yml + compose.tls.yml: the credentials and register one-shots, a run with the
  five registered nodes, and a SuperNode with an unregistered key refused;
- compose.yml with client 3's containers stopped during the run: min-clients 4, the run
  completes and results.json names the lost node.

Every project's containers, network and volumes are removed afterwards, whatever happens.
Needs root, podman, runc, mmdebstrap and podman-compose (.ci/run installs them); skips
with the reason otherwise.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import containers_utils as cu
import deployment_utils as du
import pytest
import yaml

pytestmark = [pytest.mark.containers, pytest.mark.slow]

COMPOSE = cu.DOCKER / "compose.yml"
TLS = cu.DOCKER / "compose.tls.yml"
CONNECTION = "fedpatch-compose"
APP_UID = 49999
#: The deployment tests' fast settings; rounds get more time (five ClientApps share 2 cores).
RUN_CONFIG: dict[str, Any] = {
    **du.FAST_RUN_CONFIG,
    "dataset": "autovi",
    "wait-timeout": 300.0,
    "round-timeout": 900.0,
}


def _client_categories() -> dict[int, list[str]]:
    """Client N -> the categories in supernode-N's node config (compose.yml)."""
    services = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))["services"]
    out = {}
    for i in range(1, 6):
        command = services[f"supernode-{i}"]["command"]
        config = command[command.index("--node-config") + 1]
        match = re.search(r'categories="([^"]*)"', config)
        assert match, f"supernode-{i} has no categories in {config!r}"
        out[i] = match.group(1).split(",")
    return out


@pytest.fixture(scope="module")
def podman_env() -> dict[str, str]:
    env = cu.podman_env(cu.cache_dir())
    reason = cu.unavailable(env)
    if reason:
        print(f"SKIP: {reason}")
        pytest.skip(reason)
    return env


@pytest.fixture(scope="module")
def images(podman_env: dict[str, str]) -> cu.Images:
    built = cu.build_images(cu.cache_dir(), podman_env)
    print(f"image builds (s): {built.seconds}\nimage sizes (MB): {built.sizes_mb}")
    return built


@pytest.fixture(scope="module")
def client_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """data/client-N with client N's categories, made with the project's CLI."""
    root = tmp_path_factory.mktemp("compose_data")
    for i, categories in _client_categories().items():
        out = root / f"client-{i}"
        cmd = [sys.executable, "-m", "fedpatch_app.cli", "synth", "--scale", "tiny"]
        cmd += ["--kind", "drawn", "--out", str(out), "--categories", *categories]
        subprocess.run(cmd, cwd=du.REPO, check=True, capture_output=True, timeout=300)
    return root


@contextmanager
def compose_stack(
    name: str, files: Sequence[Path], tmp: Path, images: cu.Images, data: Path, env: dict
) -> Iterator[tuple[cu.ComposeProject, Path]]:
    """`podman-compose up -d` of `files`; yields the project and the host's runs folder.
    Always brought down; nothing of it may remain."""
    runs = tmp / "runs"
    runs.mkdir()
    os.chown(runs, APP_UID, APP_UID)  # written by the ServerApp's user
    project_env = {**env, **images.compose_env()}
    project_env |= {"SUPERLINK_PORT": str(du.free_port()), "FEDPATCH_RUNS": str(runs)}
    project_env |= {f"FEDPATCH_DATA_{i}": str(data / f"client-{i}") for i in range(1, 6)}
    project = cu.ComposeProject(f"{name}{os.getpid() % 100000}", files, project_env)
    try:
        project.up()
        yield project, runs
    finally:
        project.save_logs(tmp / "logs")
        project.down()
    assert project.leftovers() == []


def _connect(tmp: Path, project: cu.ComposeProject, ca: Path | None) -> dict[str, str]:
    """The host's `flwr` connection to the published SuperLink port."""
    home = tmp / "flwr_home"
    address = f"127.0.0.1:{project.env['SUPERLINK_PORT']}"
    du.write_connection(home, CONNECTION, address, ca)
    return du.base_env(home)


def _wait_online(env: dict[str, str], project: cu.ComposeProject, count: int = 5) -> None:
    cu.wait_until(
        lambda: du.online_nodes(env, CONNECTION) == count,
        420,
        f"{count} SuperNodes online",
        project.all_logs,
    )


def _run(
    env: dict[str, str], project: cu.ComposeProject, runs: Path, name: str, **config: Any
) -> tuple[int, dict[str, Any]]:
    """Submit, wait for the run to finish, return its id and results.json from the host."""
    run_id = du.submit(env, CONNECTION, {**RUN_CONFIG, "run-name": name, **config})
    _wait_finished(env, project, run_id)
    results = runs / name / "results.json"
    assert results.is_file(), f"no {results}\n{project.all_logs()}"
    return run_id, json.loads(results.read_text(encoding="utf-8"))


def _wait_finished(env: dict[str, str], project: cu.ComposeProject, run_id: int) -> None:
    status = ""

    def finished() -> bool:
        nonlocal status
        status = du.run_status(env, CONNECTION, run_id)
        return status.startswith("finished")

    cu.wait_until(finished, 1200, f"run {run_id} to finish", project.all_logs)
    assert status == "finished:completed", f"run {run_id}: {status}\n{project.all_logs()}"


def _node_id(project: cu.ComposeProject, service: str) -> int:
    match = re.search(r"SuperNode ID: (\d+)", project.logs(service))
    assert match, f"{service} printed no SuperNode ID\n{project.logs(service)[-3000:]}"
    return int(match.group(1))


def _check_complete(results: dict[str, Any], clients: int, categories: list[str]) -> None:
    fed = results["federated"]
    evaluated = [c for c in fed["clients"] if c["status"] == "evaluated"]
    assert len(evaluated) == clients, fed
    assert sorted(results["categories"]) == sorted(categories)
    for category in categories:
        assert results["categories"][category]["auc_spro"]["0.3"] is not None


def test_compose_five_clients(
    tmp_path: Path, podman_env: dict, images: cu.Images, client_data: Path
) -> None:
    start = time.monotonic()
    all_categories = sorted(c for cats in _client_categories().values() for c in cats)
    with compose_stack("fpc", [COMPOSE], tmp_path, images, client_data, podman_env) as (
        project,
        runs,
    ):
        for i in range(1, 6):
            mounts = project.inspect(f"superexec-clientapp-{i}")["Mounts"]
            assert [(m["Source"], m["Destination"], m["RW"]) for m in mounts] == [
                (str(client_data / f"client-{i}"), "/data", False)
            ], mounts
            assert project.inspect(f"supernode-{i}")["Mounts"] == []
        env = _connect(tmp_path, project, None)
        _wait_online(env, project)
        unhealthy = [s for s in _services(project) if not project.healthy(s)]
        assert unhealthy == [], project.all_logs()
        _, results = _run(env, project, runs, "compose")
        assert results["federated"]["dropped"] == []
        _check_complete(results, 5, all_categories)
        out = runs / "compose"
        assert (out / "report.md").is_file()
        assert all((out / "model" / "banks" / f"{c}.npz").is_file() for c in all_categories)
        assert (out / "results.json").stat().st_uid == APP_UID
    print(f"compose run: {time.monotonic() - start:.0f} s")


def _services(project: cu.ComposeProject) -> list[str]:
    names = ["superlink", "superexec-serverapp"]
    return names + [
        f"{kind}-{i}" for i in range(1, 6) for kind in ("supernode", "superexec-clientapp")
    ]


def _start_intruder(project: cu.ComposeProject, images: cu.Images, keys: Path) -> str:
    """A SuperNode on the project's network whose key was never registered."""
    name = f"{project.name}_intruder"
    cmd = ["podman", "run", "-d", "--name", name]
    cmd += ["--label", f"io.podman.compose.project={project.name}"]
    cmd += ["--network", f"{project.name}_default"]
    cmd += ["-v", f"{project.name}_credentials:/credentials:ro", "-v", f"{keys}:/keys:ro"]
    cmd += ["--entrypoint", "flower-supernode", images.flwr]
    cmd += ["--root-certificates", "/credentials/certs/ca.crt", "--superlink", "superlink:8000"]
    cmd += ["--auth-supernode-private-key", "/keys/intruder", "--isolation", "process"]
    cmd += ["--node-config", 'data-root="/data"']
    cu.run(cmd, project.env, 120)
    return name


def test_compose_tls_registered_nodes_and_refused_intruder(
    tmp_path: Path, podman_env: dict, images: cu.Images, client_data: Path
) -> None:
    start = time.monotonic()
    keys = tmp_path / "intruder-keys"
    make = [sys.executable, str(du.SCRIPTS / "make_credentials.py"), "--keys", str(keys)]
    cu.run([*make, "--node", "intruder", "--owner", str(APP_UID)], os.environ, 120)
    all_categories = sorted(c for cats in _client_categories().values() for c in cats)
    files = [COMPOSE, TLS]
    with compose_stack("fpt", files, tmp_path, images, client_data, podman_env) as (
        project,
        runs,
    ):
        for one_shot in ("credentials", "register"):
            cu.wait_until(
                lambda s=one_shot: not project.inspect(s)["State"]["Running"],
                300,
                f"{one_shot} to finish",
                project.all_logs,
            )
            assert project.inspect(one_shot)["State"]["ExitCode"] == 0, project.logs(one_shot)
        ca = tmp_path / "ca.crt"
        source = f"{project.container('credentials')}:/credentials/certs/ca.crt"
        cu.run(["podman", "cp", source, str(ca)], project.env, 60)
        env = _connect(tmp_path, project, ca)
        _wait_online(env, project)
        intruder = _start_intruder(project, images, keys)
        _, results = _run(env, project, runs, "compose-tls")
        assert results["federated"]["dropped"] == []
        _check_complete(results, 5, all_categories)
        assert len(du.node_list(env, CONNECTION)) == 5  # the intruder never got a node
        proc = cu.run(["podman", "logs", intruder], project.env, 60)
        intruder_log = proc.stdout + proc.stderr
        assert "SuperNode ID" not in intruder_log, intruder_log
        refused = "No SuperNode found with the given public key"
        assert refused in project.logs("superlink"), project.logs("superlink")[-3000:]
    print(f"compose TLS run: {time.monotonic() - start:.0f} s")


def test_compose_client_lost_during_run(
    tmp_path: Path, podman_env: dict, images: cu.Images, client_data: Path
) -> None:
    start = time.monotonic()
    categories = _client_categories()
    with compose_stack("fpf", [COMPOSE], tmp_path, images, client_data, podman_env) as (
        project,
        runs,
    ):
        env = _connect(tmp_path, project, None)
        _wait_online(env, project)
        lost = _node_id(project, "supernode-3")
        run_id = du.submit(env, CONNECTION, {**RUN_CONFIG, "run-name": "lost", "min-clients": 4})
        cu.wait_until(
            lambda: "Received successfully" in project.logs("supernode-3"),
            300,
            "client 3 to receive its train message",
            project.all_logs,
        )
        project.stop("supernode-3", "superexec-clientapp-3")  # the client goes away
        _wait_finished(env, project, run_id)
        results = json.loads((runs / "lost" / "results.json").read_text(encoding="utf-8"))
        dropped = results["federated"]["dropped"]
        assert [int(d["node_id"]) for d in dropped] == [lost], dropped
        print(f"lost client: {dropped[0]}")
        kept = sorted(c for i, cats in categories.items() if i != 3 for c in cats)
        _check_complete(results, 4, kept)
    print(f"compose lost-client run: {time.monotonic() - start:.0f} s")
