"""Shared fixtures: small synthetic AutoVI-format data made by the project itself."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny synthetic AutoVI data for all six categories (read-only: copy before changing)."""
    from fedpatch_app.data.synthetic import generate

    root = tmp_path_factory.mktemp("autovi_tiny")
    generate(root, scale="tiny", seed=0)
    return root
