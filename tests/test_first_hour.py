"""A new user's first hour: no silent wrong data, failures that say why, runs that do
not collide, and a command line that explains itself."""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from flwr.app import Context, RecordDict

from fedpatch_app.cli import main
from fedpatch_app.errors import ConfigError
from fedpatch_app.federated.data import resolve_dataset
from fedpatch_app.outputs import prepare_output
from fedpatch_app.settings import from_run_config


def test_a_mistyped_data_root_fails_at_once_naming_the_path(tmp_path: Path) -> None:
    settings = from_run_config({"data-root": str(tmp_path / "data" / "autovii")})
    with pytest.raises(ConfigError, match=r"'data-root': .*autovii holds no category"):
        resolve_dataset(settings)


def test_a_failed_run_leaves_a_status_file_and_a_report_saying_why(tmp_path: Path) -> None:
    import client_app
    from fedpatch_app.federated.inprocess import InProcessGrid
    from fedpatch_app.federated.protocol.server import run_server

    config = {"data-root": str(tmp_path / "typo"), "out-dir": str(tmp_path), "run-name": "r"}
    grid = InProcessGrid(client_app.app, [], config)
    context = Context(run_id=1, node_id=1, node_config={}, state=RecordDict(), run_config=config)
    with pytest.raises(ConfigError):
        run_server(grid, context)
    status = json.loads((tmp_path / "r" / "status.json").read_text())
    assert status["status"] == "failed" and "typo holds no category" in status["reason"]
    first = (tmp_path / "r" / "report.md").read_text().splitlines()[0]
    assert "FAILED" in first and "typo holds no category" in first


def test_output_folders_are_never_mixed(tmp_path: Path) -> None:
    fresh = prepare_output(tmp_path / "new", overwrite=False)
    assert fresh.is_dir()
    (fresh / "results.json").write_text("{}")
    (fresh / "banks").mkdir()
    with pytest.raises(ConfigError, match="not empty"):
        prepare_output(fresh, overwrite=False)
    prepare_output(fresh, overwrite=True)
    assert list(fresh.iterdir()) == []
    mine = tmp_path / "my-files"
    mine.mkdir()
    (mine / "thesis.tex").write_text("precious")
    with pytest.raises(ConfigError, match="does not look like a fedpatch output folder"):
        prepare_output(mine, overwrite=True)
    assert (mine / "thesis.tex").read_text() == "precious"


def test_centralized_refuses_a_used_out_folder(tiny_root: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.json").write_text("{}")
    code = main(
        ["centralized", "--data-root", str(tiny_root), "--out", str(out), "--weights", "none"]
    )
    assert code == 2 and "--overwrite" in capsys.readouterr().err


def test_unknown_run_config_keys_are_named_before_flower_starts(capsys) -> None:
    code = main(["run", "--run-config", "coreset-ration=0.2"])
    err = capsys.readouterr().err
    assert code == 2 and "'coreset-ration' (did you mean 'coreset-ratio'?)" in err


def test_version_and_quiet_broken_pipe(tiny_root: Path) -> None:
    version = subprocess.run(
        [sys.executable, "-m", "fedpatch_app.cli", "--version"], capture_output=True, text=True
    )
    assert version.returncode == 0 and version.stdout.startswith("fedpatch ")
    cmd = (
        f"{sys.executable} -m fedpatch_app.cli partition --scheme iid --json "
        f"--data-root {tiny_root} | head -c 20"
    )
    piped = subprocess.run(["bash", "-o", "pipefail", "-c", cmd], capture_output=True, text=True)
    assert "Traceback" not in piped.stderr and "BrokenPipeError" not in piped.stderr
    assert piped.stdout.startswith("{")


def test_faiss_loader_lines_stay_out_of_the_terminal() -> None:
    from fedpatch_app.cli import _logging

    _logging(verbose=False)
    assert not logging.getLogger("faiss.loader").isEnabledFor(logging.INFO)


def test_offline_download_fails_fast_and_tells_the_truth(tmp_path: Path, monkeypatch) -> None:
    from urllib.error import URLError

    from fedpatch_app.data import download
    from fedpatch_app.errors import DataError

    calls = []

    def offline(request, timeout):
        calls.append(request)
        raise URLError(socket.gaierror(-3, "Temporary failure in name resolution"))

    monkeypatch.setattr(download, "urlopen", offline)
    with pytest.raises(DataError) as info:
        download.fetch("https://zenodo.org/x.zip", tmp_path / "x.zip", retry_wait=0)
    assert len(calls) == 1  # no retries for a name that does not resolve
    assert "does not resolve" in str(info.value) and "kept" not in str(info.value)
