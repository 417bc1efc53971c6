"""A client that declares a body and sends only part of it: answered 408 within the bound, the
connection closed, one log line and no traceback (shelfstream/api/body_deadline.py). Over a real socket
to a server the test starts on 127.0.0.1 (port 0: safe beside other tests)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import orjson
import pytest

from shelfstream.api.server import bind, serve_app
from tests.unit.api_helpers import HQ, FakeSink, auth, make_api, sale

BOUND_S = 1.0


@dataclass
class Server:
    host: str
    port: int
    sink: FakeSink

    async def send(self, head_length: int, body: bytes) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection(self.host, self.port)
        writer.write(
            (
                "POST /v1/events HTTP/1.1\r\nHost: test\r\n"
                f"Authorization: {auth(HQ)['Authorization']}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {head_length}\r\n\r\n"
            ).encode()
            + body
        )
        await writer.drain()
        return reader, writer


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    app, state, sink, _ = make_api()
    sock = bind("127.0.0.1", 0)
    stop = asyncio.Event()
    serving = asyncio.create_task(serve_app(app, sock, state, stop, body_timeout_s=BOUND_S))
    host, port = sock.getsockname()[:2]
    try:
        yield Server(host, port, sink)
    finally:
        stop.set()
        await serving
        sock.close()


def no_traceback(caplog: pytest.LogCaptureFixture) -> None:
    for record in caplog.records:
        assert record.exc_info is None, (record.name, record.getMessage())
        assert record.levelno < logging.ERROR, (record.name, record.getMessage())


async def test_a_partial_body_is_answered_408_within_the_bound_and_logged_without_a_traceback(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    started = time.monotonic()
    reader, writer = await server.send(100, b'[{"type":')
    answer = await asyncio.wait_for(reader.read(), timeout=BOUND_S + 5)  # read() to the end: closed
    took = time.monotonic() - started
    writer.close()
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:80]
    assert b"did not arrive within 1 s" in answer
    assert BOUND_S * 0.9 <= took <= BOUND_S + 4
    assert server.sink.written == []
    no_traceback(caplog)
    assert any("answered 408" in r.getMessage() for r in caplog.records)


async def test_a_client_leaving_mid_body_is_one_line_not_two_tracebacks(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    _, writer = await server.send(100, b"[")
    await asyncio.sleep(0.2)
    writer.close()
    await writer.wait_closed()
    await asyncio.sleep(0.3)
    no_traceback(caplog)
    assert any("left before sending its whole body" in r.getMessage() for r in caplog.records)


async def test_a_body_in_parts_within_the_bound_is_taken_as_ever(server: Server) -> None:
    body = orjson.dumps([sale("e1"), sale("e2")])
    reader, writer = await server.send(len(body), body[:10])
    await asyncio.sleep(BOUND_S / 3)
    writer.write(body[10:])
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5)
    writer.close()
    assert head.startswith(b"HTTP/1.1 202 "), head
    assert [e.index for e in server.sink.written] == [0, 1]


async def test_a_declared_body_over_the_limit_is_still_refused_at_once(server: Server) -> None:
    started = time.monotonic()
    reader, writer = await server.send(1024 * 1024 * 64, b"[")
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5)
    writer.close()
    assert head.startswith(b"HTTP/1.1 413 "), head
    assert time.monotonic() - started < BOUND_S
