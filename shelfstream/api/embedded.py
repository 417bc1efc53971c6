"""The dashboard inside `shelfstream demo`: served from the demo's own event loop and fed in-process
from its running processor and trucks (live, no polling of AWS)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import Any

from config import Settings
from foundation.contract import Restock
from foundation.errors import UsageError
from processors.core import Effects
from shelfstream.api.app import create_app
from shelfstream.api.auth import TokenStore
from shelfstream.api.feeds import ProcessorFeed
from shelfstream.api.ingest import KinesisEventSink
from shelfstream.api.server import bind, serve_app, url_of
from shelfstream.api.state import DashboardState

DEFAULT_PORT = 8080


class DemoDashboard:
    """Bound at construction (so the URL can be printed first), served between start() and stop()."""

    def __init__(self, settings: Settings, port: int | None = None, host: str = "127.0.0.1") -> None:
        self.settings = settings
        self.sock = _bind_demo(host, port)
        self.tokens, self.token = TokenStore.with_new_hq_token()
        self.state = DashboardState()
        self.feed = ProcessorFeed(self.state)
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def url(self) -> str:
        return url_of(self.sock)

    def on_effects(self, shard_id: str, effects: Effects) -> None:
        self.feed.on_effects(shard_id, effects)

    def on_delivery(self, event: Restock) -> None:
        self.feed.on_delivery(event)

    def start(
        self,
        processor: Any,
        dispatcher: Any,
        clients: Any,
        bucket: str,
        on_written: Callable[[bytes], object] | None = None,
    ) -> None:
        """Serve; events posted to the API go to the demo's stream (and its ledger, via `on_written`)."""
        self.feed.watch(processor, dispatcher)
        sink = KinesisEventSink(
            clients["kinesis"], clients["s3"], self.settings, bucket, on_written=on_written
        )
        app = create_app(self.state, self.tokens, sink, self.settings)
        self._tasks = [
            asyncio.create_task(
                serve_app(
                    app,
                    self.sock,
                    self.state,
                    self._stop,
                    self.settings.api.trusted_proxies,
                    body_timeout_s=self.settings.api.body_timeout_s,
                    max_body_bytes=self.settings.api.max_body_bytes,
                )
            ),
            asyncio.create_task(self.feed.run(self._stop)),
        ]

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)
        self.sock.close()


def _bind_demo(host: str, port: int | None) -> socket.socket:
    if port is not None:
        return bind(host, port)
    try:
        return bind(host, DEFAULT_PORT)
    except UsageError:
        return bind(host, 0)  # 8080 is taken: any free port will do, the URL is printed
