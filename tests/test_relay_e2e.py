"""End to end with `share-mode = relay`: `fedpatch run --share-key FILE` (a real `flwr run`
with five simulated SuperNodes, Ray) completes; every simulated client wrote a complete
model folder whose banks are, bit for bit, those of the raw mode's run of the same case
in-process (`inprocess_reference`), and the metrics are the same. One CPU thread, as in
tests/test_federated_e2e.py.

Optional (FEDPATCH_RELAY_E2E=1; minutes on two cores): tests/test_relay_run.py covers the
relay protocol in-process on every CI run, and tests/test_federated_e2e.py covers the
transport; this test adds their combination and `fedpatch run --share-key`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from inprocess_reference import ONE_THREAD, reference_run

from fedpatch_app.inspection.model_folder import load_model
from fedpatch_app.privacy.keys import write_key

CATS = ("pipe_clip", "pipe_staple")


@pytest.mark.slow
@pytest.mark.skipif(
    os.environ.get("FEDPATCH_RELAY_E2E") != "1", reason="optional: set FEDPATCH_RELAY_E2E=1"
)
def test_flwr_run_relay_gives_the_raw_banks_on_every_client(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in ONE_THREAD.items():
        monkeypatch.setenv(key, value)
    key = write_key(tmp_path / "share.key")
    out_dir = tmp_path / "runs"
    run_config = {
        "dataset": "synthetic",
        "synthetic-scale": "tiny",
        "categories": ",".join(CATS),
        "weights": "none",
        "image-size": 64,
        "device": "cpu",
        "out-dir": str(out_dir),
        "run-name": "relay",
        "wait-timeout": 120.0,
        "source-check": False,
    }
    text = " ".join(f"{k}={json.dumps(v)}" for k, v in run_config.items())
    text += ' share-mode="relay"'
    cmd = [sys.executable, "-m", "fedpatch_app.cli", "run", "--run-config", text]
    cmd += ["--flwr-home", str(tmp_path / "flwr_home"), "--share-key", key.source]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    results = json.loads((out_dir / "relay" / "results.json").read_text(encoding="utf-8"))
    assert results["federated"]["dropped"] == []
    assert not (out_dir / "relay" / "model").exists()

    nodes = [{"partition-id": i, "num-partitions": 5} for i in range(5)]
    reference = reference_run({**run_config, "run-name": "raw"}, nodes)
    raw = load_model(out_dir / "raw" / "model")
    folders = sorted((out_dir / "relay-clients").glob("*/node-*"))
    assert len(folders) == 5
    for folder in folders:
        mine = load_model(folder)
        for cat, entry in raw.categories.items():
            got = mine.categories[cat]
            assert got.bank.features.tobytes() == entry.bank.features.tobytes(), (folder, cat)
            assert got.thresholds == entry.thresholds
    for cat, ref in reference["categories"].items():
        for k in ("auc_spro", "image_auroc", "counts", "bank_size"):
            assert results["categories"][cat][k] == ref[k], (cat, k)
