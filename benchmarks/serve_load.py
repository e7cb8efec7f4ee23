"""Benchmark: `fedpatch serve` under load and under abuse, watched from outside.

The service runs as the command a line PC runs (`fedpatch serve`, a process of its own,
on 127.0.0.1, with a token), optionally under an address-space cap (`--as-gb`, with
`prlimit`). Its resident memory (VmRSS) is sampled every 20 ms from /proc. Prints:

* bursts of c = 1, 2, 4, 8, 16 clients (`--concurrency`), each bounded in count
  (`--requests`) and time (`--seconds`): answers, p50/p95 latency of the 200s, the bound
  1.2 x ceil(c / s) x p50(c = 1) for s scoring slots, and RSS before / peak / after;
* the memory ceiling `R + s x W + (s + q) x 1 MB`: R = RSS with the model loaded and
  warm, W = the peak growth of scoring one image alone (c = 1, overlay on), s slots,
  q queue places (1 MB: an upload's spool buffer and chunks), against the highest peak
  of the bursts;
* the abuse cases of `serve_abuse.py` (odd sizes, pixel bombs, mass and chunked uploads,
  stalled uploads and heads, malformed forms, /readyz without the token): the answers,
  seconds, RSS before / peak / after, whether the service still answers /healthz
  (polled during the mass cases) and the targets (no case grows the server by more
  than 300 MB at its peak, none leaves more than 50 MB, none takes it down).

The model: by default a centralized run of `--category` on the project's synthetic
photo data (tiny scale; EfficientNet-Lite0 with its ImageNet weights, 128 px), or
`--model` with `--images`.

Usage::

    .venv/bin/python benchmarks/serve_load.py
    .venv/bin/python benchmarks/serve_load.py --slots 2 --as-gb 6
"""

from __future__ import annotations

import argparse
import logging
import math
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
from serve_abuse import (
    Counts,
    RssWatch,
    Target,
    abuse_cases,
    environment,
    free_port,
    raise_own_files_limit,
    rss_mb,
    run_case,
    wait_ready,
)

from fedpatch_app.cli import main as fedpatch
from fedpatch_app.inspection.predict import collect_images

PEAK_TARGET_MB, LEFT_TARGET_MB = 300.0, 50.0
SPOOL_MB_PER_PLACE = 1.0


def build_model(folder: Path, category: str) -> tuple[Path, Path]:
    """A centralized run on synthetic photo data: (its model folder, its test images)."""
    data = folder / "data"
    synth = ["synth", "--out", str(data), "--kind", "photo", "--scale", "tiny"]
    assert fedpatch([*synth, "--categories", category]) == 0
    run = folder / "run"
    args = [
        "centralized",
        "--data-root",
        str(data),
        "--out",
        str(run),
        "--categories",
        category,
        "--backbone",
        "efficientnet_lite0",
        "--image-size",
        "128",
        "--device",
        "cpu",
        "--calibration-fraction",
        "0.25",
    ]
    assert fedpatch(args) == 0
    return run / "model", data / category / "test"


