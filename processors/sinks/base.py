"""What every sink shares: the Sink protocol, the figures, entry-level retries and the dead letters."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from botocore.exceptions import BotoCoreError, ClientError

from foundation.rejects import RejectedStore, digest_of, kept_line
from foundation.retry import backoff_s, error_code
from processors.core import Effects

log = logging.getLogger(__name__)

ATTEMPTS = 6


class Sink(Protocol):
    """One destination of the core's effects; it takes from a batch's effects what is its own."""

    async def send(self, shard_id: str, effects: Effects) -> None: ...


@dataclass
class SinkStats:
    requests_sent: int = 0
    alerts_published: int = 0
    archived: int = 0
    windows_archived: int = 0
    alerts_archived: int = 0
    rejected_kept: int = 0
    entry_retries: int = 0
    dead_lettered: int = 0
    records_failed: int = 0  # stream records the shell could not apply (also in dead_lettered)


SendBatch = Callable[[Sequence[Any]], Awaitable[list[tuple[int, str]]]]


async def retry_entries(
    entries: Sequence[Any], send: SendBatch, stats: SinkStats, base_s: float
) -> list[tuple[Any, str]]:
    """Send `entries`; `send` returns the indices that failed with their error. Retries only those,
    and returns what still failed after the last attempt (for the dead letters)."""
    pending = list(entries)
    last: list[tuple[Any, str]] = []
    for attempt in range(ATTEMPTS):
        try:
            failures = await send(pending)
        except (ClientError, BotoCoreError, OSError, TimeoutError) as exc:
            # The whole call failed (after botocore's own retries): every entry is still pending.
            failures = [(i, f"{error_code(exc)}: {exc}") for i in range(len(pending))]
        if not failures:
            return []
        stats.entry_retries += len(failures)
        last = [(pending[i], reason) for i, reason in failures]
        pending = [entry for entry, _ in last]
        if attempt < ATTEMPTS - 1:
            await asyncio.sleep(backoff_s(attempt, base_s))
    return last


class SinkDeadLetters:
    """Entries a sink gave up on, kept byte-exact under ``dead-letter/<sink>/`` with their reason."""

    def __init__(self, store: RejectedStore, stats: SinkStats) -> None:
        self._store = store
        self._stats = stats

    async def keep(self, sink: str, failed: Sequence[tuple[bytes, str]]) -> None:
        if not failed:
            return
        lines = [kept_line(reason, data, {"sink": sink}) for data, reason in failed]
        key = await self._store.keep(f"dead-letter/{sink}/{digest_of(b''.join(lines))}.jsonl", lines)
        self._stats.dead_lettered += len(failed)
        log.error("dead-lettered entries", extra={"sink": sink, "count": len(failed), "key": key})
