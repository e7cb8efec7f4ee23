"""`fedpatch run` on a shared machine: it follows its own Flower run and its own local
SuperLink (free ports, its own Flower home), checks the data before Flower starts, and
reads run-config values as people type them."""

from __future__ import annotations

import http.server
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from flwr.common.config import parse_config_args
from inprocess_reference import ONE_THREAD

from fedpatch_app.cli import main
from fedpatch_app.errors import ConfigError
from fedpatch_app.federated import simulation
from fedpatch_app.federated.config_text import parse_pairs, run_config_arg
from fedpatch_app.federated.main_job import check_data, plan_run
from fedpatch_app.federated.simulation import (
    LocalSuperLink,
    home_lock,
    listens_on,
    started_run_id,
    status_in_listing,
    superlink_pids,
)

#: What `flwr run --stream` prints when it starts run 4242 (colours included).
FLWR_RUN_OUTPUT = (
    "Using SuperLink: local (127.0.0.1:40123)\n"
    "\x1b[32mSuccessfully started run 4242\x1b[0m\n"
    "INFO :      Starting logstream for run_id `4242`\n"
)


def _listing(*runs: tuple[str, str]) -> str:
    return json.dumps({"success": True, "runs": [{"run-id": i, "status": s} for i, s in runs]})


def test_the_run_followed_is_the_one_flwr_run_started() -> None:
    # Another simulation's run, started later and still running, is listed last.
    listing = _listing(("4242", "finished:completed"), ("9999", "running"))
    run_id = started_run_id(FLWR_RUN_OUTPUT)
    assert run_id == 4242
    assert status_in_listing(listing, run_id) == "finished:completed"
    assert status_in_listing(_listing(("9999", "running")), run_id) == "unknown"
    assert started_run_id("Failed to start run\n") is None


def test_final_status_asks_for_its_own_run_until_it_is_finished(monkeypatch) -> None:
    answers = iter(["running", "finished:completed"])
    asked: list[list[str]] = []

    def fake_flwr_list(cmd, **kwargs):
        asked.append(cmd)
        listing = _listing(("4242", next(answers)), ("9999", "running"))
        return subprocess.CompletedProcess(cmd, 0, stdout=listing, stderr="")

    monkeypatch.setattr(simulation.subprocess, "run", fake_flwr_list)
    monkeypatch.setattr(simulation.time, "sleep", lambda s: None)
    env = {simulation.HTTP_PORT_VAR: "40123"}
    assert simulation.final_status(Path("."), env, 4242) == "finished:completed"
    assert len(asked) == 2 and all(cmd[-5:-2] == ["list", "--run-id", "4242"] for cmd in asked)


def test_one_flower_home_serves_one_simulation_at_a_time(tmp_path: Path) -> None:
    with home_lock(tmp_path / "home"):
        with pytest.raises(ConfigError, match="another simulation is using the Flower home"):
            with home_lock(tmp_path / "home"):
                pass
    with home_lock(tmp_path / "home"):  # free again
        pass


def test_a_superlink_is_taken_as_ready_only_on_its_own_port(tmp_path: Path) -> None:
    """Another process answering /health on the port picked for this launch (taken
    between the pick and the start) is not this launch's SuperLink."""

    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    other = http.server.HTTPServer(("127.0.0.1", 0), Health)
    threading.Thread(target=other.serve_forever, daemon=True).start()
    mine = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        link = LocalSuperLink(mine, other.server_address[1], tmp_path / "superlink.log")
        assert link.answers() and not link.wait_ready(timeout=20)
        assert listens_on(os.getpid(), other.server_address[1])
    finally:
        other.shutdown()
        mine.kill()
        mine.wait()