def start(args: argparse.Namespace, model: Path, slots: int, workdir: Path) -> Target:
    token = secrets.token_urlsafe(24)
    token_file = workdir / "token"
    token_file.write_text(token + "\n")
    token_file.chmod(0o600)
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "fedpatch_app.cli",
        "serve",
        "--model",
        str(model),
        "--port",
        str(port),
        "--device",
        "cpu",
        "--token-file",
        str(token_file),
        "--scoring-slots",
        str(slots),
        "--queue",
        str(args.queue),
        "--upload-timeout",
        str(args.upload_timeout),
        "--header-timeout",
        str(args.header_timeout),
    ]
    if args.as_gb:
        command = ["prlimit", f"--as={int(args.as_gb * 2**30)}", *command]
    log = (workdir / f"serve-{slots}.log").open("wb")
    process = subprocess.Popen(command, env=environment(), stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    wait_ready(url, process)
    from fedpatch_app.inspection.model_folder import load_model

    native = load_model(model).category(args.category).native_size
    return Target(url, token, process, args.category, native)


def burst(target: Target, images: list[bytes], clients: int, count: int, seconds: float):
    """`clients` clients posting images (overlay on) until `count` requests were sent or
    `seconds` passed: (latencies of the 200s, answers, RSS watch)."""
    latencies: list[float] = []
    answers: Counter = Counter()
    sent, lock, deadline = [0], threading.Lock(), time.monotonic() + seconds

    def client(index: int) -> None:
        with httpx.Client(timeout=600) as session:
            while True:
                with lock:
                    if sent[0] >= count or time.monotonic() > deadline:
                        return
                    sent[0] += 1
                    body = images[sent[0] % len(images)]
                start = time.perf_counter()
                answer = session.post(
                    target.predict_url(True),
                    content=body,
                    headers={"Content-Type": "image/png", **target.auth()},
                )
                with lock:
                    answers[answer.status_code] += 1
                    if answer.status_code == 200:
                        latencies.append(time.perf_counter() - start)

    with RssWatch(target.process.pid) as watch:
        threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    return latencies, answers, watch


def p(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def bursts(args: argparse.Namespace, target: Target, images: list[bytes], slots: int) -> dict:
    """Every burst, printed; the figures the memory ceiling needs."""
    print(f"\n-- bursts, {slots} scoring slot(s), queue {args.queue} (overlay on) --")
    print(
        f"{'c':>3} {'sent':>5} {'answers':<22} {'p50 s':>7} {'p95 s':>7} {'bound s':>8} "
        f"{'p95 ok':>6}  RSS before -> peak -> after MB"
    )
    base, peaks, failures = None, [], []
    for clients in args.concurrency:
        lat, answers, watch = burst(target, images, clients, args.requests, args.seconds)
        p50, p95 = p(lat, 0.5), p(lat, 0.95)
        if base is None:
            base = {"p50": p50, "rss": watch.before, "grow": watch.peak - watch.before}
        bound = 1.2 * math.ceil(clients / slots) * base["p50"]
        ok = p95 <= bound
        if not ok:
            failures.append(f"p95 {p95:.2f} s > {bound:.2f} s with {clients} clients")
        peaks.append(watch.peak)
        shown = ", ".join(f"{k} x{v}" for k, v in sorted(answers.items()))
        print(
            f"{clients:>3} {sum(answers.values()):>5} {shown:<22} {p50:7.3f} {p95:7.3f} "
            f"{bound:8.3f} {'yes' if ok else 'NO':>6}  {watch.before:6.0f} -> "
            f"{watch.peak:6.0f} -> {watch.after:6.0f}"
        )
    ceiling = base["rss"] + slots * base["grow"] + (slots + args.queue) * SPOOL_MB_PER_PLACE
    print(
        f"memory ceiling R + s x W + (s + q) x {SPOOL_MB_PER_PLACE:g} MB = {base['rss']:.0f} + "
        f"{slots} x {base['grow']:.0f} + {slots + args.queue} = {ceiling:.0f} MB; highest "
        f"burst peak {max(peaks):.0f} MB: {'under' if max(peaks) <= ceiling else 'OVER'}"
    )
    if max(peaks) > ceiling:
        failures.append(f"burst peak {max(peaks):.0f} MB above the ceiling {ceiling:.0f} MB")
    return {"failures": failures}


def abuse(args: argparse.Namespace, target: Target) -> list[str]:
    print("\n-- abuse cases --")
    counts = Counts(stalled_bodies=args.stalled, stalled_heads=args.stalled_heads)
    failures = []
    for name, send, probe in abuse_cases(target, counts):
        result = run_case(target, name, send, probe)
        print(result.line())
        if result.grown_peak > PEAK_TARGET_MB or result.left > LEFT_TARGET_MB or not result.alive:
            failures.append(
                f"{name}: +{result.grown_peak:.0f} MB peak, {result.left:+.0f} MB "
                f"left, {'alive' if result.alive else 'DOWN'}"
            )
    return failures


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="model folder (default: build one)")
    parser.add_argument("--images", type=Path, help="images to post (with --model)")
    parser.add_argument("--category", default="pipe_clip")
    parser.add_argument("--slots", type=int, nargs="+", default=[1], help="scoring slots")
    parser.add_argument("--queue", type=int, default=15, help="queue places")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    parser.add_argument("--requests", type=int, default=48, help="requests per burst (bound)")
    parser.add_argument("--seconds", type=float, default=45.0, help="seconds per burst (bound)")
    parser.add_argument("--stalled", type=int, default=500, help="stalled uploads")
    parser.add_argument("--stalled-heads", type=int, default=200, help="stalled heads")
    parser.add_argument("--upload-timeout", type=float, default=10.0)
    parser.add_argument("--header-timeout", type=float, default=5.0)
    parser.add_argument("--as-gb", type=float, default=0.0, help="address-space cap")
    parser.add_argument("--no-abuse", action="store_true")
    return parser.parse_args()


def main() -> None:
    args = parse()
    raise_own_files_limit()
    logging.getLogger("httpx").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="serve-load-") as tmp:
        work = Path(tmp)
        model, folder = (
            (args.model, args.images) if args.model else build_model(work, args.category)
        )
        images = [p.read_bytes() for p in collect_images([folder])]
        print(
            f"model {model.name}: category {args.category}, {len(images)} images; "
            f"{args.requests} requests / {args.seconds:g} s per burst"
        )
        failures = []
        for index, slots in enumerate(args.slots):
            target = start(args, model, slots, work)
            try:
                print(
                    f"server RSS with the model loaded and warm: {rss_mb(target.process.pid):.0f} MB"
                )
                failures += bursts(args, target, images, slots)["failures"]
                if not args.no_abuse and index == 0:
                    failures += abuse(args, target)
            finally:
                target.process.terminate()
                target.process.wait(timeout=30)
        print("\ntargets: " + ("all met" if not failures else "MISSED: " + "; ".join(failures)))


if __name__ == "__main__":
    main()
