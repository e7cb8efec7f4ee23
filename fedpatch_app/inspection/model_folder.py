"""The model folder: what every run leaves for use on the line (`RUN/model/`).

```
model/
  model.json          format, feature spec + fingerprint, per category: bank file + SHA-256,
                      size, training counts, map scaling, thresholds (and how they were set);
                      provenance (run, date, kind, partition, clients, privacy, versions,
                      parent model)
  banks/<cat>.npz     the memory bank (numpy, no pickle; `Bank.save`)
  backbone*.onnx      optional (`fedpatch export`): the backbone for line PCs without
                      PyTorch, recorded with its SHA-256 under `backbone_onnx`
  banks/<cat>.ivf.npz the bank's approximate search index (`ann_index`; only for a model
                      built with search = approximate), SHA-256 in model.json like the bank
```

The format of model.json (its version, its fields, how older versions are read) is
`model_format`'s. `load_model` reads an older version migrated in memory, refuses one it
cannot read, recomputes the feature-spec fingerprint, the SHA-256 of every bank file and
each bank's own fingerprint, checks every field of model.json and that each bank records
the category, rows and counts its entry gives it (`model_checks`), and refuses with a
`ModelError` naming the file and field at fault: a changed byte in a bank file is
refused. Given trusted public keys, it first checks the signature over model.json
(`signing`): an unsigned or changed model is refused. Nothing in model.json is a path
of the machine that made it (the weights are named by their identifier, the banks by
their place in the folder).

A model folder written before its thresholds exist (a run writes its banks as soon as they
are built, so that an interrupted run keeps them) says so in model.json: `"complete":
false` and `incomplete_reason`. `load_model` refuses such a folder unless
`allow_incomplete` is set (then it warns); writing the thresholds makes the folder
complete. A folder written before this field existed (format version 1) counts as
complete when it holds thresholds (or its run asked for none: `calibration_fraction` 0).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fedpatch_app.errors import ModelError
from fedpatch_app.hashing import file_sha256 as sha256_of
from fedpatch_app.inspection.model_checks import (
    check_bank_matches,
    check_entry,
    check_search_index,
)
from fedpatch_app.inspection.model_format import CURRENT_FORMAT, check_written, read_manifest
from fedpatch_app.metrics.map_scaling import MapScaling
from fedpatch_app.model.ann_index import IvfIndex
from fedpatch_app.model.bank import Bank
from fedpatch_app.model.feature_spec import FeatureSpec

log = logging.getLogger(__name__)

FORMAT = CURRENT_FORMAT
MODEL_FILE = "model.json"
SCORE_SCALE = (
    "score: raw nearest-neighbour distance of the worst patch (the map maximum); "
    "normalized_score = score / image threshold, so 1.0 is the decision boundary and a "
    "part is NOK above it"
)


@dataclass
class CategoryModel:
    """One category of a model: its bank and how its scores are read."""

    bank: Bank
    native_size: tuple[int, int]
    scaling: MapScaling
    thresholds: dict[str, Any] | None = None
    train_images: int = 0
    #: The bank's approximate search index (calibrated and scored through it); None: exact.
    index: IvfIndex | None = None

    @property
    def image_threshold(self) -> float | None:
        return None if not self.thresholds else float(self.thresholds["image"]["raw"])

    @property
    def pixel_threshold(self) -> float | None:
        return None if not self.thresholds else float(self.thresholds["pixel"]["raw"])


@dataclass
class Model:
    """A loaded, verified model folder."""

    path: Path
    spec: FeatureSpec
    categories: dict[str, CategoryModel]
    manifest: dict[str, Any] = field(default_factory=dict)
    #: SHA-256 of model.json as loaded: which model this is (the fingerprint names only
    #: its feature settings).
    manifest_sha256: str = ""

    @property
    def fingerprint(self) -> str:
        return self.spec.fingerprint()

    @property
    def incomplete_reason(self) -> str | None:
        """Why the folder is incomplete (no thresholds yet), or None when it is complete."""
        return incompleteness(self.manifest)

    def runtime_spec(self, weights_file: str | None = None) -> FeatureSpec:
        """The spec with weights that load on this machine (the recorded spec names them
        by identifier); the same fingerprint, checked."""
        from fedpatch_app.model.backbone import loadable_weights

        weights = loadable_weights(self.spec.weights, self.spec.backbone, weights_file)
        spec = dataclasses.replace(self.spec, weights=weights)
        if spec.fingerprint() != self.fingerprint:
            raise ModelError(f"{self.path}: the weights to load do not give the model's features")
        return spec

    def category(self, name: str) -> CategoryModel:
        if name not in self.categories:
            raise ModelError(
                f"the model in {self.path} has no category {name!r} "
                f"(it has {', '.join(sorted(self.categories)) or 'none'})"
            )
        return self.categories[name]


def versions() -> dict[str, str]:
    """The versions a model was made with (fedpatch, Flower, torch)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("fedpatch", "flwr", "torch"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "unknown"
    return out


def _index_entry(folder: Path, cat: str, index: IvfIndex) -> dict[str, Any]:
    name = f"banks/{cat}.ivf.npz"
    sha = sha256_of(index.save(folder / name))
    return {"file": name, "sha256": sha, "kind": "ivf", **index.params.stored()}


def _category_entry(cat: str, model: CategoryModel, sha: str) -> dict[str, Any]:
    bank = model.bank
    return {
        "bank": {
            "file": f"banks/{cat}.npz",
            "sha256": sha,
            "rows": bank.size,
            "dim": int(bank.features.shape[1]),
            "covering_radius": bank.radius,
            "query_clip": bank.query_clip,
        },
        "train_images": int(model.train_images),
        "train_patches": int(bank.n_patches),
        "native_size": list(model.native_size),
        "map_scaling": model.scaling.to_dict(),
        "thresholds": model.thresholds,
        "score_scale": SCORE_SCALE,
    }


def _write_json(path: Path, data: dict[str, Any]) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2, allow_nan=False)
        handle.write("\n")
    os.replace(tmp, path)


