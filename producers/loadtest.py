"""Producer load test: how fast the writer puts, at what latency, and proof that nothing was lost.

Runs against whatever endpoint the AWS SDK is configured for, or (``--embedded``) an embedded AWS it
starts itself. The producer holds itself to Kinesis's per-shard write limits (producers.rate_limit),
so a saturating run should land just under ``shards x limit`` records/s with zero throttles.

Events are contract-valid sales with run-unique ids; stores are interleaved shard by shard, so every
shard gets an equal share and "saturate" means every shard at its limit, not the busiest one only.
CPU is the event-loop thread's own CPU time (``time.thread_time``): an embedded AWS serving in other
threads of the same process is not counted against the producer.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from botocore.exceptions import ClientError

from config import Settings
from foundation.contract import format_ts
from foundation.errors import UsageError
from producers.kinesis_writer import KinesisWriter
from producers.rate_limit import (
    SHARD_BYTES_PER_S,
    SHARD_RECORDS_PER_S,
    RateLimitHook,
    ShardLimiter,
    ShardMap,
    shard_map_of,
)

log = logging.getLogger(__name__)

AUTO_VERIFY_MAX_RECORDS = 200_000
_TICK_S = 0.02


@dataclass
class LoadtestResult:
    stream: str
    shards: int
    stores: int
    target_rate: float | None  # None: saturate
    duration_s: float
    seconds: float  # first put to last acknowledgement
    records_put: int
    records_sent: int
    achieved_rps: float
    shard_limit_rps: int
    shard_limit_bytes: int
    quota_fraction: float  # achieved / (shards x per-shard records limit)
    put_latency_p50_ms: float | None
    put_latency_p95_ms: float | None
    put_latency_p99_ms: float | None
    put_calls: int
    retries: int
    throttles: int
    failed: int
    limiter_waits: int
    limiter: bool  # False: no client-side limit, Kinesis's own throttling holds the writer back
    backoffs: int
    backoff_s: float
    most_attempts: int
    cpu_s_per_10k: float
    verified: bool
    read_back_unique: int | None
    read_back_duplicates: int | None
    lost: int | None


class EventMaker:
    """Run-unique sale events, stores taken shard by shard in turn so every shard gets the same load."""

    def __init__(self, run_id: str, stores: int, shard_map: ShardMap) -> None:
        self.prefix = f"lt-{run_id}-"
        by_shard: dict[str, list[str]] = {shard: [] for shard in shard_map.shard_ids}
        # Store names are picked so the shards get equal numbers of stores (as far as ``stores`` allows).
        per_shard = -(-stores // len(by_shard))
        taken = 0
        candidate = 0
        while taken < stores:
            store = f"lt-{run_id}-s{candidate:05d}"
            candidate += 1
            keys = by_shard[shard_map.shard_of(store)]
            if len(keys) < per_shard:
                keys.append(store)
                taken += 1
        lists = [s for s in by_shard.values() if s]
        order: list[str] = []
        for round_ in range(max(len(s) for s in lists)):
            order.extend(s[round_ % len(s)] for s in lists)
        self.order = order
        self.n = 0

    def next(self, ts_ms: int) -> tuple[bytes, str]:
        store = self.order[self.n % len(self.order)]
        data = (
            b'{"event_id":"%s%d","type":"sale","store_id":"%s","ts":"%s","product_id":"p%d",'
            b'"quantity":1,"unit_price":2.5}'
            % (self.prefix.encode(), self.n, store.encode(), format_ts(ts_ms).encode(), self.n % 50)
        )
        self.n += 1
        return data, store


async def ensure_stream(kinesis: Any, stream: str, shards: int | None) -> None:
    """Use the stream if it exists; create it (``shards``, default 1) if not. Never reshards."""
    try:
        summary = (await kinesis.describe_stream_summary(StreamName=stream))["StreamDescriptionSummary"]
        if shards is not None and int(summary.get("OpenShardCount", shards)) != shards:
            log.warning("stream has a different shard count; using it as it is", extra={"stream": stream})
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "ResourceNotFoundException":
            raise
        await kinesis.create_stream(StreamName=stream, ShardCount=shards or 1)
    for _ in range(120):
        summary = (await kinesis.describe_stream_summary(StreamName=stream))["StreamDescriptionSummary"]
        if summary["StreamStatus"] in ("ACTIVE", "UPDATING"):
            return
        await asyncio.sleep(0.5)
    raise UsageError(f"loadtest: stream {stream} did not become active")


async def read_back(kinesis: Any, stream: str, prefix: str, shard_ids: list[str]) -> tuple[int, int]:
    """(unique ids, duplicate copies) of this run's events, read TRIM_HORIZON to the end of every shard."""
    seen: set[str] = set()
    duplicates = 0
    needle = b'"event_id":"' + prefix.encode()
    for shard_id in shard_ids:
        iterator = (
            await kinesis.get_shard_iterator(
                StreamName=stream, ShardId=shard_id, ShardIteratorType="TRIM_HORIZON"
            )
        )["ShardIterator"]
        while iterator:
            try:
                page = await kinesis.get_records(ShardIterator=iterator, Limit=10_000)
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") != "ProvisionedThroughputExceededException":
                    raise
                await asyncio.sleep(0.25)  # Kinesis allows 5 reads per second per shard
                continue
            for record in page["Records"]:
                data: bytes = record["Data"]
                if needle not in data:
                    continue
                event_id = orjson.loads(data)["event_id"]
                if event_id in seen:
                    duplicates += 1
                seen.add(event_id)
            iterator = page.get("NextShardIterator")
            if not page["Records"] and page.get("MillisBehindLatest", 0) == 0:
                break
    return len(seen), duplicates


