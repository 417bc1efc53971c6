"""The KCL record processor: ``shelfstream kcl-processor``, one process per leased shard.

The KCL MultiLangDaemon (Java) leases shards across tasks and starts one of these per shard, speaking
JSON lines over the process's stdin/stdout (amazon-kclpy's v3 interface). It runs the same core and
the same S3 checkpoints as the embedded shard reader (processors/shard_worker.py), so a shard can
move between the two modes.

Order per batch: apply -> send effects -> (when due) store the S3 snapshot -> only then the KCL
checkpoint. So the KCL's checkpoint never passes the state stored in S3; the S3 snapshot can be
ahead of it (a crash between the two), and the records the KCL then delivers again (at least once)
that are at or before the snapshot's sequence number are skipped. Within the batches after the
snapshot, the core's dedup and the deterministic alert ids absorb any repeat.

A record that makes applying fail (a fault of ours) is kept as a dead letter with the error and the
shard goes on (processors/records.py). Any failure to load, send or store ends the process with
status 1: the daemon then exits too and its task restarts from the last checkpoint, instead of
acknowledging records whose effects were lost.

stdout is the protocol channel: the entry point moves file descriptor 1 to stderr before anything
else runs, so a stray print (ours or any library's) lands in the logs, never in the protocol.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any, Final, Protocol

from config import Settings
from foundation.aws.clients import AioClients
from foundation.aws.lineage import ShardInfo
from foundation.errors import ShelfstreamError
from foundation.metrics import Registry, Sample, emit_emf
from foundation.retry import backoff_s
from processors.checkpoints import Checkpoint, S3Checkpoints, ShardTakenOver
from processors.core import Effects, ShardCore
from processors.core.partition import merge, split
from processors.fleet_shapes import FleetExchange, S3FleetShapes
from processors.metrics import core_source
from processors.records import apply_record
from processors.shard_clocks import DynamoShardClocks, OwnTime, ShardClocks, follow
from processors.sinks import Sinks
from processors.stream_processor import core_config

try:
    from amazon_kclpy import kcl
    from amazon_kclpy.checkpoint_error import CheckpointError
    from amazon_kclpy.v3.processor import RecordProcessorBase
except ImportError as exc:  # the container image has it; a dev venv gets it from `make kclpy`
    raise ShelfstreamError(
        "amazon-kclpy is not installed: run `bash deploy/kcl/install_kclpy.sh .venv/bin/python` "
        "(its Python part, for tests) or use the KCL image (deploy/docker/Dockerfile.kcl)"
    ) from exc

log = logging.getLogger(__name__)

SERVICES: Final = ("sqs", "sns", "firehose", "s3", "kinesis", "dynamodb")
CHECKPOINT_ATTEMPTS: Final = 5
CHECKPOINT_BACKOFF_S: Final = 0.5
# The KCL's checkpoint errors that say "try again later" (DynamoDB busy or briefly unreachable).
RETRYABLE_CHECKPOINT_ERRORS: Final = frozenset({"ThrottlingException", "KinesisClientLibDependencyException"})
# The lease moved to another worker: checkpointing is no longer ours to do.
LEASE_GONE: Final = "ShutdownException"
HEARTBEAT_EVERY_S: Final = 5.0
# A snapshot stores a sequence number only, so it covers every sub-record of an aggregated (KPL)
# record with that number: the KCL hands all sub-records of a Kinesis record over in one batch, and
# snapshots are taken at batch ends only.
_WHOLE_RECORD: Final = sys.maxsize


class ShardStore(Protocol):
    """Where a shard's state and effects go: AWS in production, memory in unit tests."""

    def load(self, shard_id: str) -> Checkpoint | None: ...

    def inherit(self, shard_id: str) -> ShardCore | None:
        """A new child shard's starting state: its parents' final snapshots cut to its hash-key range
        (merged for a merge); None for a shard without parents or whose parents left no state."""
        ...

    def save(self, shard_id: str, sequence_number: str | None, core: ShardCore, ended: bool) -> None: ...

    def exchange_fleet(self, shard_id: str, core: ShardCore) -> None:
        """Publish the shard's shape of a day and set the other shards' as its prior, when due
        (advisory: a failure is logged and the shard goes on)."""
        ...

    def send(self, shard_id: str, effects: Effects) -> None: ...

    def close(self) -> None: ...


