"""`fedpatch serve`: the inspection service on uvicorn, for camera stations and reviewers.

The model folder is loaded and verified once, before the port opens: a missing or
tampered model stops the command with a clear message instead of serving errors. The
service binds to 127.0.0.1 unless told otherwise; beyond one machine it belongs behind a
TLS reverse proxy and, with `--token-file`, wants a bearer token on every `/v1/` route.
"""

from __future__ import annotations

import argparse
import logging
import stat
from pathlib import Path

from fedpatch_app.errors import ConfigError

log = logging.getLogger(__name__)

LOOPBACK = ("127.0.0.1", "localhost", "::1")
#: Tokens shorter than this are accepted with a warning.
SHORT_TOKEN = 16


def read_token(path: str | Path) -> str:
    """The bearer token in `path` (its first line); ConfigError naming the file if unusable."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"--token-file {path}: cannot read it: {exc}") from None
    token = text.strip().splitlines()[0].strip() if text.strip() else ""
    if not token:
        raise ConfigError(f"--token-file {path}: the file is empty")
    if any(ch.isspace() or not ch.isprintable() for ch in token):
        raise ConfigError(f"--token-file {path}: the token must be one word of printable text")
    if len(token) < SHORT_TOKEN:
        log.warning(
            "the token in %s has only %d characters: use a long random one", path, len(token)
        )
    if path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("%s can be read by other users of this machine (chmod 600 it)", path)
    return token


def upload_limit(megabytes: float) -> int:
    if not megabytes > 0:
        raise ConfigError(f"--max-upload-mb must be > 0, got {megabytes}")
    return int(megabytes * 2**20)


def run_cli(args: argparse.Namespace) -> int:
    import uvicorn

    from fedpatch_app.inspection.model_folder import load_model
    from fedpatch_app.inspection.scorer import Scorer
    from fedpatch_app.inspection.service import create_app
    from fedpatch_app.settings.options import settings_from_args

    settings = settings_from_args(args)
    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port must be between 0 and 65535, got {args.port}")
    limit = upload_limit(args.max_upload_mb)
    token = read_token(args.token_file) if args.token_file else ""
    model = load_model(args.model, allow_incomplete=args.allow_incomplete)
    scorer = Scorer.load(model, device=settings.device)
    app = create_app(scorer, token=token, max_upload_bytes=limit)
    if args.host not in LOOPBACK and not token:
        log.warning(
            "listening on %s without --token-file: anyone who reaches this port can use "
            "the service (see the security notes of the inspection service's docs)",
            args.host,
        )
    log.info(
        "model %s (%s), categories: %s",
        model.fingerprint,
        model.manifest.get("provenance", {}).get("run_name", "?"),
        ", ".join(sorted(model.categories)),
    )
    log.info("review page http://%s:%d/  API docs http://%s:%d/docs", *(args.host, args.port) * 2)
    uvicorn.run(app, host=args.host, port=args.port, log_config=None, access_log=True)
    return 0
