"""Differential privacy for the coresets a federated client shares (no Flower in here).

Privacy unit: ONE TRAINING IMAGE of a client (add/remove adjacency: two datasets are
neighbours when one holds one image more). Mechanism ("noisy cluster summaries"):

1. Centres, data-independent: K centres are chosen by greedy k-center on the patch
   features of PUBLIC reference images (the built-in synthetic generator, with a public
   seed that differs from any private data's seed). The clipping norm C is either set
   by hand or taken from those public features. Neither step reads private data.
2. Per image, bounded contribution: every patch feature is clipped to L2 norm C and
   assigned to its nearest centre; the image contributes, for at most m of the
   clusters it touches (those with most of its patches), the MEAN of its clipped patches
   in that cluster (norm <= C) and a count of 1. So one image changes the (K x D) sum
   matrix by at most sqrt(m) * C in L2 (Frobenius) norm, the K counts by at most
   sqrt(m), and the image count by 1 (`sensitivities`).
3. Gaussian mechanism on the three releases, all with the same noise multiplier z
   (sigma = z x sensitivity). Each is rho = 1 / (2 z^2) zero-concentrated DP; they
   compose additively (rho = 3 / (2 z^2)), and rho-zCDP gives (rho + 2 sqrt(rho
   ln(1/delta)), delta)-DP. `noise_multiplier` picks z so that this is the target
   (epsilon, delta); `Accountant` recomputes what was actually spent from the sigmas.
4. Composition across categories is parallel (an image belongs to one category only),
   and so across clients (no image is held by two clients): a run spends the maximum
   over its categories, not the sum.

Everything the server does with the noisy releases (summing over clients, dividing sums
by counts, dropping clusters with small noisy counts, adding the public centres, greedy
k-center) is post-processing and costs nothing more.

The bank rows live in the space of CLIPPED patch features (every row is a mean of
vectors of norm <= C, or a public centre chosen among clipped public features), so the
bank records C and scoring clips the test patches to C as well (`Bank.query_clip`):
unclipped queries would be far from every row by their norm alone, whatever they show.
"""

from __future__ import annotations

import hashlib
import logging
import math
import secrets
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fedpatch_app.errors import ModelError
from fedpatch_app.settings.schema import DPSettings

log = logging.getLogger(__name__)

PRIVACY_UNIT = "image"
MECHANISM = "gaussian-noisy-cluster-summaries"
#: Number of Gaussian releases per category and client: sums, counts, image count.
RELEASES = 3
#: Default quantile of the public patch-feature norms used as the clipping norm.
AUTO_CLIP_QUANTILE = 0.9


# --------------------------------------------------------------------------- accounting


def zcdp_rho(sensitivity: float, sigma: float) -> float:
    """The Gaussian mechanism with L2 sensitivity Delta and noise sigma is
    Delta^2 / (2 sigma^2) - zCDP."""
    if sigma <= 0:
        raise ModelError(f"Gaussian noise sigma must be > 0, got {sigma}")
    return float(sensitivity) ** 2 / (2.0 * float(sigma) ** 2)


def zcdp_to_epsilon(rho: float, delta: float) -> float:
    """(epsilon, delta)-DP implied by rho-zCDP: epsilon = rho + 2 sqrt(rho ln(1/delta))."""
    _check_delta(delta)
    if rho < 0:
        raise ModelError(f"rho must be >= 0, got {rho}")
    return rho + 2.0 * math.sqrt(rho * math.log(1.0 / delta))


def rho_for_epsilon(epsilon: float, delta: float) -> float:
    """The largest rho whose zCDP guarantee gives (epsilon, delta)-DP (inverse of the above)."""
    _check_delta(delta)
    if epsilon <= 0:
        raise ModelError(f"epsilon must be > 0, got {epsilon}")
    log_term = math.log(1.0 / delta)
    return (math.sqrt(log_term + epsilon) - math.sqrt(log_term)) ** 2


