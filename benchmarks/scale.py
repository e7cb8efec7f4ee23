"""Benchmark: what a run costs at AutoVI's scale, and how the cost grows.

For each fraction of the training images (the test images stay all of them), on data in
the AutoVI layout (`fedpatch synth --scale autovi` makes AutoVI's own counts offline):

* centralized: `fedpatch centralized` in its own process;
* federated: `fedpatch run` (a real `flwr run` simulation, five SuperNodes, IID);

and prints, per run: wall time, peak resident memory of the server (the ServerApp's
process) and of the largest client (the largest ClientApp process; centralized: the one
process), bytes up and down, and the federated/centralized ratios against the targets:
federated wall time <= 1.3x centralized; server peak <= 2x the largest global bank;
bytes up <= local-oversample x the global banks' size + the evaluation statistics.
Then a growth exponent per quantity (least squares of log(value) on log(training
images)), so that what did not fit the machine can be extrapolated.

Memory is sampled every 0.2 s from /proc for the run's process tree. A Python process
that has imported torch, Flower and the ServerApp already holds several hundred MiB
before it sees any bank, so the server is also given as its peak above that idle
process (measured in the same run): that is what the banks and the merge cost.

One unmeasured centralized run on the first fraction comes first (`--no-warmup` skips
it), so that the first measured run does not pay for a cold page cache alone.

Usage::

    fedpatch synth --out data/autovi-scale --kind photo --scale autovi --workers 2
    python benchmarks/scale.py --data-root data/autovi-scale --fractions 0.1 0.25 0.5 1.0
    python benchmarks/scale.py --data-root D --fractions 0.1 0.25 --categories pipe_clip  # quick
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from fedpatch_app.data.autovi import available_categories

PAGE = os.sysconf("SC_PAGE_SIZE")
ROLES = {"server": (b"flwr-serverapp", b"flwr-simulation"), "client": (b"ClientAppActor",)}


def _rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm") as handle:
            return int(handle.read().split()[1]) * PAGE
    except OSError:
        return 0


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _children(root: int) -> set[int]:
    """Every process whose ancestry leads to `root` (Ray and Flower start daemons)."""
    parent: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                parent[int(entry.name)] = int(fields[1])
            except (OSError, IndexError, ValueError):
                continue
    found, frontier = {root}, [root]
    while frontier:
        pid = frontier.pop()
        kids = [p for p, pp in parent.items() if pp == pid and p not in found]
        found.update(kids)
        frontier += kids
    return found


class Monitor:
    """Peak RSS per role (server, client, other) of a process tree, sampled in a thread."""

    def __init__(self, root: int) -> None:
        self.root = root
        self.peak = {"server": 0, "client": 0, "main": 0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _role(self, pid: int) -> str:
        cmd = _cmdline(pid)
        for role, marks in ROLES.items():
            if any(m in cmd for m in marks):
                return role
        return "main"

    def _run(self) -> None:
        while not self._stop.is_set():
            for pid in _children(self.root):
                role = self._role(pid)
                self.peak[role] = max(self.peak[role], _rss(pid))
            time.sleep(0.2)

    def stop(self) -> dict[str, int]:
        self._stop.set()
        self._thread.join()
        return self.peak


def fraction_view(root: Path, view: Path, fraction: float, categories: list[str]) -> int:
    """A data root of links with the first `fraction` of each category's training
    images and all its test images; returns the number of training images."""
    total = 0
    for cat in categories:
        src, dst = root / cat, view / cat
        dst.mkdir(parents=True)
        for entry in src.iterdir():
            if entry.name != "train":
                (dst / entry.name).symlink_to(entry.resolve())
        images = sorted((src / "train" / "good").iterdir())
        keep = images[: max(2, math.ceil(fraction * len(images)))]
        (dst / "train" / "good").mkdir(parents=True)
        for image in keep:
            (dst / "train" / "good" / image.name).symlink_to(image.resolve())
        total += len(keep)
    marker = root / "synthetic.json"
    if marker.is_file():
        (view / "synthetic.json").symlink_to(marker.resolve())
    return total


def _timed(cmd: list[str], env: dict) -> tuple[float, dict[str, int], str]:
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    monitor = Monitor(proc.pid)
    output, _ = proc.communicate()
    peaks = monitor.stop()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:3])} failed:\n{output[-3000:]}")
    return time.perf_counter() - start, peaks, output


def _bank_bytes(results: dict) -> tuple[int, int]:
    """(largest bank, all banks) in bytes (float32 rows of the spec's width)."""
    width = int(results["run"]["features"]["spec"]["embed_dim"])
    sizes = [int(b["size"]) for b in (results.get("federated") or {}).get("banks", {}).values()]
    if not sizes:
        sizes = [int(b["bank"]["size"]) for b in results["categories"].values()]
    return max(sizes) * width * 4, sum(sizes) * width * 4


IDLE_SERVER = (
    "import torch, flwr, server_app, client_app, fedpatch_app.federated.protocol.server, "
    "fedpatch_app.federated.protocol.federation; import time; time.sleep(1.0)"
)


def idle_peak(env: dict) -> int:
    """Peak RSS of a process that has only imported what the ServerApp imports."""
    return _timed([sys.executable, "-c", IDLE_SERVER], env)[1]["main"]


CLI = [sys.executable, "-m", "fedpatch_app.cli"]


def centralized_cmd(view: Path, out: Path, args: argparse.Namespace) -> list[str]:
    command = [*CLI, "centralized", "--data-root", str(view), "--out", str(out)]
    command += ["--backbone", args.backbone, "--weights", args.weights]
    return [*command, "--image-size", str(args.image_size)]


def warm_up(root: Path, folder: Path, args: argparse.Namespace, cats: list[str], env: dict) -> None:
    """One unmeasured centralized run: reads the images once, fills the caches."""
    fraction_view(root, folder / "data", args.fractions[0], cats)
    _timed(centralized_cmd(folder / "data", folder / "run", args), env)


def run_central(view: Path, out: Path, args: argparse.Namespace, env: dict) -> dict:
    """The centralized run's wall time, peak and bank bytes (None each with
    --federated-only)."""
    if args.federated_only:
        return {
            "central_seconds": None,
            "central_phases": {},
            "central_peak": None,
            "central_banks": None,
        }
    t_c, mem_c, _ = _timed(centralized_cmd(view, out / "central", args), env)
    central = json.loads((out / "central" / "results.json").read_text())
    return {
        "central_seconds": t_c,
        "central_phases": central_phases(central),
        "central_peak": mem_c["main"],
        "central_banks": _bank_bytes(central)[1],
    }


def central_phases(results: dict) -> dict[str, float]:
    """The centralized run's seconds per phase, summed over its categories."""
    phases: dict[str, float] = {}
    for key, seconds in results["run"].get("seconds", {}).items():
        if "/" in key:
            phase = key.split("/", 1)[1]
            phases[phase] = phases.get(phase, 0.0) + float(seconds)
    return phases


def fed_phases(results: dict) -> dict[str, float]:
    """The federated run's seconds per phase as its ServerApp timed them."""
    seconds = results["run"].get("seconds", {})
    phases = {k: float(v) for k, v in seconds.items() if k in ("prepare_data", "wait_clients")}
    phases.update(
        {k.removeprefix("phase_"): float(v) for k, v in seconds.items() if k.startswith("phase_")}
    )
    return phases


def run_pair(view: Path, out: Path, args: argparse.Namespace, env: dict) -> dict:
    central = run_central(view, out, args, env)
    config = (
        f'dataset="autovi" data-root="{view}" partition="iid" out-dir="{out}" run-name="fed" '
        f'backbone="{args.backbone}" weights="{args.weights}" image-size={args.image_size}'
    )
    t_f, mem_f, _ = _timed(
        [*CLI, "run", "--run-config", config, "--flwr-home", str(out / ".flwr")], env
    )
    fed = json.loads((out / "fed" / "results.json").read_text())
    traffic = fed["federated"]["bytes"]
    largest, banks = _bank_bytes(fed)
    return {
        **central,
        "fed_seconds": t_f,
        "fed_phases": fed_phases(fed),
        "server_peak": mem_f["server"],
        "client_peak": mem_f["client"],
        "bytes_up": sum(v for k, v in traffic.items() if k.endswith("_up_total")),
        "bytes_up_train": traffic.get("train_up_total", 0),
        "bytes_down": sum(v for k, v in traffic.items() if k.endswith("_down_total")),
        "largest_bank": largest,
        "banks": banks,
    }


def exponent(x: list[float], y: list[float]) -> float | None:
    if len(x) < 2 or min(y) <= 0:
        return None
    return float(np.polyfit(np.log(x), np.log(y), 1)[0])


def _cell(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def growth_line(rows: list[dict]) -> str:
    """The part of the server's peak that grows with the data (peak at the largest
    fraction less peak at the smallest) over the largest bank at the largest fraction."""
    first, last = rows[0], rows[-1]
    grown = last["server_peak"] - first["server_peak"]
    return (
        f"server peak growth from {first['train']} to {last['train']} training images: "
        f"{grown / 2**20:.0f} MiB = {grown / last['largest_bank']:.1f} x the largest bank "
        f"({last['largest_bank'] / 2**20:.1f} MiB) (target <= 4)"
    )


def phase_report(rows: list[dict]) -> None:
    """Seconds per phase of each run (centralized: summed over the categories)."""
    print("| train images | run | seconds per phase |")
    print("|---|---|---|")
    for r in rows:
        for run, phases in (("centralized", r["central_phases"]), ("federated", r["fed_phases"])):
            if phases:
                cells = ", ".join(f"{name} {sec:.0f}" for name, sec in phases.items())
                print(f"| {r['train']} | {run} | {cells} |")


def report(rows: list[dict], oversample: float, idle: int) -> None:
    mb = 2**20
    print(f"idle server process (imports only): {idle / mb:.0f} MiB")
    print(
        "| train images | central s | federated s | ratio (<= 1.3) | central peak MiB "
        "| server peak MiB | above idle / largest bank (<= 2) | largest client MiB "
        "| largest bank MiB | MB up (train) | MB up (all) | MB down "
        "| train up / (oversample x banks) (<= 1) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        above = (r["server_peak"] - idle) / r["largest_bank"]
        central = r["central_seconds"]
        ratio = None if central is None else r["fed_seconds"] / central
        peak = None if r["central_peak"] is None else r["central_peak"] / mb
        print(
            f"| {r['train']} | {_cell(central, '.0f')} | {r['fed_seconds']:.0f} "
            f"| {_cell(ratio, '.2f')} | {_cell(peak, '.0f')} "
            f"| {r['server_peak'] / mb:.0f} | {above:.1f} | {r['client_peak'] / mb:.0f} "
            f"| {r['largest_bank'] / mb:.1f} | {r['bytes_up_train'] / 1e6:.1f} "
            f"| {r['bytes_up'] / 1e6:.1f} | {r['bytes_down'] / 1e6:.1f} "
            f"| {r['bytes_up_train'] / (oversample * r['banks']):.2f} |"
        )
    if len(rows) > 1:
        print(growth_line(rows))
    phase_report(rows)
    x = [r["train"] for r in rows]
    for key in (
        "central_seconds",
        "fed_seconds",
        "server_peak",
        "client_peak",
        "bytes_up",
        "bytes_down",
    ):
        values = [r[key] for r in rows]
        e = None if None in values else exponent(x, values)
        print(
            f"growth exponent of {key} with the training images: {'-' if e is None else f'{e:.2f}'}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-root", required=True, help="data in the AutoVI layout")
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.1, 0.25, 0.5, 1.0])
    parser.add_argument("--categories", nargs="+", default=None)
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--weights", default="imagenet")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--keep", default=None, help="folder to keep the runs in")
    parser.add_argument("--no-warmup", action="store_true", help="skip the unmeasured first run")
    parser.add_argument(
        "--federated-only",
        action="store_true",
        help="skip the centralized runs (and their ratios): server and client memory only",
    )
    args = parser.parse_args()
    root = Path(args.data_root).resolve()
    cats = args.categories or available_categories(root)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    rows = []
    idle = idle_peak(env)
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(args.keep) if args.keep else Path(tmp)
        if not (args.no_warmup or args.federated_only):
            warm_up(root, base / "warmup", args, cats, env)
        for fraction in args.fractions:
            out = base / f"f{fraction:g}"
            train = fraction_view(root, out / "data", fraction, cats)
            row = run_pair(out / "data", out, args, env)
            rows.append({"fraction": fraction, "train": train, **row})
            print(json.dumps(rows[-1]), flush=True)
    print(
        f"categories {', '.join(cats)}; {args.backbone} ({args.weights}) at {args.image_size} px; "
        f"torch threads per process: {os.environ.get('OMP_NUM_THREADS', 'default')}"
    )
    report(rows, oversample=2.0, idle=idle)


if __name__ == "__main__":
    main()
