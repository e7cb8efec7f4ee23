"""Shared fixtures: small synthetic AutoVI-format data made by the project itself."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny synthetic AutoVI data for all six categories (read-only: copy before changing)."""
    from fedpatch_app.data.synthetic import generate

    root = tmp_path_factory.mktemp("autovi_tiny")
    generate(root, scale="tiny", seed=0, kind="drawn")
    return root


@pytest.fixture(scope="session")
def pipe_clip_run(tiny_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A centralized run of pipe_clip on the tiny data (random weights, 64 px): its
    `model/` folder is what `fedpatch predict` and `fedpatch serve` are tested with."""
    from fedpatch_app.cli import main

    out = tmp_path_factory.mktemp("pipe_clip_run") / "central"
    code = main(
        [
            "centralized",
            "--data-root",
            str(tiny_root),
            "--out",
            str(out),
            "--categories",
            "pipe_clip",
            "--weights",
            "none",
            "--image-size",
            "64",
            "--device",
            "cpu",
            "--calibration-fraction",
            "0.25",
        ]
    )
    assert code == 0
    return out


@pytest.fixture(scope="session")
def service(pipe_clip_run: Path, tmp_path_factory: pytest.TempPathFactory):
    """The real `fedpatch serve` on 127.0.0.1 (a free port) with a token, shared by the
    service and browser tests; stopped at the end of the session."""
    import secrets

    from service_utils import start_service

    running = start_service(
        pipe_clip_run / "model", tmp_path_factory.mktemp("serve"), secrets.token_urlsafe(24)
    )
    yield running
    running.stop()
