"""Interrupted runs say so: a heartbeat in status.json, a run whose process is gone judged
`interrupted`, the banks finished before a kill kept, an incomplete model folder refused
unless asked for, and a rerun into the folder told how to go on."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedpatch_app.cli import main
from fedpatch_app.errors import ConfigError, ModelError
from fedpatch_app.inspection.model_folder import CategoryModel, load_model, write_model
from fedpatch_app.inspection.predict import run_predict
from fedpatch_app.metrics.map_scaling import MapScaling
from fedpatch_app.model.embedding import FeatureSpec
from fedpatch_app.model.patchcore import Bank
from fedpatch_app.outputs import prepare_output
from fedpatch_app.run_status import (
    STATUS_FILE,
    effective_status,
    process_alive,
    read_status,
    still_beating,
    write_status,
)

ROOT = Path(__file__).resolve().parents[1]
SPEC = FeatureSpec(weights="none", image_size=64, embed_dim=8)
THRESHOLDS = {"image": {"raw": 3.0}, "pixel": {"raw": 2.0}}


def _wait_for(predicate, timeout: float, what: str, step: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {timeout} s")
        time.sleep(step)


def _dead_pid() -> int:
    """The pid of a process of this host that has ended (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _status_file(run_dir: Path, **facts: Any) -> None:
    now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    data = {"status": "running", "pid": os.getpid(), "host": socket.gethostname()}
    data |= {"heartbeat": now, "finished_phases": ["prepare"], "kept": ["model/banks/a.npz"]}
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / STATUS_FILE).write_text(json.dumps({**data, **facts}))


# -- the heartbeat --------------------------------------------------------------------------


def test_a_running_status_names_its_process_and_beats(tmp_path: Path) -> None:
    write_status(tmp_path, "running", beat_every=0.1, finished_phases=["prepare"])
    first = read_status(tmp_path)
    assert first["pid"] == os.getpid() and first["host"] == socket.gethostname()
    assert first["finished_phases"] == ["prepare"] and still_beating(tmp_path)
    _wait_for(
        lambda: read_status(tmp_path)["heartbeat"] != first["heartbeat"], 5, "no new heartbeat"
    )
    beat = read_status(tmp_path)
    assert beat["finished_phases"] == ["prepare"] and beat["started"] == first["started"]
    assert effective_status(tmp_path)["status"] == "running"
    write_status(tmp_path, "completed")
    assert not still_beating(tmp_path)


def test_the_default_beat_is_at_least_every_ten_seconds(tmp_path: Path) -> None:
    write_status(tmp_path, "running")
    try:
        assert read_status(tmp_path)["heartbeat_seconds"] <= 10
    finally:
        write_status(tmp_path, "completed")


def test_a_late_beat_never_overwrites_the_final_state(tmp_path: Path) -> None:
    for i in range(40):
        run_dir = tmp_path / f"run-{i}"
        write_status(run_dir, "running", beat_every=0.0005)
        time.sleep(0.002)
        write_status(run_dir, "completed" if i % 2 else "failed", reason="x")
    time.sleep(0.05)
    for i in range(40):
        status = read_status(tmp_path / f"run-{i}")
        assert status["status"] == ("completed" if i % 2 else "failed"), i
        assert "heartbeat" not in status


