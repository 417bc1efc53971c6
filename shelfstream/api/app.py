"""The ASGI app: the /v1 API, the live stream and the dashboard page (docs/contract.md section 5).

Every /v1 call needs ``Authorization: Bearer <token>``; errors are ``{"error": "..."}`` and never carry
a stack trace (those go to the log). The app only reads the :class:`DashboardState` its feed keeps
current and writes events through an :class:`EventSink`: no AWS in here, so tests need no sockets.
The routes are in shelfstream/api/routes/ by area; what they depend on is in shelfstream/api/deps.py.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Final

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from config import Settings
from shelfstream import __version__
from shelfstream.api.auth import TokenStore
from shelfstream.api.deps import ApiError, ApiServices
from shelfstream.api.ingest import EventSink
from shelfstream.api.openapi import install as install_openapi
from shelfstream.api.ratelimit import RateLimiter
from shelfstream.api.routes import ROUTERS
from shelfstream.api.state import DashboardState

log = logging.getLogger(__name__)

_CSP: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
_SECURITY_HEADERS: Final = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"content-security-policy", _CSP.encode()),
]


class _Edge:
    """Pure ASGI middleware (streams pass through untouched): security headers, no caching of API
    answers, and one structured log line per request, without the query string."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 0
        path = str(scope.get("path", ""))

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                headers = list(message.get("headers", []))
                headers.extend(_SECURITY_HEADERS)
                if path.startswith("/v1/"):
                    headers.append((b"cache-control", b"no-store"))
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        finally:
            log.info(
                "request",
                extra={
                    "method": scope.get("method"),
                    "path": path,
                    "status": status,
                    "ms": round((time.perf_counter() - started) * 1000, 1),
                },
            )


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def create_app(
    state: DashboardState,
    tokens: TokenStore,
    sink: EventSink,
    settings: Settings,
    clock: Callable[[], float] = time.monotonic,
    now: Callable[[], float] = time.time,
) -> FastAPI:
    """The app over one view, one token store and one event sink; `clock` drives the rate limits,
    `now` (epoch seconds) stamps the events the API makes itself (feedback)."""
    app = FastAPI(
        title="shelfstream", version=__version__, docs_url=None, redoc_url=None, openapi_url="/openapi.json"
    )
    app.add_middleware(_Edge)
    app.state.api = ApiServices(
        state=state,
        tokens=tokens,
        sink=sink,
        settings=settings,
        limiter=RateLimiter(settings.api.rate_per_s, settings.api.burst, clock),
        failed_auth=RateLimiter(settings.api.failed_auth_per_min / 60.0, 10, clock),
        now=now,
    )
    _answer_errors_as_json(app)
    for router in ROUTERS:
        app.include_router(router)
    install_openapi(app, settings)
    return app


def _answer_errors_as_json(app: FastAPI) -> None:
    """Every error in one JSON shape, never a stack trace; validation errors are 400 (not 422)."""

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return _error(exc.status, exc.message, exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail), dict(exc.headers or {}))

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(part) for part in first.get("loc", ()) if part not in {"query", "path"})
        return _error(400, f"bad parameter {where}: {first.get('msg', 'invalid')}")

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error", exc_info=exc, extra={"path": request.url.path})
        return _error(500, "internal error; it has been logged")
