"""The FastAPI application: REST under ``/v1``, ``/healthz``, ``/metrics``, the web page at ``/``.

Build it with :func:`create_app`; ``tddfa serve`` runs it with uvicorn. Every error is JSON
``{"error": {"code", "message"}}``; inference runs on the :class:`~tddfa.serve.engine.Engine`
pool, never on the event loop.
"""

from __future__ import annotations

import hmac
import json
import logging
import re
import time
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from tddfa import __version__
from tddfa.errors import InputError, TddfaError
from tddfa.serve.engine import Busy, Engine, ServeConfig, Slot
from tddfa.serve.imagecheck import ImageRejected
from tddfa.serve.jobs import MEDIA_TYPES, align_job, export_job, live_job, render_job
from tddfa.serve.metrics import Metrics
from tddfa.serve.schemas import (
    AlignResponse,
    ErrorResponse,
    Health,
    LiveResponse,
    ModelEntry,
    ModelsResponse,
)

__all__ = ["create_app", "ApiError"]

log = logging.getLogger(__name__)
STATIC = Path(__file__).resolve().parent / "static"
RenderKind = Literal["mesh", "depth", "pncc", "normal", "uv", "pose", "dense", "landmarks"]
Refine = Annotated[bool, Query(description="second pass re-cropped from the landmarks")]
Boxes = Annotated[str | None, Query(description="JSON [[x1,y1,x2,y2(,score)],...] image pixels: "
                                                "skip detection and use these boxes")]
_SESSION = re.compile(r"^[A-Za-z0-9_-]{8,64}$")
_PAGE_CSP = ("default-src 'self'; img-src 'self' blob: data:; media-src 'self' blob: mediastream:; "
             "connect-src 'self' blob: data:; script-src 'self'; style-src 'self'; "
             "object-src 'none'; base-uri 'none'; frame-ancestors 'none'")


class ApiError(Exception):
    """An error answered as ``{"error": {"code", "message"}}`` with HTTP ``status``."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


class BodyTooLarge(Exception):
    """Raised by the body-limit middleware while the request body is being read."""


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status, headers=headers)


# ---------------------------------------------------------------------------------------------
# ASGI middleware: body size limit (while reading), metrics, security headers


class _BodyLimit:
    """Refuse bodies over ``limit`` bytes with 413: from Content-Length up front, and by
    counting bytes as they arrive (chunked uploads), so a large body is never buffered whole."""

    def __init__(self, app, limit: int, metrics: Metrics):
        self.app, self.limit, self.metrics = app, limit, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        msg = f"request body larger than the {self.limit:,}-byte limit (--max-upload-mb)"
        for k, v in scope.get("headers", []):
            if k == b"content-length":
                try:
                    declared = int(v)
                except ValueError:
                    declared = -1
                if declared > self.limit:
                    self.metrics.add_error("body_too_large")
                    return await _error(413, "body_too_large", msg)(scope, receive, send)
        seen = 0
        started = False

        async def limited_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise BodyTooLarge(msg)
            return message

        async def tracking_send(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:
            if started:
                raise
            self.metrics.add_error("body_too_large")
            await _error(413, "body_too_large", msg)(scope, receive, send)


class _Observe:
    """Count requests by route template and status, time them, add security headers."""

    def __init__(self, app, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t = time.perf_counter()
        status = 500

        async def wrapped_send(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                headers.append((b"x-content-type-options", b"nosniff"))
                if scope["path"] == "/" or scope["path"].startswith("/static/"):
                    headers.append((b"content-security-policy", _PAGE_CSP.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, wrapped_send)
        finally:
            route = scope.get("route")
            name = getattr(route, "path", None) or "unmatched"
            self.metrics.observe(scope.get("method", "?"), name, status, time.perf_counter() - t)


# ---------------------------------------------------------------------------------------------
# request helpers


async def _image_bytes(request: Request) -> bytes:
    """The uploaded image: the ``file`` part of a multipart form, or the raw body."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "multipart/form-data":
        # small parts stay in memory; larger ones are spooled to anonymous temporary files whose
        # names are chosen by Python, never by the client
        form = await request.form(max_files=1, max_fields=8)
        part = form.get("file")
        if part is None or isinstance(part, str):
            raise ApiError(400, "missing_file", "multipart upload needs a file field named 'file'")
        data = await part.read()
        await form.close()
    elif ctype in ("", "application/octet-stream") or ctype.startswith("image/"):
        data = await request.body()
    else:
        raise ApiError(415, "unsupported_media_type",
                       f"send the image as multipart/form-data (field 'file') or as a raw image/* "
                       f"body, not {ctype}")
    if not data:
        raise ApiError(400, "empty_body", "no image bytes received")
    return data


