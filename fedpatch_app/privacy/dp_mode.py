"""The DP share mode audited: each client's release made by the clients' own DP code
(`federated.client_dp.private_release`), the server's noisy means (`model.dp.noisy_means`)
and the DP merge (`model.merge.merge_category(private=True)`).

A noisy cluster mean is no one patch, so the truth behind a row the server holds is taken
in the attacker's favour: the client's patch whose clipped feature is nearest the row.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import numpy as np

from fedpatch_app.model.dp import clip_rows, noisy_means
from fedpatch_app.model.memory_bank import MemoryBank
from fedpatch_app.model.merge import merge_category
from fedpatch_app.model.patchcore import coreset_size
from fedpatch_app.privacy import attacks, metrics
from fedpatch_app.privacy.detector import quality
from fedpatch_app.privacy.membership import Candidates, distance_scores
from fedpatch_app.privacy.patches import input_pixels, patches_at
from fedpatch_app.privacy.shares import ClientShare
from fedpatch_app.privacy.world import World


@dataclass
class Release:
    share: ClientShare
    part: Any  # what the server merges (features = noisy sums, dp = the release's facts)
    rows: np.ndarray  # the noisy means the server computes from this release alone
    clip: float


def release(world: World, share: ClientShare, epsilon: float) -> Release:
    from fedpatch_app.federated.client_dp import private_release

    dp = world.settings.dp.model_copy(update={"epsilon": float(epsilon)})
    plan = SimpleNamespace(
        settings=world.settings.model_copy(update={"dp": dp}), fingerprint=world.spec.fingerprint()
    )
    sums, n_noisy, facts, centres = private_release(
        world.model, share.paths, share.category, plan, {}
    )
    cat = share.category
    counts = np.asarray(facts[f"dp-counts.{cat}"], dtype=np.float64)
    sigma = float(facts[f"dp-sigma-counts.{cat}"])
    clip = float(facts[f"dp-clip.{cat}"])
    info = {
        "digest": facts[f"dp-digest.{cat}"],
        "counts": counts,
        "sigma-counts": sigma,
        "centres": centres,
        "clip": clip,
    }
    part = SimpleNamespace(
        features=sums.features, n_patches=sums.n_patches, n_images=n_noisy, radius=0.0, dp=info
    )
    rows, _, _ = noisy_means([sums.features], [counts], [sigma])
    return Release(share, part, rows, clip)


def _nearest_truth(world: World, rel: Release, rows: np.ndarray):
    """Per row, the clear feature and true patch of the client's nearest clipped patch."""
    share = rel.share
    flat = share.features.reshape(-1, share.features.shape[-1])
    _, idx = MemoryBank(clip_rows(flat, rel.clip).astype(np.float32)).search(rows, k=1)
    h, w = share.grid
    at = idx[:, 0]
    positions = np.stack([at // (h * w), (at // w) % h, at % w], axis=1)
    pixels = input_pixels(world.spec, world.model.extractor.backbone, share.paths)
    return flat[at], patches_at(pixels, positions, world.spec, world.audit.patch_size)


def _attack(world: World, releases: list[Release], candidates: list[Candidates]) -> dict:
    feats, truth, guess = [], [], []
    for rel in releases:
        if len(rel.rows):
            f, t = _nearest_truth(world, rel, rel.rows)
            feats.append(f), truth.append(t), guess.append(world.inverter(rel.rows))
    truth_all = np.concatenate(truth)
    q = metrics.quality(np.concatenate(guess), truth_all)
    base = metrics.baseline(
        np.concatenate(feats), truth_all, world.public_features, world.public_patches
    ).best
    clipped = [
        Candidates(c.client, c.category, c.paths, c.members, clip_rows(c.features, r.clip))
        for c, r in zip(candidates, releases, strict=True)
    ]
    member = attacks.membership(clipped, [r.rows for r in releases], distance_scores)
    return {
        "rows": int(sum(len(r.rows) for r in releases)),
        "psnr": q.psnr,
        "ssim": q.ssim,
        "baseline": base,
        **member,
    }


def dp_mode(world: World, epsilon: float) -> dict:
    """The DP mode's row of the audit (the same keys as the other modes')."""
    releases = [release(world, s, epsilon) for s in world.shares]
    server = _attack(world, releases, world.candidates)
    per_category, banks = {}, {}
    for cat in sorted({s.category for s in world.shares}):
        parts = [r.part for r in releases if r.share.category == cat]
        k = coreset_size(sum(p.n_patches for p in parts), world.settings.coreset_ratio)
        merged = merge_category(cat, parts, k, world.spec, device="cpu", private=True)
        per_category[cat] = quality(world.model, merged.bank, world.root, world.settings.seed)
        banks[cat] = merged.info["dp"]
    return {
        "server": server,
        "per_category": per_category,
        "banks": banks,
        "curious_client": _curious(world, releases),
    }


def _curious(world: World, releases: list[Release]) -> dict:
    """Membership of the other clients' images in the merged noisy means the curious
    client receives in the bank (sums over the clients: less noisy than one release)."""
    merged = {}
    for cat in sorted({r.share.category for r in releases}):
        mine = [r.part for r in releases if r.share.category == cat]
        merged[cat] = noisy_means(
            [p.features for p in mine],
            [p.dp["counts"] for p in mine],
            [p.dp["sigma-counts"] for p in mine],
        )[0]
    others = [(c, r) for c, r in zip(world.candidates, releases, strict=True)]
    others = [(c, r) for c, r in others if c.client != world.curious]
    clipped = [
        Candidates(c.client, c.category, c.paths, c.members, clip_rows(c.features, r.clip))
        for c, r in others
    ]
    rows = [merged[c.category] for c in clipped]
    return {
        "client": world.curious,
        "rows_seen": int(sum(len(v) for v in merged.values())),
        **attacks.membership(clipped, rows, distance_scores),
    }
