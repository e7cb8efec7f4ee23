"""The honest-grid benchmark's bookkeeping (no runs): its verdict on the target, whole
categories left out, and cells measured under an earlier robust-merge rule."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import honest_grid  # noqa: E402


def cell(verdicts: dict, change: float = 0.0, flagged: tuple = ()) -> dict:
    support = {"checked": True, "clients": verdicts, "left_out": 0, "rows": 0}
    for v in verdicts.values():
        support["left_out"] += v["quarantined"]
        support["rows"] += v["rows"]
    block = {"support": support, "source_check_flagged": list(flagged)}
    return {
        "cell": "iid_photo_256_effnet_s0",
        "on": {"categories": {"pipe_clip": {**block, "auc_spro_0.3": 0.8, "image_auroc": 0.9}}},
        "change": {"pipe_clip": {"auc_spro_0.3": change, "image_auroc": 0.0}},
    }


def verdict(rows: int, unsupported: int, quarantined: int, action: str, ratio: float) -> dict:
    return {
        "rows": rows,
        "unsupported": unsupported,
        "quarantined": quarantined,
        "action": action,
        "size_ratio": ratio,
    }


def test_a_whole_category_left_out_misses_the_target() -> None:
    dropped = cell({"node 1 (partition 0)": verdict(100, 50, 100, "dropped", 1.0)})
    text = honest_grid.summary([dropped])
    assert "pipe_clip: node 1 (partition 0)" in text and "target MISSED" in text


def test_a_loss_beyond_the_target_misses_it_and_a_flag_is_counted() -> None:
    kept = {"node 1 (partition 0)": verdict(100, 0, 0, "kept", 1.0)}
    assert "target met" in honest_grid.summary([cell(kept, change=-0.004)])
    text = honest_grid.summary([cell(kept, change=-0.006, flagged=("2",))])
    assert "target MISSED" in text and "(all false): 1 of 1" in text


def test_cells_of_an_earlier_rule_are_named() -> None:
    # 2 of 100 unsupported among equals: an honest tail today (3 % limit), kept whole.
    old = cell({"node 1 (partition 0)": verdict(100, 2, 100, "dropped", 1.0)})
    assert honest_grid.stale_verdicts(old) == [
        "pipe_clip: node 1 (partition 0): dropped -> kept-tail"
    ]
    now = cell({"node 1 (partition 0)": verdict(100, 2, 0, "kept-tail", 1.0)})
    assert honest_grid.stale_verdicts(now) == []
    assert "EARLIER RULE" in honest_grid.summary([old])
