"""What the merge defences cost honest federations, over a grid of where users are.

Each cell is one honest federated run (five clients, the real ServerApp and ClientApp
through the in-process grid) with the defaults, on the small synthetic data:

    partition   iid, category, dirichlet (alpha 0.5; `dirichlet-0.1` as an extra cell)
    data        photo (real photographs) and drawn scenes
    image size  128 and 256 px
    features    efficientnet_lite0 with ImageNet weights, wide_resnet50_2 with weights none
    seed        0 and 1 (the run's seed: partition, calibration split, projections)

Per cell and category it records the rows the robust merge left out (per client, with
the client's training images), the metric change against the same run with
`robust-merge = off` (AUC-sPRO@0.3 and image AUROC), and whom the source check flagged
(under its default `flag` no metric depends on it: every flag in an honest run is false).
A cell whose defended run left no row out has the same banks as the undefended run (the
merge is deterministic), so its change is exactly 0 and the undefended run is skipped;
the cell says so.

Features are extracted once per image and feature setting and kept in `--cache`
(`.npy` per image, keyed by the feature spec's fingerprint and the file's content), so
the grid's 48 cells cost 8 extractions. Each finished cell is written to
`OUT/cells/<cell>.json` at once; a rerun skips finished cells (the grid can span several
sittings). Finished cells kept in the repository (`--kept`, default
benchmarks/results/honest-grid/cells, where `benchmarks/figures.py --run honest-grid` keeps
them) count as finished too: they are copied into OUT and not measured again. `--summary`
prints the tables from the finished cells only.

    python benchmarks/honest_grid.py --out runs/honest-grid [--cells PATTERN ...]
        [--data-dir data/grid] [--cache DIR] [--kept DIR] [--summary]

Targets (docs/security.md 3.3): no category of an honest run loses more than 0.005 image
AUROC or AUC-sPRO@0.3 to the defence, and no client's whole category is ever left out.
"""

from __future__ import annotations

import argparse
import fnmatch
import hashlib
import itertools
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PARTITIONS = ("iid", "category", "dirichlet")
KINDS = ("photo", "drawn")
SIZES = (128, 256)
BACKBONES = {"effnet": ("efficientnet_lite0", "imagenet"), "wrn": ("wide_resnet50_2", "none")}
SEEDS = (0, 1)
#: The extra cell: a very skewed Dirichlet split, at the setting users are most likely at.
EXTRA = ("dirichlet-0.1", "photo", 256, "effnet", 0)
#: Metrics compared with and without the defence.
METRICS = ("auc_spro_0.3", "image_auroc")
TARGET = 0.005


def cells() -> list[tuple[str, str, int, str, int]]:
    grid = itertools.product(PARTITIONS, KINDS, SIZES, BACKBONES, SEEDS)
    return [*grid, EXTRA]


def cell_name(cell: tuple[str, str, int, str, int]) -> str:
    partition, kind, size, backbone, seed = cell
    return f"{partition}_{kind}_{size}_{backbone}_s{seed}"


# ---------------------------------------------------------------------- feature cache


def _file_key(path: str | os.PathLike) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:32]


def install_feature_cache(cache: Path) -> None:
    """Make `FeatureExtractor.extract_iter` keep each image's features in `cache`: a
    second run with the same feature spec reads them instead of running the network.
    (Features computed in another batch may differ in the last bits from a fresh batch;
    every run of the grid reads the same cached values, so on/off compare like with like.)
    """
    from fedpatch_app.model.embedding import FeatureExtractor

    original = FeatureExtractor.extract_iter
    if getattr(original, "_cached", False):
        return

    def extract_iter(self, paths: Sequence[Any], desc: str = "features") -> Iterator[Any]:
        paths = list(paths)
        folder = cache / self.spec.fingerprint()
        folder.mkdir(parents=True, exist_ok=True)
        files = [folder / f"{_file_key(p)}.npy" for p in paths]
        missing = [i for i, f in enumerate(files) if not f.is_file()]
        if missing:
            for start, feats in original(self, [paths[i] for i in missing], desc):
                for j, feat in enumerate(feats):
                    np.save(files[missing[start + j]], feat)
        batch = max(1, int(getattr(self, "batch_size", 8)))
        for start in range(0, len(paths), batch):
            yield start, np.stack([np.load(f) for f in files[start : start + batch]])

    extract_iter._cached = True  # type: ignore[attr-defined]
    FeatureExtractor.extract_iter = extract_iter  # type: ignore[method-assign]


# ---------------------------------------------------------------------- one cell


