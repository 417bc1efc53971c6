"""Records the core rejected, and records the shell could not apply at all (dead letters), kept in S3
byte-exact with their reason and Kinesis coordinates."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from foundation.rejects import RejectedStore, kept_line, safe_name, today
from processors.core import Effects, RejectedRecord
from processors.sinks.base import SinkStats

log = logging.getLogger(__name__)


class RejectedRecords:
    def __init__(self, store: RejectedStore, stats: SinkStats) -> None:
        self._store = store
        self._stats = stats

    async def send(self, shard_id: str, effects: Effects) -> None:
        if effects.rejected:
            await self.keep_rejected(shard_id, effects.rejected)
        if effects.failed:
            await self.keep_failed(shard_id, effects.failed)

    async def keep_rejected(self, shard_id: str, rejected: Sequence[RejectedRecord]) -> None:
        """One object per batch, keyed by the batch's first sequence number: a replay overwrites it."""
        if not rejected:
            return
        lines = [
            kept_line(r.reason, r.record, {"shard_id": shard_id, "sequence_number": r.ref}) for r in rejected
        ]
        await self._store.keep(f"stream/dt={today()}/{shard_id}-{rejected[0].ref}.jsonl", lines)
        self._stats.rejected_kept += len(rejected)

    async def keep_failed(self, shard_id: str, failed: Sequence[RejectedRecord]) -> None:
        """Records that made the shell fail (a fault of ours, not of the record): kept under
        ``dead-letter/stream/`` with the error, so they can be sent again once it is fixed."""
        if not failed:
            return
        lines = [
            kept_line(r.reason, r.record, {"shard_id": shard_id, "sequence_number": r.ref, "error": r.reason})
            for r in failed
        ]
        key = await self._store.keep(
            f"dead-letter/stream/dt={today()}/{shard_id}-{safe_name(failed[0].ref)}.jsonl", lines
        )
        self._stats.dead_lettered += len(failed)
        self._stats.records_failed += len(failed)
        log.error(
            "records the processor could not apply kept as dead letters",
            extra={"shard_id": shard_id, "count": len(failed), "key": key},
        )
