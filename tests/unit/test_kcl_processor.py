"""The KCL record processor's handling of the MultiLangDaemon's messages, with the shard's store in
memory and a scripted checkpointer (no sockets). The run over the wire: tests/integration."""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import logging
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from amazon_kclpy import dispatch, kcl
from amazon_kclpy.checkpoint_error import CheckpointError

from config import Settings, core_config
from foundation.aws.lineage import ShardInfo
from foundation.contract import format_ts
from processors.checkpoints import Checkpoint, ShardTakenOver
from processors.core import Effects, RejectedRecord, ShardCore
from processors.kcl_processor import CHECKPOINT_ATTEMPTS, KclShardProcessor
from processors.sinks import Sinks

SHARD = "shardId-000000000007"
STORE = "store-009"
SEQ0 = 49_590_338_271_490_256_608_559_692_538_361_571_095_921_575_989_136_588_898
T0 = 1_785_571_200_000


def seq(i: int) -> str:
    return str(SEQ0 + i * 10)


def sale(i: int, quantity: int = 1) -> bytes:
    return orjson.dumps(
        {
            "type": "sale",
            "event_id": f"e{i}",
            "store_id": STORE,
            "ts": format_ts(T0 + i * 1000),
            "product_id": "tea",
            "quantity": quantity,
            "unit_price": 2.5,
        }
    )


def count(i: int, on_hand: int) -> bytes:
    body = {"type": "count", "event_id": f"e{i}", "store_id": STORE, "ts": format_ts(T0 + i * 1000)}
    return orjson.dumps({**body, "product_id": "tea", "count": on_hand})


def message(payload: dict[str, Any]) -> Any:
    """A daemon message decoded the way kclpy decodes it (records become messages.Record)."""
    return json.loads(json.dumps(payload), object_hook=dispatch.message_decode)


def initialize(sequence_number: str = "TRIM_HORIZON") -> Any:
    return message(
        {"action": "initialize", "shardId": SHARD, "sequenceNumber": sequence_number, "subSequenceNumber": 0}
    )


def records(*items: tuple[int, bytes] | tuple[int, bytes, int]) -> Any:
    """processRecords for (index, data[, sub-sequence number]) items."""
    return message(
        {
            "action": "processRecords",
            "millisBehindLatest": 0,
            "records": [
                {
                    "action": "record",
                    "data": base64.b64encode(item[1]).decode(),
                    "partitionKey": STORE,
                    "sequenceNumber": seq(item[0]),
                    "subSequenceNumber": item[2] if len(item) == 3 else 0,
                    "approximateArrivalTimestamp": T0,
                }
                for item in items
            ],
        }
    )


Journal = list[tuple[Any, ...]]  # what happened, in order, across the store and the checkpointer


class MemoryStore:
    def __init__(self, journal: Journal, checkpoint: Checkpoint | None = None) -> None:
        self.journal = journal
        self.checkpoint = checkpoint
        self.parents: dict[str, Checkpoint] = {}  # the parents' final checkpoints, by shard
        self.info: ShardInfo | None = None  # the shard as the stream lists it
        self.lineage_asked: list[str] = []
        self.fail_save: Exception | None = None
        self.fleet_exchanges: list[str] = []  # shards whose fleet shape was exchanged, in order

    async def load(self, shard_id: str) -> Checkpoint | None:
        self.journal.append(("load", shard_id))
        return self.checkpoint if shard_id == SHARD else self.parents.get(shard_id)

    async def lineage(self, shard_id: str) -> ShardInfo | None:
        self.lineage_asked.append(shard_id)
        return self.info

    async def save(self, shard_id: str, sequence_number: str | None, core: ShardCore, ended: bool) -> None:
        if self.fail_save is not None:
            raise self.fail_save
        # Stored as bytes and read back, as S3 does: later changes to `core` must not leak in.
        self.checkpoint = Checkpoint(shard_id, sequence_number, ShardCore.restore(core.snapshot()), ended)
        self.journal.append(("save", sequence_number, ended))

    async def exchange_fleet(self, shard_id: str, core: ShardCore) -> None:
        self.fleet_exchanges.append(shard_id)

    async def send(self, shard_id: str, effects: Effects) -> None:
        self.journal.append(("send", len(effects.requests), len(effects.archive), len(effects.rejected)))

    async def close(self) -> None:
        self.journal.append(("close",))


