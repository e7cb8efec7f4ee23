"""End to end: `flwr run . --stream` with five simulated SuperNodes (Ray), through
`fedpatch_app.federated.simulation.run_simulation`, which checks the final status with
`flwr list --format json` (`finished:completed`) and stops the local SuperLink it
started; then the results.json the ServerApp wrote is checked, and its figures are
compared with the same case run in-process (`inprocess_reference`): same metrics, same
banks, bit for bit. Both run on one CPU thread (OMP_NUM_THREADS=1), since the coreset
picks can depend on the thread count.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from inprocess_reference import ONE_THREAD, assert_same_figures, reference_run

from fedpatch_app.federated.simulation import (
    SUPERLINK_PORTS,
    port_busy,
    run_simulation,
    superlink_pids,
)

CATS = ("pipe_clip", "pipe_staple")


@pytest.mark.slow
def test_flwr_run_simulation_with_five_supernodes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not Path("/proc").is_dir():
        pytest.skip("needs /proc to find the local SuperLink's PID")
    if any(port_busy(p) for p in SUPERLINK_PORTS):
        pytest.skip("a local SuperLink is already running on 127.0.0.1:39091")
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
    run = run_simulation(run_config, flwr_home=flwr_home, num_supernodes=5, timeout=480)
    assert run.status == "finished:completed"
    assert not superlink_pids(flwr_home)

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
