"""One shard lifecycle under both shells: every transition (assigned and restored, records, quiet,
checkpoint timing, shard ended, shutdown) is driven through the embedded reader (a GetRecords loop
over a scripted Kinesis) and through the KCL record processor (the daemon's messages), with the same
ports in memory, and must come out the same. Lease loss, which only the KCL has, and the crash
property are checked on the lifecycle itself. No sockets."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from config import Settings, core_config
from foundation.aws.lineage import ShardInfo
from processors.checkpoints import Checkpoint
from processors.core import ShardCore
from processors.kcl_processor import KclShardProcessor
from processors.shard_clocks import PacedClocks
from processors.shard_lifecycle import Delivered, ShardLifecycle, ShardRecord
from processors.shard_worker import ShardWorker
from tests.unit.test_kcl_processor import (
    MINUTE,
    SHARD,
    STORE,
    T0,
    Clock,
    Journal,
    MemoryClocks,
    MemoryStore,
    ScriptedCheckpointer,
    count,
    empty,
    initialize,
    message,
    records,
    sale,
    sale_at,
    seq,
)

log = logging.getLogger("tests.shard_lifecycle")


class Shell(Protocol):
    """A shell as the tests drive it: its transport's callbacks, in the lifecycle's terms."""

    name: str
    core: ShardCore | None

    def assign(self, lease: str = "TRIM_HORIZON") -> None: ...

    def deliver(self, *items: tuple[int, bytes]) -> None: ...

    def quiet(self, behind: int = 0) -> None: ...

    def end(self) -> None: ...

    def stop(self) -> None: ...

    def close(self) -> None: ...


class KclShell:
    """The KCL record processor, sent the MultiLangDaemon's messages as kclpy decodes them."""

    name = "kcl"

    def __init__(
        self, settings: Settings, store: MemoryStore, clock: Clock, clocks: MemoryClocks | None
    ) -> None:
        self.processor = KclShardProcessor(settings, store, clock=clock, sleep=lambda _: None, clocks=clocks)
        self.checkpointer = ScriptedCheckpointer(store.journal)

    @property
    def core(self) -> ShardCore | None:
        return self.processor.core

    def assign(self, lease: str = "TRIM_HORIZON") -> None:
        initialize(lease).dispatch(self.checkpointer, self.processor)

    def deliver(self, *items: tuple[int, bytes]) -> None:
        records(*items).dispatch(self.checkpointer, self.processor)

    def quiet(self, behind: int = 0) -> None:
        empty(behind).dispatch(self.checkpointer, self.processor)

    def end(self) -> None:
        message({"action": "shardEnded"}).dispatch(self.checkpointer, self.processor)

    def stop(self) -> None:
        message({"action": "shutdownRequested"}).dispatch(self.checkpointer, self.processor)

    def close(self) -> None:
        self.processor.close()


class ScriptedKinesis:
    """GetRecords answered with the responses a test serves, one a poll; each `serve` returns when
    the reader has dealt with the response and polls again (or has stopped)."""

    def __init__(self) -> None:
        self.iterators: list[dict[str, Any]] = []
        self._responses: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._polled = asyncio.Event()

    async def get_shard_iterator(self, **args: Any) -> dict[str, Any]:
        self.iterators.append(args)
        return {"ShardIterator": "iterator"}

    async def get_records(self, ShardIterator: str, Limit: int) -> dict[str, Any]:
        self._polled.set()
        return await self._responses.get()

    async def serve(self, response: dict[str, Any] | None, reader: asyncio.Task[None]) -> None:
        self._polled.clear()
        if response is not None:
            await self._responses.put(response)
        polled = asyncio.ensure_future(self._polled.wait())
        await asyncio.wait([polled, reader], return_when=asyncio.FIRST_COMPLETED)
        polled.cancel()
        if reader.done():
            reader.result()  # a failure of the reader is the test's


