"""Kinesis's per-shard limits in the embedded AWS, so throttling is real and not only injected.

Kinesis answers writes over a shard's quota (1,000 records/s and 1 MiB/s of data plus partition key)
with ``ProvisionedThroughputExceededException``: per entry inside PutRecords (the call succeeds, the
entry carries ``ErrorCode`` and ``FailedRecordCount`` counts it), as an error for PutRecord. Reads are
limited to 5 GetRecords calls per second per shard and 2 MiB/s; a call over either limit raises the
same exception. A single GetRecords may return more than 2 MiB (up to 10 MiB); the shard's read
budget then goes into debt and the next calls are refused until the debt is paid back, as Kinesis does.

The quotas are token buckets holding one second's worth (records, bytes, read calls, read bytes),
refilled continuously: the shape AWS documents ("per second") without a burst above one second's
quota. ``ShardQuota`` is pure (the caller passes the time); ``install`` patches moto's Kinesis backend
once per process, and ``enable`` turns the limits on or off (the embedded AWS turns them on unless
``SHELFSTREAM_AWS__EMBEDDED_KINESIS_LIMITS=false``). Requests reach moto's Kinesis one at a time (the
embedded AWS serializes them), so the quotas need no lock of their own.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

WRITE_RECORDS_PER_S: Final = 1000
WRITE_BYTES_PER_S: Final = 1024 * 1024
READ_CALLS_PER_S: Final = 5
READ_BYTES_PER_S: Final = 2 * 1024 * 1024
THROTTLED: Final = "ProvisionedThroughputExceededException"


@dataclass(frozen=True, slots=True)
class Limits:
    write_records_per_s: float = WRITE_RECORDS_PER_S
    write_bytes_per_s: float = WRITE_BYTES_PER_S
    read_calls_per_s: float = READ_CALLS_PER_S
    read_bytes_per_s: float = READ_BYTES_PER_S


@dataclass(slots=True)
class _Bucket:
    """Tokens refilled at ``rate`` per second up to ``rate`` (one second's worth); may go into debt."""

    rate: float
    tokens: float
    at: float

    def refill(self, now: float) -> None:
        if now > self.at:
            self.tokens = min(self.rate, self.tokens + (now - self.at) * self.rate)
            self.at = now


@dataclass(slots=True)
class ShardQuota:
    """One shard's write and read budgets."""

    limits: Limits
    now: float
    records: _Bucket = field(init=False)
    bytes: _Bucket = field(init=False)
    calls: _Bucket = field(init=False)
    read_bytes: _Bucket = field(init=False)
    write_throttles: int = 0
    read_throttles: int = 0

    def __post_init__(self) -> None:
        lim = self.limits
        self.records = _Bucket(lim.write_records_per_s, lim.write_records_per_s, self.now)
        self.bytes = _Bucket(lim.write_bytes_per_s, lim.write_bytes_per_s, self.now)
        self.calls = _Bucket(lim.read_calls_per_s, lim.read_calls_per_s, self.now)
        self.read_bytes = _Bucket(lim.read_bytes_per_s, lim.read_bytes_per_s, self.now)

    def try_write(self, size: int, now: float) -> bool:
        """Take one record of ``size`` bytes (data plus partition key); False when over the quota."""
        records, sizes = self.records, self.bytes
        records.refill(now)
        sizes.refill(now)
        if records.tokens < 1 or sizes.tokens < size:
            self.write_throttles += 1
            return False
        records.tokens -= 1
        sizes.tokens -= size
        return True

    def try_read(self, now: float) -> bool:
        """Take one GetRecords call; False when the shard had 5 calls in the last second or its
        read bytes are in debt."""
        calls, sizes = self.calls, self.read_bytes
        calls.refill(now)
        sizes.refill(now)
        if calls.tokens < 1 or sizes.tokens < 0:
            self.read_throttles += 1
            return False
        calls.tokens -= 1
        return True

    def charge_read(self, size: int) -> None:
        """Bytes a GetRecords call returned (may put the read budget into debt)."""
        self.read_bytes.tokens -= size


class Quotas:
    """Every shard's quota, keyed by (stream ARN, shard id); off unless enabled."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.enabled = False
        self.limits = Limits()
        self.clock = clock
        self._shards: dict[tuple[str, str], ShardQuota] = {}

    def shard(self, stream_arn: str, shard_id: str) -> ShardQuota:
        key = (stream_arn, shard_id)
        quota = self._shards.get(key)
        if quota is None:
            quota = self._shards[key] = ShardQuota(self.limits, self.clock())
        return quota

    def reset(self) -> None:
        self._shards.clear()

    @property
    def write_throttles(self) -> int:
        return sum(q.write_throttles for q in self._shards.values())

    @property
    def read_throttles(self) -> int:
        return sum(q.read_throttles for q in self._shards.values())


QUOTAS: Final = Quotas()
_PATCHED = False


def enable(on: bool, limits: Limits | None = None) -> None:
    """Turn the limits on or off for this process's embedded Kinesis (and start every shard afresh)."""
    QUOTAS.enabled = on
    if limits is not None:
        QUOTAS.limits = limits
    QUOTAS.reset()


def _message(stream: Any, shard_id: str) -> str:
    return (
        f"Rate exceeded for shard {shard_id} in stream {stream.stream_name} "
        f"under account {stream.account_id}."
    )


def _throttled(stream: Any, shard_id: str) -> Exception:
    """The error Kinesis raises for a throttled PutRecord or GetRecords (HTTP 400)."""
    from moto.core.exceptions import JsonRESTError

    return JsonRESTError(error_type=THROTTLED, message=_message(stream, shard_id))


def install() -> None:
    """Patch moto's Kinesis backend once per process: quotas on PutRecord(s) and GetRecords."""
    global _PATCHED
    if _PATCHED:
        return
    from moto.kinesis.models import KinesisBackend

    put_record = KinesisBackend.put_record
    put_records = KinesisBackend.put_records
    get_records = KinesisBackend.get_records

    def limited_put_record(self: Any, stream_arn: Any, stream_name: Any, partition_key: str,
                           explicit_hash_key: Any, data: Any) -> Any:  # fmt: skip
        if QUOTAS.enabled:
            stream = self.describe_stream(stream_arn=stream_arn, stream_name=stream_name)
            shard = stream.get_shard_for_key(partition_key, explicit_hash_key)
            quota = QUOTAS.shard(stream.arn, shard.shard_id)
            if not quota.try_write(_size(data, partition_key), QUOTAS.clock()):
                raise _throttled(stream, shard.shard_id)
        return put_record(self, stream_arn, stream_name, partition_key, explicit_hash_key, data)

    def limited_put_records(self: Any, stream_arn: Any, stream_name: Any, records: list[Any]) -> Any:
        if not QUOTAS.enabled:
            return put_records(self, stream_arn, stream_name, records)
        sizes = [_size(r.get("Data"), r.get("PartitionKey")) for r in records]
        if len(records) > 500 or sum(sizes) > 5 * 1024 * 1024 or max(sizes, default=0) > 1024 * 1024:
            return put_records(self, stream_arn, stream_name, records)  # moto's own validation error
        stream = self.describe_stream(stream_arn=stream_arn, stream_name=stream_name)
        now = QUOTAS.clock()
        accepted: list[Any] = []
        refused: dict[int, str] = {}
        for i, record in enumerate(records):
            key = record.get("PartitionKey")
            shard = stream.get_shard_for_key(key, record.get("ExplicitHashKey"))
            quota = QUOTAS.shard(stream.arn, shard.shard_id)
            if quota.try_write(sizes[i], now):
                accepted.append(record)
            else:
                refused[i] = shard.shard_id
        if not refused:
            return put_records(self, stream_arn, stream_name, records)
        answer = put_records(self, stream_arn, stream_name, accepted) if accepted else {"Records": []}
        done = iter(answer.get("Records", []))
        merged: list[dict[str, Any]] = []
        for i in range(len(records)):
            if i in refused:
                merged.append({"ErrorCode": THROTTLED, "ErrorMessage": _message(stream, refused[i])})
            else:
                merged.append(next(done))
        failed = int(answer.get("FailedRecordCount", 0)) + len(refused)
        return {**answer, "FailedRecordCount": failed, "Records": merged}

    def limited_get_records(self: Any, stream_arn: Any, shard_iterator: str, limit: Any) -> Any:
        if not QUOTAS.enabled:
            return get_records(self, stream_arn, shard_iterator, limit)
        from moto.kinesis.utils import decompose_shard_iterator

        stream_name, shard_id, _ = decompose_shard_iterator(shard_iterator)
        stream = self.describe_stream(stream_arn=stream_arn, stream_name=stream_name)
        quota = QUOTAS.shard(stream.arn, shard_id)
        if not quota.try_read(QUOTAS.clock()):
            raise _throttled(stream, shard_id)
        answer = get_records(self, stream_arn, shard_iterator, limit)
        quota.charge_read(sum(_size(r.data, r.partition_key) for r in answer[1]))
        return answer

    KinesisBackend.put_record = limited_put_record  # type: ignore[method-assign]
    KinesisBackend.put_records = limited_put_records  # type: ignore[method-assign]
    KinesisBackend.get_records = limited_get_records  # type: ignore[method-assign]
    _PATCHED = True


def _size(data: Any, partition_key: Any) -> int:
    """Bytes a record counts for: its data (base64-decoded) plus its partition key."""
    if isinstance(data, str):
        # The wire carries base64; Kinesis counts the decoded blob.
        padding = data.count("=", -2)
        blob = len(data) * 3 // 4 - padding
    elif isinstance(data, bytes | bytearray):
        blob = len(data)
    else:
        blob = 0
    return blob + len(str(partition_key or "").encode())
