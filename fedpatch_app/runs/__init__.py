"""The run kinds, one module each, sharing one results schema (`fedpatch_app.results`).

- centralized: one bank per category from all training images (`runs.centralized`,
  `fedpatch centralized`);
- local-only: each client alone on its own partition (`runs.local_only`, a run of
  `fedpatch experiment`);
- federated: the Flower ServerApp and ClientApp (`server_app.py`, `client_app.py` at the
  repository root, their code under `fedpatch_app.federated`), started as one command with an
  honest exit status by `fedpatch_app.federated.main_job` (`fedpatch run`).

Every kind scores the same way (`fedpatch_app.metrics.evaluate.evaluate_category`) and writes
the same run folder.
"""
