"""Approximate nearest-neighbour search of a memory bank: an inverted-file index (IVF) with
an exact re-rank of the few best candidates.

Building (`IvfIndex.build`): k-means with a fixed seed (Lloyd's iterations, a fixed number
of them, on a seeded sample of the rows) splits the bank into `lists` cells around their
centroids; every bank row is filed under its nearest centroid.

Searching (`IvfIndex.search`), per query: the `probe` nearest centroids name the cells
searched; every row of those cells is a candidate, its squared distance estimated with
the matrix-product form ``||b||^2 - 2 q.b`` (one matrix product per cell for all the
queries that probe it, so the cell's rows are read once per batch, not once per query);
the `rerank` candidates with the smallest estimates are measured exactly (the difference
of the two rows, squared and summed in float64) and the smallest exact distance is the
answer. The score is therefore the exact distance to the true nearest row whenever that
row is among the re-ranked candidates; otherwise it is the exact distance to another row,
never less than the true one.

Deterministic: the index is a pure function of the bank's bytes and the parameters (the
seed included); it is written as an uncompressed .npz with fixed member dates, so the same
bank and parameters give the same bytes. The matrix products run in numpy's BLAS, whose
result for one entry does not depend on how many threads share the product, and every
choice (nearest centroid, best candidates) breaks ties by the lower index.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import os
import sys
import weakref
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from fedpatch_app.errors import ModelError

log = logging.getLogger(__name__)

INDEX_FORMAT = "fedpatch-ivf/1"
#: Rows of the k-means training sample per cell.
SAMPLE_PER_LIST = 48
#: Queries handled together (bounds the candidate buffers).
QUERY_CHUNK = 8192
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)
#: Indexes built in this process, by bank digest and parameters (a run builds a bank's
#: index for its calibration and writes the same one into the model folder).
_BUILT: dict[tuple[str, IvfParams], IvfIndex] = {}
_BUILT_MAX = 16
#: `search = auto`: the bank size (rows) from which a category is searched through the
#: approximate index; smaller banks are searched exactly. Measured with
#: benchmarks/search_crossover.py (docs/performance.md): below it exact search costs a
#: small share of the backbone's forward and the index would change the figures for
#: nothing.
AUTO_MIN_ROWS = 10_000


@dataclass(frozen=True)
class IvfParams:
    """How the index is built and searched. `lists` 0: chosen from the bank size
    (`lists_for`)."""

    lists: int = 0
    probe: int = 8
    rerank: int = 4
    iterations: int = 8
    seed: int = 0
    #: Banks with fewer rows are searched exactly (`search = auto`); 0: every bank
    #: through the index. A choice of the run, not part of a built index (`stored`).
    min_rows: int = 0

    def __post_init__(self) -> None:
        for name in ("probe", "rerank", "iterations"):
            if int(getattr(self, name)) < 1:
                raise ModelError(f"search index: {name} must be >= 1, got {getattr(self, name)}")
        for name in ("lists", "min_rows"):
            if int(getattr(self, name)) < 0:
                raise ModelError(f"search index: {name} must be >= 0, got {getattr(self, name)}")

    def stored(self) -> dict[str, int]:
        """The parameters a built index records (in its file and in model.json)."""
        out = asdict(self)
        del out["min_rows"]
        return out


def search_kind(rows: int, params: IvfParams | None) -> str:
    """ "approximate" or "exact": how a bank of `rows` is searched under `params`
    (`search_params`; None: exact)."""
    if params is None or rows < params.min_rows:
        return "exact"
    return "approximate"


def for_bank(rows: int, params: IvfParams | None) -> IvfParams | None:
    """`params` for a bank of `rows` (None where it is searched exactly), the choice fixed
    (`min_rows` 0): what a derived bank (a cross-fitting fold's) is searched with so
    that it follows the choice made for the category's own bank."""
    if params is None or rows < params.min_rows:
        return None
    return IvfParams(**{**asdict(params), "min_rows": 0})


def search_params(settings: Any) -> IvfParams | None:
    """The index parameters a run's settings ask for (`search`, `search_probe`, `seed`);
    None for exact search. `search = auto`: the index only for banks of at least
    `AUTO_MIN_ROWS` rows (`min_rows`; `search_kind` tells a bank's choice)."""
    kind = getattr(settings, "search", "exact")
    if kind not in ("approximate", "auto"):
        return None
    min_rows = AUTO_MIN_ROWS if kind == "auto" else 0
    return IvfParams(probe=int(settings.search_probe), seed=int(settings.seed), min_rows=min_rows)


def built_index(features: np.ndarray, params: IvfParams | None) -> IvfIndex | None:
    """`IvfIndex.build`, once per bank and parameters in this process; None where the
    bank is searched exactly (`params` None, or fewer rows than `params.min_rows`)."""
    params = for_bank(int(features.shape[0]), params)
    if params is None:
        return None
    key = (bank_digest(features), params)
    if key not in _BUILT:
        if len(_BUILT) >= _BUILT_MAX:
            del _BUILT[next(iter(_BUILT))]
        _BUILT[key] = IvfIndex.build(features, params)
    return _BUILT[key]


def search_threads() -> int:
    """Threads of the approximate search: torch's thread setting where torch is loaded
    (the runs and the PyTorch line path), else the CPUs this process may use (the line
    runtime without PyTorch). Importing torch here would defeat that runtime."""
    torch = sys.modules.get("torch")
    if torch is not None:
        return max(1, int(torch.get_num_threads()))
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def lists_for(rows: int) -> int:
    """Cells for a bank of `rows`: about 2 sqrt(rows) (a 20,000-row bank gets 283, about
    70 rows each), at least 1 and at most rows."""
    return max(1, min(rows, round(2 * math.sqrt(rows))))


def bank_digest(features: np.ndarray) -> str:
    """SHA-256 of the bank's float32 bytes and shape: the bank an index belongs to."""
    data = np.ascontiguousarray(features, dtype=np.float32)
    digest = hashlib.sha256(repr(data.shape).encode("ascii"))
    digest.update(data.tobytes())
    return digest.hexdigest()


def _memory(features: np.ndarray) -> tuple:
    """Where an array's data lies, its shape and dtype."""
    return features.__array_interface__["data"], features.shape, features.dtype.str


def _sq_norms(x: np.ndarray) -> np.ndarray:
    return np.einsum("ij,ij->i", x, x)


def _nearest(x: np.ndarray, centroids: np.ndarray, chunk: int = 4096) -> np.ndarray:
    """Index of each row's nearest centroid (ties: the lower index)."""
    c_sq = _sq_norms(centroids)
    out = np.empty(x.shape[0], dtype=np.int64)
    for s in range(0, x.shape[0], chunk):
        d = c_sq[None, :] - 2.0 * (x[s : s + chunk] @ centroids.T)
        out[s : s + chunk] = np.argmin(d, axis=1)
    return out


def _kmeans(features: np.ndarray, lists: int, iterations: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rows = features.shape[0]
    size = min(rows, SAMPLE_PER_LIST * lists)
    sample = features[np.sort(rng.choice(rows, size=size, replace=False))]
    centroids = sample[np.sort(rng.choice(size, size=lists, replace=False))].copy()
    for _ in range(iterations):
        assign = _nearest(sample, centroids)
        counts = np.bincount(assign, minlength=lists)
        filled = np.flatnonzero(counts)
        by_cell = sample[np.argsort(assign, kind="stable")].astype(np.float64)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])[filled]
        sums = np.add.reduceat(by_cell, starts, axis=0)
        centroids[filled] = (sums / counts[filled, None]).astype(np.float32)
    return centroids