def _save_bank(
    folder: Path, cat: str, bank: Bank, saved: dict[str, tuple[Bank, str]] | None
) -> str:
    """Save a bank file and return its SHA-256; a bank `saved` already holds (the same
    object, its file still there) is not written again."""
    path = folder / "banks" / f"{cat}.npz"
    if saved is not None and cat in saved and saved[cat][0] is bank and path.is_file():
        return saved[cat][1]
    sha = sha256_of(bank.save(path))
    if saved is not None:
        saved[cat] = (bank, sha)
    return sha


def write_model(
    folder: str | Path,
    spec: FeatureSpec,
    categories: dict[str, CategoryModel],
    provenance: dict[str, Any],
    *,
    incomplete: str | None = None,
    saved: dict[str, tuple[Bank, str]] | None = None,
) -> Path:
    """Write (or rewrite) a model folder; returns the path of its model.json.

    `incomplete`: why the folder is not ready for use yet (e.g. the banks of a run still
    calibrating its thresholds), recorded as `"complete": false`; None marks it complete.
    `saved`: the banks this writer already wrote into the folder, so that a folder
    rewritten as a run goes on does not write them again (filled in here)."""
    folder = Path(folder)
    (folder / "banks").mkdir(parents=True, exist_ok=True)
    entries = {}
    for cat, model in sorted(categories.items()):
        entries[cat] = _category_entry(cat, model, _save_bank(folder, cat, model.bank, saved))
        if model.index is not None:
            entries[cat]["search_index"] = _index_entry(folder, cat, model.index)
    manifest = {
        "format": FORMAT,
        "complete": incomplete is None,
        **({"incomplete_reason": incomplete} if incomplete is not None else {}),
        "feature_spec": spec.with_weights_id().to_dict(),
        "fingerprint": spec.fingerprint(),
        "categories": entries,
        "provenance": {
            "created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            **provenance,
            "versions": versions(),
        },
    }
    check_written(manifest)
    _write_json(folder / MODEL_FILE, manifest)
    _sign(folder)
    log.info("model folder written: %s%s", folder, " (incomplete)" if incomplete else "")
    return folder / MODEL_FILE


def set_manifest_field(folder: str | Path, key: str, value: Any) -> Path:
    """Set one top-level field of a model folder's model.json (files added to the folder
    later, recorded with their SHA-256, such as the ONNX backbone of `fedpatch export`)
    and sign it again with the configured key (or drop the signature it no longer
    matches); every other field is kept as it is, an older format written as the current
    one (read as `model_format` migrates it, then checked as every written model.json is)."""
    path = Path(folder) / MODEL_FILE
    manifest = read_manifest(json.loads(path.read_text(encoding="utf-8")), path)
    manifest[key] = value
    manifest["format"] = CURRENT_FORMAT
    check_written(manifest)
    _write_json(path, manifest)
    _sign(path.parent)
    return path


def _sign(folder: Path) -> None:
    """Sign the new model.json with the configured key (or drop a stale signature)."""
    from fedpatch_app.inspection.signing import sign_or_unsign

    sign_or_unsign(folder)


def incompleteness(manifest: dict[str, Any]) -> str | None:
    """Why a model.json's folder is incomplete, or None when it is complete (a folder of
    an older format version is read as the current one first: `model_format`)."""
    if manifest.get("complete") is True:
        return None
    if "complete" not in manifest:
        return f"model.json has no 'complete' field, which {FORMAT} requires"
    return str(manifest.get("incomplete_reason") or "model.json marks it incomplete")


