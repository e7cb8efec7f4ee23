"""Helpers for the container tests: podman with runc, images built from a local Debian base,
and podman-compose projects that are always removed.

No image registry is needed. The base image is made with mmdebstrap (Debian bookworm with
python3) and imported into podman; docker/Dockerfile.flwr puts the pinned flwr on it (the
equivalent of the official flwr/superlink, flwr/supernode and flwr/superexec images), and
docker/Dockerfile puts fedpatch's dependencies and code on that. Python packages come from
a wheelhouse filled by the host's own pip (`pip download`: PyPI or whatever index the host
is set up with) and mounted into the builds, so a build downloads nothing itself and the
wheels are not copied into any image layer.

Built images and the wheelhouse are kept between runs in a cache folder
(FEDPATCH_CONTAINER_CACHE, default <tmp>/fedpatch-containers); podman's layer cache makes a
rebuild with unchanged inputs take seconds. Containers, networks and volumes are removed
by `ComposeProject.down`, which the tests call whatever happens.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from deployment_utils import run_cmd

REPO = Path(__file__).resolve().parents[1]
DOCKER = REPO / "docker"
BIN = Path(sys.executable).parent

BASE_IMAGE = "localhost/fedpatch-debian:bookworm"
FLWR_REPOSITORY = "localhost/fedpatch-flwr"
APP_REPOSITORY = "localhost/fedpatch-superexec"
#: FEDPATCH_TAG of the app image built here (torch from the wheelhouse, not the CPU index).
APP_TAG = "local"
#: mmdebstrap's arguments for the base image (the same as in docs/deployment.md).
MMDEBSTRAP = ["--variant=minbase", "--include=python3,python3-venv,ca-certificates", "bookworm"]

#: podman settings: runc (crun fails on some cgroup v1 layouts) and rlimits low enough
#: for every host (podman's defaults copy the host's, which runc may refuse).
CONTAINERS_CONF = """[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]

[engine]
runtime = "runc"
"""


def flwr_version() -> str:
    """The Flower version the images are built with: docker/Dockerfile.flwr's default."""
    text = (DOCKER / "Dockerfile.flwr").read_text(encoding="utf-8")
    match = re.search(r"^ARG FLWR_VERSION=(\S+)$", text, re.MULTILINE)
    assert match, "docker/Dockerfile.flwr has no `ARG FLWR_VERSION=...`"
    return match.group(1)


def cache_dir() -> Path:
    path = Path(
        os.environ.get("FEDPATCH_CONTAINER_CACHE")
        or Path(tempfile.gettempdir()) / "fedpatch-containers"
    )
    path.mkdir(parents=True, exist_ok=True)
    return path


def compose_runner() -> Path | None:
    """podman-compose of this Python environment, else the one on PATH."""
    local = BIN / "podman-compose"
    if local.is_file():
        return local
    found = shutil.which("podman-compose")
    return Path(found) if found else None


def podman_env(cache: Path) -> dict[str, str]:
    """The environment of every podman and podman-compose call (containers.conf above)."""
    conf = cache / "containers.conf"
    conf.write_text(CONTAINERS_CONF, encoding="utf-8")
    return {**os.environ, "CONTAINERS_CONF": str(conf), "PYTHONUNBUFFERED": "1"}


def run(
    cmd: Sequence[str],
    env: Mapping[str, str],
    timeout: float = 300,
    check: bool = True,
    cwd: Path = REPO,
) -> subprocess.CompletedProcess[str]:
    proc = run_cmd([str(c) for c in cmd], env, cwd, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(map(str, cmd))} exited {proc.returncode}\n{proc.stdout[-4000:]}\n"
            f"{proc.stderr[-4000:]}"
        )
    return proc


#: Where podman looks for its network helper (containers.conf `helper_binaries_dir`;
#: never PATH).
HELPER_DIRS = (
    "/usr/local/libexec/podman",
    "/usr/local/lib/podman",
    "/usr/libexec/podman",
    "/usr/lib/podman",
)


def network_tools() -> dict[str, bool]:
    """Whether podman's network helper netavark and the iptables it calls are installed
    (iptables lives in /usr/sbin, which PATH may lack)."""
    netavark = any(os.access(Path(d) / "netavark", os.X_OK) for d in HELPER_DIRS)
    iptables = shutil.which("iptables") is not None or any(
        os.access(Path(d) / "iptables", os.X_OK) for d in ("/usr/sbin", "/sbin")
    )
    return {"netavark": netavark, "iptables": iptables}