class ScriptedCheckpointer:
    """The daemon's answer to each checkpoint request: None (done) or the name of a KCL exception."""

    def __init__(self, journal: Journal, *errors: str | None) -> None:
        self.journal = journal
        self.errors = list(errors)

    def checkpoint(self, sequence_number: str | None = None, sub_sequence_number: int | None = None) -> None:
        self.journal.append(("checkpoint", sequence_number, sub_sequence_number))
        error = self.errors.pop(0) if self.errors else None
        if error is not None:
            raise CheckpointError(error)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def journal() -> Journal:
    return []


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        checkpoints={"every_records": 1, "every_s": 60}, ops={"health_file": str(tmp_path / "beat")}
    )


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def sleeps() -> list[float]:
    return []


def make(settings: Settings, store: MemoryStore, clock: Clock, sleeps: list[float]) -> KclShardProcessor:
    return KclShardProcessor(settings, store, clock=clock, sleep=sleeps.append)


def test_effects_are_sent_and_the_snapshot_stored_before_the_kcl_checkpoint(
    journal: Journal, settings: Settings, clock: Clock, sleeps: list[float], tmp_path: Path
) -> None:
    store = MemoryStore(journal)
    processor = make(settings, store, clock, sleeps)
    initialize().dispatch(ScriptedCheckpointer(journal), processor)
    records((1, count(1, 8)), (2, sale(2, 3)), (3, b"nope")).dispatch(
        ScriptedCheckpointer(journal), processor
    )
    assert journal == [
        ("load", SHARD),
        ("send", 1, 2, 1),  # 8 - 3 = 5 is at the threshold: one request; two archived; one rejected
        ("save", seq(3), False),
        ("checkpoint", seq(3), 0),
    ]
    assert store.checkpoint is not None
    assert store.checkpoint.core.inventory() == {STORE: {"tea": 5}}
    assert (tmp_path / "beat").exists()


def test_checkpoints_follow_the_record_and_time_cadence(
    journal: Journal, tmp_path: Path, clock: Clock, sleeps: list[float]
) -> None:
    settings = Settings(
        checkpoints={"every_records": 3, "every_s": 60}, ops={"health_file": str(tmp_path / "b")}
    )
    processor = make(settings, MemoryStore(journal), clock, sleeps)
    cp = ScriptedCheckpointer(journal)
    initialize().dispatch(cp, processor)
    records((1, count(1, 50)), (2, sale(2))).dispatch(cp, processor)
    assert [e for e in journal if e[0] in {"save", "checkpoint"}] == []
    records((3, sale(3)), (4, sale(4))).dispatch(cp, processor)  # 4 records since the last checkpoint
    assert [e for e in journal if e[0] in {"save", "checkpoint"}] == [
        ("save", seq(4), False),
        ("checkpoint", seq(4), 0),
    ]
    journal.clear()
    clock.now += 3600
    records().dispatch(cp, processor)  # time is up, but nothing new: nothing to store
    records((5, sale(5))).dispatch(cp, processor)  # new, and time is up
    assert journal == [("send", 0, 1, 0), ("save", seq(5), False), ("checkpoint", seq(5), 0)]
    journal.clear()
    records((6, sale(6))).dispatch(cp, processor)
    clock.now += 60
    records().dispatch(cp, processor)  # an empty batch (callProcessRecordsEvenForEmptyRecordList) flushes it
    assert journal == [("send", 0, 1, 0), ("save", seq(6), False), ("checkpoint", seq(6), 0)]


