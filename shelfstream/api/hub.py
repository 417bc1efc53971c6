"""Fan-out of live updates to the server-sent-event streams, filtered per token.

Each stream has a bounded queue: a reader too slow to keep up is cut off (its queue is cleared and the
stream ends) instead of growing memory; it reconnects with ``Last-Event-ID`` and gets the messages it
missed from the backlog, then refetches the current state.
"""

from __future__ import annotations

import asyncio
import re
import secrets
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Final

import orjson

from shelfstream.api.auth import Principal

_SEQ: Final = re.compile(r"[0-9]{1,18}")  # a message number in a Last-Event-ID


@dataclass(frozen=True, slots=True)
class Message:
    seq: int
    kind: str  # alert, window, delivery, stock, trucks
    store_id: str | None  # None: not one store's (the trucks serve every store)
    data: Any


class Subscription:
    def __init__(self, hub: Hub, queue_size: int) -> None:
        self._hub = hub
        self.queue: asyncio.Queue[Message | None] = asyncio.Queue(maxsize=queue_size)
        self.cut_off = False

    def offer(self, message: Message | None) -> None:
        try:
            self.queue.put_nowait(message)
        except asyncio.QueueFull:
            self.cut_off = True
            self._hub.unsubscribe(self)  # nothing more is queued for it
            while not self.queue.empty():
                self.queue.get_nowait()
            self.queue.put_nowait(None)

    async def next(self, timeout: float) -> Message | None:
        """The next message; None once the hub closed or this reader was cut off; TimeoutError if idle."""
        return await asyncio.wait_for(self.queue.get(), timeout)

    def close(self) -> None:
        self._hub.unsubscribe(self)


class Hub:
    def __init__(self, backlog: int = 1000, queue_size: int = 1000) -> None:
        self.epoch = secrets.token_hex(4)  # ids of an earlier server's messages mean nothing here
        self._seq = 0
        self._backlog: deque[Message] = deque(maxlen=backlog)
        self._queue_size = queue_size
        self._subscribers: set[Subscription] = set()
        self.closed = False

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def event_id(self, message: Message) -> str:
        return f"{self.epoch}-{message.seq}"

    def publish(self, kind: str, store_id: str | None, data: Any) -> Message:
        self._seq += 1
        message = Message(self._seq, kind, store_id, data)
        self._backlog.append(message)
        for sub in list(self._subscribers):
            sub.offer(message)
        return message

    def subscribe(self, last_event_id: str | None = None) -> Subscription:
        """A new reader; with the id of the last event it saw, the backlog after it comes first."""
        sub = Subscription(self, self._queue_size)
        if self.closed:
            sub.offer(None)
            return sub
        after = self._seq_of(last_event_id)
        if after is not None:
            for message in self._backlog:
                if message.seq > after:
                    sub.offer(message)
        if not sub.cut_off:  # a replay larger than its queue already ended it
            self._subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self._subscribers.discard(sub)

    def close(self) -> None:
        """End every stream (server shutdown): each reader gets its end-of-stream at once."""
        self.closed = True
        for sub in list(self._subscribers):
            sub.offer(None)
        self._subscribers.clear()

    def _seq_of(self, last_event_id: str | None) -> int | None:
        if not last_event_id:
            return None
        epoch, _, seq = last_event_id.strip().partition("-")
        # ASCII digits only: str.isdigit() is true for "²", which int() refuses.
        if epoch != self.epoch or not _SEQ.fullmatch(seq):
            return None
        return int(seq)


def visible(principal: Principal, message: Message, store_filter: str | None = None) -> Any | None:
    """What of `message` the principal may see (None: nothing); trucks are cut down to their stores."""
    if message.store_id is not None:
        if not principal.can_see(message.store_id):
            return None
        if store_filter is not None and message.store_id != store_filter:
            return None
        return message.data
    if message.kind == "trucks":
        wanted = store_filter if store_filter is not None else principal.store_id
        if principal.role == "hq" and wanted is None:
            return message.data
        return [t for t in message.data if t.get("store_id") == wanted and principal.can_see(wanted)]
    return message.data if principal.role == "hq" else None


def frame(event: str, data: Any, event_id: str | None = None) -> bytes:
    """One server-sent event (JSON data is one line, so one ``data:`` field)."""
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\n".encode() + b"data: " + orjson.dumps(data) + b"\n\n"


async def sse_stream(
    hub: Hub,
    principal: Principal,
    store_filter: str | None,
    last_event_id: str | None,
    heartbeat_s: float,
) -> AsyncIterator[bytes]:
    """The body of ``GET /v1/stream``: a hello, then messages as they come, a comment when idle."""
    sub = hub.subscribe(last_event_id)
    try:
        yield b"retry: 3000\n" + frame(
            "hello", {"role": principal.role, "store_id": principal.store_id, "epoch": hub.epoch}
        )
        while True:
            try:
                message = await sub.next(heartbeat_s)
            except TimeoutError:
                yield b": keep-alive\n\n"
                continue
            if message is None:
                if sub.cut_off:
                    yield frame("cut_off", {"reason": "the stream fell behind; reconnect"})
                return
            data = visible(principal, message, store_filter)
            if data is None:
                continue
            yield frame(message.kind, data, hub.event_id(message))
    finally:
        sub.close()
