"""The coreset's random projection, computed so that its bits never depend on threads.

A multi-threaded BLAS matrix product splits its work, and with it the order of its
sums, according to the number of threads: on 1 and 2 threads the same ``x @ P`` differs
in the last bits, and greedy k-center, which compares distances, then picks other
points. Here the rows are cut into blocks of a FIXED size, every block is multiplied by
single-threaded BLAS (from a freshly allocated, aligned copy), and the blocks run in
parallel on a pool of Python threads. The blocks and the kernel each one meets are then
the same whatever the thread count, and so is the result.

On a CUDA device cuBLAS is deterministic for a given shape; TF32 is switched off for
the duration, so a global ``set_float32_matmul_precision("high")`` cannot lower the
precision of the projection.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from fedpatch_app.errors import ModelError

#: Rows per block. Fixed, so that the blocks never depend on the machine.
PROJECT_CHUNK_ROWS = 4096

ArrayLike = np.ndarray | torch.Tensor


def random_projection(dim_in: int, projection_dim: int, seed: int = 0) -> torch.Tensor:
    """The seeded Gaussian projection matrix ``(dim_in, projection_dim)``, float32 on CPU.

    Entries are N(0, 1/projection_dim), so squared norms are preserved in expectation
    (Johnson-Lindenstrauss). Drawn on the CPU so every device gets the same matrix.
    """
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    return torch.randn(dim_in, projection_dim, generator=gen) / math.sqrt(projection_dim)


@contextlib.contextmanager
def full_float32_precision() -> Iterator[None]:
    """Full float32 matrix products (no TF32) inside the block, restored afterwards."""
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(before)


def _block(x: ArrayLike, start: int, stop: int, device: torch.device) -> torch.Tensor:
    """Rows ``start:stop`` as a fresh float32 tensor on ``device``."""
    src = x[start:stop]
    if isinstance(src, np.ndarray):  # copied by numpy: read-only or memory-mapped input is fine
        host = torch.empty(src.shape, dtype=torch.float32)
        host.numpy()[...] = src
        return host.to(device)
    block = torch.empty(tuple(src.shape), dtype=torch.float32, device=device)
    block.copy_(src)
    return block


def _check_finite(x: ArrayLike, result: torch.Tensor, start: int, name: str) -> None:
    """NaN or infinity in an input row reaches its projected row: look there first (8 times
    less to read), and name the input row at fault."""
    finite = torch.isfinite(result).all(dim=1)
    if bool(finite.all()):
        return
    row = start + int(torch.nonzero(~finite)[0, 0])
    value = x[row]
    value = value.double().cpu().numpy() if isinstance(value, torch.Tensor) else value
    if not np.isfinite(np.asarray(value, dtype=np.float64)).all():
        raise ModelError(f"greedy_coreset: {name} row {row} holds NaN or infinite values")
    raise ModelError(
        f"greedy_coreset: {name} row {row} is too large: its projection overflows float32"
    )


def _project_block(
    x: ArrayLike,
    proj: torch.Tensor | None,
    out: torch.Tensor,
    start: int,
    name: str,
) -> None:
    stop = min(int(x.shape[0]), start + PROJECT_CHUNK_ROWS)
    block = _block(x, start, stop, out.device)
    if proj is None:
        result = block
    else:
        result = torch.empty((stop - start, proj.shape[1]), dtype=torch.float32, device=out.device)
        torch.mm(block, proj, out=result)
    _check_finite(x, result, start, name)
    out[start:stop] = result


def _single_threaded_block(
    x: ArrayLike, proj: torch.Tensor | None, out: torch.Tensor, start: int, name: str
) -> None:
    torch.set_num_threads(1)  # also sets this worker thread's OpenMP and MKL thread counts
    _project_block(x, proj, out, start, name)


def project_rows(
    x: ArrayLike,
    proj: torch.Tensor | None,
    device: torch.device,
    name: str = "features",
) -> torch.Tensor:
    """``x @ proj`` (or ``x`` itself when ``proj`` is None) as ``(N, d')`` float32 on ``device``.

    Bit-identical for any thread count on a given machine and library build.
    """
    n, d = int(x.shape[0]), int(x.shape[1])
    d_out = d if proj is None else int(proj.shape[1])
    out = torch.empty((n, d_out), dtype=torch.float32, device=device)
    starts = range(0, n, PROJECT_CHUNK_ROWS)
    if proj is not None:
        proj = proj.to(device=device, dtype=torch.float32).contiguous()
    if device.type != "cpu":
        with full_float32_precision():
            for start in starts:
                _project_block(x, proj, out, start, name)
        return out
    threads = torch.get_num_threads()
    try:
        with ThreadPoolExecutor(max_workers=threads) as pool:
            jobs = [pool.submit(_single_threaded_block, x, proj, out, s, name) for s in starts]
            for job in jobs:
                job.result()
    finally:
        torch.set_num_threads(threads)
    return out
