"""End to end: the main job `fedpatch run` (a real `flwr run . --stream` with five
simulated SuperNodes, Ray), which checks its own run's final status with `flwr list
--run-id ID --format json` (`finished:completed`), exits 0 only then, and stops the
local SuperLink it started; then
the results.json the ServerApp wrote is checked, and its figures are
compared with the same case run in-process (`inprocess_reference`): same metrics, same
banks, bit for bit. Both run on one CPU thread (OMP_NUM_THREADS=1), since the coreset
picks can depend on the thread count.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from inprocess_reference import ONE_THREAD, assert_same_figures, reference_run

from fedpatch_app.federated.simulation import superlink_pids

CATS = ("pipe_clip", "pipe_staple")


def _fedpatch_run(run_config: dict, flwr_home: Path) -> subprocess.CompletedProcess:
    text = " ".join(f"{k}={json.dumps(v)}" for k, v in run_config.items())
    cmd = [sys.executable, "-m", "fedpatch_app.cli", "run", "--run-config", text]
    cmd += ["--flwr-home", str(flwr_home)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=flwr_home.parent)


@pytest.mark.slow
def test_flwr_run_simulation_with_five_supernodes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not Path("/proc").is_dir():
        pytest.skip("needs /proc to find the local SuperLink's PID")
    for key, value in ONE_THREAD.items():
        monkeypatch.setenv(key, value)  # inherited by the SuperLink, ServerApp and ClientApps
    flwr_home = tmp_path / "flwr_home"
    out_dir = tmp_path / "runs"
    run_config = {
        "dataset": "synthetic",
        "synthetic-scale": "tiny",
        "categories": ",".join(CATS),
        "weights": "none",
        "image-size": 64,
        "device": "cpu",
        "out-dir": str(out_dir),
        "run-name": "e2e",
        "wait-timeout": 120.0,
    }
    proc = _fedpatch_run(run_config, flwr_home)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "fedpatch run: COMPLETED" in proc.stdout
    assert not superlink_pids(flwr_home)
    status = json.loads((out_dir / "e2e" / "status.json").read_text(encoding="utf-8"))
    assert status["status"] == "completed"

    results = json.loads((out_dir / "e2e" / "results.json").read_text(encoding="utf-8"))
    assert results["run"]["kind"] == "federated"
    assert results["dataset"] == "synthetic"
    assert sorted(results["categories"]) == sorted(CATS)
    fed = results["federated"]
    assert len(fed["clients"]) == 5 and fed["dropped"] == []
    assert sorted(c["partition_id"] for c in fed["clients"]) == [0, 1, 2, 3, 4]
    assert all(c["status"] == "evaluated" for c in fed["clients"])
    for cat in ("pipe_clip", "pipe_staple"):
        assert (out_dir / "e2e" / "model" / "banks" / f"{cat}.npz").is_file()
    assert (out_dir / "e2e" / "report.md").is_file()

    # "The in-process engine gives the same figures as `flwr run`": the same case, the
    # same ServerApp and ClientApp code, driven in-process.
    nodes = [{"partition-id": i, "num-partitions": 5} for i in range(5)]
    reference = reference_run({**run_config, "run-name": "inprocess"}, nodes)
    assert reference["federated"]["dropped"] == []
    assert_same_figures(results, reference, out_dir / "e2e", out_dir / "inprocess")


@pytest.mark.slow
def test_fedpatch_run_exits_non_zero_and_says_why_when_the_run_fails(
    tiny_root: Path, tmp_path: Path
) -> None:
    # Every client refuses the plan (the category partition has exactly five clients),
    # so the run fails inside Flower, after it started.
    flwr_home = tmp_path / "flwr_home"
    run_config = {"data-root": str(tiny_root), "categories": "pipe_clip", "num-clients": 2}
    run_config |= {"min-clients": 2, "out-dir": str(tmp_path / "runs"), "run-name": "refused"}
    run_config |= {"image-size": 32, "weights": "none", "device": "cpu"}
    proc = _fedpatch_run(run_config, flwr_home)
    assert proc.returncode == 1, proc.stdout[-3000:]
    assert "fedpatch run: FAILED: train: only 0 client(s) remain, min-clients is 2" in proc.stderr
    assert "the category partition has exactly 5 clients" in proc.stderr
    assert not superlink_pids(flwr_home)
    status = json.loads((tmp_path / "runs" / "refused" / "status.json").read_text())
    assert status["status"] == "failed" and "only 0 client(s) remain" in status["reason"]
