"""`fedpatch export`: add the ONNX backbone to a model folder, for line PCs without PyTorch.

Loads and verifies the folder as `fedpatch predict` does (its signature too, given
`--trusted-key`), builds the backbone with the model's weights, exports it
(`fedpatch_app.model.onnx_backbone`) for every input size the model's categories use,
checks each graph against the torch network, records the files and their SHA-256 in
model.json (`backbone_onnx`) and signs model.json again with `--signing-key` (without
one, a signature the new model.json no longer matches is removed, with a warning).
Files of an earlier export are replaced.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from fedpatch_app.inspection.model_folder import Model, load_model, set_manifest_field
from fedpatch_app.inspection.signing import SIGNATURE_FILE
from fedpatch_app.model.backbone_input import input_size
from fedpatch_app.model.onnx_backbone import MANIFEST_KEY, export_backbone, onnx_files

log = logging.getLogger(__name__)


def input_sizes(model: Model) -> list[tuple[int, int]]:
    """The backbone input sizes (H, W) of the model's categories."""
    return sorted(
        {input_size(c.native_size, model.spec.image_size) for c in model.categories.values()}
    )


def export_model(
    folder: str | Path,
    *,
    weights_file: str | None = None,
    allow_incomplete: bool = False,
    trusted_keys: tuple[Any, ...] = (),
) -> dict[str, Any]:
    """Export the ONNX backbone into `folder` and record it; the `backbone_onnx` entry."""
    from fedpatch_app.model.backbone import build_backbone

    model = load_model(folder, allow_incomplete=allow_incomplete, trusted_keys=trusted_keys)
    spec = model.runtime_spec(weights_file)
    net = build_backbone(spec.backbone, spec.weights, seed=spec.seed)
    old = {f.file for f in onnx_files(model.manifest, model.path / "model.json")}
    signed = (model.path / SIGNATURE_FILE).is_file()
    entry = export_backbone(net, model.path, input_sizes(model))
    for name in old - {f["file"] for f in entry["files"]}:
        (model.path / name).unlink(missing_ok=True)
    set_manifest_field(model.path, MANIFEST_KEY, entry)
    if signed and not (model.path / SIGNATURE_FILE).is_file():
        log.warning(
            "%s was signed; model.json changed and no signing key was given, so its "
            "signature was removed: sign it again (--signing-key) before a line that checks "
            "signatures uses it",
            model.path,
        )
    return entry


def run_cli(args: argparse.Namespace) -> int:
    from fedpatch_app.inspection.signing import read_public_keys, use_signing_key

    use_signing_key(args.signing_key)
    entry = export_model(
        args.model,
        weights_file=args.weights_file,
        allow_incomplete=args.allow_incomplete,
        trusted_keys=read_public_keys(args.trusted_key or ()),
    )
    for item in entry["files"]:
        sizes = ", ".join(f"{h}x{w}" for h, w in item["inputs"])
        print(f"{Path(args.model) / item['file']}: input {sizes}")
    return 0
