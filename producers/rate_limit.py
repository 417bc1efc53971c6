"""Per-shard write limits for producers: never more than Kinesis takes per shard per second.

Kinesis takes 1,000 records/s and 1 MiB/s per shard (data plus partition key) and throttles the rest; a
throttled entry costs a retry and a backoff. So the producer holds a batch back until every shard it
touches has room for its share in the last second.

Why a sliding one-second window rather than a token bucket: a bucket of one second's capacity lets a
full burst through at the end of one second and another one right after, twice the limit inside one
second. The window (a log of recent sends per shard) guarantees what Kinesis measures: in any one
second, at most the limit. Its memory is one entry per batch sent in the last second.

``ShardLimiter`` is pure (the caller passes the time); ``RateLimitHook`` is the async shell that plugs
into ``KinesisWriter(before_send=...)``.
"""

from __future__ import annotations

import asyncio
import bisect
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from foundation.aws.lineage import ShardInfo, hash_key
from producers.kinesis_writer import OutRecord

SHARD_RECORDS_PER_S: Final = 1000
SHARD_BYTES_PER_S: Final = 1024 * 1024
WINDOW_S: Final = 1.0
_KEY_CACHE_MAX: Final = 100_000


@dataclass(frozen=True, slots=True)
class ShardSend:
    """The records and bytes one send puts on one shard (what its limits count)."""

    records: int
    bytes: int


@dataclass
class _ShardLog:
    sends: deque[tuple[float, int, int]] = field(default_factory=deque)  # (time, records, bytes)
    records: int = 0
    bytes: int = 0

    def expire(self, now: float) -> None:
        # A send stays counted for a closed window: it leaves only once it is strictly older than WINDOW_S.
        sends = self.sends
        while sends and sends[0][0] < now - WINDOW_S:
            _, records, size = sends.popleft()
            self.records -= records
            self.bytes -= size


class ShardMap:
    """Partition key -> shard id, from the open shards' hash-key ranges (as Kinesis routes records)."""

    def __init__(self, shards: Iterable[ShardInfo]) -> None:
        ordered = sorted(shards, key=lambda s: s.start_hash)
        if not ordered:
            raise ValueError("a stream needs at least one open shard")
        self._starts = [s.start_hash for s in ordered]
        self._shards = ordered
        self._cache: dict[str, str] = {}

    @classmethod
    def from_list_shards(cls, shards: Sequence[Mapping[str, Any]]) -> ShardMap:
        """From ListShards' answer: only open shards (no ending sequence number) take writes."""
        open_shards = [
            ShardInfo.from_api(s)
            for s in shards
            if "EndingSequenceNumber" not in s.get("SequenceNumberRange", {})
        ]
        return cls(open_shards)

    @property
    def shard_ids(self) -> list[str]:
        return [s.shard_id for s in self._shards]

    def shard_of(self, partition_key: str) -> str:
        cached = self._cache.get(partition_key)
        if cached is not None:
            return cached
        value = hash_key(partition_key)
        index = bisect.bisect_right(self._starts, value) - 1
        shard = self._shards[max(index, 0)]
        if not shard.start_hash <= value <= shard.end_hash:
            raise ValueError(f"no open shard owns the hash key of partition key {partition_key!r}")
        if len(self._cache) >= _KEY_CACHE_MAX:
            self._cache.clear()
        self._cache[partition_key] = shard.shard_id
        return shard.shard_id


