"""Cross-check: `fedpatch evaluate` against the official AutoVI evaluation code.

The official code (github.com/phcarval/autovi_evaluation_code, v3.0) is not part of
fedpatch and is never copied into it: pass a checkout of it with `--evaluator`. Its
`evaluate_experiment.py` needs numpy, pillow and tqdm, all fedpatch dependencies, so by
default it runs with this Python.

On the same exported maps (16-bit PNGs at native size, `<maps>/<category>/test/...`) the
script runs, for every category,

- the official command, as its README gives it:
  `python evaluate_experiment.py --object_name CAT --dataset_base_dir ROOT
  --anomaly_maps_dir MAPS/CAT/test --output_dir OUT`, reading `localization.auc_spro`
  from its `metrics.json`;
- `fedpatch evaluate --data-root ROOT --maps MAPS --out OUT`, reading `auc_spro` from
  its `results.json`;

and prints both AUC-sPRO figures per FPR limit, their difference, and the largest
difference per limit over all categories. It exits 1 when a difference exceeds
`--tolerance`.

Without `--maps` it makes its own maps: tiny synthetic AutoVI-format data (`fedpatch
synth --scale tiny`) and a centralized run with random weights at 64 px (`fedpatch
centralized --weights none --image-size 64`), which exports the maps. With `--maps`,
pass the data the maps belong to as `--data-root` (e.g. a run's `maps/` folder and the
AutoVI root it was run on).

    python benchmarks/official_compare.py --evaluator ~/src/autovi_evaluation_code
    python benchmarks/official_compare.py --evaluator DIR --data-root data/autovi \\
        --maps runs/central/maps --categories pipe_clip

Above 10 million scores per category (every real AutoVI category) the official code
draws the scores for its initial thresholds at random, unseeded, so the figures then
differ by a sampling error (1e-5 to 1e-3); the script says so where it applies.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fedpatch_app.data.autovi import available_categories, load_category
from fedpatch_app.metrics import FPR_LIMITS, limit_key

#: Scores above which the official evaluator subsamples (unseeded) for its thresholds.
OFFICIAL_MAX_SAMPLES = 10_000_000
LIMITS = tuple(limit_key(limit) for limit in FPR_LIMITS)


def run(cmd: list[str], cwd: Path | None, log: Path) -> float:
    """Run a command, its output to `log`; seconds taken. Exits with its tail on failure."""
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(proc.stdout + proc.stderr, encoding="utf-8")
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr)[-3000:]
        raise SystemExit(f"command failed (exit {proc.returncode}): {' '.join(cmd)}\n{tail}")
    return time.perf_counter() - t0


def fedpatch_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "fedpatch_app.cli", *args]


def make_maps(work: Path, categories: list[str] | None) -> tuple[Path, Path]:
    """Tiny synthetic data and a centralized run that exports its maps: (data, maps)."""
    data, run_dir = work / "data", work / "central"
    cats = ["--categories", *categories] if categories else []
    run(
        fedpatch_cmd("synth", "--out", str(data), "--scale", "tiny", "--kind", "drawn", *cats),
        None,
        work / "logs" / "synth.log",
    )
    run(
        fedpatch_cmd(
            "centralized",
            "--data-root",
            str(data),
            "--out",
            str(run_dir),
            "--weights",
            "none",
            "--image-size",
            "64",
            "--device",
            "cpu",
            *cats,
        ),
        None,
        work / "logs" / "centralized.log",
    )
    return data, run_dir / "maps"


def official_auc(
    evaluator: Path, python: str, root: Path, maps: Path, category: str, out: Path
) -> tuple[dict[str, float], float]:
    """The official AUC-sPRO per limit key for one category, and the seconds it took."""
    cat_root = load_category(root, category).root  # root/<cat> or root/<cat>/<cat>
    cmd = [
        python,
        str(evaluator / "evaluate_experiment.py"),
        "--object_name",
        category,
        "--dataset_base_dir",
        str(cat_root.parent),
        "--anomaly_maps_dir",
        str((maps / category / "test").resolve()),
        "--output_dir",
        str(out / category),
    ]
    seconds = run(cmd, evaluator, out / "logs" / f"official-{category}.log")
    metrics = json.loads((out / category / "metrics.json").read_text(encoding="utf-8"))
    raw = metrics["localization"]["auc_spro"]
    return {limit_key(float(k)): v for k, v in raw.items()}, seconds


def fedpatch_auc(
    root: Path, maps: Path, categories: list[str], out: Path
) -> tuple[dict[str, dict[str, float]], float]:
    """`fedpatch evaluate` on the same maps: AUC-sPRO per category and limit key."""
    cmd = fedpatch_cmd(
        "evaluate",
        "--data-root",
        str(root),
        "--maps",
        str(maps),
        "--out",
        str(out),
        "--categories",
        *categories,
    )
    seconds = run(cmd, None, out / "fedpatch-evaluate.log")
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    return {c: results["categories"][c]["auc_spro"] for c in categories}, seconds


def n_scores(root: Path, category: str) -> int:
    cat = load_category(root, category)
    width, height = cat.size
    return len(cat.test) * width * height


def fmt(value: float | None) -> str:
    return "None" if value is None else f"{value:.12f}"


def compare(
    official: dict[str, dict[str, float]], ours: dict[str, dict[str, float]]
) -> dict[str, float]:
    """Print the table; return the largest |official - fedpatch| per limit key."""
    worst = dict.fromkeys(LIMITS, 0.0)
    print("| category | limit | official | fedpatch evaluate | \\|diff\\| |")
    print("|---|---|---|---|---|")
    for cat in official:
        for key in LIMITS:
            a, b = official[cat].get(key), ours[cat].get(key)
            if a is None or b is None:
                diff = 0.0 if a is None and b is None else float("inf")
            else:
                diff = abs(a - b)
            worst[key] = max(worst[key], diff)
            print(f"| {cat} | {key} | {fmt(a)} | {fmt(b)} | {diff:.1e} |")
    return worst


def evaluator_version(evaluator: Path) -> str:
    proc = subprocess.run(
        ["git", "-C", str(evaluator), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    )
    return proc.stdout.strip() if proc.returncode == 0 else "unknown (not a git checkout)"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--evaluator",
        required=True,
        type=Path,
        help="checkout of the official autovi_evaluation_code",
    )
    parser.add_argument(
        "--evaluator-python",
        default=sys.executable,
        help="Python that runs the official code (default: this one)",
    )
    parser.add_argument("--data-root", type=Path, help="AutoVI-format data the maps belong to")
    parser.add_argument("--maps", type=Path, help="folder holding <category>/test/<defect>/*.png")
    parser.add_argument("--categories", nargs="+", help="default: every category of the maps")
    parser.add_argument("--work", type=Path, help="folder for data, maps and outputs (kept)")
    parser.add_argument(
        "--tolerance",
        type=float,
        default=1e-9,
        help="largest difference accepted (exit 1 above it)",
    )
    args = parser.parse_args(argv)
    if not (args.evaluator / "evaluate_experiment.py").is_file():
        parser.error(f"--evaluator {args.evaluator}: no evaluate_experiment.py there")
    if (args.maps is None) != (args.data_root is None):
        parser.error("--maps and --data-root go together (or neither: synthetic maps)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="official-compare-") as tmp:
        work = (args.work or Path(tmp)).resolve()
        if args.maps is None:
            root, maps = make_maps(work, args.categories)
        else:
            root, maps = args.data_root.resolve(), args.maps.resolve()
        cats = args.categories or [c for c in available_categories(root) if (maps / c).is_dir()]
        if not cats:
            raise SystemExit(f"no category of {root} has maps under {maps}")
        print(f"official evaluator: commit {evaluator_version(args.evaluator)} of the checkout")
        if args.maps is None:
            print("maps: tiny synthetic data, centralized run (random weights, 64 px)\n")
        else:
            print(f"data: {args.data_root}\nmaps: {args.maps}\n")
        official, seconds = {}, 0.0
        for cat in cats:
            official[cat], took = official_auc(
                args.evaluator, args.evaluator_python, root, maps, cat, work / "official"
            )
            seconds += took
        ours, ours_seconds = fedpatch_auc(root, maps, cats, work / "fedpatch")
        worst = compare(official, ours)
        print(f"\ntime: official {seconds:.1f} s, fedpatch evaluate {ours_seconds:.1f} s")
        sampled = [c for c in cats if n_scores(root, c) > OFFICIAL_MAX_SAMPLES]
        if sampled:
            print(
                f"note: {', '.join(sampled)} hold more than {OFFICIAL_MAX_SAMPLES:,} scores: "
                "the official thresholds are sampled (unseeded) there"
            )
        print("largest |official - fedpatch| per FPR limit over", len(cats), "categories:")
        for key in LIMITS:
            print(f"  AUC-sPRO@{key:<4} {worst[key]:.1e}")
        return 0 if max(worst.values()) <= args.tolerance else 1


if __name__ == "__main__":
    raise SystemExit(main())