def test_records_at_or_before_the_restored_snapshot_are_skipped(
    journal: Journal, settings: Settings, clock: Clock, sleeps: list[float]
) -> None:
    core = ShardCore(core_config(settings))
    for i, data in ((1, count(1, 30)), (2, sale(2)), (3, sale(3))):
        core.apply(data, seq(i))
    store = MemoryStore(journal, Checkpoint(SHARD, seq(3), core))
    processor = make(settings, store, clock, sleeps)
    cp = ScriptedCheckpointer(journal)
    initialize(seq(1)).dispatch(cp, processor)  # the lease lags the snapshot
    # The KCL delivers again from its own checkpoint: 2 and 3 are in the state already.
    records((2, sale(2)), (3, sale(3)), (4, sale(4, 5))).dispatch(cp, processor)
    assert store.checkpoint is not None
    assert store.checkpoint.core.inventory() == {STORE: {"tea": 30 - 1 - 1 - 5}}
    assert store.checkpoint.core.stats.events_read == 4
    assert store.checkpoint.core.stats.duplicates_ignored == 0
    assert processor.records_skipped == 2
    # Aggregated (KPL) records share a sequence number; the sub-sequence number orders them.
    records((5, sale(5), 0), (5, sale(6), 1)).dispatch(cp, processor)
    records((5, sale(6), 1), (5, sale(7), 2)).dispatch(cp, processor)
    assert store.checkpoint.core.stats.events_read == 7
    assert processor.records_skipped == 3
    assert journal[-1] == ("checkpoint", seq(5), 2)


def test_a_new_child_shard_continues_from_its_parents_state(
    journal: Journal, settings: Settings, clock: Clock, sleeps: list[float]
) -> None:
    parent = ShardCore(core_config(settings))
    parent.apply(count(1, 30), seq(1))
    store = MemoryStore(journal)
    store.parents = {"shardId-000000000001": Checkpoint("shardId-000000000001", seq(1), parent, True)}
    store.info = ShardInfo(SHARD, ("shardId-000000000001", "shardId-000000000002"), 0, 2**128 - 1)
    processor = make(settings, store, clock, sleeps)
    cp = ScriptedCheckpointer(journal)
    initialize().dispatch(cp, processor)
    records(
        (2, sale(2, 4)),
    ).dispatch(cp, processor)
    assert store.lineage_asked == [SHARD]
    assert ("load", "shardId-000000000002") in journal  # a parent without state adds nothing
    assert store.checkpoint is not None
    assert store.checkpoint.core.inventory() == {STORE: {"tea": 26}}


def test_a_shard_with_a_snapshot_does_not_ask_its_parents(
    journal: Journal, settings: Settings, clock: Clock, sleeps: list[float]
) -> None:
    store = MemoryStore(journal, Checkpoint(SHARD, seq(1), ShardCore(core_config(settings))))
    store.info = ShardInfo(SHARD, ("shardId-000000000001",), 0, 2**128 - 1)
    processor = make(settings, store, clock, sleeps)
    initialize(seq(1)).dispatch(ScriptedCheckpointer(journal), processor)
    assert store.lineage_asked == []


def test_a_lease_ahead_of_the_state_is_reported(
    journal: Journal, settings: Settings, clock: Clock, sleeps: list[float], caplog: pytest.LogCaptureFixture
) -> None:
    processor = make(settings, MemoryStore(journal), clock, sleeps)
    with caplog.at_level(logging.ERROR, logger="processors.kcl_processor"):
        initialize(seq(40)).dispatch(ScriptedCheckpointer(journal), processor)
    assert [r.message for r in caplog.records] == [
        "the state in S3 is behind the KCL lease checkpoint; records between them are missing"
    ]