def classical_gaussian_sigma(epsilon: float, delta: float, sensitivity: float) -> float:
    """Dwork-Roth's Gaussian mechanism: sigma = sqrt(2 ln(1.25/delta)) Delta / epsilon
    (valid for epsilon < 1; reference values for the tests and the docs)."""
    _check_delta(delta)
    if not 0 < epsilon < 1:
        raise ModelError(f"the classical Gaussian mechanism needs 0 < epsilon < 1, got {epsilon}")
    return math.sqrt(2.0 * math.log(1.25 / delta)) * sensitivity / epsilon


def gaussian_delta(epsilon: float, mu: float) -> float:
    """Exact delta(epsilon) of a Gaussian mechanism with Delta / sigma = mu (Balle & Wang's
    analytic Gaussian mechanism; a composition of Gaussians with ratios mu_i is one with
    mu = sqrt(sum mu_i^2)). Used to check that the zCDP figure is an upper bound."""
    if mu <= 0:
        return 0.0
    a = -epsilon / mu + mu / 2.0
    b = -epsilon / mu - mu / 2.0
    phi_b = _phi(b)
    # exp(epsilon) * phi(b) in logs: exp(epsilon) alone overflows for a large epsilon.
    tail = 0.0 if phi_b <= 0.0 else math.exp(min(700.0, epsilon + math.log(phi_b)))
    return max(0.0, _phi(a) - tail)


