"""Writing synthetic AutoVI-format data: the folders, the images, the ground-truth masks,
``defects_config.json`` and the ``synthetic.json`` marker.

Layout written under ``out`` (one folder per category), exactly AutoVI's::

    <cat>/train/good/0000.png ...
    <cat>/test/good/0000.png ...
    <cat>/test/<defect>/0000.png ...
    <cat>/ground_truth/<defect>/<image_id>/0000.png ...   one RGB PNG per region
    <cat>/defects_config.json
    synthetic.json                                         kind, scale, seed, generator

Two kinds of scenes: ``drawn`` (textured shapes, cheap) and ``photo`` (real photographs
with nuisance variation and realistic defects). Each image depends only on (kind, seed,
category, folder, index), so images can be written in any order or in parallel processes
and stay byte-identical.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
from collections.abc import Iterable
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from tqdm import tqdm

from fedpatch_app.data.autovi_release import CATEGORIES, DEFECT_FOLDERS
from fedpatch_app.data.synthetic.layout import (
    DEFECT_CONFIGS,
    SCALES,
    check_existing,
    defects_config,
    folder_code,
)
from fedpatch_app.data.synthetic.marker import write_marker
from fedpatch_app.data.synthetic.pngio import save_png, write_mask
from fedpatch_app.errors import ConfigError

log = logging.getLogger(__name__)

#: The kinds of scenes and the module that makes each.
KINDS: dict[str, str] = {
    "drawn": "fedpatch_app.data.synthetic.drawn",
    "photo": "fedpatch_app.data.synthetic.photo",
}

Job = tuple[str, str, int, str, int, str]  # kind, category, seed, folder, index, root


def _write_image(job: Job) -> tuple[str, int]:
    """Write one image (and its masks); returns (folder, number of regions)."""
    kind, category, seed, folder, index, root_text = job
    scenes = importlib.import_module(KINDS[kind])
    root, name = Path(root_text), f"{index:04d}"
    code = folder_code(category, folder)
    if folder in ("train/good", "test/good"):
        save_png(scenes.good_image(category, seed, code, index), root / folder / f"{name}.png")
        return folder, 0
    defect_folder = folder.split("/", 1)[1]
    img, regions = scenes.defect_image(category, defect_folder, seed, code, index)
    if not regions:  # the scenes guarantee a region; never write a defect image without GT
        raise RuntimeError(f"synthetic {category}/{folder}/{name} has no defect region")
    save_png(img, root / folder / f"{name}.png")
    gt_dir = root / "ground_truth" / defect_folder / name
    if gt_dir.is_dir():  # masks of an earlier run (checked by check_existing)
        for old in gt_dir.glob("*.png"):
            old.unlink()
    pixel = {entry[0]: entry[1] for entry in DEFECT_CONFIGS[category]}
    for k, (defect, region) in enumerate(regions):
        write_mask(region, pixel[defect], gt_dir / f"{k:04d}.png")
    return folder, len(regions)


def _jobs(kind: str, category: str, scale: str, seed: int, root: Path) -> list[Job]:
    counts = SCALES[scale].counts(category)
    return [
        (kind, category, seed, folder, i, str(root))
        for folder, n in counts.items()
        for i in range(n)
    ]


def _generate_category(
    out: Path, category: str, scale: str, seed: int, kind: str, pool: Any
) -> dict[str, Any]:
    root = out / category
    root.mkdir(parents=True, exist_ok=True)
    text = json.dumps(defects_config(category), indent=4) + "\n"
    (root / "defects_config.json").write_text(text)
    jobs = _jobs(kind, category, scale, seed, root)
    counts = SCALES[scale].counts(category)
    summary: dict[str, Any] = {
        "train": counts["train/good"],
        "test_good": counts["test/good"],
        "test_defect": {d: counts[f"test/{d}"] for d in DEFECT_FOLDERS[category]},
        "regions": 0,
    }
    results = pool.imap(_write_image, jobs, chunksize=4) if pool else map(_write_image, jobs)
    for _, regions in tqdm(
        results, total=len(jobs), desc=f"synth {category}", disable=None, leave=False
    ):
        summary["regions"] += regions
    return summary


def _check_request(kind: str, scale: str, categories: Iterable[str] | None) -> list[str]:
    if kind not in KINDS:
        raise ConfigError(f"unknown synthetic kind {kind!r}: choose one of {sorted(KINDS)}")
    if scale not in SCALES:
        raise ConfigError(f"unknown synthetic scale {scale!r}: choose one of {sorted(SCALES)}")
    cats = list(CATEGORIES) if categories is None else list(dict.fromkeys(categories))
    unknown = [c for c in cats if c not in CATEGORIES]
    if unknown:
        raise ConfigError(f"unknown AutoVI categories {unknown}: choose among {list(CATEGORIES)}")
    if not cats:
        raise ConfigError("no categories to generate")
    return cats


def generate(
    out: str | Path,
    scale: str,
    seed: int,
    categories: Iterable[str] | None = None,
    *,
    kind: str,
    workers: int = 1,
) -> dict[str, Any]:
    """Write synthetic AutoVI-format data under ``out``; returns summary counts.

    ``scale``: "tiny" (a few images per folder), "small" (a few dozen) or "autovi"
    (AutoVI's own counts per category and folder). ``kind``: "drawn" or "photo".
    ``workers`` > 1 writes images in that many processes (same bytes). Files of an earlier
    run at the same scale are overwritten; a category folder holding anything else (the
    real dataset, a larger scale) is refused with `ConfigError`.
    """
    cats = _check_request(kind, scale, categories)
    out = Path(out)
    for category in cats:
        check_existing(out, category, SCALES[scale])
    out.mkdir(parents=True, exist_ok=True)
    per_cat = {}
    pool = get_context("spawn").Pool(int(workers)) if int(workers) > 1 else None
    try:
        for category in cats:
            per_cat[category] = _generate_category(out, category, scale, int(seed), kind, pool)
            log.info("synthetic %s (%s): %s", category, kind, per_cat[category])
    finally:
        if pool is not None:
            pool.close()
            pool.join()
    write_marker(out, kind, scale, int(seed), cats)
    total = sum(
        c["train"] + c["test_good"] + sum(c["test_defect"].values()) for c in per_cat.values()
    )
    return {
        "root": str(out),
        "kind": kind,
        "scale": scale,
        "seed": int(seed),
        "images": total,
        "categories": per_cat,
    }


def run_cli(args: argparse.Namespace) -> int:
    """`fedpatch synth`: generate the data and print a short summary."""
    from fedpatch_app.commands import SYNTH
    from fedpatch_app.settings.options import option_values

    s = option_values(args, SYNTH.settings, SYNTH.flags)
    summary = generate(
        args.out,
        s["synthetic_scale"],
        s["seed"],
        s["categories"],
        kind=s["synthetic_kind"],
        workers=args.workers,
    )
    print(
        f"synthetic AutoVI data ({summary['kind']}, {summary['scale']}, seed {summary['seed']}) "
        f"in {summary['root']}"
    )
    print(f"{'category':<16} {'train':>5} {'good':>5} {'defect':>6} {'regions':>7}  defect folders")
    for cat, c in summary["categories"].items():
        folders = ", ".join(f"{d} {n}" for d, n in c["test_defect"].items())
        defects = sum(c["test_defect"].values())
        print(
            f"{cat:<16} {c['train']:>5} {c['test_good']:>5} {defects:>6} {c['regions']:>7}  {folders}"
        )
    print(f"{summary['images']} images in all")
    return 0
