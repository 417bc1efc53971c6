"""A bound on the time a client may take to send the body it declared.

uvicorn bounds an idle keep-alive connection (`timeout_keep_alive`) but not a request whose body is
arriving: a client that declares `Content-Length: 100` and sends ten bytes held the request open as
long as it liked, and when it finally left, the app's read ended in `ClientDisconnect`, logged as two
tracebacks (the app's error handler and uvicorn's). This pure ASGI middleware, outermost, reads a
declared body itself within `timeout_s` of the request's start and hands it to the app whole. A body
that does not arrive in time is answered 408 (and the connection closed); a client that leaves before
its body is complete gets nothing; each is one log line, no traceback.

Bodies the app refuses unread are not buffered: a declared length over `max_bytes` goes straight to
the app (its 413), and a chunked body is handed over as it streams once over `max_bytes` (the app
counts it and answers 413), so the buffer never holds more than the app would.
"""

from __future__ import annotations

import asyncio
import logging

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)


def _declared(scope: Scope) -> tuple[int | None, bool]:
    """(Content-Length, chunked) of the request's headers."""
    length: int | None = None
    chunked = False
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                length = int(value)
            except ValueError:
                length = None
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    return length, chunked


class BodyDeadline:
    def __init__(self, app: ASGIApp, timeout_s: float, max_bytes: int) -> None:
        self.app = app
        self.timeout_s = timeout_s
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length, chunked = _declared(scope)
        has_body = (length is not None and length > 0) or (chunked and length is None)
        if not has_body or (length is not None and length > self.max_bytes):
            await self.app(scope, receive, send)  # nothing to wait for, or refused (413) unread
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout_s
        chunks: list[bytes] = []
        size = 0
        more = True
        while more and size <= self.max_bytes:
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                await self._too_slow(scope, send, length, size)
                return
            if message["type"] == "http.disconnect":
                log.info(
                    "client left before sending its whole body",
                    extra=_where(scope) | {"declared_bytes": length, "received_bytes": size},
                )
                return
            body = message.get("body", b"")
            chunks.append(body)
            size += len(body)
            more = bool(message.get("more_body", False))
        first: Message = {"type": "http.request", "body": b"".join(chunks), "more_body": more}
        handed = False

        async def replay() -> Message:
            nonlocal handed
            if not handed:
                handed = True
                return first
            return await receive()  # the rest of an oversized chunked body, or the disconnect

        await self.app(scope, replay, send)

    async def _too_slow(self, scope: Scope, send: Send, declared: int | None, received: int) -> None:
        log.warning(
            "request body too slow: answered 408",
            extra=_where(scope)
            | {"declared_bytes": declared, "received_bytes": received, "s": self.timeout_s},
        )
        body = orjson.dumps({"error": f"the request body did not arrive within {self.timeout_s:g} s"})
        await send(
            {
                "type": "http.response.start",
                "status": 408,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                    (b"cache-control", b"no-store"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def _where(scope: Scope) -> dict[str, object]:
    return {"method": scope.get("method"), "path": scope.get("path")}
