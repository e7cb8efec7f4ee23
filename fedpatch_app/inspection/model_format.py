"""The format of model.json: its version, its fields, and how older versions are read.

This module owns the format. `ModelJson` describes every field of model.json that fedpatch
writes or reads; `write_model` checks what it writes against it. The description
(`schema_description`: one sorted line per field, with its type and whether it is
required, the feature spec's fields included) is hashed and the hash is pinned next to
the version (`SCHEMA_SHA256`), so a change to the fields that does not bump
`FORMAT_VERSION` fails the tests. Sub-objects that only inform (the run's provenance, the
facts of how a threshold was set) take extra keys; the fields of theirs that code reads
are described.

Versions:

- 1: the first form. Folders written before the ``complete`` field existed lack it; later
  version-1 folders have it.
- 2: ``complete`` is required (with ``incomplete_reason`` when false). A version-1 folder
  is read as version 2: a missing ``complete`` is decided by the rule for older folders
  (complete when it holds thresholds, or when its run asked for none:
  ``calibration_fraction`` 0).

Reading (`read_manifest`): a version older than `FORMAT_VERSION` is migrated in memory,
one version at a time (`MIGRATIONS`), with a logged note; the file is not rewritten (its
signature and SHA-256 stay those of the bytes on disk). A version listed in `UNREADABLE`
(none so far) or newer than this fedpatch knows is refused, naming the version.

To change model.json's fields: change `ModelJson` (and the writer), bump `FORMAT_VERSION`,
add to `MIGRATIONS` the function that reads the previous version as the new one (or list
the previous version in `UNREADABLE` with the reason when no safe reading exists), pin
the new `SCHEMA_SHA256` that the failing test prints, and say what changed in the list
above and in docs/inspection.md.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import re
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from fedpatch_app.errors import ModelError
from fedpatch_app.model.feature_spec import FeatureSpec

log = logging.getLogger(__name__)

FORMAT_NAME = "fedpatch-model"
#: The version this fedpatch writes (and the newest it reads).
FORMAT_VERSION = 4
#: SHA-256 of `schema_description()` for `FORMAT_VERSION`: a test checks it.
SCHEMA_SHA256 = "ec14512ebaee7fd2d4ca90359e8339f65340c6d850b9f4274337c0a288556b25"
CURRENT_FORMAT = f"{FORMAT_NAME}/{FORMAT_VERSION}"


class _Fixed(BaseModel):
    """A part of model.json whose fields are all described: no other key is allowed."""

    model_config = ConfigDict(extra="forbid")


class _Open(BaseModel):
    """A part of model.json that informs: the fields code reads, and any others."""

    model_config = ConfigDict(extra="allow")


class BankEntry(_Fixed):
    file: str
    sha256: str
    rows: int
    dim: int
    covering_radius: float
    query_clip: float


class Threshold(_Open):
    raw: float


class Thresholds(_Open):
    image: Threshold
    pixel: Threshold


class Scaling(_Fixed):
    low: float
    high: float


class SearchIndex(_Fixed):
    file: str
    sha256: str
    kind: str
    lists: int
    probe: int
    rerank: int
    iterations: int
    seed: int


class CategoryEntry(_Fixed):
    bank: BankEntry
    train_images: int
    train_patches: int
    native_size: list[int]
    map_scaling: Scaling
    thresholds: Thresholds | None
    score_scale: str
    search_index: SearchIndex | None = None


class Parent(_Open):
    run_name: str | None
    fingerprint: str
    model_sha256: str


class Provenance(_Open):
    created: str
    versions: dict[str, str]
    run_name: str | None = None
    settings: dict[str, Any] | None = None
    parent: Parent | None = None


class OnnxFile(_Fixed):
    file: str
    sha256: str
    inputs: list[list[int]]


class OnnxExport(_Fixed):
    opset: int
    files: list[OnnxFile]


class ModelJson(_Fixed):
    """model.json as this fedpatch writes it (`feature_spec`: `FeatureSpec.to_dict`)."""

    format: str
    complete: bool
    incomplete_reason: str | None = None
    feature_spec: dict[str, Any]
    fingerprint: str
    categories: dict[str, CategoryEntry]
    provenance: Provenance
    backbone_onnx: OnnxExport | None = None


def _type_name(annotation: Any) -> str:
    if annotation is type(None):
        return "None"
    if isinstance(annotation, type):
        return annotation.__name__
    if annotation is Any:
        return "Any"
    args = typing.get_args(annotation)
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return " | ".join(_type_name(a) for a in args)
    origin = typing.get_origin(annotation)
    return f"{origin.__name__}[{', '.join(_type_name(a) for a in args)}]"


def _nested(annotation: Any) -> list[tuple[str, type[BaseModel]]]:
    """The models inside an annotation, with the path step to reach them ("" or ".*")."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [("", annotation)]
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is dict:
        return [(".*" + step, model) for step, model in _nested(args[1])]
    return [found for arg in args for found in _nested(arg)]