def unavailable(env: Mapping[str, str]) -> str | None:
    """Why containers cannot run here (None when they can)."""
    if os.geteuid() != 0:
        return "the container tests run podman as root (rootless podman is not set up here)"
    missing = [t for t in ("podman", "runc", "mmdebstrap") if shutil.which(t) is None]
    missing += [t for t, found in network_tools().items() if not found]
    if compose_runner() is None:
        missing.append("podman-compose")
    if missing:
        return f"missing {', '.join(missing)} (.ci/run installs them with apt-get and pip)"
    info = run(["podman", "info", "--format", "{{.Host.OCIRuntime.Name}}"], env, 120, False)
    if info.returncode != 0:
        return f"podman does not work here: {info.stderr.strip()[-500:]}"
    return None


def image_exists(name: str, env: Mapping[str, str]) -> bool:
    return run(["podman", "image", "exists", name], env, 60, check=False).returncode == 0


def image_size_mb(name: str, env: Mapping[str, str]) -> float:
    out = run(["podman", "image", "inspect", name, "--format", "{{.Size}}"], env, 60).stdout
    return int(out.strip()) / 1e6


@dataclass
class Images:
    """The images of one test session and what building them took (seconds)."""

    flwr: str
    app_tag: str
    seconds: dict[str, float] = field(default_factory=dict)
    sizes_mb: dict[str, float] = field(default_factory=dict)

    def compose_env(self) -> dict[str, str]:
        """Compose variables that select these images instead of the official ones."""
        repository, version = self.flwr.rsplit(":", 1)
        return {
            "FLWR_SUPERLINK_IMAGE": repository,
            "FLWR_SUPERNODE_IMAGE": repository,
            "FLWR_SUPEREXEC_IMAGE": repository,
            "FLWR_VERSION": version,
            "FEDPATCH_TAG": self.app_tag,
        }


def _timed(seconds: dict[str, float], key: str, action: Callable[[], object]) -> None:
    start = time.monotonic()
    action()
    seconds[key] = round(time.monotonic() - start, 1)


def _make_base(cache: Path, env: Mapping[str, str]) -> None:
    tarball = cache / "base.tar"
    try:
        run(["mmdebstrap", *MMDEBSTRAP, str(tarball)], env, 1200)
        run(["podman", "import", str(tarball), BASE_IMAGE], env, 600)
    finally:
        tarball.unlink(missing_ok=True)


def _fill_wheelhouse(wheels: Path, env: Mapping[str, str]) -> None:
    """Every wheel the two Dockerfiles install, for CPython 3.11 (bookworm's Python)."""
    done = wheels / ".complete"
    if done.is_file():
        return
    wheels.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--dest", str(wheels)]
    if sys.version_info[:2] != (3, 11):
        cmd += ["--python-version", "3.11", "--platform", "manylinux_2_28_x86_64"]
    cmd += ["--only-binary=:all:", f"flwr=={flwr_version()}", "torch", "torchvision"]
    cmd += ["-r", str(DOCKER / "requirements.txt"), "setuptools>=68", "wheel"]
    run(cmd, env, 1800)
    done.write_text("pip download finished\n", encoding="utf-8")


def build_images(cache: Path, env: Mapping[str, str]) -> Images:
    """The base, flwr and app images (podman's layer cache keeps unchanged layers)."""
    flwr = f"{FLWR_REPOSITORY}:{flwr_version()}"
    images = Images(flwr=flwr, app_tag=APP_TAG)
    if not image_exists(BASE_IMAGE, env):
        _timed(images.seconds, "base (mmdebstrap + import)", lambda: _make_base(cache, env))
    wheels = cache / "wheels"
    _timed(images.seconds, "wheelhouse (pip download)", lambda: _fill_wheelhouse(wheels, env))
    offline = [
        "--build-arg",
        "EXTRA_PIP_ARGS=--no-index --find-links /wheels",
        "--volume",
        f"{wheels}:/wheels:ro",
    ]
    flwr_build = ["podman", "build", "-f", DOCKER / "Dockerfile.flwr", *offline]
    flwr_build += ["--build-arg", f"BASE_IMAGE={BASE_IMAGE}", "-t", flwr, DOCKER]
    _timed(images.seconds, "flwr image", lambda: run(flwr_build, env, 1800))
    app = f"{APP_REPOSITORY}:{APP_TAG}"
    app_build = ["podman", "build", "-f", DOCKER / "Dockerfile", *offline]
    app_build += ["--build-arg", f"BASE_IMAGE={flwr}", "-t", app, REPO]
    _timed(images.seconds, "app image", lambda: run(app_build, env, 3000))
    for name in (BASE_IMAGE, flwr, app):
        images.sizes_mb[name] = round(image_size_mb(name, env))
    return images