def _parse_boxes(text: str | None):
    if text is None or not text.strip():
        return None
    import numpy as np

    try:
        boxes = json.loads(text)
    except ValueError as exc:
        raise ApiError(400, "bad_boxes", f"boxes must be JSON like [[x1,y1,x2,y2],...]: {exc}") from None
    try:
        arr = np.asarray(boxes, dtype=np.float32)
    except (TypeError, ValueError):
        raise ApiError(400, "bad_boxes", "boxes must be a JSON list of [x1, y1, x2, y2(, score)]") from None
    from tddfa.pipeline.aligner import _as_boxes

    return _as_boxes(arr)


_IMAGE_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {"schema": {"type": "object", "required": ["file"],
                                               "properties": {"file": {"type": "string",
                                                                       "format": "binary"}}}},
            "image/*": {"schema": {"type": "string", "format": "binary"}},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}
_ERRORS: dict[int | str, dict[str, Any]] = {
    c: {"model": ErrorResponse, "description": d} for c, d in {
        400: "bad request or corrupt image", 401: "missing or wrong bearer token",
        413: "body or declared image size over the limit", 415: "not a JPEG/PNG/BMP/WebP image",
        422: "invalid parameters, or nothing to export", 503: "queue full; see Retry-After"}.items()}


# ---------------------------------------------------------------------------------------------
# the app


