"""Batched, retrying, back-pressured PutRecords to one Kinesis stream.

Kinesis takes at most 500 records and 5 MiB per PutRecords call and may refuse single entries (a throttled
shard) while accepting the rest, so only the refused entries are sent again. Ordering per partition key (a
store): each key travels in one lane, a lane has one call in flight at a time and finishes its retries
before its next call, so a key's records reach the shard in put order. The one reordering left is the one
PutRecords itself allows: when an entry fails inside a call whose later entries of the same key succeed,
those later entries are already in the shard when the failed one is retried.

Lanes rather than "one call at a time per key": interleaved stores would put every key into the first
batch of 500 and serialize all calls; lanes keep ``max_batches_in_flight`` calls busy.

Nothing is dropped silently: a record that cannot be sent (over 1 MiB, bad partition key, out of attempts,
or still buffered when the writer is torn down) goes to the dead-letter handler with its reason.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import random
import time
import zlib
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Final

import aiohttp
import botocore.exceptions
import orjson
from botocore.exceptions import ClientError

from config import Settings
from foundation.errors import ShelfstreamError

logger = logging.getLogger(__name__)

MAX_BATCH_RECORDS: Final = 500
MAX_BATCH_BYTES: Final = 5 * 1024 * 1024
MAX_RECORD_BYTES: Final = 1024 * 1024
MAX_PARTITION_KEY_CHARS: Final = 256

THROTTLE_CODES: Final = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "Throttling",
        "LimitExceededException",
        "KMSThrottlingException",
        "RequestLimitExceeded",
        "SlowDown",
    }
)
RETRYABLE_CODES: Final = THROTTLE_CODES | {
    "InternalFailure",
    "InternalError",
    "InternalServerError",
    "ServiceUnavailable",
    "ServiceUnavailableException",
    "RequestTimeout",
    "RequestTimeoutException",
}
# Whole-call failures worth another attempt: the request may not have reached Kinesis at all.
_RETRYABLE_EXCEPTIONS: Final = (
    botocore.exceptions.ConnectionError,
    botocore.exceptions.HTTPClientError,
    aiohttp.ClientError,
    OSError,
    TimeoutError,
)


class WriterClosedError(ShelfstreamError):
    """A put after close: the record was not taken."""


@dataclass(frozen=True, slots=True)
class OutRecord:
    """One record as handed to PutRecords (and to the dead-letter handler)."""

    data: bytes
    partition_key: str


DeadLetterHandler = Callable[[Sequence[OutRecord], str], None]
BeforeSend = Callable[[Sequence[OutRecord]], Awaitable[None]]


@dataclass
class WriterStats:
    """Counters the load test and the demo summary read."""

    records_sent: int = 0
    batches: int = 0  # PutRecords calls answered (first sends and retries)
    retries: int = 0  # entries sent again after a failed entry or call
    throttles: int = 0  # throttled entries plus throttled calls
    call_errors: int = 0  # PutRecords calls that raised
    failed: int = 0  # records dead-lettered, refused ones included
    refused: int = 0  # records refused at put (over 1 MiB, bad partition key)
    backoffs: int = 0  # waits before a retry
    backoff_s: float = 0.0  # seconds spent in those waits (summed over lanes)
    most_attempts: int = 0  # the most calls one batch needed
    put_latencies: list[float] = field(default_factory=list)  # seconds per answered call (a reservoir)
    latency_reservoir: int = 10_000
    _rng: random.Random = field(default_factory=lambda: random.Random(0), repr=False)

    def record_latency(self, seconds: float) -> None:
        """Reservoir sampling keeps the percentiles honest on long runs with bounded memory."""
        if len(self.put_latencies) < self.latency_reservoir:
            self.put_latencies.append(seconds)
            return
        slot = self._rng.randrange(self.batches)
        if slot < self.latency_reservoir:
            self.put_latencies[slot] = seconds

    def latency_percentile(self, q: float) -> float | None:
        """Latency at quantile ``q`` (0-1) of the sampled calls, None before any call."""
        if not self.put_latencies:
            return None
        ordered = sorted(self.put_latencies)
        return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


class DeadLetterFile:
    """Appends dead-lettered records as JSON lines (reason, partition key, data) for a later replay."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __call__(self, records: Sequence[OutRecord], reason: str) -> None:
        at = time.time()
        lines = []
        for record in records:
            entry: dict[str, Any] = {"reason": reason, "partition_key": record.partition_key, "at": at}
            try:
                entry["data"] = record.data.decode()
            except UnicodeDecodeError:
                entry["data_base64"] = base64.b64encode(record.data).decode()
            lines.append(orjson.dumps(entry))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("ab") as out:
            out.write(b"\n".join(lines) + b"\n")