def data_root(data_dir: Path, kind: str) -> Path:
    """The small synthetic data of `kind`, generated once."""
    root = data_dir / f"{kind}-small"
    if not (root / "pipe_clip").is_dir():
        cmd = [sys.executable, "-m", "fedpatch_app.cli", "synth", "--out", str(root)]
        cmd += ["--kind", kind, "--scale", "small", "--workers", "2"]
        subprocess.run(cmd, check=True, cwd=ROOT)
    return root


def run_config(cell: tuple[str, str, int, str, int], root: Path, out: Path, **extra: Any):
    from fedpatch_app.settings import from_run_config, to_run_config

    partition, _, size, backbone, seed = cell
    name, weights = BACKBONES[backbone]
    alpha = 0.5
    if partition.startswith("dirichlet-"):
        partition, alpha = "dirichlet", float(partition.split("-", 1)[1])
    config = {
        "data-root": str(root),
        "dataset": "autovi",
        "partition": partition,
        "dirichlet-alpha": alpha,
        "image-size": size,
        "backbone": name,
        "weights": weights,
        "seed": seed,
        "device": "cpu",
        "out-dir": str(out),
        "run-name": "run",
        **extra,
    }
    return to_run_config(from_run_config(config))


def _support(block: dict) -> dict[str, Any]:
    support = block.get("support", {})
    return {
        "checked": support.get("checked", False),
        "clients": support.get("clients", {}),
        "left_out": support.get("quarantined", 0),
        "rows": support.get("rows", 0),
    }


def _flagged(block: dict) -> list[str]:
    check = block.get("source_check") or {}
    return sorted(p for p, v in check.get("sources", {}).items() if v.get("flagged"))


def run_once(cell, root: Path, **extra: Any) -> dict[str, Any]:
    """One honest run; its per-category metrics, merge verdicts and source-check flags."""
    from fedpatch_app.federated.inprocess import run_inprocess

    with tempfile.TemporaryDirectory(prefix="honest-grid-") as tmp:
        t0 = time.perf_counter()
        outcome = run_inprocess(run_config(cell, root, Path(tmp), **extra))
        seconds = time.perf_counter() - t0
        results = outcome.results
    banks = results["federated"]["banks"]
    categories = {}
    for cat, block in results["categories"].items():
        categories[cat] = {
            "auc_spro_0.3": block["auc_spro"]["0.3"],
            "image_auroc": block["image_auroc"]["mean"],
            "support": _support(banks.get(cat, {})),
            "source_check_flagged": _flagged(banks.get(cat, {})),
        }
    return {"seconds": round(seconds, 1), "categories": categories}


def measure_cell(cell, data_dir: Path) -> dict[str, Any]:
    root = data_root(data_dir, cell[1])
    on = run_once(cell, root)
    left_out = sum(c["support"]["left_out"] for c in on["categories"].values())
    out: dict[str, Any] = {"cell": cell_name(cell), "settings": list(cell), "on": on}
    if left_out == 0:
        out["off"] = None
        out["note"] = "no row left out: the banks equal those of robust-merge=off"
        changes = {cat: dict.fromkeys(METRICS, 0.0) for cat in on["categories"]}
    else:
        off = run_once(cell, root, **{"robust-merge": "off"})
        out["off"] = off
        changes = {
            cat: {m: on["categories"][cat][m] - off["categories"][cat][m] for m in METRICS}
            for cat in on["categories"]
        }
    out["change"] = changes
    return out


# ---------------------------------------------------------------------- summary


def _whole_drops(result: dict) -> list[str]:
    drops = []
    for cat, block in result["on"]["categories"].items():
        for client, verdict in block["support"]["clients"].items():
            if verdict["rows"] and verdict["quarantined"] == verdict["rows"]:
                drops.append(f"{cat}: {client}")
    return drops


def stale_verdicts(result: dict) -> list[str]:
    """Verdicts a cell recorded that today's rule would not give for the same counts (the
    action is a function of a client's unsupported rows, rows and size ratio): such a
    cell was measured under an earlier rule and must be measured again (`--redo`)."""
    from fedpatch_app.defences.robust_merge import action_for

    stale = []
    for cat, block in result["on"]["categories"].items():
        for client, v in block["support"]["clients"].items():
            if "size_ratio" not in v:
                stale.append(f"{cat}: {client}: no size ratio")
                continue
            now = action_for(v["unsupported"], v["rows"], v["size_ratio"], "quarantine")
            if (now or "kept") != v["action"]:
                stale.append(f"{cat}: {client}: {v['action']} -> {now or 'kept'}")
    return stale


