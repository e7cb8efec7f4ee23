"""What the inspection service's answers look like, for its OpenAPI schema (`/docs`).

The routes build their JSON themselves (floats written as Python writes them, so a score
reads back to the same digits as `fedpatch predict` writes); these models describe it.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class RegionAnswer(BaseModel):
    area: int = Field(description="pixels above the pixel threshold")
    bbox: list[int] = Field(
        description="x0, y0, x1, y1 in pixels of the category's native size (x1, y1 exclusive)"
    )
    peak: float = Field(description="highest map value in the region (raw distance)")


class Prediction(BaseModel):
    category: str
    score: float = Field(description="raw nearest-neighbour distance of the worst patch")
    normalized_score: float | None = Field(
        description="score / image threshold: above 1.0 is NOK (null when uncalibrated)"
    )
    verdict: str = Field(description="OK, NOK, or UNCALIBRATED (the model has no threshold)")
    threshold: float | None = Field(description="the category's image threshold (raw)")
    pixel_threshold: float | None = Field(description="the threshold that outlines regions")
    regions: list[RegionAnswer] = Field(description="areas above the pixel threshold, worst first")
    region_count: int
    region_area: int
    size: list[int] = Field(description="width, height of the image as uploaded")
    note: str | None = Field(
        None, description="set when the image was resized to the category's native size"
    )
    model: str = Field(description="fingerprint of the model's feature settings")
    seconds: float = Field(description="time the service spent on the request")
    overlay_png: str | None = Field(None, description="with overlay=1: base64 PNG heatmap")
    filename: str | None = Field(None, description="the uploaded file's name (multipart)")


class ModelAnswer(BaseModel):
    """model.json as written by the run (see the model folder's documentation)."""

    model_config = ConfigDict(extra="allow")
    format: str
    fingerprint: str
    categories: dict[str, Any]
    provenance: dict[str, Any]


class ErrorAnswer(BaseModel):
    error: str = Field(description="what was wrong, for a person")
    status: int
    categories: list[str] | None = Field(None, description="with 404: the model's categories")


ERRORS: dict[int | str, dict[str, Any]] = {
    400: {
        "model": ErrorAnswer,
        "description": "empty body, not an image, truncated image, malformed form",
    },
    401: {"model": ErrorAnswer, "description": "token missing or wrong (with --token-file)"},
    404: {"model": ErrorAnswer, "description": "the model has no such category"},
    408: {"model": ErrorAnswer, "description": "the upload stalled or took too long"},
    413: {
        "model": ErrorAnswer,
        "description": "body above the upload limit, or more than 4x the native pixels",
    },
    415: {"model": ErrorAnswer, "description": "not a PNG/JPEG body or multipart form"},
    422: {"model": ErrorAnswer, "description": "aspect ratio over 2x from the native one"},
    503: {"model": ErrorAnswer, "description": "every scoring slot and queue place is taken"},
}


class ReadyAnswer(BaseModel):
    status: str = Field(description="ready")
    model: str | None = Field(None, description="with the token: the feature fingerprint")
    model_sha256: str | None = Field(None, description="with the token: model.json's SHA-256")
    run_name: str | None = Field(None, description="with the token: the run that built it")
    categories: list[str] | None = Field(None, description="with the token: the categories")
    scoring: dict[str, int] | None = Field(None, description="with the token: slots, queue")


class ReloadAnswer(BaseModel):
    status: str = Field(description="reloaded or rolled back")
    current: dict[str, Any] = Field(description="the model that serves now")
    previous: dict[str, Any] | None = Field(description="the model a rollback returns to")


_BINARY = {"schema": {"type": "string", "format": "binary"}}
IMAGE_BODY: dict[str, Any] = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "properties": {"image": {"type": "string", "format": "binary"}},
                "required": ["image"],
            }
        },
        "image/png": _BINARY,
        "image/jpeg": _BINARY,
    },
}
