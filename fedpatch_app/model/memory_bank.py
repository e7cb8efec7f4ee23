"""Memory bank: nearest-neighbour search of patch features and PatchCore scores.

Exact by default; given an `IvfIndex` (`ann=`, see `ann_index`), the nearest-row search
(`search` with k = 1, hence `patch_scores` and `image_score`'s worst patch) is approximate
with an exact re-rank of the best candidates; k > 1 stays exact.

Backends (``backend=``):

* ``"faiss"``: ``faiss.IndexFlatL2`` (exact). On a CUDA device it uses FAISS-GPU when the
  installed FAISS has it (``StandardGpuResources``, on the torch device's index).
* ``"torch"``: chunked ``||q||^2 - 2 q.b + ||b||^2`` matrix products + ``topk`` on the
  bank's device (CPU, CUDA or MPS).
* ``"auto"`` (default): FAISS on CPU, FAISS-GPU on CUDA when available, else torch.

Queries are processed in chunks, so memory stays bounded whatever their number.
Distances are Euclidean (FAISS returns squared distances: tiny negative rounding
errors are clamped to 0 before the square root).
"""

from __future__ import annotations

import logging
import math
import threading
from typing import Any

import numpy as np
import torch

from fedpatch_app.errors import ModelError
from fedpatch_app.model.ann_index import IvfIndex, IvfParams, IvfSearch, built_index

logger = logging.getLogger(__name__)

#: Bytes of the largest (query chunk x bank) distance block the torch backend builds.
TORCH_BLOCK_BYTES = 256 * 2**20
#: Queries sent to FAISS at a time.
FAISS_CHUNK_ROWS = 65_536

BACKENDS = ("auto", "faiss", "torch")


def _faiss():
    try:
        import faiss
    except ImportError:  # pragma: no cover - faiss-cpu is a dependency
        return None
    return faiss


