"""Records the core rejected, kept in S3 with their reason and Kinesis coordinates."""

from __future__ import annotations

from collections.abc import Sequence

from foundation.rejects import RejectedStore, kept_line, today
from processors.core import Effects, RejectedRecord
from processors.sinks.base import SinkStats


class RejectedRecords:
    def __init__(self, store: RejectedStore, stats: SinkStats) -> None:
        self._store = store
        self._stats = stats

    async def send(self, shard_id: str, effects: Effects) -> None:
        if effects.rejected:
            await self.keep_rejected(shard_id, effects.rejected)

    async def keep_rejected(self, shard_id: str, rejected: Sequence[RejectedRecord]) -> None:
        """One object per batch, keyed by the batch's first sequence number: a replay overwrites it."""
        if not rejected:
            return
        lines = [
            kept_line(r.reason, r.record, {"shard_id": shard_id, "sequence_number": r.ref}) for r in rejected
        ]
        await self._store.keep(f"stream/dt={today()}/{shard_id}-{rejected[0].ref}.jsonl", lines)
        self._stats.rejected_kept += len(rejected)
