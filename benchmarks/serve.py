"""Benchmark: the inspection service against the library call on the same images.

Prints, measured in the same run on the same images and the same model, on CPU:

* library: `Predictor.score(category, [image])`, one image per call: what `fedpatch
  predict --batch-size 1` runs per image and the service runs per request (no HTTP),
  images/s and p50/p95 latency;
* library, batches of 8 (`fedpatch predict`'s default): images/s, for context (the
  service scores one image at a time so that a part's score never depends on the
  other requests; this is what that choice costs);
* the service (`create_app` on uvicorn, in a thread of this process, on 127.0.0.1) with
  one client posting the images one after the other, then 4 clients at once: requests/s
  and p50/p95 latency seen by the clients (raw PNG bodies, no overlay);
* the HTTP overhead per image as a ratio: sequential p50 latency / library p50, and
  library images/s / service requests/s with 4 clients (target at most 1.2x each); and
  the same from the CPU time this process spent per image (service, clients and all),
  which a busy machine disturbs less than the wall-clock figures.

The modes alternate round by round (`--rounds`), so a change of load hits them alike.
The model is a real one: by default a centralized run of pipe_clip on the project's
synthetic data (`--scale small`, random backbone weights, `--image-size`, default 256),
or any model folder with `--model` and `--images`. The clients run in this process too,
so their work counts against the service: the figures are an upper bound of the overhead.

Usage::

    .venv/bin/python benchmarks/serve.py                       # builds the model first
    .venv/bin/python benchmarks/serve.py --model runs/x/model --category pipe_clip \\
        --images data/autovi/pipe_clip/test/good
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import torch
import uvicorn

from fedpatch_app.cli import main as fedpatch
from fedpatch_app.inspection.model_folder import load_model
from fedpatch_app.inspection.predict import collect_images
from fedpatch_app.inspection.predictor import Predictor
from fedpatch_app.inspection.scorer import Scorer
from fedpatch_app.inspection.service import create_app


def build_model(folder: Path, category: str, scale: str, image_size: int) -> tuple[Path, Path]:
    """A centralized run on synthetic data: (its model folder, the category's test images)."""
    data = folder / "data"
    synth = ["synth", "--out", str(data), "--scale", scale, "--kind", "drawn"]
    assert fedpatch([*synth, "--categories", category]) == 0
    run = folder / "run"
    code = fedpatch(
        [
            "centralized",
            "--data-root",
            str(data),
            "--out",
            str(run),
            "--categories",
            category,
            "--weights",
            "none",
            "--image-size",
            str(image_size),
            "--device",
            "cpu",
        ]
    )
    assert code == 0
    return run / "model", data / category / "test"


def stats(latencies: Sequence[float], wall: float, cpu: float) -> dict[str, float]:
    q = statistics.quantiles(latencies, n=20, method="inclusive")
    return {
        "rate": len(latencies) / wall,
        "p50": statistics.median(latencies),
        "p95": q[18],
        "cpu": cpu / len(latencies),
    }


def timed(calls: Sequence[Callable[[], object]], clients: int) -> tuple[list[float], float]:
    """Run the calls on `clients` threads: the latency of each, and the wall time of all."""

    def one(call: Callable[[], object]) -> float:
        start = time.perf_counter()
        call()
        return time.perf_counter() - start

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        latencies = list(pool.map(one, calls))
    return latencies, time.perf_counter() - start


def rounds_of(modes: dict[str, tuple[list, int]], rounds: int) -> dict[str, dict[str, float]]:
    """Each mode once per round, the modes alternating (a change of machine load hits
    them all alike); latencies, wall and CPU times (of this process) pooled."""
    latencies: dict[str, list[float]] = {name: [] for name in modes}
    walls = dict.fromkeys(modes, 0.0)
    cpus = dict.fromkeys(modes, 0.0)
    for _ in range(rounds):
        for name, (calls, clients) in modes.items():
            cpu = time.process_time()
            lat, wall = timed(calls, clients)
            cpus[name] += time.process_time() - cpu
            latencies[name] += lat
            walls[name] += wall
    return {name: stats(latencies[name], walls[name], cpus[name]) for name in modes}


class ServiceThread:
    """The service on uvicorn in a daemon thread, on a port the OS picks."""

    def __init__(self, scorer: Scorer) -> None:
        config = uvicorn.Config(
            create_app(scorer), host="127.0.0.1", port=0, log_level="warning", access_log=False
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        while not self.server.started:
            time.sleep(0.05)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def measure(model_dir: Path, category: str, paths: list[Path], rounds: int) -> dict:
    model = load_model(model_dir)
    scorer = Scorer.load(model, device="cpu")
    batched = Predictor(model, device="cpu", batch_size=8)
    batched.score(category, paths[:8])
    bodies = [p.read_bytes() for p in paths]
    with ServiceThread(scorer) as url, httpx.Client(timeout=300) as client:
        headers = {"Content-Type": "image/png"}
        url = f"{url}/v1/predict/{category}"

        def post(body: bytes) -> None:
            client.post(url, content=body, headers=headers).raise_for_status()

        scorer.ready.wait()  # the service warms the model up as it starts
        post(bodies[0])
        requests = [lambda b=b: post(b) for b in bodies]
        modes = {
            "library": ([lambda p=p: scorer.predictor.score(category, [p]) for p in paths], 1),
            "sequential": (requests, 1),
            "concurrent": (requests * 4, 4),
            "batched": ([lambda: batched.score(category, paths)], 1),
        }
        out = rounds_of(modes, rounds)
    out["batched"]["rate"] *= len(paths)  # one call scored all the images
    out["batched"]["cpu"] /= len(paths)
    return out


def report(out: dict, n: int, rounds: int, load: tuple[float, ...]) -> None:
    print(
        f"{n} images x {rounds} rounds, torch threads {torch.get_num_threads()}, "
        f"{os.cpu_count()} CPUs, load average at start {load[0]:.2f} {load[1]:.2f} "
        f"{load[2]:.2f}, at end {os.getloadavg()[0]:.2f}"
    )
    rows = (
        ("library, one image a call", "library"),
        ("service, 1 client", "sequential"),
        ("service, 4 clients", "concurrent"),
    )
    for label, key in rows:
        s = out[key]
        print(
            f"{label:27s}: {s['rate']:6.2f} images/s, p50 {1000 * s['p50']:7.1f} ms, "
            f"p95 {1000 * s['p95']:7.1f} ms, CPU {1000 * s['cpu']:6.1f} ms/image"
        )
    s = out["batched"]
    print(
        f"{'library, batches of 8':27s}: {s['rate']:6.2f} images/s, "
        f"CPU {1000 * s['cpu']:6.1f} ms/image"
    )
    lib, seq, conc = out["library"], out["sequential"], out["concurrent"]
    print(
        f"HTTP overhead, 1 client : p50 {seq['p50'] / lib['p50']:.2f}x the library call, "
        f"CPU {seq['cpu'] / lib['cpu']:.2f}x (target <= 1.2x)"
    )
    print(
        f"HTTP overhead, 4 clients: {lib['rate'] / conc['rate']:.2f}x the library's time per "
        f"image, CPU {conc['cpu'] / lib['cpu']:.2f}x (target <= 1.2x)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="a model folder (default: build one)")
    parser.add_argument("--images", nargs="+", help="images/folders (with --model)")
    parser.add_argument("--category", default="pipe_clip")
    parser.add_argument("--scale", default="small", help="synthetic data scale (no --model)")
    parser.add_argument("--image-size", type=int, default=256, help="when building the model")
    parser.add_argument("--rounds", type=int, default=3, help="times each image is sent")
    args = parser.parse_args()
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per request
    if bool(args.model) != bool(args.images):
        parser.error("--model and --images go together")
    load = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        if args.model:
            model_dir, inputs = Path(args.model), args.images
        else:
            model_dir, test = build_model(tmp_path, args.category, args.scale, args.image_size)
            inputs = [test]
        paths = collect_images(inputs)
        out = measure(model_dir, args.category, paths, args.rounds)
    report(out, len(paths), args.rounds, load)


if __name__ == "__main__":
    main()
