"""The warm start's pure parts: how many days, which shard takes which store, and a core built from an
archive of JSON objects (read by DuckDB, no AWS) that is the core of a shard that applied the same
events live."""

from __future__ import annotations

import itertools
import random
from dataclasses import replace
from pathlib import Path

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from config import Settings
from foundation.aws.lineage import ShardInfo
from foundation.contract import alert_kind, format_ts
from foundation.errors import UsageError
from history.warm_start import ArchiveReader, build_core, default_days, needed_days, plan_shards
from processors.core import CoreConfig, ShardCore
from processors.core.detectors import DetectorConfig
from processors.core.processor import decode_record

T0 = 1_785_571_200_000  # 2026-08-01T08:00Z
MIN = 60_000
DAY = 24 * 60 * MIN
TOP = 2**128 - 1


def test_the_default_reaches_as_far_back_as_the_core_remembers_a_store() -> None:
    config = CoreConfig()
    assert needed_days(config) == config.detection.full_weeks * 7 + 1 == 22
    assert needed_days(replace(config, detection=DetectorConfig(full_weeks=5))) == 36
    # Without a detector the forecast's week of hours of the week is what is needed.
    assert needed_days(replace(config, detection=DetectorConfig(kind="off"))) == 8
    # Stock is a running sum since a store's last stock take: read what the core would still hold.
    assert default_days(config) == 35
    assert default_days(replace(config, store_retention_ms=10 * DAY)) == 22
    assert default_days(replace(config, store_retention_ms=0)) is None


def shards_of(cuts: list[int]) -> list[ShardInfo]:
    bounds = [0, *sorted(set(cuts)), TOP + 1]
    return [
        ShardInfo(f"shardId-{i:012d}", (), low, high - 1)
        for i, (low, high) in enumerate(itertools.pairwise(bounds))
        if high > low
    ]


@given(
    cuts=st.lists(st.integers(min_value=1, max_value=TOP), max_size=6),
    stores=st.dictionaries(st.from_regex(r"[A-Za-z0-9._-]{1,12}", fullmatch=True), st.integers(1, 50)),
)
def test_every_store_goes_to_the_one_shard_its_hash_key_falls_in(
    cuts: list[int], stores: dict[str, int]
) -> None:
    shards = shards_of(cuts)
    jobs = plan_shards(shards, stores)
    assert [j.shard_id for j in jobs] == [s.shard_id for s in shards]
    placed = [store for job in jobs for store in job.stores]
    assert sorted(placed) == sorted(stores)  # each store exactly once
    for job, shard in zip(jobs, shards, strict=True):
        assert all(shard.owns(store) for store in job.stores)
        assert job.events == sum(stores[s] for s in job.stores)


