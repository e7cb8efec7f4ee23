"""The DP share mode in a low-dimensional public projection (`dp_projection`).

The dp mode adds Gaussian noise of the same standard deviation to every one of the D
coordinates of a cluster sum, so the noise norm of a sum grows as sqrt(D), while the
signal it hides (one image's contribution) is bounded by the clip C whatever D is. Here
every client first maps its patch features into a public d-dimensional subspace (d << D):
the top d principal directions of the patch features of the DP public reference images
of the category (the images the dp mode takes its centres from; no private data). The
release is the dp mode's mechanism (`model.dp.cluster_statistics` and `model.dp.privatize`,
the same sensitivities and zCDP accounting at the same epsilon) on the d-dimensional
features, so the per-coordinate sigma is the dp mode's and the noise norm of a sum is
sigma sqrt(d) instead of sigma sqrt(D).

The server lifts the noisy sums and the public centres back into the feature space with
the projection's transpose (post-processing: the rows lie in the public subspace, and
distances between them are the d-dimensional distances), merges them with the DP merge
(`model.merge.merge_category(private=True)`), and the detector scores the test images
projected the same way (`ProjectedExtractor`), so the detector works in the subspace.

The attacks see what the server holds: the noisy means of each client's release. The
inversion model, trained on full public features, gets them lifted with the pseudo-inverse
(and, in the attacker's favour, also completed outside the subspace with the mean public
feature); membership is the distance, in the subspace, of the candidates' clipped projected
patches to those rows.
"""

from __future__ import annotations

import logging
import math
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from fedpatch_app.errors import ConfigError
from fedpatch_app.model import dp
from fedpatch_app.model.memory_bank import MemoryBank
from fedpatch_app.model.merge import merge_category
from fedpatch_app.model.patchcore import coreset_size, select_coreset
from fedpatch_app.privacy import attacks, metrics
from fedpatch_app.privacy.detector import quality
from fedpatch_app.privacy.membership import Candidates, distance_scores
from fedpatch_app.privacy.patches import input_pixels, patches_at
from fedpatch_app.privacy.shares import ClientShare
from fedpatch_app.privacy.world import World

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Projection:
    """A public projection: `matrix` (d, D) with orthonormal rows."""

    matrix: np.ndarray
    category: str

    @property
    def dim(self) -> int:
        return int(self.matrix.shape[0])

    def down(self, x: np.ndarray) -> np.ndarray:
        """(n, D) -> (n, d) coordinates in the subspace."""
        return np.asarray(x, dtype=np.float64) @ self.matrix.T

    def lift(self, y: np.ndarray) -> np.ndarray:
        """(n, d) -> (n, D): the pseudo-inverse (the subspace's points in feature space)."""
        return np.asarray(y, dtype=np.float64) @ self.matrix

    def flatten(self, x: np.ndarray) -> np.ndarray:
        """Orthogonal projection onto the subspace, in feature space (keeps d-dim distances)."""
        shape = np.shape(x)
        flat = np.asarray(x).reshape(-1, shape[-1])
        return self.lift(self.down(flat)).reshape(shape)


def check(epsilon: float, dim: int, width: int) -> None:
    """Refuse a non-positive or non-finite epsilon and a dimension outside [1, width)."""
    if not (math.isfinite(float(epsilon)) and float(epsilon) > 0):
        raise ConfigError(f"dp_projection: --dp-epsilon must be a finite number > 0, got {epsilon}")
    if not 1 <= int(dim) < int(width):
        raise ConfigError(
            f"dp_projection: --projection-dim must be between 1 and {int(width) - 1} (the "
            f"patch features have {width} dimensions), got {dim}"
        )


def public_projection(public: np.ndarray, dim: int, category: str) -> Projection:
    """The top `dim` principal directions of public patch features (n, D), signs fixed
    (largest coordinate positive) so that every client derives the same matrix."""
    x = np.asarray(public, dtype=np.float64).reshape(-1, np.shape(public)[-1])
    if not 1 <= dim < x.shape[1]:
        raise ConfigError(
            f"dp_projection: --projection-dim must be between 1 and {x.shape[1] - 1}, got {dim}"
        )
    _, _, vt = np.linalg.svd(x - x.mean(axis=0), full_matrices=False)
    basis = vt[:dim]
    lead = basis[np.arange(dim), np.argmax(np.abs(basis), axis=1)]
    return Projection(basis * np.sign(lead)[:, None], category)