class EmbeddedShell:
    """The embedded reader: a lifecycle assigned as the stream processor assigns it, then its
    GetRecords loop (ShardWorker) over a scripted Kinesis, on an event loop of its own."""

    name = "embedded"

    def __init__(
        self, settings: Settings, store: MemoryStore, clock: Clock, clocks: MemoryClocks | None
    ) -> None:
        self._loop = asyncio.Runner()
        paced = None
        if clocks is not None:
            every = settings.processor.shard_clock_every_s
            paced = PacedClocks(clocks, every, settings.processor.idle_shard_patience_s + every, log, clock)
        self.lifecycle = ShardLifecycle(
            SHARD, settings, core_config(settings), store, log, clocks=paced, clock=clock
        )
        self.kinesis: ScriptedKinesis | None = None
        self._settings = settings
        self._reader: asyncio.Task[None] | None = None
        self._stop: asyncio.Event | None = None

    @property
    def core(self) -> ShardCore | None:
        return self.lifecycle.core

    def assign(self, lease: str = "TRIM_HORIZON") -> None:
        async def start() -> None:
            await self.lifecycle.assign()
            self.kinesis = ScriptedKinesis()
            self._stop = asyncio.Event()
            worker = ShardWorker(self.kinesis, self.lifecycle, self._settings)
            self._reader = asyncio.create_task(worker.run(self._stop))
            await self.kinesis.serve(None, self._reader)

        self._loop.run(start())

    def _serve(self, items: tuple[tuple[int, bytes], ...], behind: int = 0, more: bool = True) -> None:
        assert self.kinesis is not None
        assert self._reader is not None
        response = {
            "Records": [{"Data": data, "SequenceNumber": seq(i), "PartitionKey": STORE} for i, data in items],
            "MillisBehindLatest": behind,
            "NextShardIterator": "iterator" if more else None,
        }
        self._loop.run(self.kinesis.serve(response, self._reader))

    def deliver(self, *items: tuple[int, bytes]) -> None:
        self._serve(items)

    def quiet(self, behind: int = 0) -> None:
        self._serve((), behind)

    def end(self) -> None:
        self._serve((), more=False)  # a closed shard read to its end: no next iterator

    def stop(self) -> None:
        assert self._stop is not None
        self._stop.set()
        self._serve(())

    def close(self) -> None:
        if self._reader is not None and not self._reader.done():
            self._reader.cancel()
        self._loop.close()


SHELLS = {"kcl": KclShell, "embedded": EmbeddedShell}


@pytest.fixture(params=sorted(SHELLS))
def shell_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def journal() -> Journal:
    return []


def settings_with(tmp_path: Path, **groups: dict[str, Any]) -> Settings:
    base: dict[str, dict[str, Any]] = {
        "checkpoints": {"every_records": 1, "every_s": 60},
        "ops": {"health_file": str(tmp_path / "beat")},
        "processor": {"poll_interval_s": 0.001, "max_poll_interval_s": 0.001, "fleet_shape_every_s": 0},
    }
    for group, members in groups.items():
        base[group] = {**base.get(group, {}), **members}
    return Settings(**base)


@pytest.fixture
def make_shell(shell_kind: str, clock: Clock) -> Iterator[Any]:
    made: list[Shell] = []

    def make(settings: Settings, store: MemoryStore, clocks: MemoryClocks | None = None) -> Shell:
        shell: Shell = SHELLS[shell_kind](settings, store, clock, clocks)
        made.append(shell)
        return shell

    yield make
    for shell in made:
        shell.close()


def stored(journal: Journal) -> list[tuple[Any, ...]]:
    """What the ports saw (loads, sends, saves), without the transport's acknowledgements."""
    return [e for e in journal if e[0] != "checkpoint"]


def acknowledged(journal: Journal) -> list[tuple[Any, ...]]:
    return [e for e in journal if e[0] == "checkpoint"]


# --- assigned and restored ---------------------------------------------------------------------------


def test_records_are_applied_and_their_effects_sent_before_the_state_is_stored(
    make_shell: Any, journal: Journal, tmp_path: Path
) -> None:
    store = MemoryStore(journal)
    shell = make_shell(settings_with(tmp_path), store)
    shell.assign()
    shell.deliver((1, count(1, 8)), (2, sale(2, 3)), (3, b"nope"))
    assert stored(journal) == [
        ("load", SHARD),
        ("send", 1, 2, 1),  # 8 - 3 = 5 is at the threshold: one request; two archived; one rejected
        ("save", seq(3), False),
    ]
    if shell.name == "kcl":  # acknowledged only after the state is stored
        assert journal[-1] == ("checkpoint", seq(3), 0)
    assert store.checkpoint is not None
    assert store.checkpoint.core.inventory() == {STORE: {"tea": 5}}


