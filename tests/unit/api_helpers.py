"""Shared pieces of the API tests: an app over an in-memory view, a fake event sink, a fake clock,
and a small ASGI driver that reads the first frames of a server-sent-event stream (no sockets)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from fastapi import FastAPI

from config import Settings
from shelfstream.api.app import create_app
from shelfstream.api.auth import Principal, TokenStore
from shelfstream.api.ingest import RejectedEntry, ValidEntry
from shelfstream.api.state import DashboardState

HQ = "hq-token-0123456789abcdef"
STORE1 = "store1-token-0123456789ab"
STORE2 = "store2-token-0123456789ab"
TOKENS = {
    HQ: {"role": "hq"},
    STORE1: {"role": "store", "store_id": "store-001"},
    STORE2: {"role": "store", "store_id": "store-002"},
}


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class FakeSink:
    """Records what the API wrote; `fail` names entry indexes the 'stream' refuses."""

    written: list[ValidEntry] = field(default_factory=list)
    kept: list[tuple[str, Principal, list[RejectedEntry]]] = field(default_factory=list)
    fail: set[int] = field(default_factory=set)
    raise_on_put: Exception | None = None

    async def put(self, entries: Sequence[ValidEntry]) -> list[RejectedEntry]:
        if self.raise_on_put is not None:
            raise self.raise_on_put
        failed = [
            RejectedEntry(e.index, "not written to the stream (throttled); send it again", e.data)
            for e in entries
            if e.index in self.fail
        ]
        self.written.extend(e for e in entries if e.index not in self.fail)
        return failed

    async def keep_rejected(
        self, request_id: str, principal: Principal, entries: Sequence[RejectedEntry]
    ) -> None:
        if entries:
            self.kept.append((request_id, principal, list(entries)))


def make_api(**overrides: Any) -> tuple[FastAPI, DashboardState, FakeSink, FakeClock]:
    state = DashboardState()
    sink = FakeSink()
    clock = FakeClock()
    settings = Settings(**overrides)
    return create_app(state, TokenStore(TOKENS), sink, settings, clock=clock), state, sink, clock


def sale(event_id: str, store: str = "store-001", **extra: Any) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "type": "sale",
        "store_id": store,
        "ts": "2026-08-01T10:15:30.123Z",
        "product_id": "p-1",
        "quantity": 2,
        "unit_price": 3.5,
        **extra,
    }


async def read_sse(
    app: FastAPI, token: str | None, frames: int, query: str = "", headers: dict[str, str] | None = None
) -> tuple[int, list[dict[str, Any]]]:
    """Drive GET /v1/stream as a server would; returns the status and the first `frames` frames
    (comments as {"comment": text}), then disconnects."""
    raw_headers = [(b"host", b"test")]
    if token is not None:
        raw_headers.append((b"authorization", f"Bearer {token}".encode()))
    for key, value in (headers or {}).items():
        raw_headers.append((key.lower().encode(), value.encode()))
    scope = {
        "type": "http",
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/v1/stream",
        "raw_path": b"/v1/stream",
        "query_string": query.encode(),
        "headers": raw_headers,
        "client": ("127.0.0.1", 50000),
        "server": ("test", 80),
        "root_path": "",
    }
    disconnect = asyncio.Event()
    status = 0
    buffer = b""
    parsed: list[dict[str, Any]] = []
    got_enough = asyncio.Event()

    async def receive() -> dict[str, Any]:
        if not hasattr(receive, "sent"):
            receive.sent = True  # type: ignore[attr-defined]
            return {"type": "http.request", "body": b"", "more_body": False}
        await disconnect.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status, buffer
        if message["type"] == "http.response.start":
            status = message["status"]
            return
        buffer += message.get("body", b"")
        while b"\n\n" in buffer:
            block, buffer = buffer.split(b"\n\n", 1)
            parsed.append(_parse_block(block.decode()))
        if len(parsed) >= frames or not message.get("more_body", False):
            got_enough.set()

    task = asyncio.create_task(app(scope, receive, send))
    done = asyncio.create_task(got_enough.wait())
    await asyncio.wait({task, done}, timeout=10, return_when=asyncio.FIRST_COMPLETED)
    disconnect.set()
    await asyncio.wait_for(task, timeout=10)
    done.cancel()
    return status, parsed[:frames]


def _parse_block(block: str) -> dict[str, Any]:
    frame: dict[str, Any] = {}
    for line in block.split("\n"):
        if line.startswith(":"):
            frame["comment"] = line[1:].strip()
            continue
        name, _, value = line.partition(": ")
        if name == "data":
            frame["data"] = orjson.loads(value)
        elif name:
            frame[name] = value
    return frame