def test_a_beat_into_a_removed_folder_stops_quietly(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    write_status(run_dir, "running", beat_every=0.01)
    beat_threads = [t for t in threading.enumerate() if t.name == "heartbeat run"]
    shutil.rmtree(run_dir)
    _wait_for(lambda: not any(t.is_alive() for t in beat_threads), 5, "the beat still runs")
    assert not run_dir.exists()
    write_status(run_dir, "failed", reason="gone")


# -- the judgement --------------------------------------------------------------------------


def test_a_running_status_whose_process_is_gone_is_interrupted(tmp_path: Path) -> None:
    _status_file(tmp_path, pid=_dead_pid())
    status = effective_status(tmp_path)
    assert status["status"] == "interrupted" and status["recorded_status"] == "running"
    assert "is gone" in status["interrupted_because"]
    assert status["kept"] == ["model/banks/a.npz"]
    # On another host the pid says nothing: a fresh heartbeat keeps it running.
    _status_file(tmp_path, pid=_dead_pid(), host="another-host.invalid")
    assert effective_status(tmp_path)["status"] == "running"


def test_a_killed_unreaped_process_is_gone() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert process_alive(proc.pid)
        proc.send_signal(signal.SIGKILL)
        _wait_for(lambda: not process_alive(proc.pid), 5, "the killed process still counts")
    finally:
        proc.kill()
        proc.wait()


def test_a_stale_heartbeat_is_interrupted(tmp_path: Path) -> None:
    old = datetime.now(UTC) - timedelta(seconds=61)
    _status_file(tmp_path, heartbeat=old.isoformat(), host="another-host.invalid")
    status = effective_status(tmp_path)
    assert status["status"] == "interrupted" and "heartbeat" in status["interrupted_because"]
    assert effective_status(tmp_path, now=old + timedelta(seconds=30))["status"] == "running"
    # A file written before heartbeats existed: its `updated` time is the last sign of life.
    (tmp_path / STATUS_FILE).write_text(
        json.dumps({"status": "running", "updated": "2020-01-01T00:00:00Z"})
    )
    assert effective_status(tmp_path)["status"] == "interrupted"
    write_status(tmp_path, "completed")
    assert effective_status(tmp_path)["status"] == "completed"


def test_a_live_run_folder_is_never_cleared(tmp_path: Path) -> None:
    write_status(tmp_path, "running", beat_every=5)
    try:
        with pytest.raises(ConfigError, match="still writing"):
            prepare_output(tmp_path, overwrite=True)
    finally:
        write_status(tmp_path, "completed")
    assert prepare_output(tmp_path, overwrite=True) == tmp_path


def test_an_interrupted_run_inside_an_experiment_folder_is_named(tmp_path: Path) -> None:
    _status_file(tmp_path, pid=_dead_pid(), finished_phases=["centralized"])
    _status_file(tmp_path / "federated-iid", pid=_dead_pid())
    with pytest.raises(
        ConfigError,
        match=r"interrupted run\. This folder: .*federated-iid: interrupted.*--overwrite",
    ):
        prepare_output(tmp_path, overwrite=False)
    prepare_output(tmp_path, overwrite=True)
    assert not any(tmp_path.iterdir())


# -- a centralized run killed half-way --------------------------------------------------------


@pytest.mark.slow
def test_a_killed_centralized_run_keeps_its_banks_and_says_so(
    tiny_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "central"
    cats = ["pipe_clip", "pipe_staple", "engine_wiring", "tank_screw", "underbody_pipes"]

    def a_bank_is_written() -> bool:
        return bool((read_status(out) or {}).get("banks_written")) or proc.poll() is not None

    args = ["centralized", "--data-root", str(tiny_root), "--out", str(out)]
    args += ["--weights", "none", "--image-size", "64", "--device", "cpu"]
    command = [sys.executable, "-m", "fedpatch_app.cli", *args, "--categories", *cats]
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    proc = subprocess.Popen(command, cwd=ROOT, **quiet)
    try:
        _wait_for(a_bank_is_written, 180, "no bank written", 0.005)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    recorded = read_status(out)
    assert recorded["status"] == "running", "the run ended before it was killed"
    assert recorded["pid"] == proc.pid and len(recorded["banks_written"]) < len(cats)
    first = recorded["banks_written"][0]  # the run's first category
    assert f"{first}: bank" in recorded["finished_phases"]
    assert f"model/banks/{first}.npz" in recorded["kept"]
    assert not (out / "results.json").exists()

    status = effective_status(out)
    assert status["status"] == "interrupted" and "is gone" in status["interrupted_because"]
    assert Bank.load(out / "model" / "banks" / f"{first}.npz").size > 0
    manifest = json.loads((out / "model" / "model.json").read_text())
    assert manifest["complete"] is False and first in manifest["incomplete_reason"]
    with pytest.raises(ModelError, match=r"incomplete.*interrupted.*--allow-incomplete"):
        load_model(out / "model")
    assert first in load_model(out / "model", allow_incomplete=True).categories

    # Rerunning into the folder names the interruption and the way on.
    assert main([*args, "--categories", "pipe_clip"]) == 2
    err = capsys.readouterr().err
    assert "interrupted run" in err and "is gone" in err and "--overwrite" in err
    assert f"{first}: bank" in err  # the finished phases
    assert main(["report", str(out), "--out", str(tmp_path / "report")]) == 2
    assert "did not finish: interrupted" in capsys.readouterr().err

    assert main([*args, "--categories", "pipe_clip", "--overwrite"]) == 0
    assert effective_status(out)["status"] == "completed"
    assert json.loads((out / "model" / "model.json").read_text())["complete"] is True
    assert load_model(out / "model").category("pipe_clip").thresholds


# -- the model folder -----------------------------------------------------------------------


def _model(folder: Path, incomplete: str | None, thresholds: dict | None = THRESHOLDS) -> Path:
    bank = Bank(np.ones((4, 8), dtype=np.float32), SPEC, "pipe_clip", 1.0, 16)
    cats = {"pipe_clip": CategoryModel(bank, (400, 400), MapScaling(0.0, 4.0), thresholds, 4)}
    facts = {"run_name": "r", "run_kind": "centralized", "settings": {"calibration_fraction": 0.1}}
    write_model(folder, SPEC, cats, facts, incomplete=incomplete)
    return folder


def test_an_incomplete_model_folder_is_refused_unless_allowed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = _model(tmp_path / "model", "written before the thresholds", thresholds=None)
    manifest = json.loads((folder / "model.json").read_text())
    assert manifest["complete"] is False
    with pytest.raises(ModelError, match=r"incomplete: written before the thresholds"):
        load_model(folder)
    with caplog.at_level("WARNING"):
        assert load_model(folder, allow_incomplete=True).incomplete_reason
    assert "--allow-incomplete" in caplog.text
    _model(folder, None)  # the thresholds written: complete
    assert load_model(folder).incomplete_reason is None


def test_older_model_folders_count_as_complete_when_they_hold_thresholds(tmp_path: Path) -> None:
    """Format version 1 written before the `complete` field existed."""
    folder = _model(tmp_path / "with", None)
    manifest = json.loads((folder / "model.json").read_text())
    del manifest["complete"]
    manifest["format"] = "fedpatch-model/1"
    (folder / "model.json").write_text(json.dumps(manifest))
    assert load_model(folder).incomplete_reason is None

    bare = _model(tmp_path / "without", None, thresholds=None)
    manifest = json.loads((bare / "model.json").read_text())
    del manifest["complete"]
    manifest["format"] = "fedpatch-model/1"
    (bare / "model.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelError, match="older fedpatch"):
        load_model(bare)
    manifest["provenance"]["settings"]["calibration_fraction"] = 0.0  # no thresholds asked
    (bare / "model.json").write_text(json.dumps(manifest))
    assert load_model(bare).incomplete_reason is None


def test_predict_and_serve_refuse_an_incomplete_model(
    tiny_root: Path, pipe_clip_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "model"
    shutil.copytree(pipe_clip_run / "model", folder)
    manifest = json.loads((folder / "model.json").read_text())
    manifest |= {"complete": False, "incomplete_reason": "the run stopped after its merge"}
    (folder / "model.json").write_text(json.dumps(manifest))
    images = [next(iter(sorted((tiny_root / "pipe_clip" / "test" / "good").glob("*.png"))))]
    with pytest.raises(ModelError, match="--allow-incomplete"):
        run_predict(folder, "pipe_clip", tmp_path / "p", images, device="cpu")
    assert not (tmp_path / "p").exists()
    assert main(["serve", "--model", str(folder), "--port", "0", "--device", "cpu"]) == 2
    assert "incomplete" in capsys.readouterr().err
    results = run_predict(
        folder, "pipe_clip", tmp_path / "p", images, device="cpu", allow_incomplete=True
    )
    assert len(results) == 1


# -- a federated run: what status.json says once the merge is done ---------------------------


@pytest.mark.slow
def test_after_the_merge_status_lists_it_and_the_model_is_incomplete(
    tiny_root: Path, tmp_path: Path
) -> None:
    """What a federated run killed during evaluation leaves: seen from inside the run at
    its statistics phase (after the merge, before the thresholds)."""
    from flwr.app import Context, Message, MessageType, RecordDict

    from fedpatch_app.federated.inprocess import InProcessGrid
    from fedpatch_app.federated.protocol.server import run_server
    from fedpatch_drills.client_app import tampered_app

    run_dir = tmp_path / "fed"
    seen: dict[str, Any] = {}

    def snapshot(node_id: int, msg: Message, reply: Message) -> Message:
        if msg.metadata.message_type == MessageType.QUERY and not seen:
            seen["status"] = read_status(run_dir)
            seen["model"] = json.loads((run_dir / "model" / "model.json").read_text())
        return reply

    run_config = {"dataset": "autovi", "data-root": str(tiny_root), "categories": "pipe_clip"}
    run_config |= {"partition": "iid", "num-clients": 2, "min-clients": 2, "weights": "none"}
    run_config |= {"image-size": 64, "device": "cpu", "out-dir": str(tmp_path)}
    run_config |= {"run-name": "fed", "wait-timeout": 0}
    nodes = [{"partition-id": i, "num-partitions": 2} for i in range(2)]
    grid = InProcessGrid(tampered_app(snapshot), nodes, run_config)
    context = Context(
        run_id=5, node_id=1, node_config={}, state=RecordDict(), run_config=run_config
    )
    run_server(grid, context)

    during = seen["status"]
    assert during["status"] == "running" and "merge" in during["finished_phases"]
    assert any(k.startswith("model/") for k in during["kept"])
    assert seen["model"]["complete"] is False and "merge" in seen["model"]["incomplete_reason"]
    # Had the server been killed then, the folder would read as interrupted, with the merge.
    (run_dir / STATUS_FILE).write_text(json.dumps({**during, "pid": _dead_pid()}))
    status = effective_status(run_dir)
    assert status["status"] == "interrupted" and "merge" in status["finished_phases"]
    write_status(run_dir, "completed")
    assert json.loads((run_dir / "model" / "model.json").read_text())["complete"] is True
