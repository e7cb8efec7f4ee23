"""Benchmark: held-out against cross-fitted calibration of the image thresholds.

Two centralized runs on the same data and features, one with the default held-out
share (`calibration-fraction` 0.1: those images never enter the bank) and one
cross-fitted (`calibration-folds` K: every good training image feeds the bank and is
scored by a bank built without its fold). For each, per category and pooled over the
categories: how many scores the image threshold rests on, the false-reject rate of the
good test images (never seen in training or calibration) at the target rate, and the
detection rate of the defective test images at the same threshold.

With `--federated`, the two runs are federated instead (the in-process engine of
`fedpatch run --engine inprocess`: five clients, the default partition): held-out, each
client holds its share out of its coreset; cross-fitted, each client scores each of its
folds against the global bank less its own rows joined with a coreset of its other folds.

Usage::

    fedpatch synth --out data/photo-small --kind photo --scale small
    python benchmarks/calibration.py --data-root data/photo-small --out runs/calibration \
        --backbone efficientnet_lite0 --image-size 128 --folds 5
    python benchmarks/calibration.py --data-root data/photo-small --out runs/calibration-fed \
        --backbone efficientnet_lite0 --image-size 128 --folds 5 --federated
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from fedpatch_app.runs.centralized import run_centralized
from fedpatch_app.settings import from_names, to_run_config


def _rates(results: dict[str, Any]) -> dict[str, Any]:
    rows: dict[str, Any] = {}
    good = rejected = bad = detected = 0
    for cat, block in results["categories"].items():
        thresholds = block.get("thresholds") or {}
        on_test = thresholds.get("on_test") or {}
        n_good, n_bad = on_test.get("test_good", 0), on_test.get("test_defective", 0)
        frr, det = on_test.get("false_reject_rate"), on_test.get("detection_rate")
        rows[cat] = {
            "scores": (thresholds.get("image") or {}).get("calibration_images"),
            "false_reject_rate": frr,
            "detection_rate": det,
            "image_auroc": block["image_auroc"]["mean"],
        }
        good += n_good
        bad += n_bad
        rejected += round((frr or 0.0) * n_good)
        detected += round((det or 0.0) * n_bad)
    rows["pooled"] = {
        "false_reject_rate": rejected / good if good else None,
        "detection_rate": detected / bad if bad else None,
        "good": good,
        "defective": bad,
    }
    return rows


def _federated(run_config: dict[str, Any], out: Path, name: str) -> dict[str, Any]:
    """results.json of a federated in-process run (five clients, default partition)."""
    from fedpatch_app.federated.inprocess import run_inprocess

    run_config = {**run_config, "out-dir": str(out), "run-name": name, "wait-timeout": 0}
    outcome = run_inprocess(run_config)
    return json.loads((Path(outcome.run_dir) / "results.json").read_text(encoding="utf-8"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--federated", action="store_true", help="federated in-process runs (five clients)"
    )
    args = parser.parse_args(argv)
    base = {
        "data_root": args.data_root,
        "backbone": args.backbone,
        "image_size": args.image_size,
        "device": args.device,
        "target_false_reject": 0.01,
        "overwrite": True,
    }
    out = Path(args.out)
    found = {}
    for name, extra in (
        ("held-out", {"calibration_fraction": 0.1}),
        ("cross-fitted", {"calibration_folds": args.folds}),
    ):
        settings = from_names({**base, **extra})
        if args.federated:
            results = _federated(to_run_config(settings), out, name)
        else:
            results = run_centralized(settings, out / name)
        found[name] = _rates(results)
    (out / "calibration.json").write_text(json.dumps(found, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(found, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