def summary(results: list[dict]) -> str:
    from fedpatch_app.defences.robust_merge import honest_share

    lines = [
        "| cell | unsupported rows (kept as tails) | largest share of a client / its limit | "
        "rows left out | worst change AUC-sPRO@0.3 | worst change image AUROC | "
        "whole categories left out | source check flags |",
        "|---|---|---|---|---|---|---|---|",
    ]
    worst = {m: 0.0 for m in METRICS}
    flags = drops = 0
    for r in results:
        cats = r["on"]["categories"]
        left = sum(c["support"]["left_out"] for c in cats.values())
        rows = sum(c["support"]["rows"] for c in cats.values())
        verdicts = [v for c in cats.values() for v in c["support"]["clients"].values()]
        unsupported = sum(v["unsupported"] for v in verdicts)
        tails = sum(v["unsupported"] for v in verdicts if v["action"] == "kept-tail")
        share, limit = max(
            ((v["unsupported"] / v["rows"], honest_share(v["size_ratio"])) for v in verdicts),
            key=lambda pair: pair[0] / pair[1],
        )
        low = {m: min(c[m] for c in r["change"].values()) for m in METRICS}
        for m in METRICS:
            worst[m] = min(worst[m], low[m])
        whole = _whole_drops(r)
        drops += len(whole)
        flagged = [
            f"{cat}: {', '.join(c['source_check_flagged'])}"
            for cat, c in cats.items()
            if c["source_check_flagged"]
        ]  # noqa: E501
        flags += bool(flagged)
        lines.append(
            f"| {r['cell']} | {unsupported} ({tails}) | {share:.2%} / {limit:.0%} | "
            f"{left} of {rows} | "
            f"{low['auc_spro_0.3']:+.4f} | "
            f"{low['image_auroc']:+.4f} | {'; '.join(whole) or 'none'} | "
            f"{'; '.join(flagged) or 'none'} |"
        )
    met = all(worst[m] >= -TARGET for m in METRICS) and drops == 0
    stale = [f"{r['cell']}: {s}" for r in results for s in stale_verdicts(r)]
    if stale:
        lines += ["", "MEASURED UNDER AN EARLIER RULE (rerun with --redo):", *stale]
    lines += [
        "",
        f"{len(results)} cells; worst change AUC-sPRO@0.3 {worst['auc_spro_0.3']:+.4f}, image "
        f"AUROC {worst['image_auroc']:+.4f} (target >= -{TARGET}); whole categories left out: "
        f"{drops}; runs with a source-check flag (all false): {flags} of {len(results)}; "
        f"target {'met' if met else 'MISSED'}",
    ]
    return "\n".join(lines)


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, required=True, help="folder of the cells' results")
    p.add_argument("--data-dir", type=Path, default=Path("data/grid"), help="synthetic data")
    p.add_argument("--cache", type=Path, default=None, help="feature cache (default OUT/cache)")
    p.add_argument("--cells", nargs="*", default=["*"], help="cell name patterns to run")
    p.add_argument("--summary", action="store_true", help="only print the finished cells")
    p.add_argument(
        "--kept",
        type=Path,
        default=ROOT / "benchmarks" / "results" / "honest-grid" / "cells",
        help="finished cells kept from earlier sittings (copied into OUT, not measured again)",
    )
    p.add_argument("--redo", action="store_true", help="measure finished cells again")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("TQDM_DISABLE", "1")
    done = args.out / "cells"
    done.mkdir(parents=True, exist_ok=True)
    if args.kept.is_dir() and not args.redo and args.kept.resolve() != done.resolve():
        for kept in args.kept.glob("*.json"):
            if not (done / kept.name).exists():
                shutil.copy(kept, done / kept.name)
    install_feature_cache(args.cache or args.out / "cache")
    # In the order of the patterns: the cells that matter most can be measured first.
    chosen = list(
        dict.fromkeys(c for p in args.cells for c in cells() if fnmatch.fnmatch(cell_name(c), p))
    )
    for cell in [] if args.summary else chosen:
        path = done / f"{cell_name(cell)}.json"
        if path.is_file() and not args.redo:
            continue
        t0 = time.perf_counter()
        result = measure_cell(cell, args.data_dir)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(result, indent=1), encoding="utf-8")
        os.replace(tmp, path)
        print(f"{cell_name(cell)}: {time.perf_counter() - t0:.0f} s", flush=True)
    results = [
        json.loads((done / f"{cell_name(c)}.json").read_text(encoding="utf-8"))
        for c in chosen
        if (done / f"{cell_name(c)}.json").is_file()
    ]
    print(summary(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