@pytest.mark.parametrize(
    ("errors", "calls", "sleeps_taken", "checkpointed"),
    [
        (["ThrottlingException", "KinesisClientLibDependencyException", None], 3, 2, True),
        (["ShutdownException"], 1, 0, False),  # the lease moved: never retried
        (["InvalidStateException"], 1, 0, False),  # not retryable by the KCL's definition
        (["ThrottlingException"] * CHECKPOINT_ATTEMPTS, CHECKPOINT_ATTEMPTS, CHECKPOINT_ATTEMPTS - 1, False),
    ],
)
def test_checkpoint_errors(
    journal: Journal,
    settings: Settings,
    clock: Clock,
    sleeps: list[float],
    errors: list[str | None],
    calls: int,
    sleeps_taken: int,
    checkpointed: bool,
) -> None:
    processor = make(settings, MemoryStore(journal), clock, sleeps)
    initialize().dispatch(ScriptedCheckpointer(journal), processor)
    cp = ScriptedCheckpointer(journal, *errors)
    records((1, count(1, 30))).dispatch(cp, processor)  # never raises: the batch is done either way
    assert [e for e in journal if e[0] == "checkpoint"] == [("checkpoint", seq(1), 0)] * calls
    assert len(sleeps) == sleeps_taken
    journal.clear()
    # A checkpoint that did not take is tried again at the next one, even with no new records.
    clock.now += 60
    records().dispatch(ScriptedCheckpointer(journal), processor)
    assert journal == ([] if checkpointed else [("checkpoint", seq(1), 0)])


def test_lease_lost_neither_stores_nor_checkpoints(
    journal: Journal, clock: Clock, sleeps: list[float], tmp_path: Path
) -> None:
    settings = Settings(checkpoints={"every_records": 100}, ops={"health_file": str(tmp_path / "b")})
    store = MemoryStore(journal)
    processor = make(settings, store, clock, sleeps)
    cp = ScriptedCheckpointer(journal)
    initialize().dispatch(cp, processor)
    records((1, count(1, 30))).dispatch(cp, processor)
    message({"action": "leaseLost"}).dispatch(cp, processor)
    assert [e[0] for e in journal] == ["load", "send"]
    assert processor.core is None
    assert store.checkpoint is None


def test_shard_end_stores_the_end_then_checkpoints_without_a_sequence_number(
    journal: Journal, settings: Settings, clock: Clock, sleeps: list[float]
) -> None:
    store = MemoryStore(journal)
    processor = make(settings, store, clock, sleeps)
    cp = ScriptedCheckpointer(journal)
    initialize().dispatch(cp, processor)
    records((1, count(1, 30))).dispatch(cp, processor)
    journal.clear()
    message({"action": "shardEnded"}).dispatch(cp, processor)
    assert journal == [("save", seq(1), True), ("checkpoint", None, None)]
    assert store.checkpoint is not None
    assert store.checkpoint.shard_ended


def test_a_shard_end_that_cannot_be_checkpointed_ends_the_process(
    journal: Journal, settings: Settings, clock: Clock, sleeps: list[float]
) -> None:
    # Child shards start only after the parent's SHARD_END checkpoint, so this one must not be lost.
    processor = make(settings, MemoryStore(journal), clock, sleeps)
    initialize().dispatch(ScriptedCheckpointer(journal), processor)
    with pytest.raises(SystemExit) as exited:
        message({"action": "shardEnded"}).dispatch(
            ScriptedCheckpointer(journal, "InvalidStateException"), processor
        )
    assert exited.value.code == 1


@pytest.mark.parametrize("taken_over", [False, True])
def test_a_failed_store_ends_the_process_before_any_checkpoint(
    journal: Journal,
    settings: Settings,
    clock: Clock,
    sleeps: list[float],
    caplog: pytest.LogCaptureFixture,
    taken_over: bool,
) -> None:
    """S3 unreachable, or the snapshot write refused because another worker wrote the shard's
    checkpoint since (then it says so and drops its state): it exits, checkpointing nothing."""
    store = MemoryStore(journal)
    processor = make(settings, store, clock, sleeps)
    initialize().dispatch(ScriptedCheckpointer(journal), processor)
    store.fail_save = ShardTakenOver("shardId-1") if taken_over else ConnectionError("S3 is unreachable")
    with pytest.raises(SystemExit) as exited:
        records((1, count(1, 30))).dispatch(ScriptedCheckpointer(journal), processor)
    assert exited.value.code == 1
    assert [e for e in journal if e[0] == "checkpoint"] == []
    said = [r for r in caplog.records if r.getMessage().startswith("another worker owns this shard now")]
    assert len(said) == int(taken_over)
    assert all(r.levelname == "WARNING" for r in said)
    assert (processor.core is None) == taken_over


