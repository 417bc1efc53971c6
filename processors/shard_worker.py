"""Reads one shard: a GetRecords loop that hands each poll to the shard's lifecycle.

The lifecycle (processors/shard_lifecycle.py) applies the records, sends their effects and
checkpoints when due, exactly as under the KCL; this loop is the transport: iterators, polling
pace, throttling and retries, and when the shard ends or the process stops. Kinesis records reach
the lifecycle whole: KPL aggregates are unpacked there (processors/records.py), all in the batch of
their Kinesis record, so a checkpoint at a sequence number covers every sub-record of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from config import Settings
from foundation.retry import backoff_s, error_code, is_retryable
from processors.core import ShardCore
from processors.shard_lifecycle import ShardLifecycle, ShardRecord

log = logging.getLogger(__name__)


@dataclass
class WorkerStatus:
    records: int = 0  # Kinesis records
    user_records: int = 0  # events in them (a KPL aggregate holds many)
    batches: int = 0
    empty_polls: int = 0
    millis_behind: int = 0
    checkpoints: int = 0
    throttles: int = 0
    caught_up_at: float = 0.0
    last_read_at: float = 0.0  # monotonic time of the last poll that returned records (or the start)
    following: bool = False  # quiet, its event time moved with the other shards' since it last read
    started_at: float = 0.0
    ended_at: float = 0.0
    ended: bool = False


class ShardWorker:
    def __init__(self, kinesis: Any, lifecycle: ShardLifecycle, settings: Settings) -> None:
        self.shard_id = lifecycle.shard_id
        self.lifecycle = lifecycle
        self.status = WorkerStatus()
        self._kinesis = kinesis
        self._settings = settings

    @property
    def core(self) -> ShardCore:
        core = self.lifecycle.core
        if core is None:
            raise RuntimeError(f"shard {self.shard_id} has no state: it was not assigned")
        return core

    async def _iterator(self) -> str:
        args: dict[str, Any] = {"StreamName": self._settings.aws.stream_name, "ShardId": self.shard_id}
        start_after = self.lifecycle.sequence_number
        if start_after is None:
            args["ShardIteratorType"] = "TRIM_HORIZON"
        else:
            args["ShardIteratorType"] = "AFTER_SEQUENCE_NUMBER"
            args["StartingSequenceNumber"] = start_after
        resp = await self._kinesis.get_shard_iterator(**args)
        return str(resp["ShardIterator"])

    async def run(self, stop: asyncio.Event) -> None:
        settings = self._settings
        lifecycle = self.lifecycle
        self.status.started_at = self.status.last_read_at = time.monotonic()
        iterator: str | None = await self._iterator()
        idle = 0
        failures = 0
        while not stop.is_set() and iterator is not None:
            poll_started = time.monotonic()
            try:
                resp = await self._kinesis.get_records(
                    ShardIterator=iterator, Limit=settings.processor.get_records_limit
                )
                failures = 0
            except ClientError as exc:
                code = error_code(exc)
                if code == "ExpiredIteratorException":
                    iterator = await self._iterator()
                    continue
                if not is_retryable(exc):
                    raise
                self.status.throttles += code == "ProvisionedThroughputExceededException"
                failures += 1
                await _sleep(stop, backoff_s(failures, settings.processor.poll_interval_s))
                continue
            records = resp.get("Records", [])
            self.status.millis_behind = int(resp.get("MillisBehindLatest", 0) or 0)
            iterator = resp.get("NextShardIterator")
            if records:
                # Read by the processor's stream silence and the other shards' following while this
                # batch is still being applied, sent and checkpointed.
                self.status.last_read_at = poll_started
            batch: list[ShardRecord] = [
                (r["Data"], r["SequenceNumber"], 0, r.get("PartitionKey")) for r in records
            ]
            self.status.user_records += await lifecycle.records(batch, self.status.millis_behind)
            self._observe()
            if records:
                idle = 0
                self.status.records += len(records)
                self.status.batches += 1
            else:
                self.status.empty_polls += 1
                if self.status.millis_behind == 0:
                    if self.status.caught_up_at == 0.0:
                        log.info(
                            "caught up", extra={"shard_id": self.shard_id, "records": self.status.records}
                        )
                    self.status.caught_up_at = poll_started
            if iterator is None:
                break
            if len(records) < settings.processor.get_records_limit:
                delay = min(
                    settings.processor.poll_interval_s * (2 ** min(idle, 4)),
                    settings.processor.max_poll_interval_s,
                )
                idle += 1
                await _sleep(stop, delay)
            else:
                # A full batch: more is waiting. Stay under the 5 GetRecords calls/s per shard limit.
                await _sleep(stop, max(0.0, 0.2 - (time.monotonic() - poll_started)))
        if iterator is None:
            await lifecycle.shard_ended()
        else:
            await lifecycle.shutdown()
        self._observe()
        self.status.ended = lifecycle.ended
        if self.status.ended:
            self.status.ended_at = time.monotonic()

    def _observe(self) -> None:
        """The lifecycle's figures in the status the processor's metrics and waits read."""
        lifecycle = self.lifecycle
        self.status.following = lifecycle.following
        self.status.checkpoints = lifecycle.saves

    def newest_event_ms(self) -> int | None:
        """The event time this shard's windows have reached (None without windows or events)."""
        return self.core.event_clock_ms()

    def own_event_ms(self) -> int | None:
        """How far this shard's own events have come (None before any): what the other shards
        follow, never a time this shard only moved to with them (`OwnTime`)."""
        return self.lifecycle.own_event_ms


async def _sleep(stop: asyncio.Event, seconds: float) -> None:
    """Sleep, but wake at once when asked to stop."""
    if seconds <= 0:
        return
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
