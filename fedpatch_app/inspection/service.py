"""The inspection service: an HTTP API over one loaded model, and the review page.

Routes (FastAPI; the OpenAPI schema is at /openapi.json, browsable at /docs):

- `GET /healthz`: the process answers (liveness);
- `GET /readyz`: 200 once the model is loaded and warmed up, 503 before (readiness);
- `GET /v1/model`: the model's manifest (categories, thresholds, provenance);
- `POST /v1/predict/{category}`: one image in, the verdict out (`?overlay=1`: with the
  heatmap overlay as a base64 PNG);
- `GET /`: the review page (plain HTML and JavaScript from `static/`, nothing external).

Every error is a JSON object `{"error": message, "status": code}`; a bad request never
takes the service down. With a token, every `/v1/` route wants `Authorization: Bearer
<token>` (compared in constant time); the page and the probes stay open.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException

from fedpatch_app import __version__
from fedpatch_app.inspection.api_schema import ERRORS, IMAGE_BODY, ModelAnswer, Prediction
from fedpatch_app.inspection.scorer import Scorer
from fedpatch_app.inspection.uploads import UploadError, check_content_type, drain, read_upload

log = logging.getLogger(__name__)

STATIC = Path(__file__).with_name("static")
DESCRIPTION = (
    "Verdicts (OK/NOK) on images of car-assembly parts with a fedpatch model folder: "
    "the score, the score against the category's calibrated threshold and the anomalous "
    "regions, optionally with a heatmap overlay. The review page is at `/`."
)


def error(status: int, message: str, **extra: Any) -> JSONResponse:
    """The JSON answer to a refused or failed request."""
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse({"error": message, "status": status, **extra}, status, headers=headers)


#: The `Authorization: Bearer` header (shown in /docs as the way to authorize).
BEARER = HTTPBearer(auto_error=False, description="the token of --token-file")
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)]


def _token_check(token: str, limit: int) -> Callable[..., Awaitable[None]]:
    async def check(request: Request, credentials: Credentials) -> None:
        if not token:
            return
        given = credentials.credentials if credentials else ""
        if not hmac.compare_digest(given.encode(), token.encode()):
            await drain(request, limit)
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


def _probes(app: FastAPI, scorer: Scorer) -> None:
    @app.get("/healthz", tags=["probes"], summary="liveness: the process answers")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["probes"], summary="readiness: the model is loaded and warm")
    async def readyz() -> JSONResponse:
        if scorer.ready.is_set():
            return JSONResponse(
                {
                    "status": "ready",
                    "model": scorer.model.fingerprint,
                    "categories": sorted(scorer.model.categories),
                }
            )
        if scorer.warm_up_error:
            return error(503, scorer.warm_up_error)
        return error(503, "the model is warming up")


async def _predict(
    request: Request, scorer: Scorer, category: str, overlay: bool, limit: int
) -> JSONResponse:
    start = time.perf_counter()
    known = sorted(scorer.model.categories)
    if category not in known:
        await drain(request, limit)
        return error(404, f"no category {category!r} in this model", categories=known)
    try:
        check_content_type(request)
    except UploadError:
        await drain(request, limit)
        raise
    upload = await read_upload(request, limit)
    try:
        answer = await scorer.score_async(category, upload, overlay=overlay)
    except UploadError:
        raise
    except Exception as exc:  # the next request is served all the same
        log.exception("scoring an image of %s failed", category)
        return error(500, f"scoring failed ({type(exc).__name__}), logged by the service")
    answer["seconds"] = time.perf_counter() - start
    return JSONResponse(answer)


def _v1(scorer: Scorer, token: str, limit: int) -> APIRouter:
    router = APIRouter(
        prefix="/v1", dependencies=[Depends(_token_check(token, limit))], tags=["v1"]
    )

    @router.get("/model", summary="the model's manifest", response_model=ModelAnswer)
    async def model() -> JSONResponse:
        return JSONResponse(scorer.model.manifest)

    @router.post(
        "/predict/{category}",
        summary="the verdict on one image of a category",
        responses={200: {"model": Prediction}, **ERRORS},
        openapi_extra={"requestBody": IMAGE_BODY},
    )
    async def predict(request: Request, category: str, overlay: bool = False) -> JSONResponse:
        """One PNG or JPEG image, as the raw body or as the multipart field `image`.
        `overlay=1` adds the heatmap overlay (`overlay_png`, base64 PNG)."""
        return await _predict(request, scorer, category, overlay, limit)

    return router


def create_app(scorer: Scorer, *, token: str = "", max_upload_bytes: int = 20 * 2**20) -> FastAPI:
    """The service around a loaded model; warming up starts with the app."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        scorer.start_warm_up()
        yield
        scorer.close()

    app = FastAPI(
        title="fedpatch inspection service",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    _install_errors(app)
    _probes(app, scorer)
    app.include_router(_v1(scorer, token, max_upload_bytes))
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "review.html", media_type="text/html")

    return app
