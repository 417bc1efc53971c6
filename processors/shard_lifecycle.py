"""One shard's lifecycle, whichever shell reads the shard: the embedded reader (shard_worker.py,
every shard in one process) and the KCL record processor (kcl_processor.py, one process per leased
shard) translate their transport's callbacks into these calls, so each rule below lives here once.

- assigned: the shard's state is its checkpoint; without one (a new shard), its parents' final
  checkpoints cut along its hash-key range and merged (a split's or a merge's child); without those,
  the seed (history loaded before the stream began) cut the same way; else empty. Then the fleet's
  shape of a day is exchanged.
- records: each record not already in the state (at or before the position it reflects: the KCL
  delivers again from its own checkpoint, which may lag the snapshot) is applied, KPL aggregates
  unpacked (processors/records.py); the effects are sent; the shard's own event time moves (and is
  published for the other shards); then a checkpoint, when due.
- quiet (a batch with no records while caught up): once the shard has read nothing for
  `idle_shard_patience_s`, its windows follow the other shards' event time, `idle_shard_lag_s`
  behind (processors/shard_clocks.py), so a store alone in its shard whose tills stop is judged
  while the outage lasts.
- checkpoint timing: after `checkpoint_every_records` records, or after `checkpoint_every_s` when
  anything is pending (records applied since the snapshot, or delivered since the transport's
  last acknowledgement). A quiet shard with nothing new writes nothing.
- checkpoint: effects sent, then the snapshot stored with the sequence number it reflects, then
  (only then) the transport told how far the shard is done. So the transport's position never
  passes the stored state, and a crash in between replays records the state already holds, which
  are skipped (above) or absorbed by the core's dedup and deterministic ids.
- shard ended: the final snapshot, marked ended, then the end acknowledged (the KCL then lets the
  children start; a shell that cannot acknowledge it must not go on), and the shard's clock
  forgotten: its time has stopped, and must not hold the others back.
- lease lost: another worker owns the shard and resumes from the last checkpoint; nothing is
  stored or acknowledged, and the state here is dropped.
- shutdown: effects sent, the snapshot stored if anything is new, the position acknowledged.

No transport here: the shells pass their ports (checkpoint store, sinks, fleet exchange, shard
lineage), their shard clocks and, for the KCL, the acknowledgement, as the protocols below.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Final, Protocol

from config import Settings
from foundation.aws.lineage import ShardInfo
from processors.checkpoints import Checkpoint, SaveReport
from processors.core import CoreConfig, Effects, ShardCore
from processors.core.partition import merge, split
from processors.records import apply_record
from processors.shard_clocks import OwnTime, follow

# A snapshot stores a sequence number only, so it covers every sub-record of an aggregated (KPL)
# record with that number: both shells hand all sub-records of a Kinesis record over in one batch,
# and checkpoints are taken at batch ends only.
WHOLE_RECORD: Final = sys.maxsize

Delivered = tuple[str, int]  # (sequence number, sub-sequence number) of a record handed over


# A Kinesis record as either transport hands it over: (data, sequence number, sub-sequence number,
# partition key). The sequence number is a decimal string of any length (real ones have 56 digits);
# the sub-sequence number is the KCL's, for a sub-record it unpacked from a KPL aggregate (0 else).
# A plain tuple: a shell builds one per record, and a class would cost more than the rest of the
# lifecycle's per-record work.
ShardRecord = tuple[bytes, str, int, str | None]
# Where a record sits in its shard, comparable without parsing: Kinesis sequence numbers are decimal
# strings without leading zeros, so the longer is the larger, and equal lengths compare as text.
_Position = tuple[int, str, int]


class ShardPorts(Protocol):
    """Where a shard's state, effects and shape of a day go: AWS in both shells, memory in tests."""

    async def load(self, shard_id: str) -> Checkpoint | None: ...

    async def lineage(self, shard_id: str) -> ShardInfo | None:
        """The shard's parents and hash-key range (None when the stream does not list it)."""
        ...

    async def save(
        self, shard_id: str, sequence_number: str | None, core: ShardCore, ended: bool
    ) -> SaveReport | None:
        """Store the state and the sequence number it reflects, atomically (a report is logged)."""
        ...

    async def send(self, shard_id: str, effects: Effects) -> None: ...

    async def exchange_fleet(self, shard_id: str, core: ShardCore) -> None:
        """Publish the shard's shape of a day and set the other shards' as its prior, when due
        (advisory: a failure is logged and the shard goes on)."""
        ...


class EventClocks(Protocol):
    """The other shards' event time, as this shell knows it (its own process's shards, or a table
    shared across processes); advisory: a failure must not raise."""

    async def publish(self, shard_id: str, event_ms: int) -> None:
        """How far this shard's own events have come (called after every batch; the clocks decide
        whether and when to store it)."""
        ...

    async def others(self, shard_id: str) -> list[tuple[int, bool]]:
        """The other shards' (event time, still trading) for `follow`."""
        ...

    async def forget(self, shard_id: str) -> None: ...