def _run_note(folder: Path) -> str:
    """How the run that wrote the model folder stands, when its status.json is found."""
    from fedpatch_app.run_status import STATUS_FILE, describe, effective_status

    for run_dir in (folder.parent, folder.parent.parent):
        if (run_dir / STATUS_FILE).is_file():
            status = effective_status(run_dir)
            if status is not None and status.get("status") != "completed":
                return f"; its run {run_dir} is {describe(status)}"
            return ""
    return ""


def _check_complete(folder: Path, manifest: dict[str, Any], allow_incomplete: bool) -> None:
    reason = incompleteness(manifest)
    if reason is None:
        note = _run_note(folder)
        if note:
            log.warning("model folder %s is complete%s", folder, note)
        return
    what = f"model folder {folder} is incomplete: {reason}{_run_note(folder)}"
    if not allow_incomplete:
        raise ModelError(
            f"{what}. Its scores have no calibrated thresholds: finish the run (or run it "
            "again with --overwrite), or pass --allow-incomplete to use it anyway"
        )
    log.warning("%s; used anyway (--allow-incomplete): verdicts may be UNCALIBRATED", what)


def _manifest(folder: Path, trusted_keys: tuple[Any, ...] = ()) -> tuple[dict[str, Any], str]:
    """model.json parsed (its signature checked first when keys are trusted), and the
    SHA-256 of the bytes parsed."""
    path = folder / MODEL_FILE
    if not path.is_file():
        raise ModelError(f"{path} not found: {folder} is not a fedpatch model folder")
    if trusted_keys:
        from fedpatch_app.inspection.signing import verified_manifest_bytes

        data = verified_manifest_bytes(folder, trusted_keys)
    else:
        data = path.read_bytes()
    try:
        manifest = json.loads(data.decode("utf-8"))
    except ValueError as exc:
        raise ModelError(f"model manifest {path} is unreadable: {exc}") from None
    return read_manifest(manifest, path), hashlib.sha256(data).hexdigest()


def _spec(manifest: dict[str, Any], path: Path) -> FeatureSpec:
    try:
        spec = FeatureSpec.from_dict(manifest["feature_spec"])
    except (KeyError, TypeError, ValueError, ModelError) as exc:
        raise ModelError(f"{path}: bad feature spec: {exc}") from None
    if spec.fingerprint() != manifest.get("fingerprint"):
        raise ModelError(f"{path}: the feature spec does not match the recorded fingerprint")
    return spec


def _load_category(folder: Path, cat: str, entry: Any, spec: FeatureSpec) -> CategoryModel:
    facts = check_entry(cat, entry, spec, folder / MODEL_FILE)
    bank_file = folder / facts.bank_file
    if bank_file.resolve().parent != (folder / "banks").resolve():
        raise ModelError(f"{folder / MODEL_FILE}: bank of {cat} lies outside the model folder")
    if not bank_file.is_file():
        raise ModelError(f"bank file {bank_file} is missing")
    if sha256_of(bank_file) != facts.sha256:
        raise ModelError(
            f"bank file {bank_file} has changed since the model was written (SHA-256 differs "
            "from model.json): refusing to use it"
        )
    bank = Bank.load(bank_file, expected_spec=spec)
    check_bank_matches(bank, cat, entry, facts, bank_file)
    index = _load_index(folder, cat, entry, bank)
    return CategoryModel(
        bank, facts.native_size, facts.scaling, facts.thresholds, facts.train_images, index
    )


def _load_index(folder: Path, cat: str, entry: dict[str, Any], bank: Bank) -> IvfIndex | None:
    found = check_search_index(entry, cat, folder / MODEL_FILE)
    if found is None:
        return None
    path = folder / found[0]
    if not path.is_file():
        raise ModelError(f"search index {path} of {cat} is missing")
    if sha256_of(path) != found[1]:
        raise ModelError(
            f"search index {path} has changed since the model was written (SHA-256 differs "
            "from model.json): refusing to use it"
        )
    return IvfIndex.load(path, bank.features)


def load_model(
    folder: str | Path, *, allow_incomplete: bool = False, trusted_keys: tuple[Any, ...] = ()
) -> Model:
    """A model folder, verified (see the module doc); an incomplete one only with
    `allow_incomplete` (with a warning); with `trusted_keys` (Ed25519 public keys), only
    one signed by one of them."""
    folder = Path(folder)
    manifest, digest = _manifest(folder, tuple(trusted_keys))
    _check_complete(folder, manifest, allow_incomplete)
    spec = _spec(manifest, folder / MODEL_FILE)
    entries = manifest.get("categories")
    if not isinstance(entries, dict) or not entries:
        raise ModelError(f"{folder / MODEL_FILE}: no categories")
    cats = {cat: _load_category(folder, cat, entry, spec) for cat, entry in entries.items()}
    return Model(folder, spec, cats, manifest, digest)