def test_shutdown_requested_stores_and_checkpoints(
    journal: Journal, clock: Clock, sleeps: list[float], tmp_path: Path
) -> None:
    settings = Settings(checkpoints={"every_records": 100}, ops={"health_file": str(tmp_path / "b")})
    processor = make(settings, MemoryStore(journal), clock, sleeps)
    cp = ScriptedCheckpointer(journal)
    initialize().dispatch(cp, processor)
    records((1, count(1, 30)), (2, sale(2))).dispatch(cp, processor)
    journal.clear()
    message({"action": "shutdownRequested"}).dispatch(cp, processor)
    assert journal == [("save", seq(2), False), ("checkpoint", seq(2), 0)]


def test_the_protocol_through_kclpy(
    journal: Journal, settings: Settings, clock: Clock, sleeps: list[float]
) -> None:
    """The daemon's lines in, through kclpy's own loop; status and checkpoint lines out."""
    lines = [
        {"action": "initialize", "shardId": SHARD, "sequenceNumber": "TRIM_HORIZON", "subSequenceNumber": 0},
        _records_json((1, count(1, 30)), (2, sale(2))),
        {
            "action": "checkpoint",
            "sequenceNumber": seq(2),
            "subSequenceNumber": 0,
            "error": "ThrottlingException",
        },
        {"action": "checkpoint", "sequenceNumber": seq(2), "subSequenceNumber": 0, "error": None},
        {"action": "shardEnded"},
        {"action": "checkpoint", "sequenceNumber": None, "subSequenceNumber": None, "error": None},
    ]
    stdin = io.StringIO("".join(json.dumps(line) + "\n" for line in lines))
    stdout, stderr = io.StringIO(), io.StringIO()
    processor = make(settings, MemoryStore(journal), clock, sleeps)
    kcl.KCLProcess(processor, input_file=stdin, output_file=stdout, error_file=stderr).run()
    assert [json.loads(line) for line in stdout.getvalue().splitlines() if line.strip()] == [
        {"action": "status", "responseFor": "initialize"},
        {"action": "checkpoint", "sequenceNumber": seq(2), "subSequenceNumber": 0},
        {"action": "checkpoint", "sequenceNumber": seq(2), "subSequenceNumber": 0},
        {"action": "status", "responseFor": "processRecords"},
        {"action": "checkpoint", "sequenceNumber": None, "subSequenceNumber": None},
        {"action": "status", "responseFor": "shardEnded"},
    ]
    assert stderr.getvalue() == ""  # kclpy writes there only when a callback raised


def _records_json(*items: tuple[int, bytes]) -> dict[str, Any]:
    return {
        "action": "processRecords",
        "millisBehindLatest": 0,
        "records": [
            {
                "data": base64.b64encode(data).decode(),
                "partitionKey": STORE,
                "sequenceNumber": seq(i),
                "approximateArrivalTimestamp": T0,
                "subSequenceNumber": 0,
                "action": "record",
            }
            for i, data in items
        ],
    }


