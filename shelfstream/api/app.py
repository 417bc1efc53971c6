"""The ASGI app: the /v1 API, the live stream and the dashboard page (docs/contract.md section 5).

Every /v1 call needs ``Authorization: Bearer <token>``; errors are ``{"error": "..."}`` and never carry
a stack trace (those go to the log). The app only reads the :class:`DashboardState` its feed keeps
current and writes events through an :class:`EventSink`: no AWS in here, so tests need no sockets.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import time
from collections.abc import Callable
from importlib import resources
from typing import Annotated, Any, Final

import orjson
from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from config import Settings
from foundation.contract import ALERT_KINDS, parse_ts
from shelfstream import __version__
from shelfstream.api import feedback
from shelfstream.api import kpis as kpi_api
from shelfstream.api.auth import Principal, TokenStore, bearer_token
from shelfstream.api.hub import sse_stream
from shelfstream.api.ingest import EventSink, IngestError, ValidEntry, new_request_id, parse_batch
from shelfstream.api.openapi import install as install_openapi
from shelfstream.api.ratelimit import RateLimiter
from shelfstream.api.state import DashboardState

log = logging.getLogger(__name__)

_STORE_ID: Final = re.compile(r"[A-Za-z0-9._-]{1,64}")  # fullmatch: `$` allows a final newline
_JS: Final = "text/javascript; charset=utf-8"
_CSS: Final = "text/css; charset=utf-8"
# Everything the page loads, by path under static/: our own files and the vendored chart library (uPlot,
# checked against deploy/vendor/uplot.sha256). Nothing else is served, and nothing comes from another site.
_STATIC: Final = {
    "app.js": _JS,
    "app.css": _CSS,
    "vendor/uplot/uPlot.iife.min.js": _JS,
    "vendor/uplot/uPlot.min.css": _CSS,
    "vendor/uplot/LICENSE": "text/plain; charset=utf-8",
}
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


class ApiError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


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


def _static(name: str) -> bytes:
    return resources.files("shelfstream.api").joinpath("static", *name.split("/")).read_bytes()


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
    limiter = RateLimiter(settings.api_rate_per_s, settings.api_burst, clock)
    failed_auth = RateLimiter(settings.api_failed_auth_per_min / 60.0, 10, clock)
    page = _static("index.html")
    assets = {name: _static(name) for name in _STATIC}

    # --- errors: one JSON shape, never a stack trace -------------------------------------------------

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

    # --- who is asking -------------------------------------------------------------------------------

    async def principal(request: Request) -> Principal:
        token = bearer_token(request.headers.get("authorization"))
        found = tokens.authenticate(token)
        if found is None:
            client = request.client.host if request.client is not None else "unknown"
            wait = failed_auth.take(f"client:{client}")
            if wait:
                raise ApiError(429, "too many failed sign-ins from this address", _retry_after(wait))
            raise ApiError(
                401,
                "missing or unknown token (Authorization: Bearer <token>)",
                {"WWW-Authenticate": "Bearer"},
            )
        wait = limiter.take(found.key)
        if wait:
            raise ApiError(429, "rate limit exceeded for this token", _retry_after(wait))
        return found

    app.state.authenticate = principal

    def store_scope(who: Principal, store_id: str | None) -> None:
        if store_id is None:
            return
        if not _STORE_ID.fullmatch(store_id):
            raise ApiError(400, "store_id must be 1-64 characters [A-Za-z0-9._-]")
        if not who.can_see(store_id):
            raise ApiError(403, f"this token may not see store {store_id!r}")

    # --- the page ------------------------------------------------------------------------------------

    @app.get("/", include_in_schema=False)
    async def index() -> Response:
        return Response(page, media_type="text/html; charset=utf-8", headers={"cache-control": "no-cache"})

    @app.get("/static/{name:path}", include_in_schema=False)
    async def static(name: str) -> Response:
        if name not in assets:
            raise ApiError(404, "not found")
        return Response(assets[name], media_type=_STATIC[name], headers={"cache-control": "no-cache"})

    @app.get("/healthz", include_in_schema=False)
    async def health() -> dict[str, Any]:
        return {"ok": True, "streams": state.hub.subscribers}

    # --- /v1 -----------------------------------------------------------------------------------------

    @app.get("/v1/me")
    async def me(who: Who) -> dict[str, Any]:
        return {"role": who.role, "store_id": who.store_id}

    @app.post("/v1/events", status_code=202)
    async def post_events(request: Request, who: Who) -> JSONResponse:
        body = await _read_body(request, settings.api_max_body_bytes)
        try:
            batch = parse_batch(body, who, settings.api_max_events)
        except IngestError as exc:
            raise ApiError(exc.status, exc.message) from None
        request_id = new_request_id()
        not_written = await sink.put(batch.valid)
        rejected = sorted([*batch.rejected, *not_written], key=lambda e: e.index)
        await sink.keep_rejected(request_id, who, rejected)
        accepted = len(batch.valid) - len(not_written)
        answer = {
            "accepted": accepted,
            "rejected": [{"index": e.index, "reason": e.reason} for e in rejected],
            "request_id": request_id,
        }
        log.info(
            "events posted",
            extra={
                "token": who.label,
                "accepted": accepted,
                "rejected": len(rejected),
                "request_id": request_id,
            },
        )
        if not_written and accepted == 0:
            return JSONResponse(
                {"error": "the stream took none of the events; send them again", **answer}, status_code=503
            )
        return JSONResponse(answer, status_code=202)

    async def put_feedback(raw: bytes, event: Any, who: Principal) -> JSONResponse:
        """Put one feedback event on the stream as POST /v1/events would; 202 with the event."""
        not_written = await sink.put([ValidEntry(0, raw, event.store_id)])
        if not_written:
            raise ApiError(503, f"the stream did not take the feedback ({not_written[0].reason})")
        if event.alert_id is not None:
            state.mark_feedback(event.alert_id, event.verdict)
        log.info(
            "feedback posted",
            extra={"token": who.label, "store_id": event.store_id, "verdict": event.verdict},
        )
        return JSONResponse({"event": orjson.loads(raw)}, status_code=202)

    @app.post("/v1/alerts/{alert_id}/feedback", status_code=202)
    async def alert_feedback(alert_id: str, request: Request, who: Who) -> JSONResponse:
        """An operator's mark of an anomaly alert: `not_anomaly` (or `missed` with a period)."""
        alert = state.find_alert(alert_id)
        if alert is None:
            raise ApiError(404, f"no alert {alert_id[:128]!r} among the recent alerts")
        store_scope(who, str(alert.get("store_id")))
        body = await _read_body(request, settings.api_max_body_bytes)
        try:
            raw, event = feedback.for_alert(alert, feedback.parse_body(body), who, now)
        except feedback.FeedbackError as exc:
            raise ApiError(exc.status, exc.message) from None
        return await put_feedback(raw, event, who)

    @app.post("/v1/stores/{store_id}/feedback", status_code=202)
    async def store_feedback(store_id: str, request: Request, who: Who) -> JSONResponse:
        """A missed incident of a store: `{"verdict": "missed", "window_start", "window_end"}`."""
        store_scope(who, store_id)
        body = await _read_body(request, settings.api_max_body_bytes)
        try:
            raw, event = feedback.for_store(store_id, feedback.parse_body(body), who, now)
        except feedback.FeedbackError as exc:
            raise ApiError(exc.status, exc.message) from None
        return await put_feedback(raw, event, who)

    @app.get("/v1/stores")
    async def stores(who: Who) -> dict[str, Any]:
        return {"stores": state.summaries(who)}

    @app.get("/v1/stores/{store_id}/inventory")
    async def inventory(store_id: str, who: Who) -> dict[str, Any]:
        store_scope(who, store_id)
        found = state.inventory(store_id)
        if found is None:
            if who.role == "store":  # its own store, before its first event
                return {
                    "store_id": store_id,
                    "on_hand_total": 0,
                    "stock_outs": 0,
                    "open_requests": 0,
                    "products": [],
                }
            raise ApiError(404, f"no store {store_id!r} in the processor's state")
        return found

    @app.get("/v1/stores/{store_id}/windows")
    async def windows(
        store_id: str,
        who: Who,
        window: str | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 200,
    ) -> dict[str, Any]:
        store_scope(who, store_id)
        return {"store_id": store_id, "windows": state.windows(store_id, window, limit)}

    @app.get("/v1/alerts")
    async def alerts(
        who: Who,
        store_id: str | None = None,
        kind: str | None = None,
        since: str | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> dict[str, Any]:
        store_scope(who, store_id)
        if kind is not None and kind not in ALERT_KINDS:
            raise ApiError(400, f"kind must be one of {', '.join(ALERT_KINDS)}")
        since_ms = None
        if since is not None:
            try:
                since_ms = parse_ts(since)
            except ValueError:
                raise ApiError(
                    400, "since must be an RFC 3339 time with a zone, e.g. 2026-08-01T10:00:00Z"
                ) from None
        return {"alerts": state.alerts(who, store_id, kind, since_ms, limit)}

    @app.get("/v1/deliveries")
    async def deliveries(
        who: Who, store_id: str | None = None, limit: Annotated[int, Query(ge=1, le=1000)] = 100
    ) -> dict[str, Any]:
        store_scope(who, store_id)
        return {"deliveries": state.recent_deliveries(who, store_id, limit)}

    @app.get("/v1/trucks")
    async def trucks(who: Who, store_id: str | None = None) -> dict[str, Any]:
        store_scope(who, store_id)
        return {"trucks": state.trucks_for(who, store_id)}

    @app.get("/v1/stream")
    async def stream(request: Request, who: Who, store_id: str | None = None) -> StreamingResponse:
        store_scope(who, store_id)
        return StreamingResponse(
            sse_stream(
                state.hub, who, store_id, request.headers.get("last-event-id"), settings.sse_heartbeat_s
            ),
            media_type="text/event-stream",
            headers={"x-accel-buffering": "no"},
        )

    @app.get("/v1/kpis")
    async def kpis(
        who: Who,
        store_id: str | None = None,
        since: str | None = None,
        until: str | None = None,
        per: str = "store",
        limit: Annotated[int, Query(ge=1, le=5000)] = 500,
    ) -> dict[str, Any]:
        """Daily inventory KPIs from the history tables (per store, or per product with per=product)."""
        store_scope(who, store_id)
        if who.role == "store":
            store_id = who.store_id
        if per not in ("store", "product"):
            raise ApiError(400, "per must be store or product")
        try:
            first, last = kpi_api.parse_day(since), kpi_api.parse_day(until)
        except ValueError:
            raise ApiError(400, "since and until must be days, YYYY-MM-DD") from None
        return await asyncio.to_thread(kpi_api.read, settings, store_id, first, last, per == "store", limit)

    install_openapi(app, settings)
    return app


async def _who(request: Request) -> Principal:
    """The dependency every /v1 route takes: the app's own authenticator (401, 429) for this request."""
    found: Principal = await request.app.state.authenticate(request)
    return found


Who = Annotated[Principal, Depends(_who)]


def _retry_after(wait_s: float) -> dict[str, str]:
    return {"Retry-After": str(max(1, math.ceil(wait_s)))}


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it is known to be over `limit` (declared or streamed)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            length = int(declared)
        except ValueError:
            raise ApiError(400, "bad Content-Length") from None
        if length > limit:
            raise ApiError(413, f"the body is {length} bytes; at most {limit}")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"the body is over {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
