"""Everything the audit computes once, whatever the share mode: the clients' shares and
their ground truth, the candidates of the membership attack, the attacker's public data
and its inversion model."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedpatch_app.data.autovi import load_category
from fedpatch_app.model.embedding import FeatureSpec
from fedpatch_app.privacy import public as P
from fedpatch_app.privacy.inversion import Inverter, train_inverter
from fedpatch_app.privacy.keys import ShareKey
from fedpatch_app.privacy.membership import Candidates, pick
from fedpatch_app.privacy.patches import input_pixels, patches_at
from fedpatch_app.privacy.settings import AuditSettings
from fedpatch_app.privacy.shares import (
    ClientData,
    ClientShare,
    RecordingPatchCore,
    client_data,
    local_share,
)
from fedpatch_app.settings import RunSettings

log = logging.getLogger(__name__)


@dataclass
class World:
    settings: RunSettings
    audit: AuditSettings
    root: Path
    model: RecordingPatchCore
    shares: list[ClientShare]
    truth: list[np.ndarray]  # per share: the true centre patch of each row
    sample: list[np.ndarray]  # per share: the rows reconstructed (indices)
    candidates: list[Candidates]  # per share
    public_features: np.ndarray
    public_patches: np.ndarray
    inverter: Inverter
    key: ShareKey
    facts: dict

    @property
    def spec(self) -> FeatureSpec:
        return self.model.spec

    @property
    def curious(self) -> int:
        ids = sorted({s.client for s in self.shares})
        return ids[-1] if self.audit.curious_client < 0 else self.audit.curious_client


def _public(model: RecordingPatchCore, audit: AuditSettings, out: Path, size, seed: int):
    images = P.folder_images(Path(audit.public_root)) if audit.public_root else None
    images = images or P.default_public_images()
    P.check_disjoint(images)
    crops = P.write_crops(images, out / "public-crops", audit.public_crops, size, seed)
    feats = model.features(crops, desc="public crops")
    n, h, w, d = feats.shape
    rng = np.random.default_rng(seed)
    flat = rng.choice(n * h * w, size=min(audit.training_pairs, n * h * w), replace=False)
    positions = np.stack([flat // (h * w), (flat // w) % h, flat % w], axis=1)
    pixels = input_pixels(model.spec, model.extractor.backbone, crops)
    patches = patches_at(pixels, positions, model.spec, audit.patch_size)
    rows = feats[positions[:, 0], positions[:, 1], positions[:, 2]]
    names = sorted({p.name for p in images})
    return rows, patches, {"images": len(images), "names": names, "crops": len(crops)}


def _candidates(model, data: list[ClientData], share: ClientShare, root: Path, audit, seed):
    """A share's member candidates, and as many good images in no bank of its category."""
    category = load_category(root, share.category)
    outside = [p for d in data if d.category == share.category for p in d.held_out]
    outside += [s.path for s in category.test if s.is_good]
    paths, members = pick(share.paths, outside, audit.candidates, seed + share.client)
    feats = model.features(paths, desc=f"{share.category}: candidates")
    feats = feats.reshape(len(paths), -1, feats.shape[-1])
    return Candidates(share.client, share.category, paths, members, feats)


def _sample(shares: list[ClientShare], max_rows: int, seed: int) -> list[np.ndarray]:
    total = sum(len(s.rows) for s in shares)
    rng = np.random.default_rng(seed)
    out = []
    for s in shares:
        n = max(1, round(max_rows * len(s.rows) / total))
        out.append(np.sort(rng.permutation(len(s.rows))[: min(n, len(s.rows))]))
    return out


def build(settings: RunSettings, audit: AuditSettings, key: ShareKey, out: Path) -> World:
    root = Path(settings.data_root)
    spec, warnings = _spec(settings)
    model = RecordingPatchCore(
        spec,
        device=settings.device,
        batch_size=settings.batch_size,
        num_workers=settings.num_workers,
    )
    data = client_data(settings, root)
    shares = [local_share(model, d, settings) for d in data]
    truth = []
    for s in shares:
        pixels = input_pixels(spec, model.extractor.backbone, s.paths)
        truth.append(patches_at(pixels, s.positions, spec, audit.patch_size))
    size = load_category(root, shares[0].category).size
    pub_rows, pub_patches, facts = _public(model, audit, out, size, settings.seed)
    inverter = train_inverter(
        pub_rows, pub_patches, epochs=audit.epochs, seed=settings.seed, hidden=audit.hidden
    )
    cands = [_candidates(model, data, s, root, audit, settings.seed) for s in shares]
    facts = {
        "public": facts,
        "inversion": {"pairs": len(pub_rows), **inverter.facts},
        "feature_warnings": warnings,
    }
    return World(
        settings,
        audit,
        root,
        model,
        shares,
        truth,
        _sample(shares, audit.max_rows, settings.seed),
        cands,
        pub_rows,
        pub_patches,
        inverter,
        key,
        facts,
    )


def _spec(settings: RunSettings) -> tuple[FeatureSpec, list[str]]:
    """The features a run with these settings uses (`feature_choice`, as every run)."""
    from fedpatch_app.data.synthetic import is_synthetic
    from fedpatch_app.model.feature_choice import feature_spec

    synthetic = is_synthetic(settings.data_root) is not None
    spec, warnings = feature_spec(settings, synthetic_data=synthetic)
    return spec, list(warnings)
