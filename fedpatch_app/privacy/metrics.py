"""How much an attacker recovered: PSNR and SSIM of reconstructed patches, the public-only
baseline, and the AUC of a membership score."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from skimage.metrics import structural_similarity

from fedpatch_app.model.memory_bank import MemoryBank


def psnr(guess: np.ndarray, truth: np.ndarray) -> float:
    """PSNR (dB, pixel range 1) of the mean squared error over all patches given."""
    mse = float(np.mean((np.asarray(guess, np.float64) - truth) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(1.0 / mse)


def ssim(guess: np.ndarray, truth: np.ndarray) -> float:
    """Mean SSIM over patches (n, s, s, 3) (7x7 windows, colour channels apart)."""
    values = [
        structural_similarity(g, t, data_range=1.0, channel_axis=-1, win_size=7)
        for g, t in zip(np.asarray(guess, np.float32), np.asarray(truth, np.float32), strict=True)
    ]
    return float(np.mean(values)) if values else math.nan


@dataclass
class Quality:
    psnr: float
    ssim: float

    def to_json(self) -> dict[str, float]:
        return {"psnr": round(self.psnr, 3), "ssim": round(self.ssim, 4)}


def quality(guess: np.ndarray, truth: np.ndarray) -> Quality:
    return Quality(psnr(guess, truth), ssim(guess, truth))


@dataclass
class Baseline:
    """The best public-only reconstructions: the mean public patch, and the public patch
    whose feature is nearest the true feature (clear features: the stronger baseline)."""

    mean_patch: Quality
    nearest_patch: Quality

    @property
    def best(self) -> Quality:
        a, b = self.mean_patch, self.nearest_patch
        return a if a.psnr >= b.psnr else b

    def to_json(self) -> dict[str, object]:
        return {
            "mean_public_patch": self.mean_patch.to_json(),
            "nearest_public_patch": self.nearest_patch.to_json(),
        }


def baseline(
    true_features: np.ndarray,
    truth: np.ndarray,
    public_features: np.ndarray,
    public_patches: np.ndarray,
) -> Baseline:
    mean = np.broadcast_to(public_patches.mean(axis=0), truth.shape)
    _, idx = MemoryBank(public_features).search(true_features, k=1)
    return Baseline(quality(mean, truth), quality(public_patches[idx[:, 0]], truth))


def auc(scores: np.ndarray, members: np.ndarray) -> float:
    """AUROC of `scores` (higher = more likely a member) against the membership labels."""
    from sklearn.metrics import roc_auc_score

    members = np.asarray(members, dtype=bool)
    if members.all() or not members.any():
        return math.nan
    return float(roc_auc_score(members, np.asarray(scores, dtype=np.float64)))


def auc_interval(
    scores: np.ndarray, members: np.ndarray, rounds: int = 300, seed: int = 0
) -> tuple[float, float]:
    """95 % bootstrap interval of the AUC (candidates resampled within each label): with a
    few dozen candidates, an AUC of 0.6 can be chance."""
    rng = np.random.default_rng(seed)
    members = np.asarray(members, dtype=bool)
    inside, outside = np.flatnonzero(members), np.flatnonzero(~members)
    if not len(inside) or not len(outside):
        return math.nan, math.nan
    values = []
    for _ in range(rounds):
        pick = np.concatenate([rng.choice(inside, len(inside)), rng.choice(outside, len(outside))])
        values.append(auc(scores[pick], members[pick]))
    return float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))
