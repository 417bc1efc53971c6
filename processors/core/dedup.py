"""Memory of event ids, so a redelivered record (Kinesis is at-least-once) changes nothing.

Ids are remembered for a horizon of event time behind the newest event seen; an id older than the
horizon is forgotten. The horizon (7 days by default) is far longer than Kinesis's 24 h default
retention, so a redelivery from the stream is always caught; only a deliberate re-send of
week-old events would pass, and a stock take (`count`) corrects such drift anyway.
"""

from __future__ import annotations

from typing import Final

_PRUNE_EVERY: Final = 50_000


class Dedup:
    __slots__ = ("_horizon_ms", "_inserts", "_newest_ms", "_seen")

    def __init__(self, horizon_ms: int) -> None:
        self._horizon_ms = horizon_ms
        self._seen: dict[str, int] = {}
        self._newest_ms = 0
        self._inserts = 0

    def __len__(self) -> int:
        return len(self._seen)

    def first_time(self, event_id: str, ts_ms: int) -> bool:
        """True (and remembered) the first time an id is seen; False for a repeat."""
        seen = self._seen
        if event_id in seen:
            return False
        seen[event_id] = ts_ms
        if ts_ms > self._newest_ms:
            self._newest_ms = ts_ms
        self._inserts += 1
        if self._inserts >= _PRUNE_EVERY:
            self._prune()
        return True

    def _prune(self) -> None:
        """Drop expired ids from the front (the dict keeps arrival order, which follows event time
        closely): the cost is the number dropped, not the size of the memory. An id that arrived
        out of order waits for the ones before it; the memory stays bounded all the same."""
        self._inserts = 0
        cutoff = self._newest_ms - self._horizon_ms
        seen = self._seen
        expired = []
        for eid, ts in seen.items():
            if ts >= cutoff:
                break
            expired.append(eid)
        for eid in expired:
            del seen[eid]

    def merge(self, other: Dedup) -> None:
        """Take in another shard's memory (two shards merged into one)."""
        self._seen.update(other._seen)
        self._newest_ms = max(self._newest_ms, other._newest_ms)
