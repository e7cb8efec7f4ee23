"""The audit's own settings (the run settings it audits come from `RunSettings`)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

Mode = Literal["raw", "rotation", "rotation_public_pairs", "relay", "dp", "dp_projection"]
MODES: tuple[str, ...] = (
    "raw",
    "rotation",
    "rotation_public_pairs",
    "relay",
    "dp",
    "dp_projection",
)
#: Epsilon of the dp mode when the run settings leave DP off.
DP_EPSILON = 8.0


class AuditSettings(BaseModel):
    """How hard the attackers try, and what they hold."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    public_root: str = Field(
        "", description="folder of the attacker's public images ('' = built-in set)"
    )
    public_crops: int = Field(
        160, ge=4, le=100_000, description="public crops the attacker trains on"
    )
    training_pairs: int = Field(80_000, ge=256, description="(feature, patch) pairs it trains on")
    epochs: int = Field(4, ge=1, le=1000, description="training epochs of the inversion model")
    hidden: int = Field(512, ge=8, le=8192, description="width of the inversion model")
    patch_size: int = Field(
        16, ge=7, le=64, description="side of the reconstructed patches (pixels)"
    )
    max_rows: int = Field(3000, ge=10, description="shared rows reconstructed per mode")
    candidates: int = Field(
        8, ge=1, description="member candidates per client and category (as many non-members)"
    )
    public_pairs: int = Field(
        128, ge=1, description="known pairs in rotation_public_pairs (DP's public centres)"
    )
    curious_client: int = Field(
        -1, ge=-1, description="the curious client's partition id (-1 = the last)"
    )
    projection_dim: tuple[Annotated[int, Field(ge=1, le=100_000)], ...] = Field(
        (16,),
        min_length=1,
        description="dimension(s) of the dp_projection mode's public subspace (several: one "
        "row per dimension, dp_projection_d<dim>)",
    )
    modes: tuple[Mode, ...] = Field(MODES, description="share modes to audit")
    share_key: str = Field(
        "", description="share key file ('' = a key derived from the seed: reproducible)"
    )