def test_a_restored_shard_goes_on_after_its_snapshot_and_skips_what_it_holds(
    make_shell: Any, journal: Journal, tmp_path: Path
) -> None:
    settings = settings_with(tmp_path)
    core = ShardCore(core_config(settings))
    for i, data in ((1, count(1, 30)), (2, sale(2)), (3, sale(3))):
        core.apply(data, seq(i))
    store = MemoryStore(journal, Checkpoint(SHARD, seq(3), core))
    shell = make_shell(settings, store)
    shell.assign(seq(1))  # the KCL's lease lags the snapshot
    if isinstance(shell, EmbeddedShell):  # the reader asks Kinesis for what follows the snapshot
        assert shell.kinesis is not None
        assert shell.kinesis.iterators[0]["StartingSequenceNumber"] == seq(3)
    # Delivered again from behind the snapshot (the KCL's at-least-once): 2 and 3 are in it already.
    shell.deliver((2, sale(2)), (3, sale(3)), (4, sale(4, 5)))
    assert store.checkpoint is not None
    assert store.checkpoint.core.inventory() == {STORE: {"tea": 30 - 1 - 1 - 5}}
    assert store.checkpoint.core.stats.events_read == 4
    assert store.checkpoint.core.stats.duplicates_ignored == 0


def _store_outside(owns: range) -> str:
    """A store whose partition key hashes outside `owns`."""
    for i in range(1000):
        store = f"store-{i:03d}"
        if int.from_bytes(hashlib.md5(store.encode()).digest(), "big") not in owns:
            return store
    raise AssertionError("no store outside the range")


def test_a_new_child_shard_starts_from_its_parents_state_cut_to_its_range(
    make_shell: Any, journal: Journal, tmp_path: Path
) -> None:
    settings = settings_with(tmp_path)
    key = int.from_bytes(hashlib.md5(STORE.encode()).digest(), "big")
    half = 2**127
    start, end = (0, half - 1) if key < half else (half, 2**128 - 1)
    other = _store_outside(range(start, end + 1))
    parent = ShardCore(core_config(settings))
    parent.apply(count(1, 30), seq(1))
    parent.apply(count(2, 7).replace(STORE.encode(), other.encode()), seq(2))
    store = MemoryStore(journal)
    store.parents = {"shardId-000000000001": Checkpoint("shardId-000000000001", seq(2), parent, True)}
    # Two parents (a merge), one of which left no state.
    store.info = ShardInfo(SHARD, ("shardId-000000000001", "shardId-000000000002"), start, end)
    shell = make_shell(settings, store)
    shell.assign()
    assert shell.core is not None
    assert shell.core.inventory() == {STORE: {"tea": 30}}  # the other store went to the other child
    shell.deliver((3, sale(3, 4)))
    assert store.checkpoint is not None
    assert store.checkpoint.core.inventory() == {STORE: {"tea": 26}}
    assert store.lineage_asked == [SHARD]


def test_a_shard_with_a_snapshot_never_asks_for_its_parents(
    make_shell: Any, journal: Journal, tmp_path: Path
) -> None:
    settings = settings_with(tmp_path)
    store = MemoryStore(journal, Checkpoint(SHARD, seq(1), ShardCore(core_config(settings))))
    store.info = ShardInfo(SHARD, ("shardId-000000000001",), 0, 2**128 - 1)
    make_shell(settings, store).assign(seq(1))
    assert store.lineage_asked == []


# --- checkpoint timing -------------------------------------------------------------------------------


def test_checkpoints_follow_the_record_count_and_the_time_when_something_is_pending(
    make_shell: Any, journal: Journal, tmp_path: Path, clock: Clock
) -> None:
    shell = make_shell(settings_with(tmp_path, checkpoints={"every_records": 3}), MemoryStore(journal))
    shell.assign()
    shell.deliver((1, count(1, 50)), (2, sale(2)))
    assert [e for e in stored(journal) if e[0] == "save"] == []
    shell.deliver((3, sale(3)), (4, sale(4)))  # 4 records since the last checkpoint
    assert [e for e in stored(journal) if e[0] == "save"] == [("save", seq(4), False)]
    journal.clear()
    clock.now += 3600
    shell.quiet()  # time is up, but nothing new: nothing to store
    assert journal == []
    shell.deliver((5, sale(5)))  # new, and time is up
    assert stored(journal) == [("send", 0, 1, 0), ("save", seq(5), False)]
    journal.clear()
    shell.deliver((6, sale(6)))
    clock.now += 60
    shell.quiet()  # a quiet poll stores what was read since
    assert stored(journal) == [("send", 0, 1, 0), ("save", seq(6), False)]


