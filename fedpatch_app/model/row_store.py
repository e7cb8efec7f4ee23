"""The server's coreset rows on disk: decoded once, mapped read-only where they are used.

A federated server receives every client's coreset of every category (local-oversample
times the banks, all categories at once) and keeps them until the run ends: the robust
merge, the source check's re-merge and the bank facts read them. Held in memory, they
made the server's peak grow with the data by several times the banks. A `RowStore` keeps
them in a folder of the run instead: each decoded coreset is written there once (raw
float32, no pickle) and replaced by a read-only memory map of its file. A mapped page is
resident only while it is read: `release` drops a mapped array's pages from the
process's memory (the file stays, and the page cache serves the next read), so the merge
of one category holds that category's rows and nothing of the others.

The values are the decoded values, bit for bit: a mapped array reads back exactly the
bytes written. The folder is removed when the run ends (`close`).
"""

from __future__ import annotations

import logging
import mmap
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

#: Rows written or read per step when a union is written or a bank gathered from one.
CHUNK_ROWS = 8192


def _mapping(array: object) -> mmap.mmap | None:
    """The memory map an array (or a view of one) reads, or None."""
    base = array
    while base is not None:
        if isinstance(base, mmap.mmap):
            return base
        base = base.obj if isinstance(base, memoryview) else getattr(base, "base", None)
    return None


def is_mapped(array: np.ndarray) -> bool:
    """Whether `array` reads a `RowStore` file (a memory map) rather than memory."""
    return _mapping(array) is not None


def release(*arrays: np.ndarray | None) -> None:
    """Drop the resident pages of mapped arrays from this process (no effect on arrays
    in memory); the next read of them faults the pages in again from the file."""
    for array in arrays:
        mapped = _mapping(array)
        if mapped is not None and not mapped.closed and len(mapped):
            mapped.madvise(mmap.MADV_DONTNEED)


def map_file(path: Path, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
    """A read-only array over a raw file of `dtype` values in C order."""
    with open(path, "rb") as handle:
        mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
    return np.frombuffer(mapped, dtype=dtype).reshape(shape)


class RowStore:
    """A run-owned folder of raw row files, each mapped read-only (module doc)."""

    def __init__(self, parent: Path | None = None, prefix: str = ".coresets-") -> None:
        if parent is not None:
            parent.mkdir(parents=True, exist_ok=True)
        self.folder = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
        self._count = 0

    def _path(self, name: str) -> Path:
        self._count += 1
        safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in name)
        return self.folder / f"{self._count:06d}-{safe}.f32"

    def put(self, name: str, rows: np.ndarray) -> np.ndarray:
        """`rows` (float32, 2-D) written to the store; the mapped copy to use instead."""
        rows = np.ascontiguousarray(rows)
        if rows.size == 0:
            return rows
        path = self._path(name)
        with open(path, "wb") as handle:
            rows.tofile(handle)
        return map_file(path, rows.dtype, rows.shape)

    def union(self, name: str, parts: Sequence[np.ndarray]) -> np.ndarray:
        """The non-empty parts one after another as float32, in one mapped file: what
        `np.concatenate` of them gives, without holding the parts and the union in memory
        at once (each part's pages are released once written). The file is unlinked at
        once: it lives as long as the returned array."""
        kept = [p for p in parts if len(p)]
        path = self._path(name)
        with open(path, "wb") as handle:
            for part in kept:
                for start in range(0, len(part), CHUNK_ROWS):
                    chunk = part[start : start + CHUNK_ROWS]
                    np.ascontiguousarray(chunk, dtype=np.float32).tofile(handle)
                release(part)
        rows = sum(len(p) for p in kept)
        union = map_file(path, np.dtype(np.float32), (rows, int(kept[0].shape[1])))
        path.unlink()
        return union

    def close(self) -> None:
        """Remove the folder (mapped arrays still open keep reading their files)."""
        shutil.rmtree(self.folder, ignore_errors=True)


def gather(union: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """`union[indices]` (a new array in memory), reading a mapped union in file order a
    chunk at a time and releasing its pages as it goes."""
    if not is_mapped(union):
        return np.ascontiguousarray(union[indices])
    out = np.empty((len(indices), union.shape[1]), dtype=union.dtype)
    order = np.argsort(indices, kind="stable")
    for start in range(0, len(order), CHUNK_ROWS):
        chunk = order[start : start + CHUNK_ROWS]
        out[chunk] = union[indices[chunk]]
        release(union)
    return out