def create_app(config: ServeConfig | None = None, engine: Engine | None = None, *,
               warm_up: bool = True) -> FastAPI:
    """The server application.

    Args:
        config: settings (defaults: :class:`ServeConfig`).
        engine: an existing :class:`Engine` (tests); built from ``config`` when ``None``.
        warm_up: build the models before the first request.
    """
    config = config or (engine.config if engine is not None else ServeConfig())
    engine = engine or Engine(config)
    if warm_up:
        engine.warm_up()
    metrics = Metrics()
    app = FastAPI(title="tddfa", version=__version__, docs_url=None, redoc_url=None,
                  description="3D dense face alignment: landmarks, pose, renders and meshes of the "
                              "faces in an uploaded photo.")
    app.state.engine, app.state.metrics, app.state.config = engine, metrics, config

    def fail(status: int, code: str, message: str, headers: dict[str, str] | None = None):
        metrics.add_error(code)
        return _error(status, code, message, headers)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        return fail(exc.status, exc.code, exc.message, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        parts = []
        for e in exc.errors():
            where = ".".join(str(x) for x in e.get("loc", ()) if x not in ("query", "body"))
            parts.append(f"{where}: {e.get('msg')}")
        return fail(422, "invalid_parameter", "; ".join(parts) or "invalid request")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return fail(exc.status_code, code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(BodyTooLarge)
    async def _too_large(request: Request, exc: BodyTooLarge):
        return fail(413, "body_too_large", str(exc))

    @app.exception_handler(TddfaError)
    async def _tddfa(request: Request, exc: TddfaError):
        if isinstance(exc, InputError):
            return fail(422, "invalid_input", str(exc))
        log.error("%s on %s: %s", type(exc).__name__, request.url.path, exc)
        return fail(500, "model_error", str(exc))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        log.exception("unexpected error on %s", request.url.path)
        return fail(500, "internal", f"unexpected {type(exc).__name__}; see the server log")

    def check_token(request: Request) -> None:
        if config.token is None:
            return
        auth = request.headers.get("authorization", "")
        scheme, _, given = auth.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(),
                                                                 config.token.encode()):
            raise ApiError(401, "unauthorized", "missing or wrong 'Authorization: Bearer <token>'",
                           {"WWW-Authenticate": "Bearer"})

    async def run(request: Request, job, *args) -> tuple[bytes, int]:
        try:
            slot: Slot = engine.admit()
        except Busy as exc:
            raise ApiError(503, "busy", str(exc), {"Retry-After": str(exc.retry_after)}) from None
        try:
            data = await _image_bytes(request)
            body, n = await engine.run(slot, job, engine, data, *args)
        except ImageRejected as exc:
            raise ApiError(exc.status, exc.code, str(exc)) from None
        except InputError as exc:
            raise ApiError(422, "invalid_input", str(exc)) from None
        except TddfaError as exc:
            raise ApiError(500, "model_error", str(exc)) from None
        finally:
            if not slot.handed_off:
                slot.release()
        metrics.add_faces(n)
        return body, n

    v1 = APIRouter(prefix="/v1", dependencies=[Depends(check_token)], responses=_ERRORS)

    @v1.post("/align", response_model=AlignResponse, openapi_extra=_IMAGE_BODY,
             summary="Landmarks, pose and 3DMM parameters of every face (tddfa align's JSON)")
    async def align(request: Request,
                    dense: Annotated[bool, Query(description="include the 38,365 dense vertices")] = False,
                    refine: Refine = False, boxes: Boxes = None):
        body, _ = await run(request, align_job, dense, refine, _parse_boxes(boxes))
        return Response(body, media_type="application/json")

    @v1.post("/render", openapi_extra=_IMAGE_BODY, response_class=Response,
             responses={200: {"content": {"image/png": {}}, "description": "the render, PNG"}},
             summary="A render of every face over the photo, PNG")
    async def render(request: Request, kind: RenderKind = "mesh", refine: Refine = False,
                     boxes: Boxes = None):
        body, _ = await run(request, render_job, kind, refine, _parse_boxes(boxes))
        return Response(body, media_type="image/png")

    @v1.post("/export", openapi_extra=_IMAGE_BODY, response_class=Response,
             responses={200: {"content": {t: {} for t in sorted(set(MEDIA_TYPES.values()))},
                              "description": "the mesh file (OBJ/PLY with vertex colours, GLB "
                                             "with its UV texture)"}},
             summary="One face's dense mesh as OBJ, PLY or GLB")
    async def export(request: Request, format: Literal["obj", "ply", "glb"] = "glb",
                     face: Annotated[int, Query(ge=0, description="face index, 0 = best")] = 0,
                     frame: Annotated[Literal["image", "centered_yup"],
                                      Query(description="image pixels y down, or centred y up "
                                                        "(3-D viewers)")] = "image",
                     refine: Refine = False, boxes: Boxes = None):
        body, _ = await run(request, export_job, format, face, frame, refine, _parse_boxes(boxes))
        return Response(body, media_type=MEDIA_TYPES[format], headers={
            "Content-Disposition": f'attachment; filename="face{face}.{format}"'})

    @v1.post("/live", response_model=LiveResponse, openapi_extra=_IMAGE_BODY,
             summary="One webcam frame of a live session (tracking and smoothing across frames)")
    async def live(request: Request,
                   session: Annotated[str, Query(description="client-chosen id, 8-64 of [A-Za-z0-9_-]")],
                   t: Annotated[float, Query(ge=0, description="frame timestamp, ms, increasing")]):
        if not _SESSION.match(session):
            raise ApiError(422, "invalid_parameter", "session must be 8-64 characters of A-Z a-z 0-9 _ -")
        body, _ = await run(request, live_job, session, t)
        return Response(body, media_type="application/json")

    @v1.get("/models", response_model=ModelsResponse, summary="Registered models and the one loaded")
    async def models():
        from tddfa.export.formats import WRITERS
        from tddfa.models.registry import MODELS
        from tddfa.render.registry import RENDERERS

        return ModelsResponse(
            loaded=engine.aligner.describe(),
            models=[ModelEntry(name=m.name, arch=m.arch, width=m.width, description=m.description,
                               loaded=m.name == engine.aligner.model_name) for m in MODELS.values()],
            render_kinds=list(RENDERERS), export_formats=list(WRITERS))

    app.include_router(v1)

    @app.get("/healthz", response_model=Health, summary="Liveness and load")
    async def healthz():
        return Health(status="ok", version=__version__, busy=engine.admitted, capacity=engine.capacity)

    @app.get("/metrics", response_class=Response, dependencies=[Depends(check_token)],
             responses={200: {"content": {"text/plain": {}}}}, summary="Prometheus metrics")
    async def prometheus():
        text = metrics.render({
            "tddfa_inflight_requests": ("Requests running or waiting for a worker.", engine.admitted),
            "tddfa_capacity": ("Worker plus queue slots.", engine.capacity),
            "tddfa_live_sessions": ("Live-mode sessions kept.", engine.n_sessions),
        })
        return Response(text, media_type="text/plain; version=0.0.4")

    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/docs", include_in_schema=False)
    async def docs():
        from fastapi.openapi.docs import get_swagger_ui_html

        return get_swagger_ui_html(openapi_url="/openapi.json", title="tddfa API",
                                   swagger_js_url="/static/vendor/swagger-ui-bundle.js",
                                   swagger_css_url="/static/vendor/swagger-ui.css",
                                   swagger_favicon_url="/static/favicon.svg")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    if config.cors:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(config.cors),
                           allow_methods=["GET", "POST"], allow_headers=["Authorization", "Content-Type"],
                           expose_headers=["Retry-After"])
    app.add_middleware(_BodyLimit, limit=config.max_body_bytes, metrics=metrics)
    app.add_middleware(_Observe, metrics=metrics)
    app.router.on_shutdown.append(engine.close)
    return app
