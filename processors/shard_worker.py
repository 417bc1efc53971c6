"""Reads one shard: a GetRecords loop feeding that shard's core, sending its effects, checkpointing.

Order per batch: apply records -> send effects -> (maybe) checkpoint state + last sequence number.
KPL aggregates are unpacked into their user records (processors/records.py), all in the batch of
their Kinesis record, so a checkpoint at a sequence number covers every sub-record of it. A record
that makes applying fail is kept as a dead letter and the shard goes on (no crash loop).
A crash between send and checkpoint replays the batch: the core's dedup makes the state exact again
and the repeated sends carry the same deterministic ids, which consumers drop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from config import Settings
from foundation.retry import backoff_s, error_code, is_retryable
from processors.checkpoints import S3Checkpoints
from processors.core import Effects, ShardCore
from processors.fleet_shapes import FleetExchange
from processors.records import apply_record
from processors.shard_clocks import OwnTime
from processors.sinks import Sinks

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
    def __init__(
        self,
        shard_id: str,
        kinesis: Any,
        core: ShardCore,
        sinks: Sinks,
        checkpoints: S3Checkpoints,
        settings: Settings,
        start_after: str | None,
        on_effects: Callable[[str, Effects], None] | None = None,
        owns: Callable[[str], bool] | None = None,
        event_clock: Callable[[], int | None] | None = None,
        fleet: FleetExchange | None = None,
    ) -> None:
        self.shard_id = shard_id
        self._fleet = fleet  # the fleet's shape of a day, shared with the other shards
        # The event time of the other shards read here (None: none known), for an idle shard.
        self._event_clock = event_clock
        self._owns = owns  # does this shard own a partition key's hash key (KPL sub-records)
        self.core = core
        self.status = WorkerStatus()
        self._kinesis = kinesis
        self._sinks = sinks
        self._checkpoints = checkpoints
        self._settings = settings
        self._last_seq = start_after
        self._checkpointed_seq = start_after
        self._on_effects = on_effects
        self._since_checkpoint = 0
        self._last_checkpoint = time.monotonic()
        self._time = OwnTime(log, self.newest_event_ms())  # a restored core's, to begin with

    async def _iterator(self) -> str:
        args: dict[str, Any] = {"StreamName": self._settings.stream_name, "ShardId": self.shard_id}
        if self._last_seq is None:
            args["ShardIteratorType"] = "TRIM_HORIZON"
        else:
            args["ShardIteratorType"] = "AFTER_SEQUENCE_NUMBER"
            args["StartingSequenceNumber"] = self._last_seq
        resp = await self._kinesis.get_shard_iterator(**args)
        return str(resp["ShardIterator"])

    async def run(self, stop: asyncio.Event) -> None:
        settings = self._settings
        self.status.started_at = self.status.last_read_at = time.monotonic()
        iterator: str | None = await self._iterator()
        await self._exchange_fleet()  # a restored or new shard reads the fleet's shape at once
        idle = 0
        failures = 0
        while not stop.is_set() and iterator is not None:
            poll_started = time.monotonic()
            try:
                resp = await self._kinesis.get_records(
                    ShardIterator=iterator, Limit=settings.get_records_limit
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
                await _sleep(stop, backoff_s(failures, settings.poll_interval_s))
                continue
            records = resp.get("Records", [])
            self.status.millis_behind = int(resp.get("MillisBehindLatest", 0) or 0)
            iterator = resp.get("NextShardIterator")
            if records:
                idle = 0
                self.status.last_read_at = poll_started
                core = self.core
                user_records = 0
                for record in records:
                    user_records += apply_record(
                        core, record["Data"], record["SequenceNumber"], record.get("PartitionKey"), self._owns
                    )
                self.status.user_records += user_records
                self._time.read(self.newest_event_ms())
                self.status.following = False
                await self._emit()
                self._last_seq = records[-1]["SequenceNumber"]
                self.status.records += len(records)
                self.status.batches += 1
                self._since_checkpoint += len(records)
                await self._maybe_checkpoint()
            else:
                self.status.empty_polls += 1
                if self.status.millis_behind == 0:
                    await self._follow_other_shards()
                await self._maybe_checkpoint()  # a quiet shard still checkpoints what it last read
                if self.status.millis_behind == 0:
                    if self.status.caught_up_at == 0.0:
                        log.info(
                            "caught up", extra={"shard_id": self.shard_id, "records": self.status.records}
                        )
                    self.status.caught_up_at = poll_started
            if iterator is None:
                break
            if len(records) < settings.get_records_limit:
                delay = min(settings.poll_interval_s * (2 ** min(idle, 4)), settings.max_poll_interval_s)
                idle += 1
                await _sleep(stop, delay)
            else:
                # A full batch: more is waiting. Stay under the 5 GetRecords calls/s per shard limit.
                await _sleep(stop, max(0.0, 0.2 - (time.monotonic() - poll_started)))
        self.status.ended = iterator is None
        await self.checkpoint()
        if self.status.ended:
            self.status.ended_at = time.monotonic()

    def newest_event_ms(self) -> int | None:
        """The event time this shard's windows have reached (None without windows or events)."""
        windows = self.core.state.windows
        return windows.newest_ms if windows is not None and windows.started else None

    def own_event_ms(self) -> int | None:
        """How far this shard's own events have come (None before any): what the other shards
        follow, never a time this shard only moved to with them (`OwnTime`)."""
        return self._time.own_ms

    async def _follow_other_shards(self) -> None:
        """A shard with nothing to read moves its event time to `idle_shard_lag_s` behind the other
        shards' (their middle one): a store alone in its shard whose tills stop sends nothing that
        would close its windows, and the outage would be seen only when trade came back. Only
        after `idle_shard_patience_s` of wall-clock quiet: a replay's writer a moment behind on
        this shard, with the others hours of event time ahead, is not a store gone silent."""
        settings = self._settings
        lag_s = settings.idle_shard_lag_s
        if lag_s <= 0 or time.monotonic() - self.status.last_read_at < settings.idle_shard_patience_s:
            return
        clock = self._event_clock() if self._event_clock is not None else None
        windows = self.core.state.windows
        if clock is None or windows is None or not windows.started:
            return
        target = clock - lag_s * 1000
        if target > windows.newest_ms:
            self._time.followed(self.shard_id, windows.newest_ms, target)
            self.status.following = True
            self.core.advance_watermark(target)
            await self._emit()

    async def _exchange_fleet(self) -> None:
        if self._fleet is not None:
            await self._fleet.exchange(self.shard_id, self.core)

    async def _emit(self) -> None:
        effects = self.core.drain()
        if not effects:
            return
        await self._sinks.send(self.shard_id, effects)
        if self._on_effects is not None:
            self._on_effects(self.shard_id, effects)

    async def _maybe_checkpoint(self) -> None:
        settings = self._settings
        due = time.monotonic() - self._last_checkpoint >= settings.checkpoint_every_s
        if due or self._since_checkpoint >= settings.checkpoint_every_records:
            await self.checkpoint()

    async def checkpoint(self) -> None:
        """Store state + the sequence number it reflects (effects were sent before this point)."""
        await self._emit()
        if self._last_seq == self._checkpointed_seq and not self.status.ended:
            self._last_checkpoint = time.monotonic()
            return
        report = await self._checkpoints.save(self.shard_id, self._last_seq, self.core, self.status.ended)
        self._checkpointed_seq = self._last_seq
        self._since_checkpoint = 0
        self._last_checkpoint = time.monotonic()
        self.status.checkpoints += 1
        await self._exchange_fleet()
        log.info(
            "checkpoint",
            extra={
                "shard_id": self.shard_id,
                "sequence_number": self._last_seq,
                "ended": self.status.ended,
                "bytes_written": report.bytes_written,
                "checkpoint_bytes": report.total_bytes,
                "runs_written": report.runs_written,
                "runs_deleted": report.runs_deleted,
                "seconds": round(report.seconds, 3),
            },
        )


async def _sleep(stop: asyncio.Event, seconds: float) -> None:
    """Sleep, but wake at once when asked to stop."""
    if seconds <= 0:
        return
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