def _phi(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


def _check_delta(delta: float) -> None:
    if not 0 < delta < 1:
        raise ModelError(f"delta must be in (0, 1), got {delta}")


def noise_multiplier(epsilon: float, delta: float, releases: int = RELEASES) -> float:
    """z such that `releases` Gaussian releases with sigma_i = z Delta_i spend exactly
    (epsilon, delta) under zCDP composition: releases / (2 z^2) = rho(epsilon, delta)."""
    rho = rho_for_epsilon(epsilon, delta)
    return math.sqrt(releases / (2.0 * rho))


@dataclass
class Accountant:
    """zCDP accountant: sequential composition adds rho; `parallel` takes the maximum.

    `add(name, sensitivity, sigma)` records one Gaussian release on the same data.
    """

    delta: float
    releases: list[dict[str, float | str]] = field(default_factory=list)

    def add(self, name: str, sensitivity: float, sigma: float) -> float:
        rho = zcdp_rho(sensitivity, sigma)
        self.releases.append(
            {"name": name, "sensitivity": float(sensitivity), "sigma": float(sigma), "rho": rho}
        )
        return rho

    @property
    def rho(self) -> float:
        return float(sum(float(r["rho"]) for r in self.releases))

    def epsilon(self, delta: float | None = None) -> float:
        return zcdp_to_epsilon(self.rho, self.delta if delta is None else delta)

    def exact_epsilon(self, delta: float | None = None) -> float:
        """The smallest epsilon with gaussian_delta(epsilon, mu) <= delta (bisection)."""
        target = self.delta if delta is None else delta
        mu = math.sqrt(2.0 * self.rho)
        lo, hi = 0.0, max(1.0, self.epsilon(target))
        if gaussian_delta(0.0, mu) <= target:
            return 0.0
        for _ in range(200):
            mid = 0.5 * (lo + hi)
            if gaussian_delta(mid, mu) > target:
                lo = mid
            else:
                hi = mid
        return hi

    @staticmethod
    def parallel(epsilons: Iterable[float]) -> float:
        """Disjoint data (different categories, different clients): the maximum."""
        values = list(epsilons)
        return max(values) if values else 0.0


# --------------------------------------------------------------------------- mechanism


def sensitivities(clip: float, clusters_per_image: int) -> dict[str, float]:
    """L2 sensitivities of the three releases under add/remove of one image."""
    return {
        "sums": math.sqrt(clusters_per_image) * clip,
        "counts": math.sqrt(clusters_per_image),
        "images": 1.0,
    }


def clip_rows(x: np.ndarray, clip: float) -> np.ndarray:
    """Rows scaled down to L2 norm <= clip (float64)."""
    x = np.asarray(x, dtype=np.float64)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    scale = np.minimum(1.0, clip / np.maximum(norms, 1e-300))
    return x * scale


def nearest_centre(x: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Index of the nearest centre (squared Euclidean distance) of every row of x."""
    x = np.asarray(x, dtype=np.float64)
    c = np.asarray(centres, dtype=np.float64)
    d = (x * x).sum(1)[:, None] - 2.0 * x @ c.T + (c * c).sum(1)[None, :]
    return np.argmin(d, axis=1)


def image_contribution(
    patches: np.ndarray, centres: np.ndarray, clip: float, clusters_per_image: int
) -> tuple[np.ndarray, np.ndarray]:
    """One image's contribution: (cluster ids (t,), per-cluster means (t, D)), t <= m.

    The image keeps the m clusters holding most of its patches (ties: lower id); each
    value is the mean of its clipped patches there, so its norm is <= clip.
    """
    clipped = clip_rows(patches.reshape(-1, patches.shape[-1]), clip)
    ids = nearest_centre(clipped, centres)
    counts = np.bincount(ids, minlength=len(centres))
    touched = np.flatnonzero(counts)
    order = touched[np.lexsort((touched, -counts[touched]))]
    keep = np.sort(order[:clusters_per_image])
    means = np.stack([clipped[ids == k].mean(axis=0) for k in keep])
    return keep, means


@dataclass
class ClusterStats:
    """Exact (not yet private) per-cluster sums and counts of one category on one client."""

    sums: np.ndarray  # (K, D) float64
    counts: np.ndarray  # (K,) float64
    n_images: int


def cluster_statistics(
    images: Iterable[np.ndarray], centres: np.ndarray, clip: float, clusters_per_image: int
) -> ClusterStats:
    """Sum every image's bounded contribution (`image_contribution`)."""
    k, d = centres.shape
    sums = np.zeros((k, d), dtype=np.float64)
    counts = np.zeros(k, dtype=np.float64)
    n = 0
    for patches in images:
        ids, means = image_contribution(patches, centres, clip, clusters_per_image)
        sums[ids] += means
        counts[ids] += 1.0
        n += 1
    return ClusterStats(sums, counts, n)


@dataclass
class NoisyRelease:
    """What a client sends for one category under DP, and what it cost."""

    sums: np.ndarray
    counts: np.ndarray
    n_images: float
    sigmas: dict[str, float]
    rho: float
    epsilon: float
    delta: float


def privatize(
    stats: ClusterStats,
    config: DPSettings,
    clip: float,
    rng: np.random.Generator | None = None,
) -> NoisyRelease:
    """Gaussian noise on sums, counts and the image count, calibrated to (epsilon, delta).

    `rng` None = a generator seeded from the OS's entropy (the noise must not be
    predictable; a fixed seed is for tests only).
    """
    if not config.enabled:
        raise ModelError("privatize called with DP off (dp-epsilon = 0)")
    rng = rng if rng is not None else np.random.default_rng(secrets.randbits(128))
    z = noise_multiplier(config.epsilon, config.delta)
    sens = sensitivities(clip, config.clusters_per_image)
    sigmas = {name: z * value for name, value in sens.items()}
    acc = Accountant(config.delta)
    for name in ("sums", "counts", "images"):
        acc.add(name, sens[name], sigmas[name])
    sums = stats.sums + rng.normal(0.0, sigmas["sums"], size=stats.sums.shape)
    counts = stats.counts + rng.normal(0.0, sigmas["counts"], size=stats.counts.shape)
    n_images = stats.n_images + rng.normal(0.0, sigmas["images"])
    return NoisyRelease(
        sums=sums,
        counts=counts,
        n_images=float(n_images),
        sigmas=sigmas,
        rho=acc.rho,
        epsilon=acc.epsilon(),
        delta=config.delta,
    )


def centres_digest(centres: np.ndarray, clip: float) -> str:
    """Identifies the public centres and clip: the server sums only releases that share it."""
    h = hashlib.sha256(np.ascontiguousarray(centres, dtype=np.float32).tobytes())
    h.update(repr(float(clip)).encode())
    return h.hexdigest()[:16]


def noisy_means(
    sums: Sequence[np.ndarray],
    counts: Sequence[np.ndarray],
    count_sigmas: Sequence[float],
    centres: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, float]:
    """Server side (post-processing): sum the releases of clients that share the centres,
    keep the clusters whose noisy count is at least twice the count noise's standard
    deviation (at least 1), and return the bank rows, the kept noisy counts and the
    threshold.

    The rows are the kept clusters' means (sum / count), in cluster order. With the public
    `centres` (K, D) they come after all K centres: the public reference covers feature
    space without private data (free of privacy cost), and the private data adds the
    means of the clusters it populates enough to rise above the noise. Without them, the
    largest cluster is kept when none passes.
    """
    total_s = np.sum([np.asarray(s, dtype=np.float64) for s in sums], axis=0)
    total_c = np.sum([np.asarray(c, dtype=np.float64) for c in counts], axis=0)
    threshold = max(1.0, 2.0 * math.sqrt(sum(float(s) ** 2 for s in count_sigmas)))
    kept = total_c >= threshold
    if not kept.any() and centres is None:
        kept[int(np.argmax(total_c))] = True
    rows = total_s[kept] / np.maximum(total_c[kept], threshold)[:, None]
    if centres is not None:
        if np.shape(centres) != total_s.shape:
            raise ModelError(
                f"public centres of shape {np.shape(centres)} for sums of shape {total_s.shape}"
            )
        rows = np.concatenate([np.asarray(centres, dtype=np.float64), rows])
    return rows.astype(np.float32), total_c[kept], threshold


# --------------------------------------------------------------------------- public centres


def public_reference_paths(category: str, n_images: int, seed: int, folder: Path) -> list[Path]:
    """Write `n_images` PUBLIC good images of `category` from the synthetic generator
    (seed `seed`, a split code no dataset uses) and return their paths."""
    from PIL import Image

    from fedpatch_app.data import synthetic

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n_images):
        path = folder / f"public-{category}-{seed}-{i:03d}.png"
        if not path.is_file():
            img = synthetic.good_image(category, int(seed), 97, i)
            Image.fromarray(img).save(path)
        paths.append(path)
    return paths


#: Image files a public reference folder may hold.
PUBLIC_SUFFIXES = (".png", ".jpg", ".jpeg")


def public_image_paths(root: str | Path, category: str, n_images: int) -> list[Path]:
    """The first `n_images` (sorted by name) public good images of `category` under
    `root`: `<root>/<category>/train/good/` (AutoVI layout) or `<root>/<category>/`."""
    from fedpatch_app.errors import DataError

    base = Path(root) / category
    folders = [base / "train" / "good", base]
    folder = next((f for f in folders if f.is_dir()), None)
    if folder is None:
        raise DataError(
            f"dp-public-root: no folder of public images for {category} "
            f"(looked for {folders[0]} and {folders[1]})"
        )
    paths = sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in PUBLIC_SUFFIXES
    )
    if len(paths) < n_images:
        raise DataError(
            f"dp-public-root: {folder} holds {len(paths)} image(s), dp-public-images asks "
            f"for {n_images}"
        )
    return paths[:n_images]