@dataclass
class IvfIndex:
    """Centroids (lists, D) float32; `order`: bank row ids grouped by cell; `offsets`
    (lists + 1): cell `l` holds ``order[offsets[l]:offsets[l + 1]]``."""

    params: IvfParams
    centroids: np.ndarray
    order: np.ndarray
    offsets: np.ndarray
    bank_sha256: str
    #: The array `check` last passed on (a weak reference) and where its data lay.
    _checked: tuple | None = field(default=None, init=False, repr=False, compare=False)

    @classmethod
    def build(cls, features: np.ndarray, params: IvfParams = IvfParams()) -> IvfIndex:
        bank = np.ascontiguousarray(features, dtype=np.float32)
        lists = min(params.lists or lists_for(bank.shape[0]), bank.shape[0])
        centroids = _kmeans(bank, lists, params.iterations, params.seed)
        assign = _nearest(bank, centroids)
        order = np.argsort(assign, kind="stable").astype(np.int64)
        offsets = np.zeros(lists + 1, dtype=np.int64)
        offsets[1:] = np.cumsum(np.bincount(assign, minlength=lists))
        fixed = IvfParams(**{**params.stored(), "lists": lists})
        log.debug("search index: %d rows in %d cells", bank.shape[0], lists)
        return cls(fixed, centroids, order, offsets, bank_digest(bank))

    @property
    def lists(self) -> int:
        return int(self.centroids.shape[0])

    def to_bytes(self) -> bytes:
        """The index as an uncompressed .npz whose bytes depend only on its content."""
        meta = {"format": INDEX_FORMAT, "params": self.params.stored(), "bank": self.bank_sha256}
        arrays = {
            "meta": np.frombuffer(json.dumps(meta, sort_keys=True).encode("utf-8"), np.uint8),
            "centroids": self.centroids,
            "order": self.order,
            "offsets": self.offsets,
        }
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
            for name, array in arrays.items():
                member = io.BytesIO()
                np.lib.format.write_array(member, np.ascontiguousarray(array), allow_pickle=False)
                archive.writestr(zipfile.ZipInfo(f"{name}.npy", _ZIP_DATE), member.getvalue())
        return buffer.getvalue()

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(self.to_bytes())
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path, features: np.ndarray) -> IvfIndex:
        """An index file, checked against the bank it must belong to (ModelError naming
        the file otherwise). Never unpickles."""
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as data:
                meta = json.loads(bytes(data["meta"]).decode("utf-8"))
                arrays = {k: data[k] for k in ("centroids", "order", "offsets")}
            params = IvfParams(**meta["params"])
        except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as exc:
            raise ModelError(f"search index {path} is unreadable: {exc}") from None
        if meta.get("format") != INDEX_FORMAT:
            raise ModelError(
                f"search index {path}: format {meta.get('format')!r} is not {INDEX_FORMAT}"
            )
        index = cls(params, arrays["centroids"], arrays["order"], arrays["offsets"], meta["bank"])
        index.check(features, str(path))
        return index

    def check(self, features: np.ndarray, where: str) -> None:
        """ModelError unless the index is well formed and belongs to `features`."""
        rows, dim = features.shape
        c, order, offsets = self.centroids, self.order, self.offsets
        centroids_ok = c.dtype == np.float32 and c.ndim == 2 and c.shape[1] == dim
        order_ok = order.dtype == np.int64 and order.shape == (rows,)
        lists_ok = c.shape[0] >= 1 and offsets.dtype == np.int64
        bad = not (centroids_ok and order_ok and lists_ok and offsets.shape == (c.shape[0] + 1,))
        if bad or offsets[0] != 0 or offsets[-1] != rows or np.any(np.diff(offsets) < 0):
            raise ModelError(f"search index {where} does not fit a bank of {rows} x {dim}")
        if not np.array_equal(np.sort(order), np.arange(rows)) or not np.isfinite(c).all():
            raise ModelError(f"search index {where} is malformed (rows or centroids)")
        if self.bank_sha256 != bank_digest(features):
            raise ModelError(f"search index {where} was built for another bank")
        self._checked = (weakref.ref(features), _memory(features))

    def checked_against(self, features: np.ndarray) -> bool:
        """Whether `check` passed on this very array (same object, memory and shape), so
        that a bank loaded and checked once is not hashed again where it is searched. A
        bank is not changed in place once loaded; a new array is checked anew."""
        checked = self._checked
        return checked is not None and checked[0]() is features and checked[1] == _memory(features)


