"""Reference figures for the runs that go through Flower's real transports.

`reference_run` runs the same federated case with the in-process Grid (the real ServerApp
and ClientApp code, no Ray, no SuperLink) in a child process on ONE CPU thread, and
returns its results.json. Tests of `flwr run` simulations and deployments start their
processes with `OMP_NUM_THREADS=1` too and compare their metrics and banks with it
(`assert_same_figures`): a transport that lost, reordered or altered anything would
change them. Faults can be mirrored: an `offline` partition is a node whose ClientApp
never answers the train instruction (as a ClientApp that crashed), a `malformed` one runs
the drill ClientApp (`fedpatch_drills.client_app`) with node config
`fault="malformed-coreset"`, as the deployed drill does.

Run as a script by `reference_run`: `python inprocess_reference.py SPEC.json`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
#: Environment that pins every thread pool the pipeline uses to one thread.
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
FIRST_NODE_ID = 1001


def reference_run(
    run_config: Mapping[str, Any],
    node_configs: Sequence[Mapping[str, Any]],
    *,
    offline_partitions: Sequence[int] = (),
    malformed_partitions: Sequence[int] = (),
    timeout: float = 600,
) -> dict[str, Any]:
    """results.json of the case run in-process in a one-thread child process; the run
    folder is `<out-dir>/<run-name>` of `run_config`."""
    out = Path(run_config["out-dir"]) / str(run_config["run-name"])
    out.mkdir(parents=True, exist_ok=True)
    spec = out.parent / f"{run_config['run-name']}.reference.json"
    spec.write_text(
        json.dumps(
            {
                "run_config": dict(run_config),
                "node_configs": [dict(n) for n in node_configs],
                "offline": list(offline_partitions),
                "malformed": list(malformed_partitions),
            }
        ),
        encoding="utf-8",
    )
    env = {**os.environ, **ONE_THREAD}
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), str(spec)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads((out / "results.json").read_text(encoding="utf-8"))


def assert_same_figures(
    results: Mapping[str, Any],
    reference: Mapping[str, Any],
    run_dir: Path,
    reference_dir: Path,
) -> None:
    """Same categories, same metrics and counts, bit-identical banks."""
    assert sorted(results["categories"]) == sorted(reference["categories"])
    for cat, ref in reference["categories"].items():
        got = results["categories"][cat]
        for key in ("auc_spro", "auc_spro_per_defect", "image_auroc", "counts", "bank_size"):
            assert got[key] == ref[key], (cat, key, got[key], ref[key])
        with (
            np.load(run_dir / "model" / "banks" / f"{cat}.npz", allow_pickle=False) as a,
            np.load(reference_dir / "model" / "banks" / f"{cat}.npz", allow_pickle=False) as b,
        ):
            assert a["features"].tobytes() == b["features"].tobytes(), cat


def _main(spec_path: str) -> None:
    import torch
    from flwr.app import Context, RecordDict

    sys.path.insert(0, str(REPO))
    from fedpatch_app.federated.inprocess import SUPERLINK_NODE_ID, InProcessGrid
    from fedpatch_app.federated.protocol.server import run_server
    from fedpatch_drills import client_app as drills
    from fedpatch_drills.faults import MALFORMED_CORESET

    torch.set_num_threads(1)
    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    run_config = spec["run_config"]
    nodes = [dict(n) for n in spec["node_configs"]]
    for p in spec["malformed"]:
        nodes[p]["fault"] = MALFORMED_CORESET
    grid = InProcessGrid(
        drills.app,
        nodes,
        run_config,
        offline=[FIRST_NODE_ID + p for p in spec["offline"]],
        first_node_id=FIRST_NODE_ID,
    )
    context = Context(
        run_id=1,
        node_id=SUPERLINK_NODE_ID,
        node_config={},
        state=RecordDict(),
        run_config=run_config,
    )
    run_server(grid, context)


if __name__ == "__main__":
    _main(sys.argv[1])