def public_centres(
    features_of: Callable[[list[Path]], np.ndarray],
    select: Callable[[np.ndarray, int], np.ndarray],
    category: str,
    config: DPSettings,
) -> tuple[np.ndarray, float]:
    """(K centres, clip norm) from the public reference images only.

    `features_of(paths)` returns (n, h, w, D) patch features; `select(features, k)` the
    k selected rows (the project's greedy k-center).
    """
    if config.public_root:
        feats = features_of(public_image_paths(config.public_root, category, config.public_images))
    else:
        with tempfile.TemporaryDirectory(prefix="fedpatch-public-") as tmp:
            paths = public_reference_paths(
                category, config.public_images, config.public_seed, Path(tmp)
            )
            feats = features_of(paths)
    flat = feats.reshape(-1, feats.shape[-1]).astype(np.float64)
    norms = np.linalg.norm(flat, axis=1)
    clip = config.clip if config.clip > 0 else float(np.quantile(norms, AUTO_CLIP_QUANTILE))
    if not clip > 0:
        raise ModelError(f"{category}: the public reference gives a clipping norm of {clip}")
    k = min(config.centres, flat.shape[0])
    centres = select(clip_rows(flat, clip).astype(np.float32), k)
    return np.asarray(centres, dtype=np.float64), clip