def exact_distances(queries: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Distances of each query (n, D) to its rows (n, k, D): the difference squared and
    summed in float64, then the square root, as float64 (n, k)."""
    diff = rows.astype(np.float64) - queries.astype(np.float64)[:, None, :]
    return np.sqrt(np.einsum("nkd,nkd->nk", diff, diff))


class IvfSearch:
    """An `IvfIndex` ready to search its bank (the bank's rows regrouped cell by cell)."""

    def __init__(self, index: IvfIndex, features: np.ndarray) -> None:
        self.index = index
        self.features = np.ascontiguousarray(features, dtype=np.float32)
        self.grouped = self.features[index.order]
        self.grouped_sq = _sq_norms(self.grouped)
        self.centroid_sq = _sq_norms(index.centroids)

    def nearest(self, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Distance (float32) and bank row (int64) of each query's nearest candidate.

        The queries are split into pieces searched on `search_threads()` threads, each
        with a single-threaded BLAS: the many small products of the cells would spend
        more time handing work between BLAS threads than computing. A query's answer
        does not depend on the piece it is in."""
        n = queries.shape[0]
        dist = np.empty(n, dtype=np.float32)
        idx = np.empty(n, dtype=np.int64)
        threads = search_threads()
        step = max(256, min(QUERY_CHUNK, -(-n // threads)))

        def piece(s: int) -> None:
            q = np.ascontiguousarray(queries[s : s + step], dtype=np.float32)
            dist[s : s + step], idx[s : s + step] = self._chunk(q)

        with threadpool_limits(limits=1, user_api="blas"):
            if threads == 1 or n <= step:
                for s in range(0, n, step):
                    piece(s)
            else:
                with ThreadPoolExecutor(threads, thread_name_prefix="ann") as pool:
                    list(pool.map(piece, range(0, n, step)))
        return dist, idx

    def patch_scores(self, queries: np.ndarray) -> np.ndarray:
        """Distance of each query ``(N, D)`` to its nearest candidate, float32 ``(N,)``
        (what the line runtime's exact `NearestBank.patch_scores` gives)."""
        q = np.asarray(queries)
        if q.ndim != 2 or q.shape[1] != self.features.shape[1]:
            raise ModelError(
                f"search index: queries of shape {q.shape} against a bank of "
                f"{self.features.shape[1]} dimensions"
            )
        return self.nearest(q)[0]

    def _probes(self, q: np.ndarray) -> np.ndarray:
        """The `probe` nearest cells of each query (n, probe)."""
        p = min(self.index.params.probe, self.index.lists)
        coarse = self.centroid_sq[None, :] - 2.0 * (q @ self.index.centroids.T)
        if p == self.index.lists:
            return np.broadcast_to(np.arange(p), coarse.shape).copy()
        return np.argpartition(coarse, p - 1, axis=1)[:, :p]

    def _candidates(self, q: np.ndarray, probes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per query, the `rerank` best rows of each probed cell by the estimated squared
        distance (minus ||q||^2): (estimates, grouped positions), -1 where none."""
        n, p = probes.shape
        r = self.index.params.rerank
        est = np.full((n, p * r), np.inf, dtype=np.float32)
        pos = np.full((n, p * r), -1, dtype=np.int64)
        flat = probes.ravel()
        by_cell = np.argsort(flat, kind="stable")
        bounds = np.searchsorted(flat[by_cell], np.arange(self.index.lists + 1))
        offsets = self.index.offsets
        for cell in range(self.index.lists):
            lo, hi = int(offsets[cell]), int(offsets[cell + 1])
            pairs = by_cell[bounds[cell] : bounds[cell + 1]]
            if hi == lo or pairs.size == 0:
                continue
            qs, slot = pairs // p, pairs % p
            d = self.grouped_sq[None, lo:hi] - 2.0 * (q[qs] @ self.grouped[lo:hi].T)
            k = min(r, hi - lo)
            top = np.argpartition(d, k - 1, axis=1)[:, :k] if hi - lo > k else None
            if top is None:
                top = np.broadcast_to(np.arange(k), (qs.size, k))
            cols = slot[:, None] * r + np.arange(k)
            est[qs[:, None], cols] = np.take_along_axis(d, top, axis=1)
            pos[qs[:, None], cols] = lo + top
        return est, pos

    def _chunk(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        est, pos = self._candidates(q, self._probes(q))
        k = min(self.index.params.rerank, est.shape[1])
        best = np.argpartition(est, k - 1, axis=1)[:, :k] if est.shape[1] > k else None
        if best is not None:
            pos = np.take_along_axis(pos, best, axis=1)
        dist = np.empty(q.shape[0], dtype=np.float32)
        idx = np.empty(q.shape[0], dtype=np.int64)
        for s in range(0, q.shape[0], 512):
            dist[s : s + 512], idx[s : s + 512] = self._rerank(q[s : s + 512], pos[s : s + 512])
        return dist, idx

    def _rerank(self, q: np.ndarray, pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The exactly nearest of each query's candidates (ties: the lower bank row); a
        query without candidates (its cells all empty) is searched over the whole bank."""
        valid = pos >= 0
        exact = exact_distances(q, self.grouped[np.where(valid, pos, 0)])
        exact[~valid] = np.inf
        rows = np.where(valid, self.index.order[np.where(valid, pos, 0)], np.iinfo(np.int64).max)
        pick = np.lexsort((rows, exact), axis=1)[:, 0]
        dist = np.take_along_axis(exact, pick[:, None], axis=1)[:, 0]
        idx = np.take_along_axis(rows, pick[:, None], axis=1)[:, 0]
        empty = np.flatnonzero(~valid.any(axis=1))
        for i in empty:  # pragma: no cover - needs every probed cell empty
            whole = exact_distances(q[i : i + 1], self.features[None])[0]
            idx[i] = int(np.argmin(whole))
            dist[i] = whole[idx[i]]
        return dist.astype(np.float32), idx
