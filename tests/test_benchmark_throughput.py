"""benchmarks/throughput.py's own arithmetic: the bank sizes it measures at and the table
it prints (the timed parts are `fedpatch predict` and the service, tested elsewhere)."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

import pytest

from fedpatch_app.model.embedding import FeatureSpec
from fedpatch_app.model.patchcore import coreset_size

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def throughput():
    sys.path.insert(0, str(REPO / "benchmarks"))  # it imports benchmarks/serve.py
    try:
        path = REPO / "benchmarks/throughput.py"
        spec = importlib.util.spec_from_file_location("throughput_benchmark", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    return module


def test_bank_rows_are_autovi_counts_less_calibration_times_grid_and_ratio(throughput) -> None:
    # pipe_clip: 195 training images, 20 held out at calibration-fraction 0.1
    assert throughput.bank_rows("pipe_clip", (32, 32)) == coreset_size(175 * 1024, 0.1)
    # underbody_screw: 373 images, 37 held out
    assert throughput.bank_rows("underbody_screw", (16, 16)) == coreset_size(336 * 256, 0.1)


def test_report_prints_one_row_per_category_with_every_concurrency(throughput, capsys) -> None:
    one = {"rate": 2.0, "p50": 0.5, "p95": 0.75, "cpu": 0.1}
    cats = {
        c: {"bank_rows": 100, "predict": 1.5, "service": {1: one, 4: one}}
        for c in throughput.AUTOVI_COUNTS
    }
    args = argparse.Namespace(
        search="exact", images=4, batch_size=8, concurrency=[1, 4], weights="none"
    )
    throughput.report({"categories": cats}, args, FeatureSpec(weights="none"), (1.0, 1.0, 1.0))
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    assert lines[0].count("service c=") == 2
    assert len(lines) == 1 + len(throughput.AUTOVI_COUNTS)  # the header, then the rows
    assert "| tank_screw | 1000x750 | 100 | 1.50 | 2.00 (500 / 750) | 2.00 (500 / 750) |" in lines