class ShardLimiter:
    """Admits a send only when every shard it touches stays within its limits over the last second."""

    def __init__(
        self, records_per_s: int = SHARD_RECORDS_PER_S, bytes_per_s: int = SHARD_BYTES_PER_S
    ) -> None:
        if records_per_s < 1 or bytes_per_s < 1:
            raise ValueError("per-shard limits must be at least 1 record/s and 1 byte/s")
        self.records_per_s = records_per_s
        self.bytes_per_s = bytes_per_s
        self._logs: dict[str, _ShardLog] = {}

    def try_acquire(self, per_shard: Mapping[str, ShardSend], now: float) -> float:
        """Record the send and return 0.0 when it fits; else take nothing and return seconds to wait.

        A send larger than a shard's limit can never fit: that is the caller's batch size, a ValueError.
        """
        wait = 0.0
        for shard, need in per_shard.items():
            if need.records > self.records_per_s or need.bytes > self.bytes_per_s:
                raise ValueError(
                    f"a send of {need.records} records / {need.bytes} bytes to {shard} exceeds the "
                    f"per-shard limit of {self.records_per_s} records/s and {self.bytes_per_s} bytes/s"
                )
            log = self._logs.setdefault(shard, _ShardLog())
            log.expire(now)
            wait = max(wait, self._wait_for(log, need, now))
        if wait > 0.0:
            return wait
        for shard, need in per_shard.items():
            log = self._logs[shard]
            log.sends.append((now, need.records, need.bytes))
            log.records += need.records
            log.bytes += need.bytes
        return 0.0

    def _wait_for(self, log: _ShardLog, need: ShardSend, now: float) -> float:
        """Time until enough old sends have left the window; just past their expiry, as expiry is strict."""
        free_records = self.records_per_s - log.records
        free_bytes = self.bytes_per_s - log.bytes
        if need.records <= free_records and need.bytes <= free_bytes:
            return 0.0
        for sent_at, records, size in log.sends:
            free_records += records
            free_bytes += size
            if need.records <= free_records and need.bytes <= free_bytes:
                return max(sent_at + WINDOW_S - now, 0.0) + 1e-6
        return WINDOW_S  # unreachable while sends are within the limits; wait a window to be safe


def record_size(record: OutRecord) -> int:
    """What Kinesis counts against a shard's bytes: the data plus the partition key."""
    return len(record.data) + len(record.partition_key.encode())


class RateLimitHook:
    """``before_send`` for KinesisWriter: waits until the batch fits every shard's limits, then lets it go.

    Runs on the writer's event loop; ``try_acquire`` is synchronous, so two lanes never both take the
    same room. Retries pass through here too, so they count against the limits like first sends.
    """

    def __init__(
        self,
        shard_map: ShardMap,
        limiter: ShardLimiter,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Any] = asyncio.sleep,
    ) -> None:
        self.shard_map = shard_map
        self.limiter = limiter
        self._clock = clock
        self._sleep = sleep
        self.waits = 0  # sends held back at least once
        self.waited_s = 0.0

    def per_shard(self, records: Sequence[OutRecord]) -> dict[str, ShardSend]:
        counts: dict[str, list[int]] = {}
        for record in records:
            slot = counts.setdefault(self.shard_map.shard_of(record.partition_key), [0, 0])
            slot[0] += 1
            slot[1] += record_size(record)
        return {shard: ShardSend(n, size) for shard, (n, size) in counts.items()}

    async def __call__(self, records: Sequence[OutRecord]) -> None:
        per_shard = self.per_shard(records)
        held = False
        while True:
            wait = self.limiter.try_acquire(per_shard, self._clock())
            if wait <= 0.0:
                return
            if not held:
                held = True
                self.waits += 1
            self.waited_s += wait
            await self._sleep(wait)

    def max_batch(self) -> tuple[int, int]:
        """Largest batch (records, bytes) the writer may form so that any one send can fit a shard."""
        return self.limiter.records_per_s, self.limiter.bytes_per_s


async def shard_map_of(kinesis: Any, stream_name: str) -> ShardMap:
    """The stream's open shards, by ListShards (paged), with an aiobotocore Kinesis client."""
    shards: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {"StreamName": stream_name}
    while True:
        page = await kinesis.list_shards(**kwargs)
        shards.extend(page.get("Shards", []))
        token = page.get("NextToken")
        if not token:
            break
        kwargs = {"NextToken": token}
    return ShardMap.from_list_shards(shards)
