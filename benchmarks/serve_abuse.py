"""The hostile side of `benchmarks/serve_load.py`: a `fedpatch serve` process watched from
outside (its resident memory sampled from /proc), and the abuse cases sent to it.

Used by the benchmark (with the counts of the report that asked for it) and by
`tests/test_serve_abuse.py` (smaller counts, under an address-space cap). Each case
returns what the service answered (status codes counted), how long it took, and the
server's resident memory before, at its peak during, and after the case.
"""

from __future__ import annotations

import io
import os
import socket
import struct
import subprocess
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
from PIL import Image

MB = 2**20


def rss_mb(pid: int) -> float:
    """Resident memory of a process, MB (VmRSS)."""
    with open(f"/proc/{pid}/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


class RssWatch:
    """Samples a process's resident memory every `every` seconds while in a `with`."""

    def __init__(self, pid: int, every: float = 0.02) -> None:
        self.pid, self.every = pid, every
        self.before = self.peak = self.after = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, rss_mb(self.pid))
            except (OSError, RuntimeError):
                return
            time.sleep(self.every)

    def __enter__(self) -> RssWatch:
        self.before = self.peak = rss_mb(self.pid)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        time.sleep(1.0)  # what the case leaves behind, once its buffers are freed
        self.after = rss_mb(self.pid)
        self.peak = max(self.peak, self.after)


@dataclass
class CaseResult:
    name: str
    answers: Counter = field(default_factory=Counter)
    seconds: float = 0.0
    rss_before: float = 0.0
    rss_peak: float = 0.0
    rss_after: float = 0.0
    alive: bool = True
    health: str = ""
    probes: Counter = field(default_factory=Counter)

    @property
    def grown_peak(self) -> float:
        return self.rss_peak - self.rss_before

    @property
    def left(self) -> float:
        return self.rss_after - self.rss_before

    def line(self) -> str:
        answers = ", ".join(f"{k} x{v}" for k, v in sorted(self.answers.items(), key=str))
        return (
            f"{self.name:<44} {answers:<30} {self.seconds:7.2f} s  "
            f"RSS {self.rss_before:6.0f} -> peak {self.rss_peak:6.0f} (+{self.grown_peak:4.0f})"
            f" -> {self.rss_after:6.0f} MB (left {self.left:+4.0f})  "
            f"{'alive' if self.alive else 'DOWN'}{self.health}"
        )


@dataclass
class Target:
    """The service under test: its URL, token and process."""

    url: str
    token: str
    process: subprocess.Popen
    category: str
    native: tuple[int, int]

    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def predict_url(self, overlay: bool = False) -> str:
        return f"{self.url}/v1/predict/{self.category}" + ("?overlay=1" if overlay else "")

    def alive(self) -> bool:
        if self.process.poll() is not None:
            return False
        try:
            return httpx.get(f"{self.url}/healthz", timeout=10).status_code == 200
        except httpx.HTTPError:
            return False


def png(size: tuple[int, int], mode: str = "L", extra_mb: float = 0.0, seed: int = 0) -> bytes:
    """A PNG of `size`; `extra_mb` > 0 adds a private ancillary chunk of that many MB of
    noise (a large upload that is still a valid image of a small size)."""
    buffer = io.BytesIO()
    if mode == "RGB":
        pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), np.uint8)
        Image.fromarray(pixels).save(buffer, format="PNG")
    else:
        Image.new(mode, size, 128).save(buffer, format="PNG")
    data = buffer.getvalue()
    if extra_mb <= 0:
        return data
    noise = np.random.default_rng(seed).bytes(int(extra_mb * MB))
    chunk = struct.pack(">I", len(noise)) + b"fpZz" + noise
    chunk += struct.pack(">I", zlib.crc32(b"fpZz" + noise))
    return data[:33] + chunk + data[33:]  # after the 8-byte signature and 25-byte IHDR


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height, with a few bytes of pixel data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def post(
    target: Target, body: Any, kind: str = "image/png", overlay: bool = False, timeout: float = 300
) -> str:
    """The status of one predict request ("reset" when the connection was dropped)."""
    try:
        answer = httpx.post(
            target.predict_url(overlay),
            content=body,
            timeout=timeout,
            headers={"Content-Type": kind, **target.auth()},
        )
    except httpx.HTTPError as exc:
        return f"dropped ({type(exc).__name__})"
    return str(answer.status_code)


def form(parts: list[tuple[str, str, bytes]]) -> tuple[bytes, str]:
    """A multipart body and its content type."""
    boundary = "serveloadboundary"
    out = b""
    for name, filename, data in parts:
        head = f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; '
        out += f'{head}filename="{filename}"\r\nContent-Type: image/png\r\n\r\n'.encode()
        out += data + b"\r\n"
    return out + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def chunks(total_mb: int) -> Iterator[bytes]:
    """A body of `total_mb` MB sent without a Content-Length (chunked)."""
    block = b"\0" * MB
    for _ in range(total_mb):
        yield block