def _as_float32_matrix(x: np.ndarray | torch.Tensor, name: str, dim: int | None) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().to("cpu", torch.float32).numpy()
    x = np.asarray(x)
    if x.ndim != 2:
        raise ModelError(f"memory bank: {name} must be 2-D (N, D), got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.floating):
        raise ModelError(f"memory bank: {name} must hold floats, got dtype {x.dtype}")
    if dim is not None and x.shape[1] != dim:
        raise ModelError(f"memory bank: {name} have {x.shape[1]} dimensions but the bank has {dim}")
    x = np.ascontiguousarray(x, dtype=np.float32)
    if not np.isfinite(x).all():
        bad = int(np.flatnonzero(~np.isfinite(x).all(axis=1))[0])
        raise ModelError(f"memory bank: {name} row {bad} holds NaN or infinite values")
    return x


def _choose_backend(backend: str, device: torch.device, faiss: Any) -> str:
    """The exact-search backend: FAISS on the CPU (or a GPU FAISS build), else torch;
    ModelError when FAISS is asked for where it cannot run."""
    gpu_faiss = (
        faiss is not None
        and device.type == "cuda"
        and hasattr(faiss, "StandardGpuResources")
        and faiss.get_num_gpus() > 0
    )
    if backend == "auto":
        if (device.type == "cpu" and faiss is not None) or gpu_faiss:
            return "faiss"
        return "torch"
    if backend == "faiss":
        if faiss is None:
            raise ModelError("memory bank: backend 'faiss' asked for, but faiss is not installed")
        if device.type not in ("cpu", "cuda") or (device.type == "cuda" and not gpu_faiss):
            raise ModelError(
                f"memory bank: backend 'faiss' cannot run on device {device} "
                "(the installed FAISS has no GPU support there); use backend 'torch'"
            )
    return backend


class MemoryBank:
    """Exact k-nearest-neighbour search over ``features`` (M, D) float32."""

    def __init__(
        self,
        features: np.ndarray | torch.Tensor,
        device: str | torch.device | None = None,
        backend: str = "auto",
        ann: IvfIndex | None = None,
    ) -> None:
        if backend not in BACKENDS:
            raise ModelError(f"memory bank: backend must be one of {BACKENDS}, got {backend!r}")
        bank = _as_float32_matrix(features, "bank features", None)
        if bank.shape[0] == 0 or bank.shape[1] == 0:
            raise ModelError(f"memory bank: bank features are empty, shape {bank.shape}")
        self.features = bank
        self.device = torch.device("cpu") if device is None else torch.device(device)
        self._faiss = _faiss()
        self.backend = _choose_backend(backend, self.device, self._faiss)
        self.ann: IvfSearch | None = None
        if ann is not None:
            if not ann.checked_against(bank):
                ann.check(bank, "given to the memory bank")
            self.ann = IvfSearch(ann, bank)
        self._index = None
        self._gpu_resources = None
        self._bank_t: torch.Tensor | None = None
        self._bank_sqn: torch.Tensor | None = None
        self._exact_lock = threading.Lock()
        if self.ann is None:
            self._exact()
        logger.debug(
            "memory bank: %d x %d, backend %s on %s", *bank.shape, self.backend, self.device
        )

    def _exact(self) -> None:
        """The exact search's structures (FAISS index or the bank on the torch device),
        made once: at once without an approximate index, else at the first search that
        needs them (k > 1), so that a line searching through the index never builds them."""
        with self._exact_lock:
            if self._index is None and self._bank_sqn is None:
                self._build_exact()

    def _build_exact(self) -> None:
        bank = self.features
        if self.backend == "faiss":
            index = self._faiss.IndexFlatL2(bank.shape[1])
            if self.device.type == "cuda":
                gpu_index = (
                    self.device.index
                    if self.device.index is not None
                    else torch.cuda.current_device()
                )
                self._gpu_resources = self._faiss.StandardGpuResources()
                index = self._faiss.index_cpu_to_gpu(self._gpu_resources, gpu_index, index)
            index.add(bank)
            self._index = index
        else:
            self._bank_t = torch.from_numpy(bank).to(self.device)
            self._bank_sqn = (self._bank_t * self._bank_t).sum(dim=1)

    def __len__(self) -> int:
        return int(self.features.shape[0])

    @property
    def dim(self) -> int:
        return int(self.features.shape[1])

    def search(
        self, queries: np.ndarray | torch.Tensor, k: int = 1
    ) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` nearest bank rows of each query: ``(distances float32 (N, k), indices int64 (N, k))``.

        Distances are Euclidean, ascending per row.
        """
        if isinstance(k, bool) or int(k) < 1 or int(k) > len(self):
            raise ModelError(
                f"memory bank: k must be between 1 and the bank size {len(self)}, got {k}"
            )
        k = int(k)
        q = _as_float32_matrix(queries, "queries", self.dim)
        n = q.shape[0]
        dist = np.empty((n, k), dtype=np.float32)
        idx = np.empty((n, k), dtype=np.int64)
        if n == 0:
            return dist, idx
        if k == 1 and self.ann is not None:
            near, rows = self.ann.nearest(q)
            return near[:, None], rows[:, None]
        self._exact()
        if self.backend == "faiss":
            for start in range(0, n, FAISS_CHUNK_ROWS):
                stop = min(n, start + FAISS_CHUNK_ROWS)
                d2, ii = self._index.search(q[start:stop], k)
                dist[start:stop] = d2
                idx[start:stop] = ii
        else:
            rows = max(1, TORCH_BLOCK_BYTES // (4 * len(self)))
            bank_t, bank_sqn = self._bank_t, self._bank_sqn
            for start in range(0, n, rows):
                stop = min(n, start + rows)
                qt = torch.from_numpy(q[start:stop]).to(self.device)
                d2 = torch.addmm(bank_sqn.unsqueeze(0), qt, bank_t.t(), alpha=-2.0)
                d2.add_((qt * qt).sum(dim=1, keepdim=True))
                vals, ii = torch.topk(d2, k, dim=1, largest=False, sorted=True)
                dist[start:stop] = vals.cpu().numpy()
                idx[start:stop] = ii.cpu().numpy()
        np.maximum(dist, 0.0, out=dist)
        np.sqrt(dist, out=dist)
        return dist, idx

    def patch_scores(self, queries: np.ndarray | torch.Tensor) -> np.ndarray:
        """Distance of each query to its nearest bank row, float32 ``(N,)``."""
        dist, _ = self.search(queries, k=1)
        return dist[:, 0]

    def image_score(
        self, patch_features: np.ndarray | torch.Tensor, reweight: bool = False, b: int = 9
    ) -> float:
        """Image anomaly score from the image's patch features ``(P, D)``.

        Without ``reweight``: the largest patch score ``s*``. With ``reweight``
        (PatchCore paper, Eq. 7): let ``m_test*`` be the patch attaining ``s*`` and
        ``m*`` its nearest bank row; ``N_b(m*)`` the ``b`` nearest bank rows of ``m*``
        (``m*`` itself first). The score is ``s = (1 - w) * s*`` with
        ``w = exp(||m_test* - m*||) / sum_{m in N_b(m*)} exp(||m_test* - m||)``
        (a softmax, computed stably): an anomalous-looking patch whose nearest bank
        element sits in a sparse region of the bank is weighted up, one in a dense region
        (where its distance is less surprising) down.
        """
        q = _as_float32_matrix(patch_features, "patch features", self.dim)
        if q.shape[0] == 0:
            raise ModelError("memory bank: image_score got no patch features")
        dist, idx = self.search(q, k=1)
        worst = int(np.argmax(dist[:, 0]))
        s_star = float(dist[worst, 0])
        if not reweight:
            return s_star
        if isinstance(b, bool) or int(b) < 1:
            raise ModelError(f"memory bank: b must be >= 1, got {b}")
        b = min(int(b), len(self))
        m_star = int(idx[worst, 0])
        _, neighbours = self.search(self.features[m_star : m_star + 1], k=b)
        support = [int(i) for i in neighbours[0]]
        if m_star in support:  # with duplicate rows, m* may be listed after a twin
            support.remove(m_star)
        support = [m_star, *support][:b]
        diffs = self.features[support].astype(np.float64) - q[worst].astype(np.float64)
        dists = np.sqrt((diffs * diffs).sum(axis=1))
        dists[0] = s_star
        shifted = np.exp(dists - dists.max())
        weight = 1.0 - shifted[0] / shifted.sum()
        return float(weight * s_star) if math.isfinite(weight) else s_star


def bank_index(
    features: np.ndarray, device: str | torch.device | None, search: IvfParams | None
) -> MemoryBank:
    """The search a run and the line use for a bank: exact (`search` None) or through the
    bank's approximate index, built once per bank and parameters (`ann_index.built_index`)."""
    return MemoryBank(features, device=device, ann=built_index(features, search))