@dataclass
class ComposeProject:
    """One podman-compose project (its own containers, network and volumes)."""

    name: str
    files: Sequence[Path]
    env: dict[str, str]

    def compose(self, *args: str, timeout: float = 600, check: bool = True) -> str:
        files = [a for f in self.files for a in ("-f", str(f))]
        cmd = [str(compose_runner()), "-p", self.name, *files, *args]
        return run(cmd, self.env, timeout, check).stdout

    def up(self) -> None:
        """`up -d --no-deps`: podman-compose turns `depends_on` into podman's `--requires`,
        and podman 4.3 then starts exited one-shot services (credentials, register) again
        and fails on the chain. The services need no start order: each retries or is
        restarted (restart: on-failure) until what it needs is up."""
        self.compose("up", "-d", "--no-deps", timeout=900)

    def _label(self) -> str:
        return f"label=io.podman.compose.project={self.name}"

    def containers(self, service: str | None = None) -> list[str]:
        cmd = ["podman", "ps", "-a", "--filter", self._label(), "--format", "{{.Names}}"]
        if service is not None:
            cmd += ["--filter", f"label=com.docker.compose.service={service}"]
        return run(cmd, self.env, 60).stdout.split()

    def container(self, service: str) -> str:
        names = self.containers(service)
        assert len(names) == 1, f"service {service}: containers {names}"
        return names[0]

    def inspect(self, service: str) -> dict:
        out = run(["podman", "inspect", self.container(service)], self.env, 60).stdout
        return dict(json.loads(out)[0])

    def logs(self, service: str) -> str:
        proc = run(["podman", "logs", self.container(service)], self.env, 60, check=False)
        return proc.stdout + proc.stderr

    def all_logs(self, tail: int = 3000) -> str:
        parts = []
        for name in self.containers():
            proc = run(["podman", "logs", name], self.env, 60, check=False)
            parts.append(f"===== {name} =====\n{(proc.stdout + proc.stderr)[-tail:]}")
        return "\n".join(parts)

    def save_logs(self, folder: Path) -> None:
        """Every container's whole log as folder/<container>.log (kept with pytest's tmp)."""
        folder.mkdir(parents=True, exist_ok=True)
        for name in self.containers():
            proc = run(["podman", "logs", name], self.env, 60, check=False)
            (folder / f"{name}.log").write_text(proc.stdout + proc.stderr, encoding="utf-8")

    def healthy(self, service: str) -> bool:
        """Runs the service's health check now (podman without systemd runs none by itself)."""
        cmd = ["podman", "healthcheck", "run", self.container(service)]
        return run(cmd, self.env, 60, check=False).returncode == 0

    def stop(self, *services: str) -> None:
        self.compose("stop", *services, timeout=120)

    def leftovers(self) -> list[str]:
        """Containers, volumes and networks of this project that still exist."""
        found = [f"container {c}" for c in self.containers()]
        for kind in ("volume", "network"):
            cmd = ["podman", kind, "ls", "--filter", self._label(), "--format", "{{.Name}}"]
            found += [f"{kind} {n}" for n in run(cmd, self.env, 60).stdout.split()]
        return found

    def down(self) -> None:
        """Remove everything of the project, even when podman-compose itself fails."""
        self.compose("down", "-v", "-t", "5", timeout=300, check=False)
        for name in self.containers():
            run(["podman", "rm", "-f", "-v", "-t", "0", name], self.env, 120, check=False)
        for kind in ("volume", "network"):
            cmd = ["podman", kind, "ls", "--filter", self._label(), "--format", "{{.Name}}"]
            for item in run(cmd, self.env, 60).stdout.split():
                run(["podman", kind, "rm", "-f", item], self.env, 120, check=False)


def wait_until(
    predicate: Callable[[], bool],
    timeout: float,
    what: str,
    logs: Callable[[], str],
    every: float = 10.0,
) -> None:
    """Polls `predicate` every `every` seconds (a `flwr` call costs a second of CPU)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}\n{logs()}")