# --- quiet ---------------------------------------------------------------------------------------------


def test_a_quiet_shard_follows_the_other_shards_event_time_once_caught_up_and_patient(
    make_shell: Any, journal: Journal, tmp_path: Path, clock: Clock
) -> None:
    settings = settings_with(
        tmp_path,
        checkpoints={"every_records": 1000, "every_s": 3600},
        processor={"idle_shard_patience_s": 10, "shard_clock_every_s": 5},
    )
    clocks = MemoryClocks(clock, {"shard-b": T0 + 120 * MINUTE, "shard-c": T0 + 119 * MINUTE})
    shell = make_shell(settings, MemoryStore(journal), clocks)
    shell.assign()
    shell.deliver(*((m, sale_at(m)) for m in range(60)))  # the store trades for an hour
    assert shell.core is not None
    assert clocks.times[SHARD] == T0 + 59 * MINUTE  # its own time, published for the others
    shell.quiet()  # quiet for less than the patience: a writer may be a moment behind
    clock.now += 10
    shell.quiet(behind=5_000)  # not caught up: its records are on their way
    assert shell.core.event_clock_ms() == T0 + 59 * MINUTE
    shell.quiet()
    assert shell.core.event_clock_ms() == T0 + 109 * MINUTE  # the middle (119), less the 10-minute lag
    assert clocks.times[SHARD] == T0 + 59 * MINUTE  # a followed time is not its own: not published
    clock.now += 5
    shell.deliver((60, sale_at(121)))  # trade is back
    clock.now += 5
    shell.deliver((61, sale_at(122)))
    assert clocks.times[SHARD] == T0 + 122 * MINUTE
    assert shell.core.stats.late_events == 0


# --- shard ended, shutdown --------------------------------------------------------------------------


def test_the_end_of_a_shard_stores_the_final_state_marked_ended_and_forgets_its_clock(
    make_shell: Any, journal: Journal, tmp_path: Path, clock: Clock
) -> None:
    clocks = MemoryClocks(clock, {})
    store = MemoryStore(journal)
    shell = make_shell(settings_with(tmp_path, checkpoints={"every_records": 100}), store, clocks)
    shell.assign()
    shell.deliver((1, count(1, 30)), (2, sale(2)))
    assert clocks.times[SHARD] == T0 + 2000
    journal.clear()
    shell.end()
    assert stored(journal) == [("save", seq(2), True)]
    if shell.name == "kcl":  # no sequence number: the KCL records SHARD_END, and the children start
        assert acknowledged(journal) == [("checkpoint", None, None)]
    assert store.checkpoint is not None
    assert store.checkpoint.shard_ended
    assert store.checkpoint.core.inventory() == {STORE: {"tea": 29}}
    assert SHARD not in clocks.times


def test_shutdown_sends_stores_what_is_new_and_acknowledges(
    make_shell: Any, journal: Journal, tmp_path: Path
) -> None:
    store = MemoryStore(journal)
    shell = make_shell(settings_with(tmp_path, checkpoints={"every_records": 100}), store)
    shell.assign()
    shell.deliver((1, count(1, 30)), (2, sale(2)))
    assert [e[0] for e in journal] == ["load", "send"]
    journal.clear()
    shell.stop()
    assert stored(journal) == [("save", seq(2), False)]
    if shell.name == "kcl":
        assert acknowledged(journal) == [("checkpoint", seq(2), 0)]
    assert store.checkpoint is not None
    assert not store.checkpoint.shard_ended


# --- the lifecycle itself: lease lost, and a crash anywhere ----------------------------------------------


def lifecycle_for(tmp_path: Path, store: MemoryStore, **groups: dict[str, Any]) -> ShardLifecycle:
    settings = settings_with(tmp_path, **groups)
    return ShardLifecycle(SHARD, settings, core_config(settings), store, log, clock=Clock())


def batch(*items: tuple[int, bytes]) -> list[ShardRecord]:
    return [(data, seq(i), 0, STORE) for i, data in items]