def _describe(model: type[BaseModel], prefix: str) -> list[str]:
    extra = model.model_config.get("extra") == "allow"
    lines = [f"{prefix or '(top)'}: {'open' if extra else 'fixed'}"]
    for name, info in model.model_fields.items():
        path = f"{prefix}.{name}" if prefix else name
        need = "required" if info.is_required() else "optional"
        lines.append(f"{path}: {_type_name(info.annotation)} ({need})")
        for step, inner in _nested(info.annotation):
            lines.extend(_describe(inner, path + step))
    return lines


def schema_description() -> list[str]:
    """One sorted line per field of model.json: path, type, required or optional (and,
    per object, whether it takes other keys); the feature spec's fields included."""
    lines = _describe(ModelJson, "")
    for spec_field in dataclasses.fields(FeatureSpec):
        lines.append(f"feature_spec.{spec_field.name}: {spec_field.type}")
    return sorted(lines)


def schema_sha256() -> str:
    return hashlib.sha256("\n".join(schema_description()).encode("utf-8")).hexdigest()


def check_written(manifest: dict[str, Any]) -> None:
    """ModelError unless `manifest` is model.json of the current version as described."""
    try:
        ModelJson.model_validate(manifest)
    except ValueError as exc:
        raise ModelError(f"model.json to write does not match {CURRENT_FORMAT}: {exc}") from None
    names = {f.name for f in dataclasses.fields(FeatureSpec)}
    if set(manifest["feature_spec"]) != names or manifest["format"] != CURRENT_FORMAT:
        raise ModelError(f"model.json to write does not match {CURRENT_FORMAT}")


def _older_completeness(manifest: dict[str, Any]) -> str | None:
    """Why a folder written before `complete` existed is incomplete, or None."""
    entries = manifest.get("categories")
    if isinstance(entries, dict) and any(
        isinstance(e, dict) and e.get("thresholds") for e in entries.values()
    ):
        return None
    provenance = manifest.get("provenance")
    settings = provenance.get("settings") if isinstance(provenance, dict) else None
    if isinstance(settings, dict) and settings.get("calibration_fraction") == 0:
        return None
    return (
        "it holds no thresholds and was written by an older fedpatch that did not mark "
        "model folders complete: most likely the banks of a run that did not finish"
    )


def _from_1(manifest: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """Version 1 read as version 2: `complete` decided when the folder lacks it."""
    if "complete" in manifest:
        return dict(manifest), "its fields are those of version 2"
    reason = _older_completeness(manifest)
    out = dict(manifest, complete=reason is None)
    if reason is not None:
        out["incomplete_reason"] = reason
        return out, "no 'complete' field and no thresholds: counted as incomplete"
    return out, "no 'complete' field: counted as complete (it holds thresholds, or asked for none)"


def _from_2(manifest: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """Version 2 read as version 3: version 3 only adds the optional `backbone_onnx`."""
    return dict(manifest), "no ONNX backbone recorded (version 3 adds `backbone_onnx`)"


def _from_3(manifest: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """Version 3 read as version 4: version 4 only adds a category's optional
    `search_index` (no index: the category is searched exactly, as it was calibrated)."""
    return dict(manifest), "no search index recorded: exact search (version 4 adds one)"


#: Version n -> the function reading a model.json of version n as version n + 1 (the new
#: manifest and a note on what it did).
MIGRATIONS: dict[int, Callable[[dict[str, Any]], tuple[dict[str, Any], str]]] = {
    1: _from_1,
    2: _from_2,
    3: _from_3,
}
#: Older versions that cannot be read safely, with the reason (said when refusing one).
UNREADABLE: dict[int, str] = {}


def format_version(manifest: Any, path: Path) -> int:
    """The format version of a parsed model.json; ModelError unless this fedpatch reads it."""
    got = manifest.get("format") if isinstance(manifest, dict) else None
    match = re.fullmatch(rf"{FORMAT_NAME}/(\d+)", got) if isinstance(got, str) else None
    if match is None or int(match.group(1)) < 1:
        raise ModelError(
            f"{path}: unknown model format {got!r} (this fedpatch reads "
            f"{FORMAT_NAME}/1 to /{FORMAT_VERSION})"
        )
    version = int(match.group(1))
    if version > FORMAT_VERSION:
        raise ModelError(
            f"{path}: field 'format' is {got!r}, written by a newer fedpatch (this one reads "
            f"up to {CURRENT_FORMAT}): upgrade fedpatch to use this model"
        )
    if version in UNREADABLE:
        raise ModelError(
            f"{path}: field 'format' is {got!r}, which this fedpatch no longer reads: "
            f"{UNREADABLE[version]}. Build the model again with this fedpatch"
        )
    return version


def read_manifest(manifest: Any, path: Path) -> dict[str, Any]:
    """A parsed model.json as the current version: an older one migrated in memory (with
    a logged note), one this fedpatch cannot read refused (ModelError naming the version)."""
    version = format_version(manifest, path)
    out = dict(manifest)
    for old in range(version, FORMAT_VERSION):
        out, note = MIGRATIONS[old](out)
        out["format"] = f"{FORMAT_NAME}/{old + 1}"
        log.info("%s: %s/%d read as /%d (in memory): %s", path, FORMAT_NAME, old, old + 1, note)
    return out
