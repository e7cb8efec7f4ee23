"""A keyed random rotation of the feature space: clients share rotated rows.

Every client rotates its patch features with the same orthogonal matrix Q (drawn from the
share key, `rotation_matrix`) before anything leaves it, and rotates its test features the
same way before scoring. Distances are preserved (||xQ - yQ|| = ||x - y||), so the nearest-
neighbour scores are unchanged, and so is any merge that decides by exact distances. The
greedy k-center merge decides in a seeded random Gaussian projection P of the rows: on
rotated rows it uses QP, which is again a Gaussian projection (another draw of it), so the
merged bank is a different but equally good coreset (the audit measures its detector).

The server never holds Q. It does see the norms and all pairwise distances of the rows,
which a rotation cannot hide: the audit attacks them.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedpatch_app.errors import ConfigError
from fedpatch_app.privacy.keys import ShareKey


def rotation_matrix(key: ShareKey, dim: int) -> np.ndarray:
    """The key's orthogonal (dim, dim) matrix (Haar-distributed: QR of a Gaussian matrix
    with the signs fixed), the same on every client."""
    seed = int.from_bytes(key.derive(f"fedpatch rotation v1 dim {dim}"), "big")
    gauss = np.random.default_rng(seed).standard_normal((dim, dim))
    q, r = np.linalg.qr(gauss)
    return q * np.sign(np.diag(r))


@dataclass
class Rotation:
    """Q of one share key and dimension, with the key's public id."""

    matrix: np.ndarray
    key_id: str

    @classmethod
    def of(cls, key: ShareKey, dim: int) -> Rotation:
        return cls(rotation_matrix(key, dim), key.key_id)

    def apply(self, rows: np.ndarray) -> np.ndarray:
        return (np.asarray(rows, dtype=np.float64) @ self.matrix).astype(np.float32)

    def undo(self, rows: np.ndarray, key_id: str, what: str) -> np.ndarray:
        check_key(self.key_id, key_id, what)
        return (np.asarray(rows, dtype=np.float64) @ self.matrix.T).astype(np.float32)


def check_key(have: str | None, want: str, what: str) -> None:
    """Refuse to use rows rotated with share key `want` without it, naming both keys."""
    if have is None:
        raise ConfigError(
            f"{what} was rotated with share key {want}, and no share key was given (--share-key)"
        )
    if have != want:
        raise ConfigError(
            f"{what} was rotated with share key {want}, but the share key given is {have}"
        )


def same_key(parts: Sequence[tuple[str, str]], category: str) -> str:
    """The one key id of a category's parts `(client name, key id)`; refuse a mix by name."""
    ids = {k for _, k in parts}
    if len(ids) > 1:
        first = parts[0][1]
        odd = ", ".join(f"{name} ({k})" for name, k in parts if k != first)
        raise ConfigError(
            f"{category}: rows rotated with different share keys cannot be merged: "
            f"{parts[0][0]} used {first}; {odd}"
        )
    return parts[0][1]


class RotatedExtractor:
    """A feature extractor whose patch features come out rotated (a client's scoring)."""

    def __init__(self, inner: Any, rotation: Rotation) -> None:
        self.inner = inner
        self.rotation = rotation

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def extract_iter(self, paths: Sequence[Any], *args: Any, **kwargs: Any) -> Iterator:
        """The inner extractor's batches (whatever it is asked: description, native
        size), each rotated."""
        for start, feats in self.inner.extract_iter(paths, *args, **kwargs):
            shape = feats.shape
            yield start, self.rotation.apply(feats.reshape(-1, shape[-1])).reshape(shape)

    def extract(self, paths: Sequence[Any], *args: Any, **kwargs: Any) -> np.ndarray:
        feats = self.inner.extract(paths, *args, **kwargs)
        return self.rotation.apply(feats.reshape(-1, feats.shape[-1])).reshape(feats.shape)
