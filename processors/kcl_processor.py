"""The KCL record processor: ``shelfstream kcl-processor``, one process per leased shard.

The KCL MultiLangDaemon (Java) leases shards across tasks and starts one of these per shard, speaking
JSON lines over the process's stdin/stdout (amazon-kclpy's v3 interface). Each of the daemon's
messages becomes a call on the shard's lifecycle (processors/shard_lifecycle.py), the same one the
embedded shard reader (processors/shard_worker.py) drives, with the same S3 checkpoints, so a shard
can move between the two modes. The KCL's checkpoint is the lifecycle's acknowledgement: made only
after the S3 snapshot is stored, so it never passes the state in S3.

kclpy calls us synchronously; the lifecycle and the AWS clients are async, so each message runs to
its end on one event loop that lives as long as the process.

Any failure to load, send or store ends the process with status 1: the daemon then exits too and
its task restarts from the last checkpoint, instead of acknowledging records whose effects were lost.

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
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import IO, Any, Final, Protocol, TypeVar

from config import Settings, core_config
from foundation.aws.clients import AioClients
from foundation.aws.lineage import ShardInfo, list_shards
from foundation.errors import ShelfstreamError
from foundation.metrics import Registry, Sample, emit_emf
from foundation.retry import backoff_s
from processors.checkpoints import Checkpoint, S3Checkpoints, SaveReport, ShardTakenOver
from processors.core import Effects, ShardCore
from processors.fleet_shapes import FleetExchange, S3FleetShapes
from processors.metrics import core_source
from processors.shard_clocks import DynamoShardClocks, PacedClocks, ShardClocks
from processors.shard_lifecycle import Acknowledge, Delivered, ShardLifecycle, ShardPorts, ShardRecord
from processors.sinks import Sinks

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

T = TypeVar("T")


class ShardStore(ShardPorts, Protocol):
    """The lifecycle's ports for one shard, and the connections behind them to close at the end."""

    async def close(self) -> None: ...


