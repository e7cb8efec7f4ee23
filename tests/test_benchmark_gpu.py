"""benchmarks/gpu.py runs end to end on a machine without CUDA: every CUDA part says it
was skipped and why, and the CPU side of each part prints its figures."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
PARTS = ("extraction", "latency", "coreset", "knn", "federated")


def run_script(*args: str, timeout: float, path: Path | None = None) -> subprocess.CompletedProcess:
    paths = [str(REPO)] + ([str(path)] if path else [])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(paths), OMP_NUM_THREADS="1")
    command = [sys.executable, "benchmarks/gpu.py", *args]
    return subprocess.run(
        command, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only behaviour")
def test_gpu_benchmark_runs_on_cpu_and_skips_the_cuda_parts(tmp_path: Path) -> None:
    proc = run_script("--quick", "--cache-dir", str(tmp_path), timeout=600)
    out = proc.stdout
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert re.search(r"\[extraction\] float32 NCHW on cpu: [\d.]+ images/s", out)
    for k in ("40", "400"):  # k = 1% and 10%
        assert re.search(rf"\[coreset\] CPU, pruned: N = 4,000, k = {k}: [\d.]+ s, radius", out)
        assert re.search(rf"\[summary\] coreset s, N = 4,000, k = {k}, CPU pruned: [\d.]+", out)
    for batch in (1, 2):
        line = rf"efficientnet_lite0 64 px on cpu, float32: batch {batch}: [\d.]+ ms per image"
        assert re.search(rf"\[latency\] {line}", out)
        assert re.search(rf"\[summary\] ms per image, batch {batch}, float32 \(cpu\): [\d.]+", out)
    assert re.search(r"\[knn\] CPU \((faiss|torch)\): 500 queries x 1,000 bank", out)
    assert re.search(r"\[summary\] search s, exact CPU, 500 x 1,000: [\d.]+", out)
    for part in PARTS:
        assert re.search(rf"\[{part}\] SKIPPED: .*(CUDA)", out), part
        assert f"[{part}] done in" in out


FAKE_ANN = """
import numpy as np

class IvfIndex:
    @classmethod
    def build(cls, features):
        return "index"

class IvfSearch:
    def __init__(self, index, features):
        assert index == "index"
        self.features = features

    def nearest(self, queries):
        d2 = ((queries[:, None, :] - self.features[None, :, :]) ** 2).sum(-1)
        idx = d2.argmin(axis=1)
        return np.sqrt(d2[np.arange(len(queries)), idx]).astype(np.float32), idx
"""


def test_gpu_benchmark_measures_the_approximate_search_when_it_is_there(
    tmp_path: Path,
) -> None:
    """With an approximate search module (here an exact stand-in for
    `fedpatch_app.model.ann_index`), the kNN part times it and compares its distances
    with the exact search's."""
    (tmp_path / "fake_ann.py").write_text(FAKE_ANN)
    proc = run_script(
        "--quick",
        "--parts",
        "knn",
        "--ann-module",
        "fake_ann",
        "--cache-dir",
        str(tmp_path),
        timeout=300,
        path=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert re.search(
        r"\[knn\] approximate \(fake_ann, CPU\): build [\d.]+ s, search [\d.]+ s, .* exact "
        r"nearest distance for 100.00% of the queries",
        proc.stdout,
    )
    assert re.search(r"\[summary\] search s, approximate \(CPU\): [\d.]+", proc.stdout)


def test_gpu_benchmark_rejects_an_unknown_part(tmp_path: Path) -> None:
    proc = run_script("--parts", "coreset,warp", "--cache-dir", str(tmp_path), timeout=300)
    assert proc.returncode != 0
    assert "unknown part(s) ['warp']" in proc.stderr