async def test_a_lost_lease_stores_and_acknowledges_nothing_and_takes_no_more_records(
    journal: Journal, tmp_path: Path
) -> None:
    store = MemoryStore(journal)
    lifecycle = lifecycle_for(tmp_path, store, checkpoints={"every_records": 100})
    acks: list[Delivered | None] = []

    async def ack(position: Delivered | None) -> bool:
        acks.append(position)
        return True

    await lifecycle.assign()
    await lifecycle.records(batch((1, count(1, 30))), 0, ack)
    lifecycle.lease_lost()
    await lifecycle.shutdown(ack)  # the shell stops: there is nothing of this worker's to store
    assert [e[0] for e in journal] == ["load", "send"]
    assert (lifecycle.core, store.checkpoint, acks) == (None, None, [])
    with pytest.raises(RuntimeError, match="the lease was lost"):
        await lifecycle.records(batch((2, sale(2))), 0, ack)


async def test_a_shard_end_the_transport_does_not_take_is_an_error(journal: Journal, tmp_path: Path) -> None:
    lifecycle = lifecycle_for(tmp_path, MemoryStore(journal))

    async def refuse(position: Delivered | None) -> bool:
        return False

    await lifecycle.assign()
    with pytest.raises(RuntimeError, match="end of the shard"):
        await lifecycle.shard_ended(refuse)


EVENTS = [count(0, 40)] + [sale(i, 1 + i % 3) for i in range(1, 30)]


@hypothesis_settings(max_examples=40, deadline=None)
@given(
    cuts=st.lists(st.integers(1, len(EVENTS) - 1), max_size=6, unique=True),
    every_records=st.integers(1, 8),
    crash_after=st.integers(0, 8),
)
def test_a_crash_anywhere_resumes_to_the_same_stock_and_never_acknowledges_past_the_state(
    tmp_path_factory: pytest.TempPathFactory, cuts: list[int], every_records: int, crash_after: int
) -> None:
    """Batches cut anywhere, checkpoints every few records, the worker gone after some batch: the
    transport's position is never past the stored state, and a new owner, delivered everything
    again from the transport's position (at least once), ends with the stock of one core that read
    every record once."""
    tmp_path = tmp_path_factory.mktemp("crash")
    records_all = list(enumerate(EVENTS))
    bounds = [0, *sorted(cuts), len(records_all)]
    batches = [records_all[a:b] for a, b in itertools.pairwise(bounds)]
    store = MemoryStore([])
    acked: list[int] = []  # the record index the transport took, in order

    async def ack(position: Delivered | None) -> bool:
        if position is None:
            return True  # nothing delivered to this owner: the position stays where it was
        assert store.checkpoint is not None
        assert store.checkpoint.sequence_number is not None
        assert int(position[0]) <= int(store.checkpoint.sequence_number)  # never past the state
        acked.append((int(position[0]) - int(seq(0))) // 10)
        return True

    async def run() -> dict[str, dict[str, int]]:
        first = lifecycle_for(tmp_path, store, checkpoints={"every_records": every_records})
        await first.assign()
        for taken in batches[: crash_after + 1]:
            await first.records(batch(*taken), 0, ack)
        # The worker is gone without a word; the next owner starts from what was stored.
        resume = acked[-1] + 1 if acked else 0
        second = lifecycle_for(tmp_path, store, checkpoints={"every_records": every_records})
        await second.assign()
        await second.records(batch(*records_all[resume:]), 0, ack)
        await second.shutdown(ack)
        assert second.core is not None
        return second.core.inventory()

    whole = ShardCore(core_config(settings_with(tmp_path)))
    for i, data in records_all:
        whole.apply(data, seq(i))
    assert asyncio.run(run()) == whole.inventory()


async def test_after_the_end_nothing_follows(journal: Journal, tmp_path: Path) -> None:
    store = MemoryStore(journal)
    lifecycle = lifecycle_for(tmp_path, store, checkpoints={"every_records": 100})
    await lifecycle.assign()
    await lifecycle.records(batch((1, count(1, 30))), 0)
    await lifecycle.shard_ended()
    journal.clear()
    await lifecycle.shutdown()  # the end stored and acknowledged everything: nothing more to do
    assert journal == []
    with pytest.raises(RuntimeError, match="has ended"):
        await lifecycle.records(batch((2, sale(2))), 0)