def public_reference_features(model: Any, category: str, config: Any) -> np.ndarray:
    """Patch features of the DP public reference images of `category` (the dp mode's)."""
    if config.public_root:
        paths = dp.public_image_paths(config.public_root, category, config.public_images)
        return model.features(paths, desc=f"{category}: public reference")
    with tempfile.TemporaryDirectory(prefix="fedpatch-public-") as tmp:
        paths = dp.public_reference_paths(
            category, config.public_images, config.public_seed, Path(tmp)
        )
        return model.features(paths, desc=f"{category}: public reference")


@dataclass
class Public:
    """What every client of a category derives from public images only."""

    projection: Projection
    centres: np.ndarray  # (K, D) lifted public centres (in the subspace)
    clip: float  # clip of the projected features (90th percentile of public norms)


def public_setup(model: Any, category: str, config: Any, dim: int) -> Public:
    feats = public_reference_features(model, category, config)
    projection = public_projection(feats, dim, category)
    centres, clip = dp.public_centres(
        lambda paths: projection.flatten(model.features(paths, desc=f"{category}: public")),
        lambda x, k: select_coreset(x, k, model.spec, device="cpu")[0],
        category,
        config,
    )
    return Public(projection, centres, clip)


@dataclass
class Release:
    share: ClientShare
    part: Any  # what the server merges (lifted noisy sums, dp facts)
    rows: np.ndarray  # the lifted noisy means of this release alone
    noise: np.ndarray  # (K, d): the Gaussian noise actually added to the sums
    sigma: float  # per-coordinate sigma of the sums
    epsilon: float  # what the release spent (zCDP)
    clip: float


def release(
    features: np.ndarray,
    share: ClientShare,
    public: Public,
    config: Any,
    rng: np.random.Generator | None = None,
) -> Release:
    """A client's release of `features` (n, h, w, D) in the subspace: the dp mode's
    cluster statistics and Gaussian mechanism on the d-dimensional features."""
    proj = public.projection
    n, d_full = features.shape[0], features.shape[-1]
    low = proj.down(features.reshape(-1, d_full)).reshape(n, -1, proj.dim)
    centres = proj.down(public.centres)
    stats = dp.cluster_statistics(iter(low), centres, public.clip, config.clusters_per_image)
    rel = dp.privatize(stats, config, public.clip, rng)
    counts = np.asarray(rel.counts, dtype=np.float64)
    sums = proj.lift(rel.sums).astype(np.float32)
    info = {
        "digest": dp.centres_digest(public.centres, public.clip),
        "counts": counts,
        "sigma-counts": float(rel.sigmas["counts"]),
        "centres": public.centres.astype(np.float32),
        "clip": public.clip,
    }
    patches_per_image = int(np.prod(features.shape[1:-1]))
    n_noisy = max(1, int(round(rel.n_images)))
    part = SimpleNamespace(
        features=sums, n_patches=n_noisy * patches_per_image, n_images=n_noisy, radius=0.0, dp=info
    )
    rows, _, _ = dp.noisy_means([sums], [counts], [rel.sigmas["counts"]])
    noise = rel.sums - stats.sums
    return Release(share, part, rows, noise, rel.sigmas["sums"], rel.epsilon, public.clip)


class ProjectedExtractor:
    """A feature extractor whose patch features come out projected onto the subspace."""

    def __init__(self, inner: Any, projection: Projection) -> None:
        self.inner = inner
        self.projection = projection

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def extract_iter(self, paths: Sequence[Any], *args: Any, **kwargs: Any) -> Iterator:
        for start, feats in self.inner.extract_iter(paths, *args, **kwargs):
            yield start, self.projection.flatten(feats).astype(np.float32)

    def extract(self, paths: Sequence[Any], *args: Any, **kwargs: Any) -> np.ndarray:
        feats = self.inner.extract(paths, *args, **kwargs)
        return self.projection.flatten(feats).astype(np.float32)


def _seen(candidates: Sequence[Candidates], publics: dict[str, Public]) -> list[Candidates]:
    """The candidates' patches as the attacker compares them: projected and clipped."""
    out = []
    for c in candidates:
        pub = publics[c.category]
        n, p, d = c.features.shape
        flat = dp.clip_rows(pub.projection.flatten(c.features.reshape(-1, d)), pub.clip)
        out.append(Candidates(c.client, c.category, c.paths, c.members, flat.reshape(n, p, d)))
    return out


