"""The attacks run against a view, scored against the truth.

Reconstruction: the inversion model on the attacker's estimate of the clear rows, PSNR
and SSIM against the true centre patches. Membership: the distance score on the same
estimate, and the norm score on the rows as held (no estimate needed).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from fedpatch_app.privacy import metrics
from fedpatch_app.privacy.membership import Candidates, distance_scores, norm_scores
from fedpatch_app.privacy.world import World


def _labels(candidates: Sequence[Candidates]) -> np.ndarray:
    return np.concatenate([c.members for c in candidates])


def membership(
    candidates: Sequence[Candidates], rows: Sequence[np.ndarray], score=distance_scores
) -> dict[str, float | list[float] | int]:
    """AUC over all candidates, each scored against the rows of its share (`rows[i]`),
    with its 95 % interval and the number of candidates."""
    kept = [(c, r) for c, r in zip(candidates, rows, strict=True) if len(r)]
    if not kept:
        return {"membership_auc": math.nan, "membership_candidates": 0}
    scores = np.concatenate([score(c.features, r) for c, r in kept])
    labels = _labels([c for c, _ in kept])
    lo, hi = metrics.auc_interval(scores, labels)
    return {
        "membership_auc": round(metrics.auc(scores, labels), 4),
        "membership_auc_ci95": [round(lo, 4), round(hi, 4)],
        "membership_candidates": int(len(labels)),
    }


def reconstruction(world: World, rows: Sequence[np.ndarray], picks: Sequence[np.ndarray]):
    """Quality of the inversion of `rows[i][picks[i]]` against the true patches."""
    guess = world.inverter(np.concatenate([r[p] for r, p in zip(rows, picks, strict=True)]))
    truth = np.concatenate([t[p] for t, p in zip(world.truth, picks, strict=True)])
    return metrics.quality(guess, truth), guess


def baseline(world: World, picks: Sequence[np.ndarray]) -> metrics.Baseline:
    clear = np.concatenate([s.rows[p] for s, p in zip(world.shares, picks, strict=True)])
    truth = np.concatenate([t[p] for t, p in zip(world.truth, picks, strict=True)])
    return metrics.baseline(clear, truth, world.public_features, world.public_patches)


def run_view(world: World, rows: list[np.ndarray], estimates: dict) -> dict[str, dict]:
    """Every attack on the server's rows: per estimate, reconstruction and membership;
    `norms`: membership from the row norms alone."""
    out: dict[str, dict] = {}
    for name, r in estimates.items():
        est = [x if r is None else (x.astype(np.float64) @ r).astype(np.float32) for x in rows]
        q, _ = reconstruction(world, est, world.sample)
        out[name] = {
            "reconstruction_psnr": round(q.psnr, 3),
            "reconstruction_ssim": round(q.ssim, 4),
            **membership(world.candidates, est),
        }
    out["norms"] = membership(world.candidates, rows, norm_scores)
    return out


def best(attacks: dict[str, dict]) -> tuple[str, str]:
    """The strongest reconstruction attack (by PSNR) and membership attack (by AUC)."""
    recon = [
        (v["reconstruction_psnr"], k) for k, v in attacks.items() if "reconstruction_psnr" in v
    ]
    member = [
        (v["membership_auc"], k) for k, v in attacks.items() if not math.isnan(v["membership_auc"])
    ]
    return max(recon)[1], max(member)[1] if member else ""


def curious_client(world: World, seen: list[np.ndarray]) -> dict:
    """The curious client's attacks on the other clients' rows it receives (in clear: it
    holds the share key)."""
    rng = np.random.default_rng(world.settings.seed + 1)
    total = sum(len(s) for s in seen)
    if total == 0:
        return {"rows_seen": 0}
    picks = []
    for s in seen:
        n = max(1, round(world.audit.max_rows * len(s) / total)) if len(s) else 0
        picks.append(np.sort(rng.permutation(s)[:n]) if n else s)
    q, _ = reconstruction(world, [s.rows for s in world.shares], picks)
    base = baseline(world, picks).best
    by_cat: dict[str, list[np.ndarray]] = {}
    for s, idx in zip(world.shares, seen, strict=True):
        by_cat.setdefault(s.category, []).append(s.rows[idx])
    others = [
        (c, np.concatenate(by_cat[c.category]))
        for c in world.candidates
        if c.client != world.curious
    ]
    return {
        "client": world.curious,
        "rows_seen": int(total),
        "reconstruction_psnr": round(q.psnr, 3),
        "reconstruction_ssim": round(q.ssim, 4),
        "baseline_psnr": round(base.psnr, 3),
        **membership([c for c, _ in others], [r for _, r in others]),
    }