class RecordingSinks(Sinks):
    """The real `Sinks.send` routing through every destination, each leaf call recorded instead of sent."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[Any]]] = []
        settings: Any = SimpleNamespace(
            producers=SimpleNamespace(put_base_backoff_s=0.0), prefixes=SimpleNamespace(rejected="rejected/")
        )
        resources = SimpleNamespace(
            bucket="b",
            restock_queue_url="q",
            topic_arn="t",
            archive_firehose="a",
            windows_firehose="w",
            alerts_firehose="al",
        )
        super().__init__(dict.fromkeys(("s3", "sqs", "sns", "firehose")), settings, resources)
        leaves = {
            self.queue: ("send_requests",),
            self.topic: ("publish_alerts",),
            self.firehose: ("archive_alerts", "archive", "archive_windows"),
            self.rejected: ("keep_rejected", "keep_failed"),
        }
        for sink, names in leaves.items():
            for name in names:
                setattr(sink, name, self._recorder(name))

    def _recorder(self, name: str) -> Any:
        async def record(*args: Any) -> None:
            self.calls.append((name, list(args[-1])))

        return record


SAMPLES: dict[str, Any] = {
    "requests": "a-restock-request",
    "alerts": "an-alert",
    "archive": b'{"event":1}',
    "rejected": RejectedRecord("42", "not valid JSON", b"{"),
    "windows": b'{"window":1}',
    "notes": b'{"note":1}',
    "failed": RejectedRecord("43", "KeyError: 'x'", b'{"type":"sale"}'),
}


@pytest.mark.parametrize("field", [f.name for f in dataclasses.fields(Effects)])
async def test_every_kind_of_effect_reaches_a_sink(field: str) -> None:
    # A new kind of effect in the core fails here until Sinks.send (used by both readers) sends it.
    assert field in SAMPLES, f"Effects.{field} is new: send it in processors.sinks.Sinks.send"
    effects = Effects()
    getattr(effects, field).append(SAMPLES[field])
    sinks = RecordingSinks()
    await sinks.send(SHARD, effects)
    sent = [item for _, items in sinks.calls for item in items]
    assert SAMPLES[field] in sent


def test_stray_output_never_reaches_the_protocol_channel(tmp_path: Path) -> None:
    code = (
        "import os, sys\n"
        "from processors.kcl_processor import claim_stdout\n"
        "protocol = claim_stdout()\n"
        "print('a stray print')\n"
        "os.write(1, b'a C library writing to fd 1\\n')\n"
        'protocol.write(\'{"action": "status"}\\n\'); protocol.flush()\n'
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
        check=True,
    )
    assert done.stdout == '{"action": "status"}\n'
    assert "a stray print" in done.stderr
    assert "a C library writing to fd 1" in done.stderr


# --- the shards' clocks: a quiet shard follows the others' event time --------------------------------

MINUTE = 60_000


class MemoryClocks:
    """The shard clocks table in memory, on the test's clock; `fail` makes every call raise, as an
    unreachable DynamoDB."""

    def __init__(self, clock: Clock, times: dict[str, int]) -> None:
        self.clock = clock
        self.times: dict[str, int] = {}
        self.published: dict[str, float] = {}
        self.reads = 0
        self.fail = False
        for shard, t in times.items():
            self.set(shard, t)

    def set(self, shard_id: str, event_ms: int) -> None:
        self.times[shard_id] = event_ms
        self.published[shard_id] = self.clock.now

    async def publish(self, shard_id: str, event_ms: int) -> None:
        if self.fail:
            raise ConnectionError("DynamoDB is unreachable")
        self.set(shard_id, event_ms)

    async def others(self, shard_id: str, within_s: float) -> list[tuple[int, bool]]:
        self.reads += 1
        if self.fail:
            raise ConnectionError("DynamoDB is unreachable")
        now = self.clock.now
        return [(t, now - self.published[s] <= within_s) for s, t in self.times.items() if s != shard_id]

    async def forget(self, shard_id: str) -> None:
        self.times.pop(shard_id, None)


def sale_at(minute: int) -> bytes:
    body = {
        "type": "sale",
        "event_id": f"m{minute}",
        "store_id": STORE,
        "ts": format_ts(T0 + minute * MINUTE),
    }
    return orjson.dumps({**body, "product_id": "tea", "quantity": 1, "unit_price": 2.5})


def gauge(processor: KclShardProcessor, name: str) -> int:
    """A gauge of the processor's metric line (QuietShards: CloudWatch sums it over processes)."""
    (main,) = [r for r in processor.metrics.emf_records(T0) if name in r]
    return int(main[name])


