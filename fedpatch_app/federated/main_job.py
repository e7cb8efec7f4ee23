"""`fedpatch run`: the main job as one command with an honest exit status.

It checks the run config against the settings schema first (an unknown key or a bad
value is named before anything starts), starts `flwr run` with as many simulated
SuperNodes as the run has clients, streams its log, waits for the run's final status,
prints where the results are and a one-line verdict, exits non-zero when the run failed,
and stops the local SuperLink it started itself (by PID). `flwr run .` stays the
Flower-native way (docs/getting-started.md).
"""

from __future__ import annotations

import argparse
import sys
import tomllib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from flwr.common.config import parse_config_args

from fedpatch_app.errors import ConfigError
from fedpatch_app.federated.simulation import (
    SimulationError,
    check_ports_free,
    project_root,
    run_simulation,
)
from fedpatch_app.run_status import describe, effective_status, write_failure
from fedpatch_app.settings import RunSettings, from_run_config


def _parse(text: str | None, what: str) -> dict[str, Any]:
    if not text:
        return {}
    try:
        return dict(parse_config_args([text]))
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{what}: cannot read {text!r} as key=value pairs: {exc}") from None


def _defaults() -> dict[str, Any]:
    data = tomllib.loads((project_root() / "pyproject.toml").read_text(encoding="utf-8"))
    return dict(data["tool"]["flwr"]["app"]["config"])


def plan_run(run_config: str | None, cwd: Path) -> tuple[dict[str, Any], RunSettings]:
    """The run config to pass to `flwr run` (checked), with an absolute out-dir and a
    run name fixed here, so the run folder is known before the run starts."""
    overrides = _parse(run_config, "--run-config")
    settings = from_run_config({**_defaults(), **overrides}, where="--run-config")
    out_dir = Path(settings.out_dir)
    overrides["out-dir"] = str(out_dir if out_dir.is_absolute() else (cwd / out_dir).resolve())
    data_root = Path(settings.data_root)
    if "data-root" in overrides and not data_root.is_absolute():
        overrides["data-root"] = str((cwd / data_root).resolve())
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    overrides["run-name"] = settings.resolved_run_name(stamp)
    return overrides, from_run_config({**_defaults(), **overrides}, where="--run-config")


def _supernodes(federation: dict[str, Any], settings: RunSettings) -> tuple[int, float, float]:
    nodes = int(federation.get("num-supernodes", settings.num_clients))
    if nodes < settings.min_clients:
        raise ConfigError(
            f"--federation-config num-supernodes={nodes} is below min-clients="
            f"{settings.min_clients}: the run would wait for clients that never come"
        )
    cpus = float(federation.get("client-resources-num-cpus", 1))
    gpus = float(federation.get("client-resources-num-gpus", 0))
    return nodes, cpus, gpus


def _verdict(run_dir: Path, error: str | None) -> int:
    status = effective_status(run_dir) or {}
    if error is None and status.get("status") == "completed":
        print(f"fedpatch run: COMPLETED. Results: {run_dir} (report.md, results.json, model/)")
        return 0
    reason = status.get("reason") or error or "unknown (see the log above)"
    if run_dir.is_dir() and not status:
        # The ServerApp never started: the folder holds only Flower's log.
        write_failure(run_dir, run_dir.name, reason, [], ["flwr-run.log"])
    if status.get("status") == "interrupted":
        reason = f"the run was {describe(status)}"
    print(f"fedpatch run: FAILED: {reason}", file=sys.stderr)
    if run_dir.is_dir():
        print(f"fedpatch run: what was kept and why: {run_dir / 'status.json'}", file=sys.stderr)
    return 1


def run_cli(args: argparse.Namespace) -> int:
    cwd = Path.cwd()
    overrides, settings = plan_run(args.run_config, cwd)
    nodes, cpus, gpus = _supernodes(_parse(args.federation_config, "--federation-config"), settings)
    check_ports_free()
    run_dir = Path(settings.out_dir) / settings.run_name
    flwr_home = Path(args.flwr_home) if args.flwr_home else project_root() / ".flwr"
    print(f"fedpatch run: {settings.run_name} with {nodes} simulated SuperNodes -> {run_dir}")
    error = None
    try:
        run_simulation(
            overrides, flwr_home=flwr_home, num_supernodes=nodes, cpus_per_client=cpus,
            gpus_per_client=gpus, timeout=settings.round_timeout * 4 + settings.wait_timeout,
            log_file=run_dir / "flwr-run.log", echo=sys.stdout,
        )  # fmt: skip
    except SimulationError as exc:
        error = str(exc).split("; last output:")[0]
    return _verdict(run_dir, error)
