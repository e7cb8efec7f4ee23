"""`fedpatch predict`: verdicts for new images of one category with a model folder.

Writes to `--out`:

- `predictions.csv`: path, category, score, normalized_score, verdict, region_count;
- `predictions.jsonl`: the same per image, with the regions (area, bounding box, peak);
- `overlays/<name>.png` (`--overlays`): the image with its heatmap and regions;
- `maps/<name>.png` (`--write-maps`): the anomaly map as a 16-bit PNG at the category's
  native size, on the category's map scaling (the same levels the study's exported maps use).

Every image is checked before any work (readable, and within the size rule of
`image_limits`, from its header), and the outputs are written into a staging
folder that becomes the output only when everything succeeded: a failure leaves nothing
half-written.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import shutil
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from fedpatch_app.errors import DataError
from fedpatch_app.inspection.model_folder import CategoryModel, load_model
from fedpatch_app.inspection.onnx_predictor import make_predictor
from fedpatch_app.inspection.overlay import PNG_LEVEL, overlay_image
from fedpatch_app.inspection.predictor import PartResult, checked_size
from fedpatch_app.outputs import prepare_output

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
CSV_FIELDS = ("path", "category", "score", "normalized_score", "verdict", "region_count")
STAGE = ".incomplete"


def collect_images(inputs: Sequence[str | Path]) -> list[Path]:
    """The image files named, and the images under the folders named (sorted)."""
    found: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found += sorted(
                p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
            )
        elif path.is_file():
            found.append(path)
        else:
            raise DataError(f"{path}: no such image or folder")
    if not found:
        raise DataError(f"no images found in {', '.join(map(str, inputs))}")
    return found


def output_names(paths: Sequence[Path]) -> list[str]:
    """One file name per image, `<folder>-<stem>` (AutoVI repeats stems across defect
    folders), made unique with a counter where they still repeat."""
    names: list[str] = []
    seen: dict[str, int] = {}
    for path in paths:
        stem = f"{path.parent.name}-{path.stem}" if path.parent.name else path.stem
        seen[stem] = seen.get(stem, 0) + 1
        names.append(stem if seen[stem] == 1 else f"{stem}-{seen[stem]}")
    return names


def _csv(results: Sequence[PartResult]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_FIELDS)
    for r in results:
        normalized = "" if r.normalized_score is None else repr(r.normalized_score)
        writer.writerow([r.path, r.category, repr(r.score), normalized, r.verdict, len(r.regions)])
    return buffer.getvalue()


def write_outputs(
    stage: Path,
    results: Sequence[PartResult],
    category: CategoryModel,
    write_maps: bool,
    overlays: bool = False,
) -> None:
    """Every output file of the images into `stage`."""
    names = output_names([Path(r.path) for r in results])
    stage.mkdir(parents=True)
    for folder, wanted in (("overlays", overlays), ("maps", write_maps)):
        if wanted:
            (stage / folder).mkdir()
    lines = []
    for name, result in zip(names, results, strict=True):
        record = result.to_dict()
        if overlays:
            scaling, regions = category.scaling, result.regions
            overlay = overlay_image(result.path, result.anomaly_map, scaling, regions)
            overlay.save(stage / "overlays" / f"{name}.png", compress_level=PNG_LEVEL)
            record["overlay"] = f"overlays/{name}.png"
        if write_maps:
            levels = category.scaling.to_uint16(result.anomaly_map)
            Image.fromarray(levels).save(stage / "maps" / f"{name}.png", format="PNG")
        lines.append(json.dumps(record, allow_nan=False))
    (stage / "predictions.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (stage / "predictions.csv").write_text(_csv(results), encoding="utf-8")


def _publish(stage: Path, out: Path) -> None:
    for entry in stage.iterdir():
        entry.rename(out / entry.name)
    stage.rmdir()


def run_predict(
    model_dir: str | Path,
    category: str,
    out: str | Path,
    inputs: Sequence[str | Path],
    *,
    device: str = "auto",
    batch_size: int = 8,
    write_maps: bool = False,
    overlays: bool = False,
    overwrite: bool = False,
    weights_file: str | None = None,
    search: str = "approximate",
    allow_incomplete: bool = False,
    trusted_keys: tuple = (),
    runtime: str = "auto",
) -> list[PartResult]:
    """Score the images and write the outputs (see the module doc); a model folder marked
    incomplete is refused unless `allow_incomplete`; with `trusted_keys`, an unsigned or
    changed one is refused. `runtime`: torch, onnx or auto (`onnx_predictor`)."""
    model = load_model(model_dir, allow_incomplete=allow_incomplete, trusted_keys=trusted_keys)
    cat = model.category(category)
    paths = collect_images(inputs)
    for path in paths:
        checked_size(path, cat.native_size)  # every image scorable before any work
    out = prepare_output(out, overwrite=overwrite)
    predictor = make_predictor(
        model,
        runtime=runtime,
        device=device,
        batch_size=batch_size,
        weights_file=weights_file,
        search=search,
    )
    results = predictor.score(category, paths)
    stage = out / STAGE
    try:
        write_outputs(stage, results, cat, write_maps, overlays)
        _publish(stage, out)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return results


def run_cli(args: argparse.Namespace) -> int:
    from fedpatch_app.inspection.signing import read_public_keys
    from fedpatch_app.settings.options import settings_from_args

    settings = settings_from_args(args)
    trusted = read_public_keys(args.trusted_key or ())
    chosen = {k: getattr(settings, k) for k in ("device", "batch_size", "write_maps", "overwrite")}
    chosen["search"] = args.search
    chosen["overlays"] = args.overlays
    where = (args.model, args.category, args.out, args.paths)
    results = run_predict(
        *where,
        weights_file=args.weights_file,
        allow_incomplete=args.allow_incomplete,
        trusted_keys=trusted,
        runtime=args.runtime,
        **chosen,
    )
    nok = sum(r.verdict == "NOK" for r in results)
    print(f"{len(results)} images: {nok} NOK, {len(results) - nok} OK or uncalibrated")
    print(f"predictions: {Path(args.out) / 'predictions.csv'}")
    return 0