def empty(behind: int = 0) -> Any:
    return message({"action": "processRecords", "millisBehindLatest": behind, "records": []})


def clocked(
    journal: Journal, tmp_path: Path, clock: Clock, clocks: MemoryClocks
) -> tuple[KclShardProcessor, ScriptedCheckpointer]:
    settings = Settings(
        checkpoints={"every_records": 1000, "every_s": 3600},
        ops={"health_file": str(tmp_path / "beat")},
        processor={"idle_shard_patience_s": 10, "shard_clock_every_s": 5},
    )
    processor = KclShardProcessor(
        settings, MemoryStore(journal), clock=clock, sleep=lambda _: None, clocks=clocks
    )
    cp = ScriptedCheckpointer(journal)
    initialize().dispatch(cp, processor)
    records(*((m, sale_at(m)) for m in range(60))).dispatch(cp, processor)  # the store trades for an hour
    return processor, cp


def test_a_quiet_shard_follows_the_middle_of_the_other_shards_clocks(
    journal: Journal, tmp_path: Path, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    """Two other shards (in other processes) reached 2 hours, a third's till clock is a year ahead: once
    this shard has read everything and nothing for the patience, its windows close 10 minutes behind
    the middle of them, so the store's silence is judged while it lasts."""
    caplog.set_level(logging.INFO, logger="processors.kcl_processor")
    year = 365 * 24 * 60 * MINUTE
    clocks = MemoryClocks(
        clock, {"shard-b": T0 + 120 * MINUTE, "shard-c": T0 + 119 * MINUTE, "shard-d": T0 + year}
    )
    processor, cp = clocked(journal, tmp_path, clock, clocks)
    assert processor.core is not None
    windows = processor.core.state.windows
    assert windows is not None
    assert clocks.times[SHARD] == T0 + 59 * MINUTE  # its own event time, published for the others
    closed = windows.closed_idx

    empty().dispatch(cp, processor)  # quiet for less than the patience: a writer may be a moment behind
    clock.now += 10
    empty(behind=5_000).dispatch(cp, processor)  # not caught up: its records are on their way
    assert gauge(processor, "MillisBehindLatest") == 5_000
    assert (windows.closed_idx, windows.newest_ms, clocks.reads) == (closed, T0 + 59 * MINUTE, 0)

    empty().dispatch(cp, processor)
    assert windows.newest_ms == T0 + 110 * MINUTE  # the middle (120 minutes), less the 10-minute lag
    assert gauge(processor, "QuietShards") == 1
    assert windows.closed_idx * windows.pane_ms >= T0 + 105 * MINUTE
    assert clocks.times[SHARD] == T0 + 59 * MINUTE  # what it followed is not its own time: not published
    assert clocks.reads == 1

    clocks.set("shard-b", T0 + 150 * MINUTE)
    clocks.set("shard-c", T0 + 150 * MINUTE)
    clock.now += 1
    empty().dispatch(cp, processor)  # the others' times are read every shard_clock_every_s, not every poll
    assert (clocks.reads, windows.newest_ms) == (1, T0 + 110 * MINUTE)
    clock.now += 5
    empty().dispatch(cp, processor)
    assert (clocks.reads, windows.newest_ms) == (2, T0 + 140 * MINUTE)

    records((61, sale_at(141))).dispatch(cp, processor)  # trade is back
    clock.now += 5
    records((62, sale_at(142))).dispatch(cp, processor)
    assert clocks.times[SHARD] == T0 + 142 * MINUTE
    assert processor.core.stats.late_events == 0
    assert gauge(processor, "QuietShards") == 0
    # Said once a quiet spell, not at every move.
    said = [r.getMessage() for r in caplog.records].count("quiet shard follows the other shards' event time")
    assert said == 1

    message({"action": "shardEnded"}).dispatch(cp, processor)  # an ended shard's time stops: forgotten
    assert SHARD not in clocks.times


def test_unreachable_shard_clocks_leave_a_quiet_shard_waiting_and_the_stream_going(
    journal: Journal, tmp_path: Path, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    clocks = MemoryClocks(clock, {"shard-b": T0 + 120 * MINUTE})
    clocks.fail = True
    with caplog.at_level(logging.INFO, logger="processors.kcl_processor"):
        processor, cp = clocked(journal, tmp_path, clock, clocks)
        for _ in range(3):
            clock.now += 10
            empty().dispatch(cp, processor)
        assert processor.core is not None
        windows = processor.core.state.windows
        assert windows is not None
        assert windows.newest_ms == T0 + 59 * MINUTE  # nothing to follow: it waits for its next event
        assert processor.core.inventory() == {STORE: {"tea": -60}}  # the records were applied all the same
        clocks.fail = False
        clock.now += 10
        empty().dispatch(cp, processor)
    assert windows.newest_ms == T0 + 110 * MINUTE
    assert clocks.times[SHARD] == T0 + 59 * MINUTE
    said = [r.getMessage() for r in caplog.records]
    assert said.count("shard clocks unavailable; a silent shard waits for its next event") == 1
    assert "shard clocks back" in said


def test_a_quiet_shard_follows_the_shards_still_trading_not_another_quiet_one(
    journal: Journal, tmp_path: Path, clock: Clock
) -> None:
    """Three shards: this one and shard-b went quiet (b's time, published 30 s ago, is where its trade
    stopped), shard-c trades on. The middle of b and c would be b, and the two quiet shards would hold
    each other back; the one still trading is followed. With none trading, the middle of them all."""
    clocks = MemoryClocks(clock, {"shard-b": T0 + 20 * MINUTE})
    clock.now += 20
    processor, cp = clocked(journal, tmp_path, clock, clocks)
    assert processor.core is not None
    windows = processor.core.state.windows
    assert windows is not None
    clocks.set("shard-c", T0 + 120 * MINUTE)
    clock.now += 10
    clocks.set("shard-c", T0 + 121 * MINUTE)
    empty().dispatch(cp, processor)
    assert windows.newest_ms == T0 + 111 * MINUTE

    clocks.set("shard-b", T0 + 200 * MINUTE)
    clocks.set("shard-c", T0 + 150 * MINUTE)
    clock.now += 60  # both went quiet since (a replay read to its end): the middle of them all
    empty().dispatch(cp, processor)
    assert windows.newest_ms == T0 + 140 * MINUTE


def test_a_late_sale_after_following_does_not_publish_the_followed_time_as_its_own(
    journal: Journal, tmp_path: Path, clock: Clock
) -> None:
    """The shard followed another to minute 110; a sale stamped minute 100 then arrives (late). The
    shard's event time is still the followed one, which is no shard's data: its published time stays
    where its own events left it, so other quiet shards do not follow a followed time."""
    clocks = MemoryClocks(clock, {"shard-b": T0 + 120 * MINUTE})
    processor, cp = clocked(journal, tmp_path, clock, clocks)
    assert processor.core is not None
    windows = processor.core.state.windows
    assert windows is not None
    clock.now += 10
    empty().dispatch(cp, processor)
    assert windows.newest_ms == T0 + 110 * MINUTE
    clock.now += 5
    records((60, sale_at(100))).dispatch(cp, processor)
    # Behind the followed time, but its store's own window is still open (a silent store's windows
    # close only the idle bound behind the shard's clock): counted on time, not late
    assert processor.core.stats.late_events == 0
    assert clocks.times[SHARD] == T0 + 59 * MINUTE
    clock.now += 5
    records((61, sale_at(111))).dispatch(cp, processor)  # its own trade past the followed time: published
    assert clocks.times[SHARD] == T0 + 111 * MINUTE
