"""Real deployment processes on loopback: `flower-superlink` (TLS, SuperNode
authentication, a state database) and five `flower-supernode` processes, started with
the project's scripts (scripts/make-certs.sh, make-node-keys.sh, register-nodes.sh,
start-superlink.sh, start-supernode.sh), a run submitted with `flwr run . <connection>`
and checked with `flwr list --format json`.

- the normal run: `finished:completed`, results.json complete; a SuperNode whose key is
  not registered is refused; the SuperLink restarted on its state database still knows
  the run and the registered nodes, and the SuperNodes reconnect;
- faults (a drill: the run is submitted as the drill app of `fedpatch_drills.drill_app`,
  whose ClientApp carries the fault mod): a client whose ClientApp crashes on the train
  instruction and a client sending a malformed coreset are dropped, named in
  results.json, and the run completes with the others.

Both runs' metrics and banks are compared with the same case run in-process (the same
ServerApp and ClientApp code without Flower's transport, the faults mirrored): equal bit
for bit. Every process runs on one CPU thread, as the reference does.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import deployment_utils as du
import pytest
from inprocess_reference import assert_same_figures, reference_run

pytestmark = [pytest.mark.deployment, pytest.mark.slow]

CATEGORIES = "pipe_clip,pipe_staple"
CONNECTION = "loopback"


@dataclass
class Stack:
    tmp: Path
    port: int
    env: dict[str, str]
    group: du.ProcessGroup
    certs: Path
    keys: Path
    data: Path
    superlink: du.Started | None = None

    def start_superlink(self) -> du.Started:
        env = {**self.env, "SUPERLINK_HOST": "127.0.0.1", "SUPERLINK_PORT": str(self.port)}
        cmd = [
            "bash",
            str(du.SCRIPTS / "start-superlink.sh"),
            str(self.certs),
            str(self.tmp / "state"),
        ]
        self.superlink = self.group.start("superlink", cmd, env, self.tmp)
        du.wait_for(
            lambda: du.superlink_ready(self.env, CONNECTION), 90, "the SuperLink", self.group
        )
        return self.superlink

    def start_supernode(self, name: str, extra: str = "") -> du.Started:
        env = {
            **self.env,
            "RUNTIME_PORT": str(du.free_port()),
            "NODE_DEVICE": "cpu",
            "NODE_EXTRA_CONFIG": extra,
        }
        cmd = [
            "bash",
            str(du.SCRIPTS / "start-supernode.sh"),
            f"127.0.0.1:{self.port}",
            str(self.certs / "ca.crt"),
            str(self.keys / name),
            str(self.data),
            CATEGORIES,
        ]
        return self.group.start(name, cmd, env, self.tmp)


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    if missing := du.missing_tools("bash", "openssl", "ssh-keygen"):
        reason = f"missing {', '.join(missing)} (apt-get install -y openssl openssh-client)"
        print(f"SKIP: {reason}")
        pytest.skip(reason)
    certs = du.make_certs(tmp_path / "certs", ["localhost"])
    keys = du.make_keys(tmp_path / "keys", [*(f"node{i}" for i in range(1, 6)), "intruder"])
    data = du.make_client_data(tmp_path / "data", CATEGORIES.split(","))
    home = tmp_path / "flwr_home"
    port = du.free_port()
    du.write_connection(home, CONNECTION, f"127.0.0.1:{port}", certs / "ca.crt")
    group = du.ProcessGroup(tmp_path / "logs")
    stack = Stack(tmp_path, port, du.base_env(home), group, certs, keys, data)
    try:
        yield stack
    finally:
        group.stop_all()
    assert not any(du.alive(s.proc.pid) for s in group.started)


def _start_federation(stack: Stack, faults: Mapping[int, str] = {}) -> None:
    stack.start_superlink()
    proc = du.run_cmd(
        [
            "bash",
            str(du.SCRIPTS / "register-nodes.sh"),
            CONNECTION,
            *(str(stack.keys / f"node{i}.pub") for i in range(1, 6)),
        ],
        stack.env,
        du.REPO,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for i in range(1, 6):
        extra = f"partition-id={i - 1} num-partitions=5"
        if i in faults:
            extra += f' fault="{faults[i]}"'
        stack.start_supernode(f"node{i}", extra)
    du.wait_for(
        lambda: du.online_nodes(stack.env, CONNECTION) == 5, 120, "5 SuperNodes online", stack.group
    )


def _node_id(stack: Stack, name: str) -> int:
    """The node id a SuperNode printed at start ("SuperNode ID: N")."""
    for item in stack.group.started:
        if item.name == name:
            for line in item.text().splitlines():
                if "SuperNode ID:" in line:
                    return int(line.rsplit(":", 1)[1].strip())
    raise AssertionError(f"{name} printed no SuperNode ID")


def _run_config(stack: Stack, name: str, **config: Any) -> dict[str, Any]:
    return {
        **du.FAST_RUN_CONFIG,
        "dataset": "autovi",  # tiny synthetic data in the AutoVI layout, at data-root
        "partition": "iid",
        "categories": CATEGORIES,
        "out-dir": str(stack.tmp / "runs"),
        "run-name": name,
        **config,
    }


def _run(
    stack: Stack, run_config: dict[str, Any], app: Path = du.REPO
) -> tuple[str, dict[str, Any]]:
    run_id = du.submit(stack.env, CONNECTION, run_config, app=app)
    status = du.wait_finished(stack.env, CONNECTION, run_id, 420, stack.group)
    results_file = stack.tmp / "runs" / run_config["run-name"] / "results.json"
    results = json.loads(results_file.read_text()) if results_file.is_file() else {}
    return status, results


def _check_against_inprocess(
    stack: Stack, run_config: dict[str, Any], results: dict[str, Any], **faults: Any
) -> None:
    """The deployed run's metrics and banks equal the same case run in-process."""
    name = run_config["run-name"]
    node = {"num-partitions": 5, "data-root": str(stack.data), "categories": CATEGORIES}
    nodes = [{"partition-id": i, **node, "device": "cpu"} for i in range(5)]
    reference = reference_run({**run_config, "run-name": f"{name}-inprocess"}, nodes, **faults)
    runs = stack.tmp / "runs"
    assert_same_figures(results, reference, runs / name, runs / f"{name}-inprocess")