def log_dead_letters(records: Sequence[OutRecord], reason: str) -> None:
    """The fallback handler: the records themselves go to the error log, so they are still findable."""
    for record in records:
        logger.error(
            "dead-lettered record (%s) key=%s data=%s",
            reason,
            record.partition_key,
            record.data.decode(errors="backslashreplace"),
            extra={"reason": reason, "partition_key": record.partition_key},
        )


@dataclass(slots=True)
class _Entry:
    record: OutRecord
    size: int
    enqueued: float


@dataclass(eq=False)
class _Lane:
    """A serial queue: one PutRecords call (with its retries) at a time, so its keys keep their order."""

    index: int
    buffer: deque[_Entry] = field(default_factory=deque)
    size: int = 0
    busy: bool = False


class KinesisWriter:
    """Buffers ``put`` calls into PutRecords batches sent by a background pump task.

    Partition keys are hashed onto ``settings.producers.max_batches_in_flight`` lanes; each lane has at
    most one call in flight (retries included), which bounds the calls in flight and keeps every key's order.
    ``client`` is an aiobotocore Kinesis client (anything with an awaitable ``put_records``).
    """

    def __init__(
        self,
        client: Any,
        stream_name: str,
        settings: Settings,
        *,
        linger_s: float = 0.05,
        max_buffered_records: int | None = None,
        max_buffered_bytes: int | None = None,
        max_backoff_s: float = 5.0,
        dead_letter_path: str | Path | None = None,
        on_dead_letter: DeadLetterHandler | None = None,
        before_send: BeforeSend | None = None,
        max_batch_records: int = MAX_BATCH_RECORDS,
        max_batch_bytes: int = MAX_BATCH_BYTES,
        rng: random.Random | None = None,
    ) -> None:
        if not (
            1 <= max_batch_records <= MAX_BATCH_RECORDS
            and MAX_RECORD_BYTES <= max_batch_bytes <= MAX_BATCH_BYTES
        ):
            raise ValueError(
                f"batches take 1-{MAX_BATCH_RECORDS} records and {MAX_RECORD_BYTES}-{MAX_BATCH_BYTES} bytes"
            )
        if dead_letter_path is not None and on_dead_letter is not None:
            raise ValueError("give either dead_letter_path or on_dead_letter, not both")
        self._client = client
        self._stream = stream_name
        self._max_attempts = settings.producers.put_max_attempts
        self._base_backoff = settings.producers.put_base_backoff_s
        self._max_backoff = max_backoff_s
        self._linger = linger_s
        lanes = settings.producers.max_batches_in_flight
        self._max_records = max_buffered_records or 2 * MAX_BATCH_RECORDS * lanes
        self._max_bytes = max_buffered_bytes or 2 * MAX_BATCH_BYTES * lanes
        self._handler: DeadLetterHandler = (
            on_dead_letter
            if on_dead_letter is not None
            else DeadLetterFile(dead_letter_path)
            if dead_letter_path is not None
            else log_dead_letters
        )
        self._before_send = before_send
        # Smaller batches let a per-shard rate limiter (``before_send``) admit any one batch whole.
        self._batch_records = max_batch_records
        self._batch_bytes = max_batch_bytes
        self._rng = rng or random.Random()
        self.stats = WriterStats()

        self._lanes = [_Lane(index) for index in range(lanes)]
        self._buffered = 0
        self._buffered_bytes = 0
        self._in_flight = 0
        self._flushing = 0
        self._closed = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._waiters: list[asyncio.Future[None]] = []
        self._wake = asyncio.Event()
        self._pump_task: asyncio.Task[None] | None = None

    # --- public API ------------------------------------------------------------------------------

    @property
    def buffered(self) -> int:
        """Records taken by ``put`` and not yet in a call."""
        return self._buffered

    @property
    def in_flight(self) -> int:
        """Batches in a PutRecords call or waiting for a retry."""
        return self._in_flight

    def lane_of(self, partition_key: str) -> int:
        """The lane a key travels in (stable: crc32, not Python's salted hash)."""
        return zlib.crc32(partition_key.encode()) % len(self._lanes)

    async def put(self, data: bytes, partition_key: str) -> bool:
        """Queue one record; waits while the buffer is full. False when the record was refused."""
        if self._closed:
            raise WriterClosedError("put on a closed KinesisWriter")
        record = OutRecord(bytes(data), partition_key)
        size = len(record.data) + len(partition_key.encode())
        problem = _refusal(record, size)
        if problem is not None:
            self.stats.refused += 1
            self._dead_letter([record], problem)
            return False
        self._ensure_pump()
        while self._buffered and (
            self._buffered >= self._max_records or self._buffered_bytes + size > self._max_bytes
        ):
            await self._wait_state()
            if self._closed:
                raise WriterClosedError("KinesisWriter closed while a put waited for buffer space")
        lane = self._lanes[self.lane_of(partition_key)]
        lane.buffer.append(_Entry(record, size, asyncio.get_running_loop().time()))
        lane.size += size
        self._buffered += 1
        self._buffered_bytes += size
        queued = len(lane.buffer)
        if queued == 1 or queued % self._batch_records == 0 or lane.size >= self._batch_bytes:
            self._wake.set()
        return True

    async def flush(self) -> None:
        """Return once everything put so far is acknowledged by Kinesis or dead-lettered."""
        self._flushing += 1
        self._wake.set()
        try:
            while self._buffered or self._in_flight:
                self._ensure_pump()
                await self._wait_state()
        finally:
            self._flushing -= 1

    async def close(self) -> None:
        """Flush, then stop; whatever could not be sent is dead-lettered, never left behind."""
        self._closed = True
        try:
            await self.flush()
        finally:
            await self._shutdown()

    async def __aenter__(self) -> KinesisWriter:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # --- pump ------------------------------------------------------------------------------------

    def _ensure_pump(self) -> None:
        if self._pump_task is None or self._pump_task.done():
            if self._pump_task is not None and not self._pump_task.cancelled():
                failure = self._pump_task.exception()
                if failure is not None:
                    logger.error("KinesisWriter pump had died; restarting it", exc_info=failure)
            self._pump_task = asyncio.get_running_loop().create_task(self._pump(), name="kinesis-writer-pump")

    async def _pump(self) -> None:
        """Send a lane's batch when it is full, its oldest record has lingered enough, or on flush."""
        loop = asyncio.get_running_loop()
        while True:
            self._wake.clear()
            now = loop.time()
            timeout: float | None = None
            for lane in self._lanes:
                if lane.busy or not lane.buffer:
                    continue
                due = lane.buffer[0].enqueued + self._linger
                if (
                    self._flushing
                    or now >= due
                    or len(lane.buffer) >= self._batch_records
                    or lane.size >= self._batch_bytes
                ):
                    self._start_send(lane, self._take_batch(lane))
                else:
                    timeout = due - now if timeout is None else min(timeout, due - now)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    def _take_batch(self, lane: _Lane) -> list[_Entry]:
        """The lane's oldest records, within PutRecords' 500 records and 5 MiB (or the smaller batch set)."""
        taken: list[_Entry] = []
        size = 0
        buffer = lane.buffer
        while buffer and len(taken) < self._batch_records and size + buffer[0].size <= self._batch_bytes:
            entry = buffer.popleft()
            taken.append(entry)
            size += entry.size
        lane.size -= size
        self._buffered -= len(taken)
        self._buffered_bytes -= size
        return taken

    def _start_send(self, lane: _Lane, batch: list[_Entry]) -> None:
        lane.busy = True
        self._in_flight += 1
        self._notify_state()  # buffer space freed
        task = asyncio.get_running_loop().create_task(self._send(lane, batch), name="kinesis-put-records")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- one batch, with its retries ---------------------------------------------------------------

    async def _send(self, lane: _Lane, batch: list[_Entry]) -> None:
        pending = batch
        attempt = 0
        try:
            while pending:
                attempt += 1
                if self._before_send is not None:
                    await self._before_send([entry.record for entry in pending])
                failed, reason, retryable = await self._attempt(pending)
                if attempt > self.stats.most_attempts:
                    self.stats.most_attempts = attempt
                if not failed:
                    pending = []
                elif not retryable or attempt >= self._max_attempts:
                    pending = []
                    why = reason if not retryable else f"gave up after {attempt} attempts: {reason}"
                    self._dead_letter([entry.record for entry in failed], why)
                else:
                    pending = failed
                    self.stats.retries += len(failed)
                    delay = self._backoff(attempt)
                    self.stats.backoffs += 1
                    self.stats.backoff_s += delay
                    logger.warning(
                        "PutRecords: retrying %d of %d records in %.3fs (%s)",
                        len(failed),
                        len(batch),
                        delay,
                        reason,
                        extra={"stream": self._stream, "attempt": attempt, "reason": reason},
                    )
                    await asyncio.sleep(delay)
        except asyncio.CancelledError:
            if pending:
                self._dead_letter(
                    [entry.record for entry in pending],
                    "writer shut down during the call (the records may or may not be in the stream)",
                )
            raise
        except Exception as exc:
            logger.exception("PutRecords: unexpected failure", extra={"stream": self._stream})
            if pending:
                self._dead_letter([entry.record for entry in pending], f"PutRecords failed: {exc!r}")
        finally:
            lane.busy = False
            self._in_flight -= 1
            self._wake.set()
            self._notify_state()

    async def _attempt(self, pending: list[_Entry]) -> tuple[list[_Entry], str, bool]:
        """One PutRecords call: (entries still to send, why, whether another attempt may help)."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            response = await self._client.put_records(
                StreamName=self._stream,
                Records=[{"Data": e.record.data, "PartitionKey": e.record.partition_key} for e in pending],
            )
        except ClientError as exc:
            self.stats.call_errors += 1
            error = exc.response.get("Error", {})
            code = str(error.get("Code", "Unknown"))
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
            if code in THROTTLE_CODES:
                self.stats.throttles += 1
            reason = f"PutRecords failed: {code}: {error.get('Message', '')}"
            return pending, reason, code in RETRYABLE_CODES or status >= 500
        except _RETRYABLE_EXCEPTIONS as exc:
            self.stats.call_errors += 1
            return pending, f"PutRecords failed: {type(exc).__name__}: {exc}", True
        self.stats.batches += 1
        self.stats.record_latency(loop.time() - started)
        results = response.get("Records") or []
        if len(results) != len(pending):
            return pending, f"PutRecords answered {len(results)} entries for {len(pending)} records", True
        failed: list[_Entry] = []
        codes: Counter[str] = Counter()
        for entry, result in zip(pending, results, strict=True):
            code = result.get("ErrorCode")
            if code:
                failed.append(entry)
                codes[str(code)] += 1
        self.stats.records_sent += len(pending) - len(failed)
        self.stats.throttles += sum(n for code, n in codes.items() if code in THROTTLE_CODES)
        reason = ", ".join(f"{code} x{n}" for code, n in codes.most_common())
        return failed, reason, True

    def _backoff(self, attempt: int) -> float:
        """Exponential backoff with full jitter (spreads retries of many producers apart)."""
        return self._rng.uniform(0.0, min(self._max_backoff, self._base_backoff * 2 ** (attempt - 1)))

    # --- plumbing --------------------------------------------------------------------------------

    def _dead_letter(self, records: Sequence[OutRecord], reason: str) -> None:
        self.stats.failed += len(records)
        logger.error(
            "dead-lettering %d records: %s",
            len(records),
            reason,
            extra={"stream": self._stream, "records": len(records), "reason": reason},
        )
        try:
            self._handler(records, reason)
        except Exception:
            logger.exception("dead-letter handler failed; logging the records instead")
            log_dead_letters(records, reason)

    async def _wait_state(self) -> None:
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)

    def _notify_state(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def _shutdown(self) -> None:
        pump, self._pump_task = self._pump_task, None
        if pump is not None:
            pump.cancel()
            await asyncio.gather(pump, return_exceptions=True)
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        leftover = [entry.record for lane in self._lanes for entry in lane.buffer]
        for lane in self._lanes:
            lane.buffer.clear()
            lane.size = 0
        self._buffered = self._buffered_bytes = 0
        if leftover:
            self._dead_letter(leftover, "writer closed before these records were sent")
        self._notify_state()


def _refusal(record: OutRecord, size: int) -> str | None:
    key_chars = len(record.partition_key)
    if not 1 <= key_chars <= MAX_PARTITION_KEY_CHARS:
        return f"partition key must be 1-{MAX_PARTITION_KEY_CHARS} characters, got {key_chars}"
    if size > MAX_RECORD_BYTES:
        return f"record of {size} bytes (data + partition key) is over Kinesis's 1 MiB per-record limit"
    return None
