"""The stream processor and the truck dispatcher against the embedded AWS, over the wire."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import boto3
import orjson
import pytest

from config import Settings
from consumers.dispatcher import Dispatcher
from foundation.aws.clients import AioClients
from foundation.aws.provision import Resources, provision
from foundation.clock import ScaledClock
from foundation.contract import RestockRequest, alert_id, decode_alert, encode, format_ts
from processors.checkpoints import S3Checkpoints, ShardTakenOver
from processors.stream_processor import StreamProcessor
from producers.kinesis_writer import KinesisWriter

pytestmark = pytest.mark.integration

T0 = 1_785_571_200_000
SERVICES = ("kinesis", "sqs", "sns", "firehose", "s3")


def event(kind: str, eid: str, store: str, product: str, t: int, **fields: Any) -> bytes:
    body = {"type": kind, "event_id": eid, "store_id": store, "ts": format_ts(T0 + t * 1000)}
    return orjson.dumps({**body, "product_id": product, **fields})


def workload() -> tuple[list[tuple[bytes, str]], dict[str, dict[str, int]]]:
    """Eight stores: a stock take, sales down to a stock-out, a refund; plus bad records and repeats."""
    records: list[tuple[bytes, str]] = []
    expected: dict[str, dict[str, int]] = {}
    for s in range(8):
        store = f"store-{s:03d}"
        records.append((event("count", f"{store}-c", store, "milk", 0, count=8), store))
        for i in range(10):
            records.append(
                (event("sale", f"{store}-s{i}", store, "milk", i + 1, quantity=1, unit_price=1.2), store)
            )
        records.append((event("refund", f"{store}-r", store, "milk", 20, quantity=1, unit_price=1.2), store))
        expected[store] = {"milk": 8 - 10 + 1}
    records.append((records[3][0], records[3][1]))  # a redelivered sale
    records.append((records[5][0], records[5][1]))
    records.append((b"{not json", "store-000"))
    records.append((b'{"type":"sale","event_id":"x","store_id":"store-001"}', "store-001"))
    return records, expected


async def produce(settings: Settings, records: list[tuple[bytes, str]]) -> None:
    async with (
        AioClients(settings, "kinesis") as clients,
        KinesisWriter(clients["kinesis"], settings.aws.stream_name, settings) as writer,
    ):
        for data, key in records:
            await writer.put(data, key)


@contextlib.asynccontextmanager
async def running(settings: Settings, resources: Resources) -> AsyncIterator[StreamProcessor]:
    """The stream processor, caught up with the stream, running until the block ends."""
    stop = asyncio.Event()
    async with AioClients(settings, *SERVICES) as clients:
        processor = StreamProcessor(settings, clients, resources)
        task = asyncio.create_task(processor.run(stop))
        try:
            assert await processor.wait_caught_up(timeout=30)
            yield processor
        finally:
            stop.set()
            await asyncio.wait_for(task, 30)


async def process_until_caught_up(settings: Settings, resources: Resources) -> StreamProcessor:
    async with running(settings, resources) as processor:
        return processor


def s3_lines(s3: Any, bucket: str, prefix: str) -> list[dict[str, Any]]:
    lines = []
    for obj in s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", []):
        body = s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
        lines.extend(json.loads(line) for line in body.splitlines() if line.strip())
    return lines


def take_all(queue_url: str) -> list[dict[str, Any]]:
    """Receive and delete every message on a queue (with attributes)."""
    sqs = boto3.client("sqs")
    messages: list[dict[str, Any]] = []
    while True:
        got = sqs.receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=10, MessageAttributeNames=["All"], WaitTimeSeconds=0
        )
        if not got.get("Messages"):
            return messages
        for message in got["Messages"]:
            messages.append(message)
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])


async def test_processor_keeps_stock_sends_effects_and_checkpoints(
    provisioned: tuple[Settings, Resources],
) -> None:

    settings, resources = provisioned
    settings = settings.replaced(aws={"shard_count": 2})
    records, expected = workload()
    await produce(settings, records)

    processor = await process_until_caught_up(settings, resources)
    assert processor.inventory() == expected
    stats = processor.stats()
    assert stats.events_rejected == 2
    assert stats.duplicates_ignored == 2
    assert len(processor.workers) == 2  # every shard was read

    s3 = boto3.client("s3")
    rejected = s3_lines(s3, resources.bucket, settings.prefixes.rejected)
    assert sorted(r["record"] for r in rejected) == sorted(
        ["{not json", '{"type":"sale","event_id":"x","store_id":"store-001"}']
    )
    assert all(r["reason"] and r["shard_id"].startswith("shardId-") for r in rejected)

    archived = s3_lines(s3, resources.bucket, settings.prefixes.events)
    assert len(archived) == len(records) - 4  # every valid event once, repeats and rejects not
    assert len({a["event_id"] for a in archived}) == len(archived)

    archived_alerts = s3_lines(s3, resources.bucket, settings.prefixes.alerts)
    assert sorted(a["kind"] for a in archived_alerts) == ["out_of_stock"] * 8 + ["restock_request"] * 8

    requests = take_all(resources.restock_queue_url)
    assert all(m["MessageAttributes"]["kind"]["StringValue"] == "restock_request" for m in requests)
    bodies = [decode_alert(m["Body"]) for m in requests]
    assert sorted(b.store_id for b in bodies) == sorted(expected)  # one open request per store and product
    assert all(isinstance(b, RestockRequest) and b.on_hand == 5 for b in bodies)

    inbox = [decode_alert(m["Body"]) for m in take_all(resources.alerts_queue_url)]
    assert sorted(a.store_id for a in inbox) == sorted(expected)  # one out-of-stock per store
    assert {a.on_hand for a in inbox} == {0}  # type: ignore[union-attr]

    # A restart resumes after the checkpoint: nothing is read twice, the state is the same.
    again = await process_until_caught_up(settings, resources)
    assert again.records_read() == 0
    assert again.inventory() == expected
    async with AioClients(settings, "s3") as clients:
        store = S3Checkpoints(clients["s3"], resources.bucket, settings)
        checkpoints = [await store.load(shard) for shard in processor.workers]
    assert all(c is not None and c.sequence_number for c in checkpoints)


@pytest.mark.slow
async def test_dispatcher_delivers_once_and_sends_poison_to_the_dlq(
    provisioned: tuple[Settings, Resources],
) -> None:

    settings, resources = provisioned
    settings = settings.replaced(trucks={"travel_s": 0.0, "count": 2, "visibility_s": 1})
    request = RestockRequest(
        alert_id=alert_id("restock_request", "store-001", "milk", "e9"),
        store_id="store-001",
        ts=format_ts(T0),
        product_id="milk",
        on_hand=3,
        threshold=5,
        requested_quantity=37,
    )
    sqs = boto3.client("sqs")
    for _ in range(2):  # the processor sent it twice (a replay after a crash)
        sqs.send_message(QueueUrl=resources.restock_queue_url, MessageBody=encode(request).decode())
    sqs.send_message(QueueUrl=resources.restock_queue_url, MessageBody="{garbage")

    delivered: list[Any] = []
    stop = asyncio.Event()
    async with AioClients(settings, "kinesis", "sqs") as clients:
        writer = KinesisWriter(clients["kinesis"], settings.aws.stream_name, settings)
        dispatcher = Dispatcher(
            settings,
            clients["sqs"],
            resources.restock_queue_url,
            writer,
            ScaledClock(T0, 1.0),
            on_delivery=delivered.append,
            wait_seconds=1,
        )
        task = asyncio.create_task(dispatcher.run(stop))
        for _ in range(100):
            dlq = sqs.get_queue_attributes(
                QueueUrl=resources.restock_dlq_url, AttributeNames=["ApproximateNumberOfMessages"]
            )
            in_dlq = int(dlq["Attributes"]["ApproximateNumberOfMessages"])
            if dispatcher.stats.deliveries and dispatcher.stats.duplicates_dropped and in_dlq == 1:
                break
            await asyncio.sleep(0.1)
        stop.set()
        await asyncio.wait_for(task, 30)
        await writer.close()
        from tests.integration.conftest import read_all_shards

        stream = await read_all_shards(clients["kinesis"], settings.aws.stream_name)

    assert dispatcher.stats.deliveries == 1
    assert dispatcher.stats.duplicates_dropped == 1
    assert dispatcher.stats.poison_messages == settings.aws.max_receive_count
    restocks = [orjson.loads(r["Data"]) for records in stream.values() for r in records]
    assert len(restocks) == 1
    assert restocks[0]["type"] == "restock"
    assert restocks[0]["quantity"] == 37
    assert restocks[0]["event_id"] == f"delivery-{request.alert_id}"
    assert delivered[0].truck_id.startswith("truck-")
    dead = sqs.receive_message(QueueUrl=resources.restock_dlq_url, WaitTimeSeconds=0)["Messages"]
    assert dead[0]["Body"] == "{garbage"
    left = sqs.get_queue_attributes(
        QueueUrl=resources.restock_queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    assert left == {"ApproximateNumberOfMessages": "0", "ApproximateNumberOfMessagesNotVisible": "0"}


def _shard_of(store: str) -> int:
    """The shard (of two, split evenly) a partition key hashes to, as Kinesis maps it (MD5)."""
    import hashlib

    return int(int.from_bytes(hashlib.md5(store.encode()).digest(), "big") >= 2**127)


def _two_stores() -> tuple[str, str]:
    """A store in each of the two shards."""
    stores = [f"store-{i:03d}" for i in range(40)]
    return next(s for s in stores if _shard_of(s) == 0), next(s for s in stores if _shard_of(s) == 1)


async def _one_store_stops_after_an_hour(settings: Settings) -> tuple[Resources, str]:
    """Two stores in two shards trade for an hour, then only the second for another (on the stream)."""
    resources = provision(settings)
    quiet, busy = _two_stores()
    await produce(settings, _minutes((quiet, busy), range(60)) + _minutes((busy,), range(60, 120)))
    return resources, quiet


def _minutes(stores: tuple[str, ...], minutes: range) -> list[tuple[bytes, str]]:
    """A sale a minute in each store."""
    return [
        (event("sale", f"{store}-{m}", store, "milk", m * 60, quantity=1, unit_price=1.0), store)
        for m in minutes
        for store in stores
    ]


@pytest.mark.slow
async def test_an_idle_shard_follows_the_other_shards_event_time(
    make_settings: Callable[..., Settings], caplog: pytest.LogCaptureFixture
) -> None:
    """Store A's tills stop after an hour while store B, in the other shard, trades on: A's shard has
    nothing to read, but once it has been quiet for the patience (wall clock) its windows still close
    (10 minutes behind B's time), so the outage is judged while it lasts instead of when A trades again."""
    caplog.set_level(logging.INFO, logger="processors.shard_worker")
    settings = make_settings(processor={"idle_shard_patience_s": 0.5})
    resources, quiet = await _one_store_stops_after_an_hour(settings)
    async with running(settings, resources) as processor:
        quiet_shard = next(w for w in processor.workers.values() if quiet in w.core.inventory())
        windows = quiet_shard.core.state.windows
        assert windows is not None
        # B reached minute 119: A's shard follows to minute 109 and closes its windows up to 105 (2
        # min lateness); on its own events alone it would stop at 45.
        for _ in range(100):
            if windows.closed_idx * windows.pane_ms >= T0 + 105 * 60_000:
                break
            await asyncio.sleep(0.1)
        assert windows.closed_idx * windows.pane_ms >= T0 + 105 * 60_000
        followed_ms = windows.newest_ms
        assert followed_ms >= T0 + 109 * 60_000
        assert quiet_shard.own_event_ms() == T0 + 59 * 60_000  # its own trade stopped at minute 59
        # A late batch of A's own (minutes 70-72, behind the time it followed to) is read: A trades
        # again, but what the other shard would follow is A's own time, not the one A moved to.
        read = quiet_shard.status.user_records
        await produce(settings, _minutes((quiet,), range(70, 73)))
        for _ in range(100):
            if quiet_shard.status.user_records >= read + 3:
                break
            await asyncio.sleep(0.1)
        assert quiet_shard.status.user_records == read + 3
        assert windows.newest_ms == followed_ms
        assert quiet_shard.own_event_ms() == T0 + 59 * 60_000
        busy_shard = next(sid for sid in processor.workers if sid != quiet_shard.shard_id)
        assert processor.others_event_ms(busy_shard) == T0 + 59 * 60_000
    assert windows.closed_idx * windows.pane_ms >= T0 + 105 * 60_000
    assert processor.newest_event_ms() == T0 + 119 * 60_000
    follows = [
        r for r in caplog.records if r.getMessage() == "quiet shard follows the other shards' event time"
    ]
    assert [r.shard_id for r in follows] == [quiet_shard.shard_id]  # type: ignore[attr-defined]


@pytest.mark.parametrize("patience_s", [0.0, 120.0])
@pytest.mark.slow
async def test_a_shard_whose_writer_is_behind_is_not_a_silent_store(
    make_settings: Callable[..., Settings], patience_s: float
) -> None:
    """A replay whose writer is behind on one shard: both stores trade for two hours, but A's second
    hour reaches the stream only after B's whole history has been read. Without wall-clock patience
    A's shard, quiet for a moment, follows B's event time and A's second hour arrives late: its
    windows are judged without it, then revised when it comes (within the late bound; before there
    was one, those sales were left out); with the default patience nothing is late or revised."""
    settings = make_settings(processor={"idle_shard_patience_s": patience_s})
    resources, quiet = await _one_store_stops_after_an_hour(settings)
    async with running(settings, resources) as processor:
        await asyncio.sleep(1.5)  # a few empty polls of A's shard, each a chance to follow B
        await produce(settings, _minutes((quiet,), range(60, 120)))
        assert await processor.wait_caught_up(timeout=30)
    quiet_shard = next(w for w in processor.workers.values() if quiet in w.core.inventory())
    late = quiet_shard.core.stats.late_events
    windows = quiet_shard.core.state.windows
    assert windows is not None
    revised = windows.stores[quiet].revisions
    assert late == 0
    assert quiet_shard.core.inventory()[quiet]["milk"] == -120
    if patience_s:
        assert not revised
    else:
        assert revised  # the hazard the patience closes: windows judged before their sales came


def test_an_idle_shard_follows_the_middle_of_the_trading_others_not_one_wild_clock() -> None:
    """One shard whose till clock jumped a year ahead does not drag an idle shard with it, and the
    shards that have gone quiet themselves (their time is where their trade stopped) are left out, so
    two of three shards gone quiet do not hold each other back (`processors.shard_clocks.follow`)."""
    import time
    from types import SimpleNamespace

    processor = StreamProcessor.__new__(StreamProcessor)
    processor._settings = Settings(processor={"idle_shard_patience_s": 10})
    year = 365 * 24 * 3600_000
    now = time.monotonic()
    # (event time, seconds since the shard last read records)
    shards = {"s0": (None, 0), "s1": (T0, 0), "s2": (T0 + 60_000, 1), "s3": (T0 + year, 2), "q": (T0 - 1, 30)}
    processor.workers = {  # type: ignore[assignment]
        sid: SimpleNamespace(
            newest_event_ms=lambda t=t: t,
            own_event_ms=lambda t=t: t,
            status=SimpleNamespace(last_read_at=now - quiet, ended=False),
        )
        for sid, (t, quiet) in shards.items()
    }
    processor.workers["ended"] = SimpleNamespace(  # type: ignore[assignment]
        newest_event_ms=lambda: T0 + 120_000,
        own_event_ms=lambda: T0 + 120_000,
        status=SimpleNamespace(last_read_at=now - 60, ended=True),
    )
    assert processor.others_event_ms("s0") == T0 + 60_000  # the middle of s1, s2, s3 (q is quiet)
    assert processor.others_event_ms("s3") == T0  # the lower middle of s1, s2
    assert processor.others_event_ms("q") == T0 + 60_000
    assert processor.newest_event_ms() == T0 + year
    for sid in ("s1", "s2", "s3"):
        processor.workers[sid].status.last_read_at = now - 60  # type: ignore[attr-defined]
    # Nobody trading (a replay read to its end, a fleet closed at night): the middle of them all.
    assert processor.others_event_ms("s0") == T0  # the lower middle of q, s1, s2, s3 (not the ended one)


async def test_two_processors_on_one_stream_never_overwrite_each_others_checkpoint(
    make_settings: Callable[..., Settings],
) -> None:
    """Two processors reading the same stream without the KCL (an old task still draining while its
    replacement starts): both apply every record, and the checkpoint is fenced: the one whose save comes
    second stops with `ShardTakenOver` instead of putting its state over the other's, and the
    checkpoint in S3 stays whole, the other's."""
    settings = make_settings(aws={"shard_count": 1}, checkpoints={"every_s": 0.1})
    resources = provision(settings)
    store = "store-000"

    def sales(prefix: str, first_s: int) -> list[tuple[bytes, str]]:
        return [
            (event("sale", f"{prefix}{i}", store, "milk", first_s + i, quantity=1, unit_price=1.0), store)
            for i in range(5)
        ]

    await produce(settings, sales("a", 0))
    stop = asyncio.Event()
    async with AioClients(settings, *SERVICES) as one, AioClients(settings, *SERVICES) as two:
        old = StreamProcessor(settings, one, resources)
        old_task = asyncio.create_task(old.run(stop))
        assert await old.wait_caught_up(timeout=30)
        for _ in range(100):  # its checkpoint of the first five sales
            if sum(w.status.checkpoints for w in old.workers.values()):
                break
            await asyncio.sleep(0.05)
        assert sum(w.status.checkpoints for w in old.workers.values()) == 1
        new = StreamProcessor(settings, two, resources)
        new_task = asyncio.create_task(new.run(stop))
        assert await new.wait_caught_up(timeout=30)
        assert new.records_read() == 0  # it started from the old one's checkpoint

        await produce(settings, sales("b", 100))
        done, _ = await asyncio.wait([old_task, new_task], timeout=30, return_when=asyncio.FIRST_COMPLETED)
        assert len(done) == 1
        (stopped,) = done
        with pytest.raises(ShardTakenOver, match="another worker"):
            stopped.result()
        survivor, task = (new, new_task) if stopped is old_task else (old, old_task)
        for _ in range(100):
            if survivor.inventory() == {store: {"milk": -10}}:
                break
            await asyncio.sleep(0.05)
        assert survivor.inventory() == {store: {"milk": -10}}
        stop.set()
        await asyncio.wait_for(task, 30)

    async with AioClients(settings, "s3") as clients:
        (shard,) = survivor.workers
        checkpoint = await S3Checkpoints(clients["s3"], resources.bucket, settings).load(shard)
    assert checkpoint is not None
    assert checkpoint.core.inventory() == {store: {"milk": -10}}
    assert len(checkpoint.core.state.dedup) == 10  # every sale remembered, under the survivor's runs


async def test_a_whole_quiet_stream_is_said_once_and_alerts_no_store(
    make_settings: Callable[..., Settings], caplog: pytest.LogCaptureFixture
) -> None:
    """Two stores (two shards) trade three days and into a fourth morning, then the whole stream
    stops (a replay's end, a feed cut): the processor says once that the feed is quiet while the
    stores would trade, and no store gets an alert for the silence."""
    caplog.set_level(logging.INFO, logger="processors.stream_processor")
    settings = make_settings(
        processor={"idle_shard_patience_s": 0.3, "stream_quiet_after_s": 1.0, "stream_quiet_min_sales": 1.0}
    )
    resources = provision(settings)
    stores = ("store-q1", "store-q2")
    records: list[tuple[bytes, str]] = []
    for day in range(4):
        last = 10 * 60 if day == 3 else 17 * 60
        for minute in range(9 * 60, last, 5):
            t = (day * 24 * 60 + minute) * 60
            records.extend(
                (event("sale", f"{s}-{t}", s, "milk", t, quantity=1, unit_price=1.0), s) for s in stores
            )
    await produce(settings, records)
    async with running(settings, resources) as processor:
        assert len({w.shard_id for w in processor.workers.values() if w.core.inventory()}) == 2
        for _ in range(100):
            if processor.silence.state.quiet:
                break
            await asyncio.sleep(0.1)
        assert processor.silence.state.quiet
        assert processor.silence.state.expected_sales >= 1.0
        await asyncio.sleep(1.5)  # it stays quiet: nothing more is said
    said = [r.getMessage() for r in caplog.records]
    assert sum("the whole stream is quiet" in m for m in said) == 1
    assert processor.alert_counts["anomaly"] == 0


async def test_a_refused_checkpoint_stops_the_processor_and_is_left_as_it_was(
    provisioned: tuple[Settings, Resources],
) -> None:
    """A shard never starts from a checkpoint that fails validation, nor from an empty state instead."""
    import pickle

    from processors.checkpoints import CheckpointRefused

    settings, resources = provisioned
    records, expected = workload()
    await produce(settings, records)
    processor = await process_until_caught_up(settings, resources)
    assert processor.inventory() == expected
    s3 = boto3.client("s3")
    async with AioClients(settings, "s3") as clients:
        key = S3Checkpoints(clients["s3"], resources.bucket, settings).key(next(iter(processor.workers)))
    bad = pickle.dumps({"format": 2})
    s3.put_object(Bucket=resources.bucket, Key=key, Body=bad)
    async with AioClients(settings, *SERVICES) as clients:
        again = StreamProcessor(settings, clients, resources)
        with pytest.raises(CheckpointRefused, match="pickle"):
            await asyncio.wait_for(again.run(asyncio.Event()), 30)
        assert again.records_read() == 0
    assert s3.get_object(Bucket=resources.bucket, Key=key)["Body"].read() == bad