class AwsShardStore:
    """The embedded mode's S3 checkpoints and sinks (async aiobotocore clients), driven from kclpy's
    synchronous callbacks through one event loop that lives as long as the process."""

    def __init__(
        self, settings: Settings, resources: Callable[[], Any], clients: Callable[[], AioClients]
    ) -> None:
        self._settings = settings
        self._resources = resources  # resolved on first use: the daemon may start us before AWS answers
        self._new_clients = clients
        self._runner: asyncio.Runner | None = None
        self._clients: AioClients | None = None
        self._sinks: Sinks | None = None
        self._checkpoints: S3Checkpoints | None = None
        self._clocks: DynamoShardClocks | None = None
        self._fleet: FleetExchange | None = None

    def _open(self) -> tuple[asyncio.Runner, Sinks, S3Checkpoints]:
        if self._runner is None or self._sinks is None or self._checkpoints is None:
            resources = self._resources()
            runner = asyncio.Runner()
            clients = self._new_clients()
            runner.run(clients.__aenter__())
            self._runner, self._clients = runner, clients
            self._sinks = Sinks(clients, self._settings, resources)
            self._checkpoints = S3Checkpoints(clients["s3"], resources.bucket, self._settings)
            self._clocks = DynamoShardClocks(
                clients["dynamodb"], resources.shard_clocks_table, self._settings.stream_name
            )
            shapes = S3FleetShapes(clients["s3"], resources.bucket, self._settings)
            self._fleet = FleetExchange(shapes, self._settings.fleet_shape_every_s)
        return self._runner, self._sinks, self._checkpoints

    # --- ShardClocks: the shards' event time in DynamoDB -------------------------------------------

    def _shard_clocks(self) -> tuple[asyncio.Runner, DynamoShardClocks]:
        runner, _, _ = self._open()
        assert self._clocks is not None
        return runner, self._clocks

    def publish(self, shard_id: str, event_ms: int) -> None:
        runner, clocks = self._shard_clocks()
        runner.run(clocks.publish(shard_id, event_ms))

    def others(self, shard_id: str, within_s: float) -> list[tuple[int, bool]]:
        runner, clocks = self._shard_clocks()
        return runner.run(clocks.others(shard_id, within_s))

    def forget(self, shard_id: str) -> None:
        runner, clocks = self._shard_clocks()
        runner.run(clocks.forget(shard_id))

    def load(self, shard_id: str) -> Checkpoint | None:
        runner, _, checkpoints = self._open()
        return runner.run(checkpoints.load(shard_id))

    def inherit(self, shard_id: str) -> ShardCore | None:
        runner, _, checkpoints = self._open()
        return runner.run(self._inherit(shard_id, checkpoints))

    async def _inherit(self, shard_id: str, checkpoints: S3Checkpoints) -> ShardCore | None:
        assert self._clients is not None
        kinesis = self._clients["kinesis"]
        info: ShardInfo | None = None
        args: dict[str, Any] = {"StreamName": self._settings.stream_name}
        while info is None:
            resp = await kinesis.list_shards(**args)
            info = next((ShardInfo.from_api(s) for s in resp["Shards"] if s["ShardId"] == shard_id), None)
            token = resp.get("NextToken")
            if not token:
                break
            args = {"NextToken": token}
        if info is None or not info.parents:
            return None
        # The KCL starts a child only after each parent checkpointed SHARD_END, which our processor does
        # after storing the parent's final snapshot: these snapshots are complete.
        parents = [await checkpoints.load(parent) for parent in info.parents]
        inherited = [split(parent.core, info.owns) for parent in parents if parent is not None]
        log.info(
            "child shard continues from its parents",
            extra={"shard_id": shard_id, "parents": list(info.parents), "found": len(inherited)},
        )
        return merge(inherited) if inherited else None

    def save(self, shard_id: str, sequence_number: str | None, core: ShardCore, ended: bool) -> None:
        runner, _, checkpoints = self._open()
        runner.run(checkpoints.save(shard_id, sequence_number, core, ended))

    def exchange_fleet(self, shard_id: str, core: ShardCore) -> None:
        runner, _, _ = self._open()
        if self._fleet is not None:
            runner.run(self._fleet.exchange(shard_id, core))

    def send(self, shard_id: str, effects: Effects) -> None:
        runner, sinks, _ = self._open()
        runner.run(sinks.send(shard_id, effects))

    def close(self) -> None:
        runner, clients = self._runner, self._clients
        self._runner = self._clients = self._sinks = self._checkpoints = self._clocks = None
        self._fleet = None
        if runner is None:
            return
        try:
            if clients is not None:
                runner.run(clients.__aexit__(None, None, None))
        finally:
            runner.close()


