"""Helpers for the inspection service tests: the real `fedpatch serve` in a subprocess.

The service runs as the command a user types, on 127.0.0.1 on a free port, and the tests
talk HTTP to it. `Service.stop` ends it by PID; its log is kept and shown when a test
fails.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from deployment_utils import free_port

REPO = Path(__file__).resolve().parents[1]
#: Seconds the service may take to import, load the model and warm up.
START_TIMEOUT = 180.0


def scoring_env() -> dict[str, str]:
    """The environment of every process whose scores are compared: the same for all of
    them, so the backbone runs on the same number of threads."""
    return {**os.environ, "PYTHONUNBUFFERED": "1"}


@dataclass
class Service:
    process: subprocess.Popen
    url: str
    token: str
    log: Path

    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def log_text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=20)


def _wait_ready(service: Service) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if service.process.poll() is not None:
            raise RuntimeError(f"fedpatch serve exited early:\n{service.log_text()}")
        try:
            if httpx.get(f"{service.url}/readyz", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    service.stop()
    raise RuntimeError(
        f"fedpatch serve not ready after {START_TIMEOUT:.0f} s:\n{service.log_text()}"
    )


def start_service(
    model: Path,
    workdir: Path,
    token: str,
    extra: tuple[str, ...] = (),
    prefix: tuple[str, ...] = (),
) -> Service:
    """`fedpatch serve --model MODEL` on 127.0.0.1 with a token, once it is ready;
    `extra`: more options; `prefix`: a command it runs under (e.g. `prlimit --as=N`)."""
    workdir.mkdir(parents=True, exist_ok=True)
    token_file = workdir / "token"
    token_file.write_text(token + "\n", encoding="utf-8")
    token_file.chmod(0o600)
    port = free_port()
    log = workdir / "serve.log"
    command = [*prefix, sys.executable, "-m", "fedpatch_app.cli", "serve", "--model", str(model)]
    command += ["--port", str(port), "--device", "cpu", "--token-file", str(token_file), *extra]
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, cwd=REPO, env=scoring_env(), stdout=out, stderr=subprocess.STDOUT
        )
    service = Service(process, f"http://127.0.0.1:{port}", token, log)
    _wait_ready(service)
    return service