async def run_loadtest(
    kinesis: Any,
    settings: Settings,
    stream: str,
    *,
    stores: int,
    rate: float | None,
    duration_s: float,
    shard_records_per_s: int = SHARD_RECORDS_PER_S,
    shard_bytes_per_s: int = SHARD_BYTES_PER_S,
    verify: bool | None = None,
    progress: Callable[[float, int], None] | None = None,
    limiter: bool = True,
    max_attempts: int | None = None,
) -> LoadtestResult:
    """Put for ``duration_s`` at ``rate`` records/s (None: as fast as the limits allow), then flush.

    ``verify`` None reads the stream back when the run is small enough (AUTO_VERIFY_MAX_RECORDS).
    """
    if rate is not None and rate <= 0:
        raise UsageError("loadtest: --rate must be greater than 0")
    shard_map = await shard_map_of(kinesis, stream)
    hook = RateLimitHook(shard_map, ShardLimiter(shard_records_per_s, shard_bytes_per_s))
    if max_attempts is not None:
        settings = settings.replaced(producers={"put_max_attempts": max_attempts})
    quota_rps = len(shard_map.shard_ids) * shard_records_per_s
    writer = _writer(kinesis, stream, settings, hook, limiter, quota_rps)
    maker = EventMaker(uuid.uuid4().hex[:10], stores, shard_map)
    put, seconds, cpu = await _put_for(writer, maker, rate, duration_s, progress)
    stats = writer.stats
    if progress is not None:
        progress(seconds, stats.records_sent)

    def ms(q: float) -> float | None:
        value = stats.latency_percentile(q)
        return None if value is None else round(value * 1000, 2)

    do_verify = put <= AUTO_VERIFY_MAX_RECORDS if verify is None else verify
    unique = duplicates = lost = None
    if do_verify:
        unique, duplicates = await read_back(kinesis, stream, maker.prefix, shard_map.shard_ids)
        lost = stats.records_sent - unique
    achieved = stats.records_sent / seconds if seconds > 0 else 0.0
    shards = len(shard_map.shard_ids)
    return LoadtestResult(
        stream=stream,
        shards=shards,
        stores=stores,
        target_rate=rate,
        duration_s=duration_s,
        seconds=round(seconds, 3),
        records_put=put,
        records_sent=stats.records_sent,
        achieved_rps=round(achieved, 1),
        shard_limit_rps=shard_records_per_s,
        shard_limit_bytes=shard_bytes_per_s,
        quota_fraction=round(achieved / (shards * shard_records_per_s), 4),
        put_latency_p50_ms=ms(0.50),
        put_latency_p95_ms=ms(0.95),
        put_latency_p99_ms=ms(0.99),
        put_calls=stats.batches,
        retries=stats.retries,
        throttles=stats.throttles,
        failed=stats.failed,
        limiter_waits=hook.waits,
        limiter=limiter,
        backoffs=stats.backoffs,
        backoff_s=round(stats.backoff_s, 3),
        most_attempts=stats.most_attempts,
        cpu_s_per_10k=round(cpu / max(put, 1) * 10_000, 4),
        verified=do_verify,
        read_back_unique=unique,
        read_back_duplicates=duplicates,
        lost=lost,
    )


