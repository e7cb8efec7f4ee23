"""The inspection service: an HTTP API over one loaded model, and the review page.

Routes (FastAPI; the OpenAPI schema is at /openapi.json, browsable at /docs):

- `GET /healthz`: the process answers (liveness);
- `GET /readyz`: 200 once the model is loaded and warmed up, 503 with the reason whenever
  scoring would fail (warming up, warm-up failed, spool folder gone); the model's
  fingerprint, categories and the scoring slots only with the token;
- `GET /v1/model`: the model's manifest (categories, thresholds, provenance);
- `POST /v1/predict/{category}`: one image in, the verdict out (`?overlay=1`: with the
  heatmap overlay as a base64 PNG);
- `POST /v1/admin/reload`, `POST /v1/admin/rollback`: load the model folder again
  (verified and warmed up before it replaces the current model), or go back to the
  previous one (only with a token; SIGHUP reloads too);
- `GET /`: the review page (plain HTML and JavaScript from `static/`, nothing external).

Every error is a JSON object `{"error": message, "status": code}`; a bad request never
takes the service down. With a token, every `/v1/` route wants `Authorization: Bearer
<token>` (compared in constant time), checked before the body is read; the page and the
probes stay open. The probes never wait for a scoring slot: `/v1/predict` requests pass a
gate of `slots` + `queue` places, and one more gets 503 at once, its body unread.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import shutil
import signal
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException

from fedpatch_app import __version__
from fedpatch_app.inspection.api_schema import (
    ERRORS,
    IMAGE_BODY,
    ModelAnswer,
    Prediction,
    ReadyAnswer,
    ReloadAnswer,
)
from fedpatch_app.inspection.http_limits import heap_trimmer
from fedpatch_app.inspection.live_model import GateFull, LiveModel, ReloadError, ScoringGate
from fedpatch_app.inspection.scorer import Scorer
from fedpatch_app.inspection.uploads import (
    UploadError,
    UploadLimits,
    check_content_type,
    declared_too_large,
    drain,
    read_upload,
)

log = logging.getLogger(__name__)

STATIC = Path(__file__).with_name("static")
DESCRIPTION = (
    "Verdicts (OK/NOK) on images of car-assembly parts with a fedpatch model folder: "
    "the score, the score against the category's calibrated threshold and the anomalous "
    "regions, optionally with a heatmap overlay. The review page is at `/`."
)
#: Seconds the gate must stay empty before the heap is trimmed.
IDLE_TRIM_SECONDS = 0.5
#: Answers after which the connection is closed: the body may be left unread.
CLOSE_AFTER = {401, 408, 413, 503}


def error(status: int, message: str, **extra: Any) -> JSONResponse:
    """The JSON answer to a refused or failed request."""
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else {}
    if status in CLOSE_AFTER:
        headers["Connection"] = "close"
    if status == 503:
        headers["Retry-After"] = "1"
    return JSONResponse({"error": message, "status": status, **extra}, status, headers=headers)


@dataclass
class Service:
    """What the routes share: the live model, the token, the limits and the gate."""

    live: LiveModel
    token: str = ""
    limits: UploadLimits = field(default_factory=UploadLimits)
    gate: ScoringGate = field(default_factory=ScoringGate)
    spool: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="fedpatch-spool-")))
    trim: Callable[[], None] | None = field(default_factory=heap_trimmer)
    _trim_pending: bool = False

    def authorized(self, given: str) -> bool:
        return not self.token or hmac.compare_digest(given.encode(), self.token.encode())

    def trim_when_idle(self) -> None:
        """Give freed memory back to the system once no predict request is in flight for
        IDLE_TRIM_SECONDS (see `http_limits.heap_trimmer`)."""
        if self.trim is None or self._trim_pending or self.gate.admitted:
            return
        self._trim_pending = True

        def run() -> None:
            self._trim_pending = False
            if not self.gate.admitted and self.trim is not None:
                self.trim()

        asyncio.get_running_loop().call_later(IDLE_TRIM_SECONDS, run)


#: The `Authorization: Bearer` header (shown in /docs as the way to authorize).
BEARER = HTTPBearer(auto_error=False, description="the token of --token-file")
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)]


def _token_check(service: Service) -> Callable[..., Awaitable[None]]:
    async def check(request: Request, credentials: Credentials) -> None:
        given = credentials.credentials if credentials else ""
        if not service.authorized(given):
            await drain(request, service.limits)
            what = "a wrong token" if given else "no token"
            raise HTTPException(401, f"{what}: send the header 'Authorization: Bearer <token>'")

    return check


def _install_errors(app: FastAPI) -> None:
    @app.exception_handler(UploadError)
    async def upload_error(request: Request, exc: UploadError) -> JSONResponse:
        return error(exc.status, exc.message)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return error(exc.status_code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(map(str, e.get('loc', ())))}: {e.get('msg', '')}" for e in exc.errors()
        )
        return error(422, f"invalid request: {problems}")

    @app.exception_handler(Exception)
    async def crashed(request: Request, exc: Exception) -> JSONResponse:
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return error(500, f"internal error ({type(exc).__name__}), logged by the service")


def _not_ready(service: Service) -> str:
    """Why scoring would fail now, or "" when it would not."""
    scorer = service.live.current
    if not service.spool.is_dir():
        return "the upload spool folder is gone: restart the service"
    if scorer.ready.is_set():
        return ""
    return scorer.warm_up_error or "the model is warming up"


def _probes(app: FastAPI, service: Service) -> None:
    @app.get("/healthz", tags=["probes"], summary="liveness: the process answers")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/readyz",
        tags=["probes"],
        summary="readiness: the model is loaded and warm, and scoring would succeed",
        response_model=ReadyAnswer,
        response_model_exclude_none=True,
    )
    async def readyz(credentials: Credentials) -> JSONResponse:
        reason = _not_ready(service)
        if reason:
            return error(503, reason)
        answer: dict[str, Any] = {"status": "ready"}
        if service.authorized(credentials.credentials if credentials else ""):
            answer |= service.live.describe(service.live.current)
            answer["scoring"] = service.gate.state()
        return JSONResponse(answer)


async def _refuse_early(
    request: Request, service: Service, scorer: Scorer, category: str
) -> JSONResponse | None:
    """The answer to a request refused before its body is read (the rest drained)."""
    known = sorted(scorer.model.categories)
    if category not in known:
        await drain(request, service.limits)
        return error(404, f"no category {category!r} in this model", categories=known)
    try:
        check_content_type(request)
    except UploadError as exc:
        await drain(request, service.limits)
        return error(exc.status, exc.message)
    if declared_too_large(request, service.limits):
        limit = service.limits.max_bytes / 2**20
        return error(413, f"the upload is larger than the limit of {limit:g} MB")
    return None


async def _score(
    request: Request, service: Service, scorer: Scorer, category: str, overlay: bool
) -> dict[str, Any] | JSONResponse:
    native = scorer.model.category(category).native_size
    try:
        upload = await read_upload(request, native, service.limits, service.spool)
    except UploadError as exc:
        if exc.status != 408:
            await drain(request, service.limits)
        raise
    try:
        return await scorer.score_async(category, upload, overlay=overlay)
    except UploadError:
        raise
    except Exception as exc:  # the next request is served all the same
        log.exception("scoring an image of %s failed", category)
        return error(500, f"scoring failed ({type(exc).__name__}), logged by the service")
    finally:
        upload.remove()


async def _predict(
    request: Request, service: Service, category: str, overlay: bool
) -> JSONResponse:
    start = time.perf_counter()
    scorer = service.live.current  # this request keeps it, whatever reloads meanwhile
    refused = await _refuse_early(request, service, scorer, category)
    if refused is not None:
        return refused
    try:
        with service.gate.enter():
            answer = await _score(request, service, scorer, category, overlay)
    except GateFull:
        await drain(request, service.limits)
        state = service.gate.state()
        return error(
            503,
            f"busy: all {state['slots']} scoring slots and {state['queue']} queue places are "
            "taken; retry shortly",
        )
    finally:
        service.trim_when_idle()
    if isinstance(answer, JSONResponse):
        return answer
    answer["seconds"] = time.perf_counter() - start
    return JSONResponse(answer)


async def _swap(service: Service, what: str) -> JSONResponse:
    if not service.token:
        return error(403, f"{what} needs the service to run with --token-file")
    live = service.live
    try:
        await asyncio.to_thread(live.reload if what == "reload" else live.rollback)
    except ReloadError as exc:
        return error(409, f"{what} refused, the current model serves on: {exc}")
    previous = live.describe(live.previous) if live.previous is not None else None
    done = "reloaded" if what == "reload" else "rolled back"
    return JSONResponse(
        {"status": done, "current": live.describe(live.current), "previous": previous}
    )


def _v1(service: Service) -> APIRouter:
    router = APIRouter(prefix="/v1", dependencies=[Depends(_token_check(service))], tags=["v1"])

    @router.get("/model", summary="the model's manifest", response_model=ModelAnswer)
    async def model() -> JSONResponse:
        return JSONResponse(service.live.current.model.manifest)

    @router.post(
        "/predict/{category}",
        summary="the verdict on one image of a category",
        responses={200: {"model": Prediction}, **ERRORS},
        openapi_extra={"requestBody": IMAGE_BODY},
    )
    async def predict(request: Request, category: str, overlay: bool = False) -> JSONResponse:
        """One PNG, JPEG, BMP or TIFF image, as the raw body or as the multipart field `image`.
        `overlay=1` adds the heatmap overlay (`overlay_png`, base64 PNG)."""
        return await _predict(request, service, category, overlay)

    @router.post(
        "/admin/reload",
        summary="load the model folder again",
        tags=["admin"],
        response_model=ReloadAnswer,
    )
    async def reload() -> JSONResponse:
        """Verified and warmed up before it replaces the current model (kept until then)."""
        return await _swap(service, "reload")

    @router.post(
        "/admin/rollback",
        summary="back to the previous model",
        tags=["admin"],
        response_model=ReloadAnswer,
    )
    async def rollback() -> JSONResponse:
        return await _swap(service, "rollback")

    return router


def _reload_on_sighup(service: Service) -> None:
    """SIGHUP reloads the model (logged; the current one serves on when it fails)."""

    async def reload() -> None:
        try:
            await asyncio.to_thread(service.live.reload)
        except ReloadError as exc:
            log.error("SIGHUP: reload refused, the current model serves on: %s", exc)

    try:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(reload()))
    except (ValueError, RuntimeError, NotImplementedError, AttributeError):
        log.debug("SIGHUP cannot be handled here (not the main thread?)")


def create_app(
    scorer: Scorer | LiveModel,
    *,
    token: str = "",
    max_upload_bytes: int | None = None,
    limits: UploadLimits | None = None,
    slots: int = 1,
    queue: int = 8,
) -> FastAPI:
    """The service around a loaded model; warming up starts with the app."""
    live = scorer if isinstance(scorer, LiveModel) else LiveModel(scorer)
    if limits is None:
        limits = UploadLimits(max_bytes=max_upload_bytes or UploadLimits.max_bytes)
    service = Service(live, token, limits, ScoringGate(slots, queue))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        live.current.start_warm_up()
        _reload_on_sighup(service)
        yield
        live.current.close()
        shutil.rmtree(service.spool, ignore_errors=True)

    app = FastAPI(
        title="fedpatch inspection service",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    _install_errors(app)
    _probes(app, service)
    app.include_router(_v1(service))
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.state.service = service

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "review.html", media_type="text/html")

    return app