class AwsShardStore:
    """S3 checkpoints, the sinks, the fleet's shapes, the stream's shard list and the shard clocks
    table, on clients opened at first use (the daemon may start us before AWS answers)."""

    def __init__(
        self, settings: Settings, resources: Callable[[], Any], clients: Callable[[], AioClients]
    ) -> None:
        self._settings = settings
        self._resources = resources
        self._new_clients = clients
        self._clients: AioClients | None = None
        self._sinks: Sinks | None = None
        self._checkpoints: S3Checkpoints | None = None
        self._clocks: DynamoShardClocks | None = None
        self._fleet: FleetExchange | None = None

    async def _open(self) -> tuple[AioClients, Sinks, S3Checkpoints]:
        if self._clients is None or self._sinks is None or self._checkpoints is None:
            resources = self._resources()
            clients = self._new_clients()
            await clients.__aenter__()
            self._clients = clients
            self._sinks = Sinks(clients, self._settings, resources)
            self._checkpoints = S3Checkpoints(clients["s3"], resources.bucket, self._settings)
            self._clocks = DynamoShardClocks(
                clients["dynamodb"], resources.shard_clocks_table, self._settings.aws.stream_name
            )
            shapes = S3FleetShapes(clients["s3"], resources.bucket, self._settings)
            self._fleet = FleetExchange(shapes, self._settings.processor.fleet_shape_every_s)
        return self._clients, self._sinks, self._checkpoints

    # --- ShardClocks: the shards' event time in DynamoDB -------------------------------------------

    async def _shard_clocks(self) -> DynamoShardClocks:
        await self._open()
        assert self._clocks is not None
        return self._clocks

    async def publish(self, shard_id: str, event_ms: int) -> None:
        await (await self._shard_clocks()).publish(shard_id, event_ms)

    async def others(self, shard_id: str, within_s: float) -> list[tuple[int, bool]]:
        return await (await self._shard_clocks()).others(shard_id, within_s)

    async def forget(self, shard_id: str) -> None:
        await (await self._shard_clocks()).forget(shard_id)

    # --- ShardPorts ----------------------------------------------------------------------------------

    async def load(self, shard_id: str) -> Checkpoint | None:
        _, _, checkpoints = await self._open()
        return await checkpoints.load(shard_id)

    async def lineage(self, shard_id: str) -> ShardInfo | None:
        clients, _, _ = await self._open()
        shards = await list_shards(clients["kinesis"], self._settings.aws.stream_name)
        return next((info for info in shards if info.shard_id == shard_id), None)

    async def save(
        self, shard_id: str, sequence_number: str | None, core: ShardCore, ended: bool
    ) -> SaveReport:
        _, _, checkpoints = await self._open()
        return await checkpoints.save(shard_id, sequence_number, core, ended)

    async def exchange_fleet(self, shard_id: str, core: ShardCore) -> None:
        await self._open()
        if self._fleet is not None:
            await self._fleet.exchange(shard_id, core)

    async def send(self, shard_id: str, effects: Effects) -> None:
        _, sinks, _ = await self._open()
        await sinks.send(shard_id, effects)

    async def close(self) -> None:
        clients = self._clients
        self._clients = self._sinks = self._checkpoints = self._clocks = None
        self._fleet = None
        if clients is not None:
            await clients.__aexit__(None, None, None)


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
        self._clock = clock
        self._sleep = sleep
        self._loop = asyncio.Runner()  # the one event loop of the store's clients, for the process
        self._millis_behind = 0  # the daemon's millisBehindLatest of the last batch
        self.shard_id: str | None = None
        self.lifecycle: ShardLifecycle | None = None
        self._last_beat = -math.inf
        # CloudWatch EMF on stderr (never stdout: that is the daemon's channel), every metrics_every_s.
        self.metrics = Registry(
            {"Service": "processor", "Stream": settings.aws.stream_name},
            [
                core_source(lambda: self.core),
                lambda: [
                    Sample("RecordsFailed", self.records_failed),
                    Sample("MillisBehindLatest", self._millis_behind),
                    Sample("QuietShards", int(self.lifecycle is not None and self.lifecycle.following)),
                ],
            ],
        )
        self._last_metrics = clock()

    @property
    def core(self) -> ShardCore | None:
        return self.lifecycle.core if self.lifecycle is not None else None

    @property
    def records_skipped(self) -> int:
        return self.lifecycle.records_skipped if self.lifecycle is not None else 0

    @property
    def records_failed(self) -> int:
        """Records applying failed on, kept as dead letters."""
        return self.lifecycle.records_failed if self.lifecycle is not None else 0

    def close(self) -> None:
        """Close the store's connections and the event loop (the daemon has closed our stdin)."""
        try:
            self._loop.run(self._store.close())
        finally:
            self._loop.close()

    # --- the v3 interface -----------------------------------------------------------------------

    def initialize(self, initialize_input: Any) -> None:
        shard_id = str(initialize_input.shard_id)
        self.shard_id = shard_id
        with self._fatal("initialize"):
            settings, clocks = self._settings, None
            if self._clocks is not None:
                every_s = settings.processor.shard_clock_every_s
                within_s = settings.processor.idle_shard_patience_s + every_s
                clocks = PacedClocks(self._clocks, every_s, within_s, log, self._clock)
            lifecycle = ShardLifecycle(
                shard_id,
                self._settings,
                core_config(self._settings),
                self._store,
                log,
                clocks=clocks,
                clock=self._clock,
            )
            self.lifecycle = lifecycle
            checkpoint = self._run(lifecycle.assign())
            state_seq = lifecycle.sequence_number
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
            lifecycle = self._lifecycle()
            # The daemon has unpacked KPL aggregates already (sub-sequence numbers); one that fails its
            # checksum comes through as a plain record, and is rejected whole by the lifecycle.
            batch: list[ShardRecord] = [
                (
                    record.binary_data,
                    record.sequence_number,
                    int(record.sub_sequence_number or 0),
                    record.partition_key,
                )
                for record in process_records_input.records
            ]
            behind = process_records_input.millis_behind_latest
            self._millis_behind = int(behind or 0)
            ack = self._acknowledger(process_records_input.checkpointer)
            self._run(lifecycle.records(batch, behind, ack))
            self._beat()
            if self._clock() - self._last_metrics >= self._settings.ops.metrics_every_s:
                self._last_metrics = self._clock()
                emit_emf(self.metrics)

    def lease_lost(self, lease_lost_input: Any) -> None:
        # Another worker owns the shard now and resumes from the last checkpoint; anything after it
        # is redone there, so the state here is dropped, never stored or checkpointed.
        if self.lifecycle is not None:
            self.lifecycle.lease_lost()

    def shard_ended(self, shard_ended_input: Any) -> None:
        with self._fatal("shardEnded"):
            lifecycle = self._lifecycle()
            # The end's KCL checkpoint has no sequence number: the KCL records SHARD_END, which lets
            # the child shards start.
            self._run(lifecycle.shard_ended(self._acknowledger(shard_ended_input.checkpointer)))
            emit_emf(self.metrics)

    def shutdown_requested(self, shutdown_requested_input: Any) -> None:
        with self._fatal("shutdownRequested"):
            if self.core is None:
                return
            self._run(self._lifecycle().shutdown(self._acknowledger(shutdown_requested_input.checkpointer)))
            emit_emf(self.metrics)

    # --- internals ------------------------------------------------------------------------------

    def _run(self, step: Coroutine[Any, Any, T]) -> T:
        return self._loop.run(step)

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
            if self.lifecycle is not None:
                self.lifecycle.lease_lost()
            raise SystemExit(1) from None
        except Exception:
            log.exception(
                "record processor failed; exiting so the shard restarts from its last checkpoint",
                extra={"shard_id": self.shard_id, "action": action},
            )
            raise SystemExit(1) from None

    def _lifecycle(self) -> ShardLifecycle:
        if self.lifecycle is None:
            raise RuntimeError("the daemon sent a message before initialize")
        return self.lifecycle

    def _acknowledger(self, checkpointer: Any) -> Acknowledge:
        """The lifecycle's acknowledgement: the daemon's checkpointer of this message."""

        async def acknowledge(position: Delivered | None) -> bool:
            seq, sub = position if position is not None else (None, None)
            return self._kcl_checkpoint(checkpointer, seq, sub)

        return acknowledge

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
            Path(self._settings.ops.health_file).touch()
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
