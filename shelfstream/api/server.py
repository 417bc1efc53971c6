"""Running the app: uvicorn inside the caller's event loop (so the demo can host it), and the
standalone `shelfstream serve` command fed from AWS."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
from collections.abc import Iterator

import uvicorn
from fastapi import FastAPI

from config.settings import ApiSettings
from foundation.errors import UsageError
from shelfstream.api.app import create_app
from shelfstream.api.auth import TokenStore
from shelfstream.api.body_deadline import BodyDeadline
from shelfstream.api.feeds import AwsFeed
from shelfstream.api.ingest import KinesisEventSink
from shelfstream.api.state import DashboardState
from shelfstream.bootstrap import Wiring

log = logging.getLogger(__name__)

GRACE_S = 3
BODY_TIMEOUT_S: float = ApiSettings.model_fields["body_timeout_s"].default
MAX_BODY_BYTES: int = ApiSettings.model_fields["max_body_bytes"].default


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the host process owns SIGINT/SIGTERM and says when."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def bind(host: str, port: int) -> socket.socket:
    """Bind before serving, so a taken port is one clear error (uvicorn would exit the process)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise UsageError(f"port {port} on {host} is already in use: choose another with --port") from None
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.listen(128)
    sock.setblocking(False)
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def uvicorn_config(
    app: FastAPI,
    trusted_proxies: str = "",
    *,
    body_timeout_s: float = BODY_TIMEOUT_S,
    max_body_bytes: int = MAX_BODY_BYTES,
) -> uvicorn.Config:
    """uvicorn as the API runs it. Proxy headers are read only from `trusted_proxies`: uvicorn's own
    default trusts X-Forwarded-For from 127.0.0.1, where any local client could then name itself.
    A declared body must arrive within `body_timeout_s` (else 408): uvicorn bounds idle connections,
    not a body trickling in (shelfstream/api/body_deadline.py)."""
    trusted = trusted_proxies.strip()
    return uvicorn.Config(
        BodyDeadline(app, body_timeout_s, max_body_bytes),
        log_config=None,
        access_log=False,  # our own request log leaves the query string out
        lifespan="off",
        timeout_graceful_shutdown=GRACE_S,
        ws="none",
        proxy_headers=bool(trusted),
        forwarded_allow_ips=trusted or "",
    )


async def serve_app(
    app: FastAPI,
    sock: socket.socket,
    state: DashboardState,
    stop: asyncio.Event,
    trusted_proxies: str = "",
    *,
    body_timeout_s: float = BODY_TIMEOUT_S,
    max_body_bytes: int = MAX_BODY_BYTES,
) -> None:
    """Serve `app` on the bound `sock` until `stop`; then end the live streams and shut down."""
    server = _Server(
        uvicorn_config(app, trusted_proxies, body_timeout_s=body_timeout_s, max_body_bytes=max_body_bytes)
    )
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    stopping = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        state.hub.close()  # the streams end, so the graceful shutdown does not wait on them
        server.should_exit = True
        stopping.cancel()
        await asyncio.gather(stopping, return_exceptions=True)
        await serving


async def run_standalone(wiring: Wiring, tokens: TokenStore, sock: socket.socket, queue_url: str) -> None:
    from foundation.lifecycle import stop_on_signals

    settings, resources = wiring.settings, wiring.resources()
    stop = stop_on_signals()
    async with wiring.aio("kinesis", "s3", "sqs") as clients:
        state = DashboardState()
        feed = AwsFeed(state, settings, resources.bucket, clients["s3"], clients["sqs"], queue_url)
        sink = KinesisEventSink(clients["kinesis"], clients["s3"], settings, resources.bucket)
        app = create_app(state, tokens, sink, settings)
        feeding = asyncio.create_task(feed.run(stop))
        log.info("serving", extra={"url": url_of(sock), "tokens": len(tokens)})
        try:
            await serve_app(
                app,
                sock,
                state,
                stop,
                settings.api.trusted_proxies,
                body_timeout_s=settings.api.body_timeout_s,
                max_body_bytes=settings.api.max_body_bytes,
            )
        finally:
            stop.set()
            await feeding
