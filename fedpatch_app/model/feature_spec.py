"""The feature specification: everything that determines the patch features, and its
fingerprint. Free of PyTorch, so that a line PC reads and checks model folders without it
(the extraction itself is in `fedpatch_app.model.embedding`)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from fedpatch_app.errors import ConfigError, ModelError
from fedpatch_app.model.backbone_facts import backbone_facts, weights_identifier
from fedpatch_app.settings.schema import MIN_IMAGE_SIZE, RunSettings

#: The run settings' defaults: the feature spec's, defined once in the schema.
_RUN = RunSettings()


@dataclass(frozen=True)
class FeatureSpec:
    """Everything that determines the patch features; banks are only comparable when
    their specs' fingerprints match.

    The fields that are run settings (``backbone``, ``weights``, ``image_size``, ``seed``)
    default to the schema's defaults. ``backbone``: a registered backbone's name. ``weights``:
    ``"imagenet"`` (the backbone's own ImageNet checkpoint), ``"none"``, a state-dict path,
    or a weights identifier (``"imagenet-v1"``, ``"imagenet-lite0-57934424"``,
    ``"file:<sha256 prefix>"``). ``layers`` defaults to the backbone's two feature maps (the
    only ones supported). ``embed_dim`` is the patch width; a larger value than the two
    maps' channels together is lowered to that sum (see the module docstring).
    ``projection_dim`` and ``seed`` are those of the coreset's random projection.
    """

    weights: str = _RUN.weights
    image_size: int = _RUN.image_size
    embed_dim: int = 1024
    backbone: str = _RUN.backbone
    layers: tuple[str, ...] | None = None
    neighbourhood: int = 3
    projection_dim: int | None = 128
    seed: int = _RUN.seed

    def __post_init__(self) -> None:
        object.__setattr__(self, "weights", str(self.weights))
        info = backbone_facts(self.backbone)
        layers = info.layers if self.layers is None else tuple(self.layers)
        object.__setattr__(self, "layers", layers)
        if layers != info.layers:
            raise ConfigError(
                f"layers {layers!r} are not supported for {self.backbone} (only {info.layers})"
            )
        if int(self.image_size) < MIN_IMAGE_SIZE:
            raise ConfigError(
                f"image_size must be at least {MIN_IMAGE_SIZE}, got {self.image_size}"
            )
        if int(self.embed_dim) < 2:
            raise ConfigError(f"embed_dim must be at least 2, got {self.embed_dim}")
        object.__setattr__(self, "embed_dim", min(int(self.embed_dim), sum(info.channels)))
        if int(self.neighbourhood) < 1 or int(self.neighbourhood) % 2 == 0:
            raise ConfigError(f"neighbourhood must be an odd number >= 1, got {self.neighbourhood}")
        if self.projection_dim is not None and int(self.projection_dim) < 1:
            raise ConfigError(f"projection_dim must be >= 1 or None, got {self.projection_dim}")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict of all fields (``layers`` as a list)."""
        out = dataclasses.asdict(self)
        out["layers"] = list(self.layers)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureSpec:
        """Inverse of :meth:`to_dict`; unknown keys are a ``ModelError``."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ModelError(f"feature spec has unknown field(s) {unknown}")
        values = dict(data)
        if "layers" in values:
            values["layers"] = tuple(values["layers"])
        return cls(**values)

    def with_weights_id(self) -> FeatureSpec:
        """The same spec with ``weights`` replaced by its identifier (portable, no path)."""
        return dataclasses.replace(self, weights=weights_identifier(self.weights, self.backbone))

    def fingerprint(self) -> str:
        """First 16 hex characters of the SHA-256 of the canonical JSON of all fields.

        ``weights`` enters as its identifier (``weights_id``), so a path and the file's
        identifier give the same fingerprint on every machine.
        """
        data = self.with_weights_id().to_dict()
        text = json.dumps(data, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
