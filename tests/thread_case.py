"""One small centralized and one federated (in-process) run with pretrained features,
printed as JSON: `python thread_case.py DATA OUT`. `tests/test_threads.py` runs it with
different thread counts, each in its own process (the thread pools are set at start)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from fedpatch_app.federated.inprocess import run_inprocess
from fedpatch_app.runs.centralized import run_centralized
from fedpatch_app.settings import from_names

COMMON = {
    "backbone": "efficientnet_lite0",
    "weights": "imagenet",
    "image_size": 96,
    "device": "cpu",
}


def metrics(results: dict) -> dict:
    return {
        cat: {"auc_spro": b["auc_spro"], "image_auroc": b["image_auroc"]["mean"]}
        for cat, b in results["categories"].items()
    }


def main() -> None:
    data, out = Path(sys.argv[1]), Path(sys.argv[2])
    central = run_centralized(from_names({**COMMON, "data_root": str(data)}), out / "central")
    config = {
        "dataset": "autovi",
        "data-root": str(data),
        "partition": "iid",
        "num-clients": 3,
        "min-clients": 3,
        "backbone": "efficientnet_lite0",
        "weights": "imagenet",
        "image-size": 96,
        "device": "cpu",
        "out-dir": str(out),
        "run-name": "fed",
        "wait-timeout": 0,
    }
    federated = run_inprocess(config).results
    print(
        json.dumps(
            {
                "threads": torch.get_num_threads(),
                "recorded_threads": [central["run"]["threads"], federated["run"]["threads"]],
                "centralized": metrics(central),
                "federated": metrics(federated),
            }
        )
    )


if __name__ == "__main__":
    main()