def _nearest_truth(world: World, rel: Release, pub: Public):
    """Per row, the clear feature and true patch of the client's patch whose projected,
    clipped feature is nearest the row (the truth taken in the attacker's favour)."""
    share = rel.share
    flat = share.features.reshape(-1, share.features.shape[-1])
    seen = dp.clip_rows(pub.projection.flatten(flat), pub.clip).astype(np.float32)
    _, idx = MemoryBank(seen).search(rel.rows, k=1)
    h, w = share.grid
    at = idx[:, 0]
    positions = np.stack([at // (h * w), (at // w) % h, at % w], axis=1)
    pixels = input_pixels(world.spec, world.model.extractor.backbone, share.paths)
    return flat[at], patches_at(pixels, positions, world.spec, world.audit.patch_size)


def _estimates(world: World, rows: np.ndarray, pub: Public) -> dict[str, np.ndarray]:
    """The attacker's estimates of the full features behind lifted rows: the rows as they
    are (the pseudo-inverse), and completed outside the subspace by the mean public feature."""
    mean = world.public_features.astype(np.float64).mean(axis=0)
    outside = mean - pub.projection.flatten(mean[None, :])[0]
    return {"pinv": rows, "pinv_public_mean": (rows + outside).astype(np.float32)}


def _attack(world: World, releases: list[Release], publics: dict[str, Public]) -> dict:
    feats, truth, guesses = [], [], {}
    for rel in releases:
        if not len(rel.rows):
            continue
        pub = publics[rel.share.category]
        f, t = _nearest_truth(world, rel, pub)
        feats.append(f), truth.append(t)
        for name, est in _estimates(world, rel.rows, pub).items():
            guesses.setdefault(name, []).append(world.inverter(est))
    truth_all = np.concatenate(truth)
    base = metrics.baseline(
        np.concatenate(feats), truth_all, world.public_features, world.public_patches
    ).best
    member = attacks.membership(
        _seen(world.candidates, publics), [r.rows for r in releases], distance_scores
    )
    found = {}
    for name, guess in guesses.items():
        q = metrics.quality(np.concatenate(guess), truth_all)
        found[name] = {
            "reconstruction_psnr": round(q.psnr, 3),
            "reconstruction_ssim": round(q.ssim, 4),
            **member,
        }
    best = max(found, key=lambda k: found[k]["reconstruction_psnr"])
    return {
        "rows": int(sum(len(r.rows) for r in releases)),
        "psnr": found[best]["reconstruction_psnr"],
        "ssim": found[best]["reconstruction_ssim"],
        "baseline": base,
        "strongest": best,
        "attacks": found,
        **member,
    }


def _curious(world: World, releases: list[Release], publics: dict[str, Public]) -> dict:
    """Membership of the other clients' images in the merged noisy means the curious
    client receives in the bank (the sums over the clients)."""
    merged = {}
    for cat in publics:
        mine = [r.part for r in releases if r.share.category == cat]
        merged[cat] = dp.noisy_means(
            [p.features for p in mine],
            [p.dp["counts"] for p in mine],
            [p.dp["sigma-counts"] for p in mine],
        )[0]
    others = [c for c in world.candidates if c.client != world.curious]
    return {
        "client": world.curious,
        "rows_seen": int(sum(len(v) for v in merged.values())),
        **attacks.membership(
            _seen(others, publics), [merged[c.category] for c in others], distance_scores
        ),
    }


def dp_projection_mode(world: World, epsilon: float, dim: int) -> dict:
    """The dp_projection mode's row parts (the dp mode's keys, and the noise facts)."""
    check(epsilon, dim, int(world.spec.embed_dim))
    config = world.settings.dp.model_copy(update={"epsilon": float(epsilon)})
    cats = sorted({s.category for s in world.shares})
    publics = {c: public_setup(world.model, c, config, dim) for c in cats}
    releases = [release(s.features, s, publics[s.category], config) for s in world.shares]
    server = _attack(world, releases, publics)
    per_category, banks = {}, {}
    for cat in cats:
        parts = [r.part for r in releases if r.share.category == cat]
        k = coreset_size(sum(p.n_patches for p in parts), world.settings.coreset_ratio)
        merged = merge_category(cat, parts, k, world.spec, device="cpu", private=True)
        inner = world.model.extractor
        world.model.extractor = ProjectedExtractor(inner, publics[cat].projection)
        try:
            per_category[cat] = quality(world.model, merged.bank, world.root, world.settings.seed)
        finally:
            world.model.extractor = inner
        banks[cat] = merged.info["dp"]
    noise = {
        "dimension": int(dim),
        "sigma_per_coordinate": releases[0].sigma,
        "noise_norm_per_cluster_sum": float(
            np.mean([np.linalg.norm(r.noise, axis=1).mean() for r in releases])
        ),
        "epsilon_spent": max(r.epsilon for r in releases),
        "clip": {c: p.clip for c, p in publics.items()},
    }
    return {
        "server": server,
        "per_category": per_category,
        "banks": banks,
        "noise": noise,
        "curious_client": _curious(world, releases, publics),
    }