@pytest.mark.parametrize("case", ["mistyped", "no category"])
def test_a_wrong_data_root_fails_before_flower_starts(tmp_path: Path, case: str) -> None:
    if case == "mistyped":
        root, extra = tmp_path / "data" / "autovii", ""
    else:
        root, extra = tmp_path / "photos", " dataset=autovi"
        (root / "misc").mkdir(parents=True)
    home = tmp_path / "flwr_home"
    cmd = [sys.executable, "-m", "fedpatch_app.cli", "run", "--flwr-home", str(home)]
    t0 = time.monotonic()
    proc = subprocess.run(
        [*cmd, "--run-config", f"data-root={root}{extra}"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    elapsed = time.monotonic() - t0
    assert proc.returncode == 2, proc.stderr
    assert elapsed < 10, f"took {elapsed:.1f} s"
    assert proc.stderr.strip().splitlines() == [
        f"fedpatch run: error: run config 'data-root': {root} holds no category "
        f"(expected {root}/<category>/train/good/ (autovi or mvtec layout) or "
        f"{root}/<category>/good/ (folder layout)): fix the path, or leave data-root at its "
        "default to run on the built-in synthetic data"
    ]
    assert "SuperLink" not in proc.stdout and not home.exists()


def test_the_default_data_root_passes_the_check_without_generating(tmp_path: Path) -> None:
    """Left at its default, data-root may hold no AutoVI: the run then generates the
    built-in synthetic data itself; the check before Flower neither refuses nor generates."""
    _, settings = plan_run(f"out-dir={tmp_path}", tmp_path)
    check_data(settings)
    assert not (tmp_path / ".synthetic").exists()


def test_run_config_values_are_read_as_people_type_them(tmp_path: Path) -> None:
    text = 'data-root=data/autovi weights=none num-clients=3 write-maps=true run-name="my run"'
    assert parse_pairs(text, "--run-config") == {
        "data-root": "data/autovi",
        "weights": "none",
        "num-clients": 3,
        "write-maps": True,
        "run-name": "my run",
    }
    overrides, settings = plan_run("data-root=data/autovi categories=pipe_clip", tmp_path)
    assert overrides["data-root"] == str(tmp_path / "data" / "autovi")
    assert settings.categories == ("pipe_clip",)
    # What goes to `flwr run --run-config` is read back by Flower as it was meant.
    odd = {**overrides, "run-name": 'say "hi"', "write-maps": False, "coreset-ratio": 0.25}
    assert parse_config_args([run_config_arg(odd)]) == odd


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("nonsense", "cannot read 'nonsense' as key=value"),
        ('data-root="abc', "the value of 'data-root' has an unclosed quote"),
        ("data-root=/my data", "cannot read 'data' as key=value"),
    ],
)
def test_an_unreadable_run_config_is_one_line(text: str, message: str, capsys) -> None:
    assert main(["run", "--run-config", text]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and message in err and "Traceback" not in err
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_pairs(text, "--run-config")


def test_unquoted_data_root_reaches_the_data_check(tmp_path: Path, monkeypatch, capsys) -> None:
    """The command people type (no inner quotes) is read; here it names a folder that
    holds no AutoVI, so it stops with one line naming it, before Flower starts."""
    monkeypatch.chdir(tmp_path)
    assert main(["run", "--run-config", "data-root=data/autovi"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert f"{tmp_path / 'data' / 'autovi'} holds no category" in err


def _port_of(output: str) -> int:
    match = re.search(r"Using SuperLink: local \(127\.0\.0\.1:(\d+)\)", output)
    assert match, output[-2000:]
    return int(match.group(1))


@pytest.mark.slow
def test_two_runs_at_once_on_one_machine_both_complete(tiny_root: Path, tmp_path: Path) -> None:
    """Two `fedpatch run` at the same time, with Flower's fixed port 39091 taken by
    something else: each has its own SuperLink, follows its own run and completes."""
    holder = socket.socket()
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        holder.bind(("127.0.0.1", 39091))
        holder.listen()
    except OSError:
        pass  # already taken: as good for this test
    env = {**os.environ, **ONE_THREAD}
    procs = {}
    for name in ("left", "right"):
        config = (
            f"data-root={tiny_root} categories=pipe_clip partition=iid num-clients=1 "
            "min-clients=1 backbone=efficientnet_lite0 weights=none image-size=32 device=cpu "
            f"out-dir={tmp_path / name} run-name={name} wait-timeout=120.0"
        )
        cmd = [sys.executable, "-m", "fedpatch_app.cli", "run", "--run-config", config]
        procs[name] = subprocess.Popen(
            cmd,
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
    try:
        outputs = {name: proc.communicate(timeout=540)[0] for name, proc in procs.items()}
    finally:
        holder.close()
        for proc in procs.values():
            proc.kill()
    for name, proc in procs.items():
        assert proc.returncode == 0, outputs[name][-3000:]
        assert f"fedpatch run: COMPLETED. Results: {tmp_path / name / name}" in outputs[name]
        status = json.loads((tmp_path / name / name / "status.json").read_text())
        assert status["status"] == "completed"
        home = tmp_path / name / ".flwr" / name
        assert not superlink_pids(home) and not home.exists()
    ports = {_port_of(out) for out in outputs.values()}
    assert len(ports) == 2 and 39091 not in ports
    runs = {started_run_id(out) for out in outputs.values()}
    assert len(runs) == 2 and None not in runs
