"""Federated vs centralized on the same data: wall time, peak memory, bytes per client.

Each configuration runs in its own Python process so its peak RSS is its own:

- centralized: `run_centralized` (one bank per category from all training images);
- federated (in-process): the real ServerApp and ClientApp code driven message by
  message in one process (no Ray, no SuperLink): the algorithm's own cost, all five
  clients and the server sharing one process;
- federated (flwr run): a real `flwr run` simulation with five SuperNodes (Ray); its
  peak memory is the largest sum, sampled every 0.5 s, of the resident memory of all the
  run's processes (SuperLink, SuperExec, Ray workers, ClientApps).

Prints ratios against the centralized run measured in the same invocation.

    python benchmarks/federated.py [--scale tiny|small] [--categories ...] [--image-size 128]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = r"""
import json, resource, sys, time, logging
peak = [0]
logging.basicConfig(level=logging.WARNING)
mode, data, out, cats, image_size, run_name = sys.argv[1:7]
cats = cats.split(",")
t0 = time.perf_counter()
common = {"weights": "none", "image-size": int(image_size), "device": "cpu",
          "dataset": "autovi", "data-root": data, "categories": ",".join(cats),
          "out-dir": out, "run-name": run_name, "wait-timeout": 300.0}
if mode == "centralized":
    from pathlib import Path
    from fedpatch_app.runs.centralized import run_centralized
    run_centralized(Path(data), Path(out) / run_name, categories=cats, weights="none",
                    image_size=int(image_size), device="cpu")
elif mode == "inprocess":
    from fedpatch_app.federated.inprocess import run_inprocess
    run_inprocess(common)
else:
    import threading
    from pathlib import Path
    from fedpatch_app.federated.simulation import run_simulation
    home = Path(out) / ".flwr"
    marker = f"FLWR_HOME={home.resolve()}".encode()
    peak = [0]
    done = threading.Event()

    def rss_of_run():
        # Sum of the resident memory of every process of the run (SuperLink, SuperExec,
        # Ray workers, ClientApps): they all carry this run's FLWR_HOME in their env.
        total = 0
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                if marker not in (entry / "environ").read_bytes():
                    continue
                for line in (entry / "status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
            except OSError:
                continue
        return total

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], rss_of_run())
            done.wait(0.5)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    run_simulation(common, flwr_home=home, num_supernodes=5)
    done.set()
    thread.join()
seconds = time.perf_counter() - t0
self_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
peak_kb = peak[0] if mode == "flwr" else self_kb
print(json.dumps({"seconds": seconds, "peak_mib": peak_kb / 1024}))
"""


def run_child(mode: str, data: Path, out: Path, cats: list[str], image_size: int) -> dict:
    name = f"bench-{mode}"
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            CHILD,
            mode,
            str(data),
            str(out),
            ",".join(cats),
            str(image_size),
            name,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        sys.exit(f"{mode} failed:\n{proc.stderr[-3000:]}")
    measured = json.loads(proc.stdout.strip().splitlines()[-1])
    results = json.loads((out / name / "results.json").read_text())
    measured["results"] = results
    return measured


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scale", choices=["tiny", "small"], default="tiny")
    parser.add_argument("--categories", nargs="+", default=["pipe_clip", "tank_screw"])
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--skip-flwr", action="store_true", help="skip the Ray simulation run")
    args = parser.parse_args()

    from fedpatch_app.data.synthetic import generate

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data, out = tmp / "data", tmp / "runs"
        t0 = time.perf_counter()
        generate(data, scale=args.scale, seed=0, categories=args.categories, kind="drawn")
        print(
            f"data: synthetic {args.scale}, {', '.join(args.categories)} ({time.perf_counter() - t0:.1f} s)"
        )
        print(
            f"settings: weights none, image size {args.image_size}, cpu, 5 clients, category partition\n"
        )
        modes = ["centralized", "inprocess"] + ([] if args.skip_flwr else ["flwr"])
        runs = {m: run_child(m, data, out, args.categories, args.image_size) for m in modes}

    base = runs["centralized"]
    print(
        f"{'run':<26} {'wall s':>8} {'x central':>10} {'peak MiB':>9} {'x central':>10} "
        f"{'sPRO@0.3':>9} {'AUROC':>7}"
    )
    labels = {
        "centralized": "centralized",
        "inprocess": "federated (in-process)",
        "flwr": "federated (flwr run, Ray)",
    }
    for mode, r in runs.items():
        mean = r["results"]["mean"]
        print(
            f"{labels[mode]:<26} {r['seconds']:>8.1f} {r['seconds'] / base['seconds']:>10.2f} "
            f"{r['peak_mib']:>9.0f} {r['peak_mib'] / base['peak_mib']:>10.2f} "
            f"{mean['auc_spro']['0.3']:>9.4f} {mean['image_auroc']:>7.4f}"
        )
    fed = runs["inprocess"]["results"]["federated"]
    print("\nbytes per client (in-process run; the flwr run carries the same messages):")
    print(f"{'client':>6} {'partition':>9} {'up MB':>8} {'down MB':>8} {'categories'}")
    for c in fed["clients"]:
        up = sum(c["bytes_up"].values())
        down = sum(c["bytes_down"].values())
        print(
            f"{c['node_id']:>6} {c['partition_id']:>9} {up / 1e6:>8.2f} {down / 1e6:>8.2f} {', '.join(c.get('categories') or [])}"
        )


if __name__ == "__main__":
    main()
