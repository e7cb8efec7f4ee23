"""A client's differentially private train reply of one category (see model/dp.py)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedpatch_app.federated import messages as M
from fedpatch_app.model.patchcore import PatchCore

log = logging.getLogger(__name__)


@dataclass
class NoisySums:
    """The DP stand-in of a local bank: noisy per-cluster sums (`features`), the noisy
    image count times the patches per image (`n_patches`), no covering radius."""

    features: np.ndarray
    n_patches: int
    radius: float = 0.0


#: Public centres per (fingerprint, category, DP settings), kept for the process.
_CENTRES_CACHE: dict[tuple[str, str, Any], tuple[np.ndarray, float]] = {}


def _centres(model: PatchCore, cat: str, plan: M.Plan, node_config: Mapping[str, Any]):
    from fedpatch_app.model import dp
    from fedpatch_app.model.patchcore import select_coreset

    config = plan.settings.dp
    local_root = node_config.get("dp-public-root")
    if isinstance(local_root, str) and local_root:
        # The same public images, kept elsewhere on this client's machine (deployments);
        # the server's digest check catches a client whose images differ.
        config = config.model_copy(update={"public_root": local_root})
    key = (plan.fingerprint, cat, config)
    if key not in _CENTRES_CACHE:
        _CENTRES_CACHE[key] = dp.public_centres(
            lambda p: model.features(p, desc=f"{cat}: public reference"),
            lambda x, k: select_coreset(x, k, model.spec, device=model.device)[0],
            cat,
            config,
        )
    return config, *_CENTRES_CACHE[key]


def private_release(
    model: PatchCore, paths: list[Path], cat: str, plan: M.Plan, node_config: Mapping[str, Any]
) -> tuple[NoisySums, int, dict[str, Any], np.ndarray]:
    """Noisy per-cluster sums of per-image bounded contributions, around centres from
    public images only; with the noisy image count (>= 1), the reply's DP info entries and
    the public centres (sent so the server can check and use them). Nothing sent depends
    on the private images except through the Gaussian releases."""
    from fedpatch_app.model import dp

    config, centres, clip = _centres(model, cat, plan, node_config)
    feats = model.features(paths, desc=f"{cat}: train features")
    patches_per_image = int(feats.shape[1] * feats.shape[2])
    stats = dp.cluster_statistics(iter(feats), centres, clip, config.clusters_per_image)
    del feats
    release = dp.privatize(stats, config, clip)
    n_noisy = max(1, int(round(release.n_images)))
    log.info(
        "%s: DP release of %d images (epsilon %.3g, delta %.3g spent; sigma sums %.4g, "
        "counts %.4g)",
        cat,
        stats.n_images,
        release.epsilon,
        release.delta,
        release.sigmas["sums"],
        release.sigmas["counts"],
    )
    sums = NoisySums(release.sums.astype(np.float32), n_noisy * patches_per_image)
    facts = M.dp_info(cat, release, dp.centres_digest(centres, clip), clip)
    return sums, n_noisy, facts, centres.astype(np.float32)
