"""Flower ServerApp of fedpatch: one-shot federated PatchCore (see fedpatch_app.federated)."""

from __future__ import annotations

import logging

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from fedpatch_app.federated.protocol.server import run_server

app = ServerApp()


def _show_progress_logs() -> None:
    """fedpatch's INFO logs on stderr (streamed by `flwr run --stream`), others untouched."""
    logger = logging.getLogger("fedpatch_app")
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.INFO)
    if not logger.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Read the run config, run the federated protocol's phases, write out-dir/<run-name>/."""
    _show_progress_logs()
    run_server(grid, context)
