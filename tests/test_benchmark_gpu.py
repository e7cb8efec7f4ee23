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


def run_script(*args: str, timeout: float) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
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
    assert re.search(r"\[coreset\] CPU, pruned: N = 4,000, k = 40: [\d.]+ s, radius [\d.]+", out)
    assert re.search(r"\[knn\] CPU \((faiss|torch)\): 500 queries x 1,000 bank", out)
    for part in ("extraction", "coreset", "knn", "federated"):
        assert re.search(rf"\[{part}\] SKIPPED: .*(CUDA)", out), part
        assert f"[{part}] done in" in out


def test_gpu_benchmark_rejects_an_unknown_part(tmp_path: Path) -> None:
    proc = run_script("--parts", "coreset,warp", "--cache-dir", str(tmp_path), timeout=300)
    assert proc.returncode != 0
    assert "unknown part(s) ['warp']" in proc.stderr