def _position(sequence_number: str, sub_sequence_number: Any) -> tuple[int, int]:
    """Where a record sits in its shard. Sequence numbers are decimal strings of any length."""
    return int(sequence_number), int(sub_sequence_number or 0)


def _numeric(sequence_number: Any) -> int | None:
    """A lease checkpoint as a number; None for the KCL's sentinels (TRIM_HORIZON, LATEST, ...)."""
    if isinstance(sequence_number, str) and sequence_number.isdigit():
        return int(sequence_number)
    return None


class KclShardProcessor(RecordProcessorBase):  # type: ignore[misc]  # kclpy is untyped
    """amazon-kclpy v3 record processor for one shard; the daemon calls it from a single thread."""

    def __init__(
        self,
        settings: Settings,
        store: ShardStore,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        clocks: ShardClocks | None = None,
    ) -> None:
        self._settings = settings
        self._store = store
        # The shards' event time across processes (None: a silent shard waits for its next event).
        self._clocks = clocks
        self._last_read_at = clock()  # the last batch with records (or the start)
        self._time = OwnTime(log)  # this shard's own event time, apart from a followed one
        self._published = (-1, -math.inf)  # (event time, when) last published
        self._others: list[tuple[int, bool]] = []
        self._others_at = -math.inf
        self._clock_failures = 0
        self._millis_behind = 0  # the daemon's millisBehindLatest of the last batch
        self._clock = clock
        self._sleep = sleep
        self.shard_id: str | None = None
        self.core: ShardCore | None = None
        self._applied: tuple[int, int] | None = None  # newest record reflected in `core`
        self._applied_seq: str | None = None  # its sequence number, stored with the snapshot
        self._unsaved = False  # records applied since the snapshot in S3
        self._delivered: tuple[str, int] | None = None  # the last record the daemon handed over
        self._kcl_at: tuple[str, int] | None = None  # the last KCL checkpoint made
        self._since_checkpoint = 0
        self._last_checkpoint = 0.0
        self._last_beat = -math.inf
        self.records_skipped = 0
        self.records_failed = 0  # records applying failed on, kept as dead letters
        # CloudWatch EMF on stderr (never stdout: that is the daemon's channel), every metrics_every_s.
        self.metrics = Registry(
            {"Service": "processor", "Stream": settings.stream_name},
            [
                core_source(lambda: self.core),
                lambda: [
                    Sample("RecordsFailed", self.records_failed),
                    Sample("MillisBehindLatest", self._millis_behind),
                    Sample("QuietShards", int(self._time.following)),
                ],
            ],
        )
        self._last_metrics = clock()

    # --- the v3 interface -----------------------------------------------------------------------

    def initialize(self, initialize_input: Any) -> None:
        shard_id = str(initialize_input.shard_id)
        self.shard_id = shard_id
        with self._fatal("initialize"):
            checkpoint = self._store.load(shard_id)
            if checkpoint is None:
                # A new shard; a child of a split or merge continues from its parents' state.
                inherited = self._store.inherit(shard_id)
                self.core = inherited if inherited is not None else ShardCore(core_config(self._settings))
                state_seq = None
            else:
                self.core = checkpoint.core
                state_seq = checkpoint.sequence_number
            self._store.exchange_fleet(shard_id, self.core)
            self._applied_seq = state_seq
            self._unsaved = False
            self._applied = None if state_seq is None else (int(state_seq), _WHOLE_RECORD)
            self._last_checkpoint = self._clock()
            lease_seq = initialize_input.sequence_number
            log.info(
                "shard initialized",
                extra={
                    "shard_id": shard_id,
                    "lease_checkpoint": lease_seq,
                    "state_checkpoint": state_seq,
                    "shard_ended": checkpoint is not None and checkpoint.shard_ended,
                },
            )
            lease_at = _numeric(lease_seq)
            if lease_at is not None and (state_seq is None or int(state_seq) < lease_at):
                # Only possible if the snapshot was lost or overwritten by an older one: the KCL will
                # not deliver the records in between, so the stock misses them. Say so loudly.
                log.error(
                    "the state in S3 is behind the KCL lease checkpoint; records between them are missing",
                    extra={"shard_id": shard_id, "lease": lease_seq, "state": state_seq},
                )
            self._beat()

    def process_records(self, process_records_input: Any) -> None:
        with self._fatal("processRecords"):
            core = self._active_core()
            records: Sequence[Any] = process_records_input.records
            skipped = 0
            for record in records:
                position = _position(record.sequence_number, record.sub_sequence_number)
                if self._applied is not None and position <= self._applied:
                    skipped += 1  # already in the restored state: the S3 snapshot was ahead of the lease
                    continue
                # The daemon has unpacked KPL aggregates already (sub-sequence numbers); one that
                # fails its checksum comes through as a plain record, and is rejected whole here.
                ref = record.sequence_number if not position[1] else f"{record.sequence_number}/{position[1]}"
                apply_record(core, record.binary_data, ref, record.partition_key)
                self._applied = position
                self._applied_seq = record.sequence_number
                self._unsaved = True
            if records:
                last = records[-1]
                self._delivered = (last.sequence_number, int(last.sub_sequence_number or 0))
            if skipped:
                self.records_skipped += skipped
                log.info(
                    "records already in the state skipped",
                    extra={"shard_id": self.shard_id, "count": skipped},
                )
            self._send(core)
            behind = process_records_input.millis_behind_latest
            self._millis_behind = int(behind or 0)
            self._keep_time(core, bool(records), behind)
            self._since_checkpoint += len(records)
            self._beat()
            if self._clock() - self._last_metrics >= self._settings.metrics_every_s:
                self._last_metrics = self._clock()
                emit_emf(self.metrics)
            if self._due():
                self._checkpoint(process_records_input.checkpointer)

    def lease_lost(self, lease_lost_input: Any) -> None:
        # Another worker owns the shard now and resumes from the last checkpoint; anything after it
        # is redone there, so the state here is dropped, never stored or checkpointed.
        log.info("lease lost", extra={"shard_id": self.shard_id, "applied": self._applied_seq})
        self._drop()

    def shard_ended(self, shard_ended_input: Any) -> None:
        with self._fatal("shardEnded"):
            core = self._active_core()
            self._send(core)
            self._store.save(self._shard(), self._applied_seq, core, True)
            self._unsaved = False
            # No sequence number: the KCL records SHARD_END, which lets the child shards start.
            if not self._kcl_checkpoint(shard_ended_input.checkpointer, None, None):
                raise RuntimeError("could not checkpoint the end of the shard")
            log.info("shard ended", extra={"shard_id": self.shard_id, "sequence_number": self._applied_seq})
            clocks, shard = self._clocks, self._shard()
            if clocks is not None:
                self._clock_call(lambda: clocks.forget(shard))
            emit_emf(self.metrics)
            self._drop()

    def shutdown_requested(self, shutdown_requested_input: Any) -> None:
        with self._fatal("shutdownRequested"):
            if self.core is None:
                return
            self._checkpoint(shutdown_requested_input.checkpointer, final=True)
            emit_emf(self.metrics)

    # --- internals ------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _fatal(self, action: str) -> Iterator[None]:
        """kclpy reports any exception as a finished action; exiting is the only way not to."""
        try:
            yield
        except ShardTakenOver as exc:
            # A zombie's write refused (docs/durability.md): the new owner's state stands; this one's goes.
            log.warning(
                "another worker owns this shard now; exiting without storing this worker's state",
                extra={"shard_id": self.shard_id, "action": action, "error": str(exc)},
            )
            self._drop()
            raise SystemExit(1) from None
        except Exception:
            log.exception(
                "record processor failed; exiting so the shard restarts from its last checkpoint",
                extra={"shard_id": self.shard_id, "action": action},
            )
            raise SystemExit(1) from None

    def _shard(self) -> str:
        if self.shard_id is None:
            raise RuntimeError("the daemon sent a message before initialize")
        return self.shard_id

    def _active_core(self) -> ShardCore:
        if self.core is None:
            raise RuntimeError(f"no state for shard {self.shard_id}: not initialized, or the lease was lost")
        return self.core

    def _drop(self) -> None:
        self.core = None
        self._applied = self._delivered = None

    def _send(self, core: ShardCore) -> None:
        effects = core.drain()
        self.records_failed += len(effects.failed)
        if effects:
            self._store.send(self._shard(), effects)

    def _keep_time(self, core: ShardCore, read: bool, millis_behind: Any) -> None:
        """Publish how far this shard's own events have come; once the shard has read everything
        and nothing for `idle_shard_patience_s`, move its event time to `idle_shard_lag_s` behind the
        other shards' (`follow`: those still trading, published within the patience and a
        publishing interval), as the embedded reader does with the shards it holds, so a store alone
        in its shard whose tills stop is judged while the outage lasts."""
        clocks, settings, now = self._clocks, self._settings, self._clock()
        windows = core.state.windows
        if clocks is None or windows is None or not windows.started:
            return
        shard = self._shard()
        if read:
            self._last_read_at = now
            self._time.read(windows.newest_ms)
        published_ms, published_at = self._published
        own = self._time.own_ms
        if (
            own is not None
            and own > published_ms
            and now - published_at >= settings.shard_clock_every_s
            and self._clock_call(lambda: clocks.publish(shard, own))
        ):
            self._published = (own, now)
        lag_ms = settings.idle_shard_lag_s * 1000
        if (
            read
            or millis_behind != 0
            or lag_ms <= 0
            or now - self._last_read_at < settings.idle_shard_patience_s
        ):
            return
        if now - self._others_at >= settings.shard_clock_every_s:
            self._others_at = now  # a failed read waits its turn too, not hammering DynamoDB
            found: list[list[tuple[int, bool]]] = []
            within_s = settings.idle_shard_patience_s + settings.shard_clock_every_s
            if self._clock_call(lambda: found.append(clocks.others(shard, within_s))):
                self._others = found[0]
        clock = follow(self._others)
        if clock is not None and clock - lag_ms > windows.newest_ms:
            self._time.followed(shard, windows.newest_ms, clock - lag_ms)
            core.advance_watermark(clock - lag_ms)
            self._send(core)

    def _clock_call(self, call: Callable[[], object]) -> bool:
        """The shard clocks are advisory: a failure is logged (once a run of them) and processing goes on."""
        try:
            call()
        except Exception as exc:
            if not self._clock_failures:
                log.warning(
                    "shard clocks unavailable; a silent shard waits for its next event",
                    extra={"shard_id": self.shard_id, "error": repr(exc)[:300]},
                )
            self._clock_failures += 1
            return False
        if self._clock_failures:
            log.info("shard clocks back", extra={"shard_id": self.shard_id, "failures": self._clock_failures})
            self._clock_failures = 0
        return True

    def _due(self) -> bool:
        settings = self._settings
        if self._since_checkpoint >= settings.checkpoint_every_records:
            return True
        pending = self._unsaved or self._delivered != self._kcl_at
        return pending and self._clock() - self._last_checkpoint >= settings.checkpoint_every_s

    def _checkpoint(self, checkpointer: Any, final: bool = False) -> None:
        """Store the snapshot, then (and only then) tell the KCL how far the shard is done."""
        core = self._active_core()
        self._send(core)
        if self._unsaved:
            self._store.save(self._shard(), self._applied_seq, core, False)
            self._unsaved = False
            self._store.exchange_fleet(self._shard(), core)
        delivered = self._delivered
        if final or delivered != self._kcl_at:
            # Every delivered record is at or before the snapshot (applied, or skipped as already in it).
            seq, sub = delivered if delivered is not None else (None, None)
            if self._kcl_checkpoint(checkpointer, seq, sub):
                self._kcl_at = delivered
        self._since_checkpoint = 0
        self._last_checkpoint = self._clock()
        log.info(
            "checkpoint",
            extra={"shard_id": self.shard_id, "sequence_number": self._applied_seq, "kcl": self._kcl_at},
        )

    def _kcl_checkpoint(self, checkpointer: Any, seq: str | None, sub: int | None) -> bool:
        """Checkpoint with the daemon; True when it took. Giving up is safe: S3 is ahead of the lease."""
        for attempt in range(CHECKPOINT_ATTEMPTS):
            try:
                checkpointer.checkpoint(seq, sub)
                return True
            except CheckpointError as exc:
                error = str(exc.value)
                if error == LEASE_GONE:
                    log.info("lease moved on; not checkpointing", extra={"shard_id": self.shard_id})
                    return False
                if error not in RETRYABLE_CHECKPOINT_ERRORS:
                    log.error(
                        "KCL checkpoint failed", extra={"shard_id": self.shard_id, "error": error, "seq": seq}
                    )
                    return False
                if attempt == CHECKPOINT_ATTEMPTS - 1:
                    log.warning(
                        "KCL checkpoint still failing; trying again at the next checkpoint",
                        extra={"shard_id": self.shard_id, "error": error, "attempts": CHECKPOINT_ATTEMPTS},
                    )
                    return False
                self._sleep(backoff_s(attempt, CHECKPOINT_BACKOFF_S))
        return False

    def _beat(self) -> None:
        """Touch the heartbeat the container's health check reads (shared by a task's processors)."""
        now = self._clock()
        if now - self._last_beat < HEARTBEAT_EVERY_S:
            return
        self._last_beat = now
        try:
            Path(self._settings.health_file).touch()
        except OSError as exc:
            log.warning(
                "cannot touch the heartbeat file", extra={"path": str(exc.filename), "error": str(exc)}
            )


# --- the entry point ------------------------------------------------------------------------------


def claim_stdout() -> IO[str]:
    """Keep the real stdout for the protocol alone; fd 1 and sys.stdout now lead to stderr."""
    sys.stdout.flush()
    protocol_fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return os.fdopen(protocol_fd, "w", encoding="utf-8", newline="\n")


def leave_signals_to_the_daemon() -> None:
    """A SIGINT or SIGTERM sent to the whole process group (Ctrl-C, some init systems) would kill us
    mid-batch; the daemon answers it with shutdownRequested and then closes our stdin, which ends us."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)


def serve_daemon(processor: KclShardProcessor, protocol: IO[str]) -> None:
    """Speak the MultiLangDaemon's protocol on stdin and `protocol` until the daemon closes stdin."""
    kcl.KCLProcess(processor, input_file=sys.stdin, output_file=protocol, error_file=sys.stderr).run()
