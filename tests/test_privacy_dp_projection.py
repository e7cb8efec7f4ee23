"""The dp_projection share mode: DP cluster summaries in a public low-dimensional subspace
(fedpatch_app/privacy/dp_projection.py)."""

from __future__ import annotations

import math
import zlib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from pydantic import ValidationError

from fedpatch_app.errors import ConfigError
from fedpatch_app.model import dp
from fedpatch_app.model.embedding import FeatureSpec
from fedpatch_app.privacy import dp_projection as P
from fedpatch_app.privacy.settings import AuditSettings
from fedpatch_app.settings.schema import DPSettings

WIDTH = 64
CONFIG = DPSettings(epsilon=8.0, centres=12, clusters_per_image=3, public_images=2)


class FakeModel:
    """Patch features from a hash of each path's name; records every path it is shown."""

    def __init__(self) -> None:
        self.spec = FeatureSpec(weights="none", image_size=64, embed_dim=WIDTH, projection_dim=None)
        self.seen: list[Path] = []

    def features(self, paths, desc: str = "") -> np.ndarray:
        self.seen += [Path(p) for p in paths]
        out = []
        for p in paths:
            rng = np.random.default_rng(zlib.crc32(Path(p).name.encode()))
            base = rng.gamma(2.0, 1.0, size=WIDTH) * np.linspace(3.0, 0.1, WIDTH)
            out.append(base + rng.normal(0.0, 0.5, size=(6, 6, WIDTH)))
        return np.asarray(out, dtype=np.float32)


def _private(n: int = 10, seed: int = 5) -> np.ndarray:
    rng = np.random.default_rng(seed)
    scale = np.linspace(3.0, 0.1, WIDTH)
    return (rng.gamma(2.0, 1.0, size=(n, 6, 6, WIDTH)) * scale).astype(np.float32)


def test_the_projection_is_public_and_the_same_for_every_client() -> None:
    """Derived from the DP public reference images only (no private path is read), the
    same on every client (another client derives the same matrix), orthonormal rows."""
    a, b = FakeModel(), FakeModel()
    pa = P.public_setup(a, "pipe_clip", CONFIG, 8)
    pb = P.public_setup(b, "pipe_clip", CONFIG, 8)
    assert all(p.name.startswith("public-pipe_clip-") for p in a.seen + b.seen)
    np.testing.assert_allclose(pa.projection.matrix, pb.projection.matrix, atol=1e-9)
    np.testing.assert_allclose(pa.centres, pb.centres, atol=1e-6)
    assert pa.clip == pb.clip
    m = pa.projection.matrix
    np.testing.assert_allclose(m @ m.T, np.eye(8), atol=1e-9)
    share = SimpleNamespace(category="pipe_clip")
    one = P.release(_private(seed=1), share, pa, CONFIG, np.random.default_rng(0))
    two = P.release(_private(seed=2), share, pb, CONFIG, np.random.default_rng(1))
    assert one.part.dp["digest"] == two.part.dp["digest"]
    # What the server holds lies in the public subspace.
    rows = one.part.features.astype(np.float64)
    np.testing.assert_allclose(pa.projection.flatten(rows), rows, atol=1e-4)


def test_noise_norm_falls_with_the_dimension_at_fixed_epsilon() -> None:
    """Same accounting (the dp mode's sigma per coordinate and epsilon spent) at every
    dimension; the noise actually added to a cluster sum has norm sigma sqrt(d)."""
    model = FakeModel()
    feats = _private(40)
    share = SimpleNamespace(category="pipe_clip")
    norms, sigmas = {}, set()
    for d in (4, 16, 48):
        pub = P.public_setup(model, "pipe_clip", CONFIG, d)
        pub = P.Public(pub.projection, pub.centres, 1.0)  # one clip for every d
        rel = P.release(feats, share, pub, CONFIG, np.random.default_rng(d))
        assert rel.noise.shape == (CONFIG.centres, d)
        assert rel.epsilon == pytest.approx(CONFIG.epsilon, rel=1e-9)
        sigmas.add(round(rel.sigma, 12))
        norms[d] = float(np.linalg.norm(rel.noise, axis=1).mean())
        assert norms[d] == pytest.approx(rel.sigma * math.sqrt(d), rel=0.25)
    assert len(sigmas) == 1
    z = dp.noise_multiplier(CONFIG.epsilon, CONFIG.delta)
    assert sigmas.pop() == pytest.approx(z * math.sqrt(CONFIG.clusters_per_image) * 1.0)
    assert norms[4] < norms[16] < norms[48]


def test_scoring_in_the_subspace_keeps_its_distances() -> None:
    rng = np.random.default_rng(3)
    proj = P.public_projection(rng.normal(size=(500, WIDTH)), 6, "pipe_clip")
    x, y = rng.normal(size=(20, WIDTH)), rng.normal(size=(20, WIDTH))
    flat = np.linalg.norm(proj.flatten(x) - proj.flatten(y), axis=1)
    low = np.linalg.norm(proj.down(x) - proj.down(y), axis=1)
    np.testing.assert_allclose(flat, low, rtol=1e-9)
    inner = SimpleNamespace(extract=lambda paths, *a, **k: x.reshape(1, 4, 5, WIDTH))
    out = P.ProjectedExtractor(inner, proj).extract(["a.png"], "scoring", (64, 64))
    np.testing.assert_allclose(out.reshape(20, WIDTH), proj.flatten(x), atol=1e-5)


def test_a_wrong_epsilon_or_dimension_is_refused_by_name() -> None:
    for eps in (0.0, -1.0, math.nan, math.inf):
        with pytest.raises(ConfigError, match="--dp-epsilon must be a finite number > 0"):
            P.check(eps, 16, 152)
    for dim in (0, 152, 400):
        with pytest.raises(ConfigError, match=f"--projection-dim must be between 1 and 151.*{dim}"):
            P.check(8.0, dim, 152)
    with pytest.raises(ConfigError, match="--projection-dim"):
        P.public_projection(np.ones((10, 8)), 8, "pipe_clip")
    with pytest.raises(ValidationError, match="projection_dim"):
        AuditSettings(projection_dim=(16, 0))