def test_loopback_tls_auth_run_and_superlink_restart(stack: Stack) -> None:
    start = time.monotonic()
    _start_federation(stack)
    # A SuperNode whose key is not registered is refused.
    intruder = stack.start_supernode("intruder", "partition-id=0 num-partitions=5")

    run_config = _run_config(stack, "loopback")
    status, results = _run(stack, run_config)
    assert status == "finished:completed", stack.group.logs()
    fed = results["federated"]
    assert len(fed["clients"]) == 5 and fed["dropped"] == []
    assert sorted(c["partition_id"] for c in fed["clients"]) == [0, 1, 2, 3, 4]
    assert all(c["status"] == "evaluated" for c in fed["clients"])
    assert sorted(results["categories"]) == sorted(CATEGORIES.split(","))
    for cat in CATEGORIES.split(","):
        assert (stack.tmp / "runs" / "loopback" / "model" / "banks" / f"{cat}.npz").is_file()
    assert (stack.tmp / "runs" / "loopback" / "report.md").is_file()
    _check_against_inprocess(stack, run_config, results)

    assert du.online_nodes(stack.env, CONNECTION) == 5
    assert len(du.node_list(stack.env, CONNECTION)) == 5  # the intruder never got a node
    intruder_log = intruder.text()
    assert "SuperNode ID" not in intruder_log, intruder_log
    assert "Receiving" not in intruder_log, intruder_log
    assert stack.superlink is not None
    assert "No SuperNode found with the given public key" in stack.superlink.text()

    # Restart the SuperLink on its state database.
    stack.group.stop(stack.superlink)
    assert stack.superlink.proc.poll() is not None
    stack.start_superlink()
    listed = json.loads(du.flwr(["list", CONNECTION, "--format", "json"], stack.env))["runs"]
    assert [r["status"] for r in listed] == ["finished:completed"]
    assert len(du.node_list(stack.env, CONNECTION)) == 5  # registrations survived
    du.wait_for(
        lambda: du.online_nodes(stack.env, CONNECTION) == 5,
        150,
        "the SuperNodes to reconnect after the restart",
        stack.group,
    )
    print(f"loopback run + restart: {time.monotonic() - start:.0f} s")


def test_faults_killed_client_and_malformed_coreset(stack: Stack) -> None:
    from fedpatch_drills.drill_app import write_drill_app

    start = time.monotonic()
    _start_federation(stack, {2: "crash-on-train", 4: "malformed-coreset"})
    run_config = _run_config(stack, "faults", **{"min-clients": 3})
    status, results = _run(stack, run_config, write_drill_app(stack.tmp / "drill-app"))
    assert status == "finished:completed", stack.group.logs()
    fed = results["federated"]
    # The lost clients are named by their node ids (the killed one never told its partition).
    node_ids = {name: _node_id(stack, name) for name in ("node2", "node4")}
    dropped = {int(d["node_id"]): d for d in fed["dropped"]}
    assert sorted(dropped) == sorted(node_ids.values()), fed["dropped"]
    assert all(d["phase"] == "train" for d in dropped.values())
    killed, malformed = dropped[node_ids["node2"]], dropped[node_ids["node4"]]
    # The SuperNode reports the dead ClientApp (CLIENT_APP_CRASHED); the server's checks
    # name what is wrong with the coreset of shape (3, 7).
    assert "error 8" in killed["reason"], killed
    assert "feature dimension 7" in malformed["reason"], malformed
    evaluated = [c for c in fed["clients"] if c["status"] == "evaluated"]
    assert sorted(c["partition_id"] for c in evaluated) == [0, 2, 4]
    print(f"killed: {killed['reason']}\nmalformed: {malformed['reason']}")
    # The malformed client's SuperNode is still up; only the crashed ClientApp died.
    assert du.online_nodes(stack.env, CONNECTION) == 5
    # The same figures as in-process with partition 1 silent and partition 3 malformed.
    _check_against_inprocess(
        stack, run_config, results, offline_partitions=[1], malformed_partitions=[3]
    )
    print(f"faults run: {time.monotonic() - start:.0f} s")