def describe(config: DPSettings) -> dict[str, Any]:
    """The settings part of results.json's "privacy" block."""
    return {
        "enabled": config.enabled,
        "mechanism": MECHANISM if config.enabled else None,
        "unit": PRIVACY_UNIT,
        "adjacency": "add/remove one training image of a client",
        "epsilon_target": config.epsilon if config.enabled else None,
        "delta": config.delta if config.enabled else None,
        "clip": config.clip or "auto",
        "centres": config.centres,
        "clusters_per_image": config.clusters_per_image,
        "public_images": config.public_images,
        "public_seed": config.public_seed,
        "public_reference": config.public_root or "built-in synthetic generator",
        "accountant": "zCDP (rho adds up; epsilon = rho + 2 sqrt(rho ln(1/delta)))",
    }


def release_spent(facts: dict[str, Any], clusters_per_image: int) -> dict[str, float]:
    """The budget one client's release of one category spent, recomputed from its sigmas
    and clip (what the client says it spent is not taken on trust)."""
    acc = Accountant(facts["delta"])
    sens = sensitivities(facts["clip"], clusters_per_image)
    for name in ("sums", "counts", "images"):
        acc.add(name, sens[name], facts[f"sigma-{name}"])
    return {
        "epsilon": acc.epsilon(),
        "epsilon_exact": acc.exact_epsilon(),
        "rho": acc.rho,
        "delta": acc.delta,
        "clip": facts["clip"],
        "sigma_sums": facts["sigma-sums"],
        "sigma_counts": facts["sigma-counts"],
        "sigma_images": facts["sigma-images"],
    }


def run_privacy(config: DPSettings, releases: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The "privacy" block of results.json: the settings and, per release ("<client>
    <category>": its DP facts), the budget actually spent, composed in parallel."""
    facts = describe(config)
    if not config.enabled:
        facts["spent"] = None
        return facts
    per = {label: release_spent(f, config.clusters_per_image) for label, f in releases.items()}
    facts["spent"] = {
        # Parallel composition: each image is in one category and on one client.
        "epsilon": Accountant.parallel(v["epsilon"] for v in per.values()),
        "epsilon_exact": Accountant.parallel(v["epsilon_exact"] for v in per.values()),
        "delta": config.delta,
        "composition": "parallel across categories and clients (disjoint images)",
        "per_release": per,
    }
    facts["private_steps"] = [
        "client: per-cluster sums and counts of per-image bounded contributions, and the "
        "image count (Gaussian mechanism, accounted)",
    ]
    facts["public_steps"] = [
        "centres and clip norm: public synthetic reference images (no private data)",
        "server: sum over clients, noisy means, count threshold, greedy k-center (post-processing)",
    ]
    facts["not_covered"] = [
        "test images: scores and evaluation statistics are not differentially private",
    ]
    return facts
