"""`fedpatch serve`: the inspection service on uvicorn, for camera stations and reviewers.

The model folder is loaded and verified once, before the port opens: a missing or
tampered model (or, with `--trusted-key`, an unsigned one) stops the command with a clear
message instead of serving errors. The service binds to 127.0.0.1 unless told otherwise;
beyond one machine it belongs behind a TLS reverse proxy and, with `--token-file`, wants
a bearer token on every `/v1/` route.

The limits: uvicorn's own where it has them (keep-alive timeout, request-head size,
restart after `--max-requests`), the head timeout it lacks (`http_limits`), and the
service's scoring gate, upload streaming and body timeouts (`service`, `uploads`).
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


def _positive(args: argparse.Namespace, name: str, *, integer: bool = False) -> None:
    value = getattr(args, name)
    if not (value > 0) or (integer and value != int(value)):
        flag = "--" + name.replace("_", "-")
        raise ConfigError(f"{flag} must be a {'whole number' if integer else 'number'} > 0")


def _check_limits(args: argparse.Namespace) -> None:
    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port must be between 0 and 65535, got {args.port}")
    for name in ("scoring_slots", "queue"):
        _positive(args, name, integer=True)
    for name in ("upload_timeout", "header_timeout", "keep_alive_timeout"):
        _positive(args, name)
    if args.max_requests is not None:
        _positive(args, "max_requests", integer=True)


def _share_cores(slots: int) -> None:
    """Each scoring slot gets its share of torch's CPU threads (the ONNX runtime's are
    set per session: `Scorer.load`)."""
    try:
        import torch
    except ImportError:
        return

    if slots > 1:
        torch.set_num_threads(max(1, torch.get_num_threads() // slots))


def _server(app: object, args: argparse.Namespace) -> object:
    import uvicorn

    from fedpatch_app.inspection.http_limits import header_timeout_protocol

    config = uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        log_config=None,
        access_log=True,
        http=header_timeout_protocol(args.header_timeout),
        timeout_keep_alive=max(1, round(args.keep_alive_timeout)),
        limit_max_requests=args.max_requests,
        timeout_graceful_shutdown=30,
    )
    return uvicorn.Server(config)


def run_cli(args: argparse.Namespace) -> int:
    from fedpatch_app.inspection.http_limits import raise_open_files_limit
    from fedpatch_app.inspection.live_model import LiveModel, ModelSource
    from fedpatch_app.inspection.service import create_app
    from fedpatch_app.inspection.signing import read_public_keys
    from fedpatch_app.inspection.uploads import UploadLimits
    from fedpatch_app.settings.options import settings_from_args

    settings = settings_from_args(args)
    _check_limits(args)
    limits = UploadLimits(
        max_bytes=upload_limit(args.max_upload_mb),
        chunk_seconds=min(args.upload_timeout, 10.0),
        body_seconds=args.upload_timeout,
    )
    token = read_token(args.token_file) if args.token_file else ""
    source = ModelSource(
        Path(args.model),
        device=settings.device,
        slots=args.scoring_slots,
        allow_incomplete=args.allow_incomplete,
        trusted_keys=read_public_keys(args.trusted_key or ()),
        runtime=args.runtime,
    )
    _share_cores(args.scoring_slots)
    live = LiveModel(source.load(), source)
    model = live.current.model
    app = create_app(live, token=token, limits=limits, slots=args.scoring_slots, queue=args.queue)
    log.info("open files allowed: %d", raise_open_files_limit())
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
    _server(app, args).run()  # type: ignore[attr-defined]
    return 0