# Tell the transport how far the shard is done (the KCL's checkpoint): a position, or None for
# everything delivered (at the shard's end: its end). True when it took; giving up is safe, as the
# stored state is ahead of the transport's position.
Acknowledge = Callable[[Delivered | None], Awaitable[bool]]


class ShardEndNotAcknowledged(RuntimeError):
    """The transport did not take the end of the shard: its children would never start."""


class ShardLifecycle:
    """One shard's state and the rules of its lifecycle (see the module); the shells drive it."""

    def __init__(
        self,
        shard_id: str,
        settings: Settings,
        config: CoreConfig,
        ports: ShardPorts,
        log: logging.Logger,
        clocks: EventClocks | None = None,
        owns: Callable[[str], bool] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.shard_id = shard_id
        self._settings = settings
        self._config = config
        self._ports = ports
        self._log = log  # the shell's, so its logs say which reader did what
        self._clocks = clocks
        self._owns = owns  # refuses a KPL sub-record of another shard's hash-key range
        self._clock = clock  # monotonic seconds: patience and checkpoint timing
        self.core: ShardCore | None = None  # None before assignment and after the lease is lost
        self.ended = False
        self._time = OwnTime(log)
        self._applied: _Position | None = None  # newest record reflected in `core`
        self._applied_seq: str | None = None  # its sequence number, stored with the snapshot
        self._unsaved = False  # records applied since the stored snapshot
        self._delivered: Delivered | None = None  # the last record handed over
        self._acked: Delivered | None = None  # the last position the transport took
        self._since_checkpoint = 0
        self._last_checkpoint = clock()
        self.last_read_at = clock()  # the last batch with records (or the assignment)
        self.saves = 0
        self.records_skipped = 0
        self.records_failed = 0  # records applying failed on, kept as dead letters

    # --- what the shells read ---------------------------------------------------------------------

    @property
    def sequence_number(self) -> str | None:
        """The sequence number the state reflects (None: from the shard's start)."""
        return self._applied_seq

    @property
    def own_event_ms(self) -> int | None:
        """How far this shard's own events have come, never a time it only moved to with the others."""
        return self._time.own_ms

    @property
    def following(self) -> bool:
        """Quiet, with its event time moved with the other shards' since it last read records."""
        return self._time.following

    # --- transitions ------------------------------------------------------------------------------

    async def assign(self, seed: ShardCore | None = None) -> Checkpoint | None:
        """The shard is this shell's now: restore its state (see the module); returns its own
        checkpoint (None for a new shard)."""
        shard = self.shard_id
        checkpoint = await self._ports.load(shard)
        parents: tuple[str, ...] = ()
        if checkpoint is not None:
            core, seq = checkpoint.core, checkpoint.sequence_number
        else:
            info = await self._ports.lineage(shard)
            parents = info.parents if info is not None else ()
            core = await self._inherited(info, seed)
            seq = None
        self.core = core
        self._applied_seq = seq
        self._applied = None if seq is None else (len(seq), seq, WHOLE_RECORD)
        self._unsaved = False
        self._time = OwnTime(self._log, core.event_clock_ms())  # a restored core's, to begin with
        self._last_checkpoint = self.last_read_at = self._clock()
        self._log.info(
            "shard assigned", extra={"shard_id": shard, "resume_after": seq, "parents": list(parents)}
        )
        await self._ports.exchange_fleet(shard, core)
        return checkpoint

    async def _inherited(self, info: ShardInfo | None, seed: ShardCore | None) -> ShardCore:
        """A new shard's state: its parents', else the seed's, cut to its range; else empty.

        Both shells start a child only after each parent stored its final snapshot (the embedded
        reader waits for the parents to end, the KCL for their SHARD_END checkpoints), so the
        parents' snapshots are complete."""
        if info is None:
            return ShardCore(self._config)
        loaded = [await self._ports.load(parent) for parent in info.parents]
        inherited = [split(parent.core, info.owns) for parent in loaded if parent is not None]
        if inherited:
            self._log.info(
                "child shard continues from its parents",
                extra={"shard_id": self.shard_id, "parents": list(info.parents), "found": len(inherited)},
            )
            return merge(inherited)
        if seed is not None:
            return split(seed, info.owns)
        return ShardCore(self._config)

    async def records(
        self, batch: Sequence[ShardRecord], millis_behind: int | None, ack: Acknowledge | None = None
    ) -> int:
        """A batch (empty: nothing new; `millis_behind` 0: caught up). Returns the user records
        applied (a KPL aggregate holds many)."""
        core = self._active()
        applied = self._applied
        skipped = applied_records = 0
        owns = self._owns
        for data, seq, sub, partition_key in batch:
            position = (len(seq), seq, sub)
            if applied is not None and position <= applied:
                skipped += 1  # already in the state: the snapshot was ahead of the transport
                continue
            ref = f"{seq}/{sub}" if sub else seq
            applied_records += apply_record(core, data, ref, partition_key, owns)
            applied = position
            self._applied_seq = seq
            self._unsaved = True
        self._applied = applied
        if batch:
            _, last_seq, last_sub, _ = batch[-1]
            self._delivered = (last_seq, last_sub)
        if skipped:
            self.records_skipped += skipped
            self._log.info(
                "records already in the state skipped", extra={"shard_id": self.shard_id, "count": skipped}
            )
        await self._send(core)
        await self._keep_time(core, bool(batch), millis_behind)
        self._since_checkpoint += len(batch)
        if self._due():
            await self._checkpoint(core, ack)
        return applied_records

    async def shard_ended(self, ack: Acknowledge | None = None) -> None:
        """The shard is closed and read to its end (resharding)."""
        core = self._active()
        await self._send(core)
        report = await self._save(core, ended=True)
        self._said_checkpoint(report, ended=True)
        if ack is not None and not await ack(None):
            raise ShardEndNotAcknowledged("could not checkpoint the end of the shard")
        self._acked = self._delivered
        self.ended = True
        self._log.info("shard ended", extra={"shard_id": self.shard_id, "sequence_number": self._applied_seq})
        if self._clocks is not None:
            await self._clocks.forget(self.shard_id)

    def lease_lost(self) -> None:
        """Another worker owns the shard: drop the state, storing and acknowledging nothing."""
        self._log.info("lease lost", extra={"shard_id": self.shard_id, "applied": self._applied_seq})
        self.core = None
        self._applied = self._delivered = None

    async def shutdown(self, ack: Acknowledge | None = None) -> None:
        """The shell stops: effects sent, the state stored if anything is new, the position acknowledged
        (nothing after a lost lease, or after the shard's end, which stored and acknowledged it all)."""
        if self.core is None or self.ended:
            return
        await self._checkpoint(self.core, ack, final=True)

    # --- the rules --------------------------------------------------------------------------------

    def _active(self) -> ShardCore:
        if self.core is None:
            raise RuntimeError(f"no state for shard {self.shard_id}: not initialized, or the lease was lost")
        if self.ended:
            raise RuntimeError(f"shard {self.shard_id} has ended: nothing follows its end")
        return self.core

    async def _send(self, core: ShardCore) -> None:
        effects = core.drain()
        self.records_failed += len(effects.failed)
        if effects:
            await self._ports.send(self.shard_id, effects)

    async def _keep_time(self, core: ShardCore, read: bool, millis_behind: int | None) -> None:
        """Move the shard's own event time with what it read and publish it; a quiet shard, caught
        up and silent for the patience, follows the other shards' (see the module)."""
        settings = self._settings
        now = self._clock()
        newest = core.event_clock_ms()
        if read:
            self.last_read_at = now
            self._time.read(newest)
        clocks = self._clocks
        if clocks is None or newest is None:
            return
        own = self._time.own_ms
        if own is not None:
            await clocks.publish(self.shard_id, own)
        lag_ms = settings.processor.idle_shard_lag_s * 1000
        if (
            read
            or millis_behind != 0
            or lag_ms <= 0
            or now - self.last_read_at < settings.processor.idle_shard_patience_s
        ):
            return
        target = follow(await clocks.others(self.shard_id))
        if target is not None and target - lag_ms > newest:
            self._time.followed(self.shard_id, newest, target - lag_ms)
            core.advance_watermark(target - lag_ms)
            await self._send(core)

    def _due(self) -> bool:
        settings = self._settings
        if self._since_checkpoint >= settings.checkpoints.every_records:
            return True
        pending = self._unsaved or self._delivered != self._acked
        return pending and self._clock() - self._last_checkpoint >= settings.checkpoints.every_s

    async def _save(self, core: ShardCore, ended: bool) -> SaveReport | None:
        report = await self._ports.save(self.shard_id, self._applied_seq, core, ended)
        self._unsaved = False
        self.saves += 1
        await self._ports.exchange_fleet(self.shard_id, core)
        return report

    async def _checkpoint(self, core: ShardCore, ack: Acknowledge | None, final: bool = False) -> None:
        """Send, store the snapshot, then (and only then) acknowledge how far the shard is done."""
        await self._send(core)
        report = await self._save(core, ended=False) if self._unsaved else None
        delivered = self._delivered
        if ack is None:
            self._acked = delivered  # a transport without acknowledgements reads on from the snapshot
        elif (final or delivered != self._acked) and await ack(delivered):
            # Every delivered record is at or before the snapshot (applied, or skipped as already in it).
            self._acked = delivered
        self._since_checkpoint = 0
        self._last_checkpoint = self._clock()
        self._said_checkpoint(report, acknowledged=self._acked)

    def _said_checkpoint(self, report: SaveReport | None, **more: object) -> None:
        """One log line a checkpoint (what operators and the daemon tests look for)."""
        self._log.info(
            "checkpoint",
            extra={
                "shard_id": self.shard_id,
                "sequence_number": self._applied_seq,
                "stored": report is not None,
                **more,
                **_report_fields(report),
            },
        )


def _report_fields(report: SaveReport | None) -> dict[str, object]:
    """What the checkpoint store said about a save, for the log line."""
    if report is None:
        return {}
    return {
        "bytes_written": report.bytes_written,
        "checkpoint_bytes": report.total_bytes,
        "runs_written": report.runs_written,
        "runs_deleted": report.runs_deleted,
        "seconds": round(report.seconds, 3),
    }