def run_case(
    target: Target, name: str, send: Callable[[], list[str]], probe: bool = False
) -> CaseResult:
    """Run `send` (the case's requests; their answers) with the server's memory watched;
    `probe`: poll /healthz meanwhile and count its answers."""
    result = CaseResult(name)
    probes: Counter = Counter()
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            try:
                code = httpx.get(f"{target.url}/healthz", timeout=5).status_code
                probes[str(code)] += 1
            except httpx.HTTPError as exc:
                probes[type(exc).__name__] += 1
            time.sleep(0.2)

    poller = threading.Thread(target=poll, daemon=True)
    with RssWatch(target.process.pid) as watch:
        start = time.perf_counter()
        if probe:
            poller.start()
        answers = send()
        result.seconds = time.perf_counter() - start
        stop.set()
        if probe:
            poller.join()
    result.answers = Counter(answers)
    result.rss_before, result.rss_peak, result.rss_after = watch.before, watch.peak, watch.after
    result.alive = target.alive()
    result.probes = probes
    if probe:
        result.health = "  /healthz meanwhile: " + ", ".join(f"{k} x{v}" for k, v in probes.items())
    return result


def concurrently(calls: list[Callable[[], str]], workers: int) -> list[str]:
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(lambda call: call(), calls))


def stalled(target: Target, count: int, head_only: bool) -> list[str]:
    """`count` connections that stall: after half a request head (`head_only`) or after
    the head and a first part of the body. Each: "closed by server" when the service
    ends it, with the status it answered when it answered one."""
    host, port = target.url.removeprefix("http://").split(":")
    socks = []
    body = png(target.native)
    for _ in range(count):
        sock = socket.create_connection((host, int(port)), timeout=120)
        head = (
            f"POST /v1/predict/{target.category} HTTP/1.1\r\nHost: x\r\n"
            f"Authorization: Bearer {target.token}\r\nContent-Type: image/png\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        sock.sendall(head[:20] if head_only else head + body[:100])
        socks.append(sock)
    out = []
    for sock in socks:
        try:
            data = sock.recv(4096)
            status = data.split(b" ")[1].decode() if data.startswith(b"HTTP/") else "closed"
            out.append(f"{status} then closed by server" if data else "closed by server")
        except OSError as exc:
            out.append(f"client error {type(exc).__name__}")
        finally:
            sock.close()
    return out


def raise_own_files_limit() -> None:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def wait_ready(url: str, process: subprocess.Popen, seconds: float = 300) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("fedpatch serve exited before it was ready")
        try:
            if httpx.get(f"{url}/readyz", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"fedpatch serve not ready after {seconds:.0f} s")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def environment() -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1"}


@dataclass(frozen=True)
class Counts:
    """How many of each mass case: the report's figures by default."""

    big_uploads: int = 40
    big_upload_mb: float = 17.9
    chunked: int = 20
    chunked_mb: int = 40
    stalled_bodies: int = 500
    stalled_heads: int = 200


def abuse_cases(target: Target, counts: Counts) -> list[tuple[str, Callable[[], list[str]], bool]]:
    """(name, send, poll /healthz meanwhile) of every abuse case."""
    width, height = target.native
    big = png(target.native, extra_mb=counts.big_upload_mb - 0.01)
    chunked_body = counts.chunked_mb
    long_name, kind = form([("image", "x" * 100_000 + ".png", png(target.native))])
    two, kind2 = form([("image", "a.png", png(target.native)), ("image", "b.png", png((8, 8)))])
    return [
        ("4000x1 PNG", lambda: [post(target, png((4000, 1)))], False),
        ("1000x1 PNG", lambda: [post(target, png((1000, 1)))], False),
        ("6300x6300 grey PNG", lambda: [post(target, png((6300, 6300)))], False),
        (
            "6300x6300 grey PNG, overlay=1",
            lambda: [post(target, png((6300, 6300)), overlay=True)],
            False,
        ),
        ("30000x30000 header (bomb)", lambda: [post(target, png_header(30000, 30000))], False),
        (
            f"{2 * width}x{2 * height} noise (4x pixels), overlay=1",
            lambda: [post(target, png((2 * width, 2 * height), "RGB"), overlay=True)],
            False,
        ),
        (
            f"{counts.big_uploads} x {counts.big_upload_mb} MB uploads at once",
            lambda: concurrently(
                [lambda: post(target, big)] * counts.big_uploads, counts.big_uploads
            ),
            True,
        ),
        (
            f"{counts.chunked} x {counts.chunked_mb} MB chunked, no Content-Length",
            lambda: concurrently(
                [lambda: post(target, chunks(chunked_body))] * counts.chunked, counts.chunked
            ),
            True,
        ),
        (
            f"{counts.stalled_bodies} stalled uploads (head sent, body stops)",
            lambda: stalled(target, counts.stalled_bodies, head_only=False),
            True,
        ),
        (
            f"{counts.stalled_heads} stalled request heads",
            lambda: stalled(target, counts.stalled_heads, head_only=True),
            True,
        ),
        ("100,000-character file name", lambda: [post(target, long_name, kind)], False),
        ("two 'image' fields", lambda: [post(target, two, kind2)], False),
        ("/readyz without the token", lambda: [readyz_without_token(target)], False),
    ]


def readyz_without_token(target: Target) -> str:
    answer = httpx.get(f"{target.url}/readyz", timeout=10)
    shown = sorted(answer.json())
    return f"{answer.status_code} {'+'.join(shown)}"
