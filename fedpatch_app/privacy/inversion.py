"""The curious server's inversion model: patch feature -> the image patch behind it.

A small MLP trained ONLY on (feature, centre patch) pairs of public images, through the
same backbone and embedding as the data audited; it never sees a client's image. Its
input is standardised with the public features' mean and spread.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

log = logging.getLogger(__name__)


@dataclass
class Inverter:
    """A trained inversion model and the standardisation of its input."""

    net: nn.Module
    mean: np.ndarray
    std: np.ndarray
    size: int
    facts: dict[str, float]

    def __call__(self, rows: np.ndarray, batch: int = 4096) -> np.ndarray:
        """Reconstructed patches (n, size, size, 3) in [0, 1] of feature rows (n, D)."""
        x = (np.asarray(rows, dtype=np.float32) - self.mean) / self.std
        out = []
        self.net.eval()
        with torch.inference_mode():
            for start in range(0, len(x), batch):
                out.append(self.net(torch.from_numpy(x[start : start + batch])).numpy())
        flat = np.concatenate(out) if out else np.zeros((0, 3 * self.size**2), np.float32)
        return flat.reshape(-1, self.size, self.size, 3)


def _net(dim: int, size: int, hidden: int) -> nn.Module:
    return nn.Sequential(
        nn.Linear(dim, hidden),
        nn.GELU(),
        nn.Linear(hidden, hidden),
        nn.GELU(),
        nn.Linear(hidden, 3 * size * size),
        nn.Sigmoid(),
    )


def train_inverter(
    features: np.ndarray,
    patches: np.ndarray,
    *,
    epochs: int,
    seed: int,
    hidden: int = 512,
    batch: int = 512,
) -> Inverter:
    """Fit the MLP on public pairs: `features` (n, D), `patches` (n, size, size, 3)."""
    size = int(patches.shape[1])
    batch = max(1, min(batch, len(features)))
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    x = np.asarray(features, dtype=np.float32)
    mean = x.mean(axis=0)
    std = x.std(axis=0) + 1e-6
    xt = torch.from_numpy((x - mean) / std)
    yt = torch.from_numpy(np.ascontiguousarray(patches.reshape(len(x), -1), dtype=np.float32))
    net = _net(x.shape[1], size, hidden)
    steps = epochs * max(1, len(x) // batch)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps)
    net.train()
    for epoch in range(epochs):
        order = torch.from_numpy(rng.permutation(len(x)))
        total = 0.0
        for start in range(0, len(x) - batch + 1, batch):
            pick = order[start : start + batch]
            loss = nn.functional.mse_loss(net(xt[pick]), yt[pick])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * batch
        mse = total / max(1, (len(x) // batch) * batch)
        log.info("inversion model: epoch %d/%d, public MSE %.5f", epoch + 1, epochs, mse)
    facts = {"epochs": epochs, "hidden": hidden, "public_mse": round(mse, 6)}
    return Inverter(net, mean, std, size, facts)