def test_one_shard_or_one_clear_error() -> None:
    shards = shards_of([TOP // 2])
    stores = {f"store-{i:03d}": 10 for i in range(20)}
    (only,) = plan_shards(shards, stores, "shardId-000000000001")
    assert only.stores
    assert set(only.stores) == {s for s in stores if shards[1].owns(s)}
    with pytest.raises(UsageError, match=r"shard shardId-9 is not an open shard .*shardId-000000000000"):
        plan_shards(shards, stores, "shardId-9")


def fleet_events(days: int, seed: int = 3) -> list[tuple[int, bytes]]:
    """A few stores' trade, every kind of event the contract has, with times a store never repeats."""
    rng = random.Random(seed)
    out: list[tuple[int, bytes]] = []
    for s in range(3):
        store = f"store-{s}"
        ts = T0 + s * 1000
        out.append((ts, _ev(store, "zone", ts, type="store", timezone="Europe/Berlin", name="Mitte")))
        catalog = {"type": "product", "product_id": "p0", "name": "milk", "price": 1.2}
        out.append((ts + 1, _ev(store, "cat", ts + 1, **catalog)))
        for d in range(days):
            start = T0 + d * DAY + s * 1000
            for p in range(3):
                ts = start + 6 * 60 * MIN + p
                out.append((ts, _ev(store, f"c{d}-{p}", ts, type="count", product_id=f"p{p}", count=25)))
            for i in range(120):
                ts = start + 8 * 60 * MIN + i * 5 * MIN + rng.randrange(60_000)
                kind = "refund" if i % 29 == 0 else "sale"
                body = {"type": kind, "product_id": f"p{i % 3}", "quantity": 1 + i % 2, "unit_price": 2.5}
                out.append((ts, _ev(store, f"s{d}-{i}", ts, transaction_id=f"t{d}-{i}", **body)))
            ts = start + 20 * 60 * MIN
            delivery = {"type": "restock", "product_id": "p1", "quantity": 9, "truck_id": "k"}
            out.append((ts, _ev(store, f"r{d}", ts, **delivery)))
        ts = T0 + (days - 1) * DAY + 21 * 60 * MIN + s
        feedback = {"type": "feedback", "verdict": "missed", "note": "till down", "by": "ops"}
        window = {"window_start": format_ts(ts - 60 * MIN), "window_end": format_ts(ts - 45 * MIN)}
        out.append((ts, _ev(store, "fb", ts, **feedback, **window)))
    out.sort(key=lambda e: e[0])
    return out


def _ev(store: str, eid: str, ts: int, **fields: object) -> bytes:
    return orjson.dumps({"event_id": eid, "store_id": store, "ts": format_ts(ts), **fields, "extra": 1})


def archive(root: Path, records: list[bytes], seed: int = 5) -> Path:
    """The records as the embedded Firehose keeps them: JSON lines in objects by arrival hour, in an
    order that is not event time, with a repeat (delivery is at least once)."""
    shuffled = [*records, records[7]]
    random.Random(seed).shuffle(shuffled)
    folder = root / "events" / "2026" / "08" / "09" / "10"
    folder.mkdir(parents=True)
    for n in range(0, len(shuffled), 400):
        (folder / f"part-{n}").write_bytes(b"".join(r + b"\n" for r in shuffled[n : n + 400]))
    return root


def reader(root: Path) -> ArchiveReader:
    settings = Settings(
        history={"tables_catalog": str(root / "no-tables.db"), "archive_mirror": str(root / "none")}
    )
    return ArchiveReader(settings, str(root), "archive")


def test_archived_rows_are_the_events_they_were(tmp_path: Path) -> None:
    events = fleet_events(2)
    source = reader(archive(tmp_path, [raw for _, raw in events]))
    span = source.span(days=30)
    assert span is not None
    assert span.newest_ms == events[-1][0]
    assert span.events == len(events)  # the repeat counted once
    read = [raw for batch in source.events(span.store_events, span.since_ms) for raw in batch]
    # Every kind of event decodes to what it was (unknown extra fields aside), in event-time order.
    assert [decode_record(raw) for raw in read] == [decode_record(raw) for _, raw in events]


def test_the_span_counts_back_from_the_newest_event(tmp_path: Path) -> None:
    events = fleet_events(3)
    source = reader(archive(tmp_path, [raw for _, raw in events]))
    span = source.span(days=1)
    assert span is not None
    assert span.since_ms == events[-1][0] - DAY
    # The last day, and before it each store's time zone and catalog (said once, on its first day).
    setup = [
        raw for ts, raw in events if ts < span.since_ms and orjson.loads(raw)["type"] in {"store", "product"}
    ]
    assert len(setup) == 6
    assert span.events == sum(1 for ts, _ in events if ts >= span.since_ms) + len(setup)
    read = [raw for batch in source.events(span.store_events, span.since_ms) for raw in batch]
    assert len(read) == span.events
    assert [decode_record(raw) for raw in read[: len(setup)]] == [decode_record(raw) for raw in setup]


def test_a_core_built_from_the_archive_is_the_core_of_a_shard_that_ran_live(tmp_path: Path) -> None:
    events = fleet_events(4)
    history = [raw for ts, raw in events if ts < T0 + 3 * DAY]
    later = [raw for ts, raw in events if ts >= T0 + 3 * DAY]
    source = reader(archive(tmp_path, history))
    span = source.span(days=30)
    assert span is not None
    warm, counted, applied = build_core(CoreConfig(), source.events(span.store_events, span.since_ms))
    assert applied == len(history)
    assert counted["restock_request"] > 0  # the history's requests: counted, not sent

    live = ShardCore(CoreConfig())
    for raw in history:
        live.apply(raw)
    live.drain()
    assert warm.inventory() == live.inventory()
    assert warm.open_requests() == live.open_requests()

    # The stream then holds the last archived day again (its retention) and what came after: the
    # repeats change nothing, and the new events raise what the live shard raises.
    retained = [raw for ts, raw in events if T0 + 2 * DAY <= ts < T0 + 3 * DAY]
    for raw in retained:
        assert not warm.apply(raw)
    assert not warm.drain()
    raised = {}
    for name, core in (("warm", warm), ("live", live)):
        for raw in later:
            core.apply(raw)
        core.finish()
        effects = core.drain()
        raised[name] = sorted((alert_kind(a), a.alert_id) for a in [*effects.requests, *effects.alerts])
    assert raised["warm"] == raised["live"]
    assert raised["live"]
    assert warm.inventory() == live.inventory()


def test_the_kcl_shell_reads_a_warm_checkpoint_from_trim_horizon_and_skips_what_it_held(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A warm checkpoint has no sequence number: the KCL record processor applies every record the
    daemon delivers from TRIM_HORIZON, and the dedup memory skips the ones the archive held."""
    from processors.checkpoints import Checkpoint
    from processors.kcl_processor import KclShardProcessor
    from tests.unit.test_kcl_processor import (
        SHARD,
        STORE,
        Clock,
        MemoryStore,
        ScriptedCheckpointer,
        count,
        initialize,
        records,
        sale,
    )

    archived = [count(1, 20), sale(2, 3), sale(3, 2)]
    core, _, _ = build_core(CoreConfig(), [archived])
    journal: list[tuple[object, ...]] = []
    store = MemoryStore(journal, Checkpoint(SHARD, None, core))
    settings = Settings(
        checkpoints={"every_records": 1, "every_s": 60}, ops={"health_file": str(tmp_path / "b")}
    )
    processor = KclShardProcessor(settings, store, clock=Clock(), sleep=lambda s: None)
    initialize("TRIM_HORIZON").dispatch(ScriptedCheckpointer(journal), processor)
    records((1, archived[0]), (2, archived[1]), (3, archived[2]), (4, sale(4, 4))).dispatch(
        ScriptedCheckpointer(journal), processor
    )
    assert store.checkpoint is not None
    assert store.checkpoint.core.inventory() == {STORE: {"tea": 20 - 3 - 2 - 4}}
    assert store.checkpoint.core.stats.duplicates_ignored == 3
    sends = [entry for entry in journal if entry[0] == "send"]
    assert sends == [("send", 0, 1, 0)]  # only the new sale archived; nothing requested yet (11 left)
    assert "behind the KCL lease" not in caplog.text


def test_the_history_tables_give_the_same_events_as_the_objects(tmp_path: Path) -> None:
    """The Iceberg events table (pyiceberg on SQLite, warehouse on disk) read as the warm start reads it:
    the same records, in the same order, as the JSON objects they were appended from."""
    from history.tables import Tables, append_lines

    events = fleet_events(2)
    settings = Settings(
        history={
            "tables_catalog": str(tmp_path / "catalog.db"),
            "tables_warehouse": str(tmp_path / "warehouse"),
            "archive_mirror": str(tmp_path / "none"),
        }
    )
    append_lines(Tables(settings), "events", [raw for _, raw in events])
    tables = ArchiveReader(settings, None, "tables")
    objects = reader(archive(tmp_path / "objects", [raw for _, raw in events]))
    spans = [tables.span(30), objects.span(30)]
    assert spans[0] == spans[1]
    assert spans[0] is not None
    read = [
        [raw for batch in source.events(spans[0].store_events, spans[0].since_ms) for raw in batch]
        for source in (tables, objects)
    ]
    assert [decode_record(raw) for raw in read[0]] == [decode_record(raw) for raw in read[1]]
    assert len(read[0]) == len(events)


class _Stream:
    """GetShardIterator/GetRecords of a stream whose oldest record per shard arrived at a given time
    (None: the shard holds nothing), after some empty pages of trimmed records."""

    def __init__(self, oldest: dict[str, int | None], empty_pages: int = 0) -> None:
        self.oldest = oldest
        self.empty_pages = empty_pages

    def get_shard_iterator(self, StreamName: str, ShardId: str, ShardIteratorType: str) -> dict[str, str]:
        assert ShardIteratorType == "TRIM_HORIZON"
        return {"ShardIterator": f"{ShardId}|0"}

    def get_records(self, ShardIterator: str, Limit: int) -> dict[str, object]:
        import datetime as dt

        shard, page = ShardIterator.split("|")
        arrived = self.oldest[shard]
        if arrived is None:
            return {"Records": [], "NextShardIterator": f"{shard}|{int(page) + 1}", "MillisBehindLatest": 0}
        if int(page) < self.empty_pages:
            return {"Records": [], "NextShardIterator": f"{shard}|{int(page) + 1}", "MillisBehindLatest": 5}
        when = dt.datetime.fromtimestamp(arrived / 1000, tz=dt.UTC)
        return {"Records": [{"ApproximateArrivalTimestamp": when}], "MillisBehindLatest": 0}


def test_a_stream_that_starts_after_the_archive_ends_is_said_not_hidden() -> None:
    from history.warm_start import GAP_SLACK_MS, stream_gap

    newest = 1_785_571_200_000
    hour = 3_600_000
    # The stream still holds records from before the archive's end: nothing is lost between them
    assert stream_gap(_Stream({"a": newest - hour, "b": newest + hour}), "s", ["a", "b"], newest) is None
    assert stream_gap(_Stream({"a": newest + GAP_SLACK_MS}), "s", ["a"], newest) is None
    assert stream_gap(_Stream({"a": None}), "s", ["a"], newest) is None  # an empty stream: nothing to miss
    # The stream's oldest record arrived two hours after the archive's newest event: said, with both times
    gap = stream_gap(_Stream({"a": newest + 2 * hour, "b": None}, empty_pages=2), "s", ["a", "b"], newest)
    assert gap is not None
    assert "arrived at 2026-08-01T10:00:00.000Z" in gap
    assert "newest event (2026-08-01T08:00:00.000Z)" in gap