def _writer(
    kinesis: Any, stream: str, settings: Settings, hook: RateLimitHook, limiter: bool, quota_rps: int
) -> KinesisWriter:
    """The writer under test, its batches and buffer sized to the shards' quota (`quota_rps` records/s
    over all shards); `limiter` False: no client-side limit, Kinesis throttles."""
    max_records, max_bytes = hook.max_batch()
    # A quarter of a shard's second per batch: several batches share a window, so a batch that is
    # mostly one shard does not leave the rest of that shard's second unused.
    batch_records = max(1, min(500, max_records // 4))
    return KinesisWriter(
        kinesis,
        stream,
        settings,
        before_send=hook if limiter else None,
        max_batch_records=batch_records,
        max_batch_bytes=max(1024 * 1024, min(5 * 1024 * 1024, max_bytes)),
        # About half a second of the shards' quota buffered: enough to keep every lane busy, and the
        # final flush stays short.
        max_buffered_records=max(2 * batch_records, quota_rps // 2),
    )


async def _put_for(
    writer: KinesisWriter,
    maker: EventMaker,
    rate: float | None,
    duration_s: float,
    progress: Callable[[float, int], None] | None,
) -> tuple[int, float, float]:
    """Put for `duration_s` at `rate` records/s (None: as fast as the writer takes them), flush and
    close; (records put, seconds taken, CPU seconds of this thread)."""
    loop = asyncio.get_running_loop()
    cpu_start = time.thread_time()
    start = loop.time()
    wall_ms = int(time.time() * 1000)
    put = 0
    try:
        while (now := loop.time()) - start < duration_s:
            due = duration_s if rate is None else min(duration_s, now - start + _TICK_S) * rate
            batch_end = now + _TICK_S
            # Saturating: keep putting (the writer's full buffer makes put wait) until the tick is over.
            while (rate is None and loop.time() < batch_end) or (rate is not None and put < int(due)):
                data, key = maker.next(wall_ms + int((loop.time() - start) * 1000))
                if await writer.put(data, key):
                    put += 1
            if progress is not None:
                progress(loop.time() - start, writer.stats.records_sent)
            if rate is not None:
                await asyncio.sleep(max(0.0, batch_end - loop.time()))
        await writer.flush()
    finally:
        await writer.close()
    return put, loop.time() - start, time.thread_time() - cpu_start


def describe(result: LoadtestResult) -> list[str]:
    """The human summary, one fact per line."""
    target = "saturate" if result.target_rate is None else f"{result.target_rate:,.0f}/s"
    lines = [
        f"stream {result.stream}: {result.shards} shards, {result.stores} stores, target {target}, "
        f"limit {result.shard_limit_rps:,} records/s and {result.shard_limit_bytes:,} bytes/s per shard",
        f"records: {result.records_sent:,} sent of {result.records_put:,} put in {result.seconds:.1f} s = "
        f"{result.achieved_rps:,.0f}/s ({result.quota_fraction:.1%} of the shards' quota)",
        f"PutRecords latency: p50 {result.put_latency_p50_ms} ms, p95 {result.put_latency_p95_ms} ms, "
        f"p99 {result.put_latency_p99_ms} ms over {result.put_calls:,} calls",
        f"retries {result.retries}, throttles {result.throttles}, failed {result.failed}, "
        + (
            f"held back by the limiter {result.limiter_waits} times"
            if result.limiter
            else "no client-side limiter (Kinesis's throttling only)"
        ),
        f"back-off: {result.backoffs:,} waits, {result.backoff_s:.2f} s in all, "
        f"at most {result.most_attempts} calls for one batch",
        f"producer CPU: {result.cpu_s_per_10k:.3f} s per 10,000 records",
    ]
    if result.verified:
        lines.append(
            f"read back: {result.read_back_unique:,} unique of {result.records_sent:,} sent, "
            f"{result.read_back_duplicates} duplicate copies, {result.lost} lost"
        )
    else:
        lines.append("read back: skipped (a large run; pass --verify to read the stream back)")
    return lines
