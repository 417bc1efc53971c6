"""`warm-start` against the embedded AWS: a processor archives a few days of a small fleet; a new
deployment (another stream, the same archive) is warm-started from it and then reads its stream live.
Its alerts must be the ones a processor that ran the whole time raises over the same events."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import orjson
import pytest

from config import Settings
from foundation.aws.clients import AioClients
from foundation.aws.provision import Resources, provision
from foundation.contract import alert_kind, format_ts
from foundation.errors import UsageError
from history import warm_start
from processors.checkpoints import S3Checkpoints
from processors.core import Effects
from processors.stream_processor import StreamProcessor
from shelfstream.cli import main

pytestmark = [pytest.mark.integration, pytest.mark.slow]

T0 = 1_785_571_200_000  # 2026-08-01T08:00Z: a day's hours below count from here
DAY = 24 * 3600 * 1000
MIN = 60 * 1000
STORES = ("store-000", "store-001", "store-002", "store-003")
PRODUCTS = 5
SALES = 360  # a sale every 2 minutes from 08:00 to 20:00
SERVICES = ("kinesis", "sqs", "sns", "firehose", "s3")
PUT_BATCH = 300  # records a call (at most that many for one shard) ...
PUT_PAUSE_S = 0.4  # ... and the pause after it: at most 750 records/s for a shard


def day_events(day: int) -> list[tuple[int, bytes, str]]:
    """One day of the fleet: a delivery of every product at 06:00 (answering yesterday's requests),
    a stock take at 07:00, a sale every 2 minutes from 08:00 to 20:00 (each
    store a few seconds apart, so no two events share a time), enough to run products out and raise
    restock requests; on day 3 store-001's tills are down from 11:00 to 15:00."""
    events: list[tuple[int, bytes, str]] = []
    start = T0 + day * DAY
    for s, store in enumerate(STORES):
        for p in range(PRODUCTS):
            ts = start + 6 * 3600 * 1000 + s * 1000 + p
            body = {"type": "restock", "quantity": 10, "product_id": f"p{p}", "delivery_id": f"d{day}"}
            events.append((ts, _event(store, f"{store}-d{day}-r{p}", ts, body), store))
            ts += 3600 * 1000
            body = {"type": "count", "count": 30, "product_id": f"p{p}"}
            events.append((ts, _event(store, f"{store}-d{day}-c{p}", ts, body), store))
        for i in range(SALES):
            ts = start + 8 * 3600 * 1000 + i * 2 * MIN + s * 7000
            if day == 3 and store == "store-001" and 11 * 60 <= (ts - start) // MIN < 15 * 60:
                continue
            body = {
                "type": "sale",
                "product_id": f"p{(i * 3 + s + day) % PRODUCTS}",
                "quantity": 1 + (i * 7 + s) % 2,
                "unit_price": 2.5,
                "transaction_id": f"{store}-d{day}-t{i}",
            }
            events.append((ts, _event(store, f"{store}-d{day}-s{i}", ts, body), store))
    return events


def _event(store: str, eid: str, ts: int, body: dict[str, Any]) -> bytes:
    return orjson.dumps({"event_id": eid, "store_id": store, "ts": format_ts(ts), **body})


def in_order(*days: int) -> list[tuple[bytes, str]]:
    events = sorted((e for d in days for e in day_events(d)), key=lambda e: e[0])
    return [(data, store) for _, data, store in events]


async def produce(settings: Settings, records: list[tuple[bytes, str]]) -> None:
    """Put the records in order, paced under the embedded Kinesis's write quota (1,000 records/s per
    shard, a token bucket of one second): never throttled, so each store's records reach its shard
    in put order in both deployments (a writer retrying a throttled entry after later ones of its
    store would make the two streams differ, not the two processors)."""
    await asyncio.to_thread(_put_in_order, settings, records)


def _put_in_order(settings: Settings, records: list[tuple[bytes, str]]) -> None:
    kinesis = boto3.client("kinesis")
    for i in range(0, len(records), PUT_BATCH):
        batch = records[i : i + PUT_BATCH]
        entries = [{"Data": data, "PartitionKey": key} for data, key in batch]
        answer = kinesis.put_records(StreamName=settings.aws.stream_name, Records=entries)
        assert not answer.get("FailedRecordCount"), "paced under the quota: nothing is throttled"
        time.sleep(PUT_PAUSE_S)


async def process(settings: Settings, resources: Resources) -> list[tuple[str, str, str]]:
    """Run the processor until it has read its whole stream; the alerts and requests it sent."""
    sent: list[tuple[str, str, str]] = []

    def observe(shard_id: str, effects: Effects) -> None:
        for item in [*effects.requests, *effects.alerts]:
            sent.append((item.ts, alert_kind(item), item.alert_id))

    stop = asyncio.Event()
    async with AioClients(settings, *SERVICES) as clients:
        processor = StreamProcessor(settings, clients, resources, on_effects=observe)
        task = asyncio.create_task(processor.run(stop))
        try:
            assert await processor.wait_caught_up(timeout=60)
        finally:
            stop.set()
            await asyncio.wait_for(task, 30)
    return sorted(sent)


@pytest.fixture
def local_settings(make_settings: Callable[..., Settings], tmp_path: Path) -> Callable[..., Settings]:
    """Settings whose history is the bucket alone (no tables or mirror from the working directory);
    each shard alone with its stores (no fleet exchange, no following idle shards: both run by the
    wall clock, and the two runs compared here do not share one)."""

    def make(**overrides: Any) -> Settings:
        return make_settings(
            **{
                "history": {
                    "archive_cache": str(tmp_path / "cache"),
                    "archive_mirror": str(tmp_path / "no-mirror"),
                    "tables_catalog": str(tmp_path / "no-tables.db"),
                },
                "processor": {"fleet_shape_every_s": 0, "idle_shard_lag_s": 0},
                **overrides,
            }
        )

    return make


async def test_warm_start_then_live_raises_the_alerts_of_a_continuous_run(
    local_settings: Callable[..., Settings],
) -> None:
    running = local_settings()
    running_resources = provision(running)
    # Three days of trade, processed (and so archived) by the running deployment.
    await produce(running, in_order(0, 1, 2))
    await process(running, running_resources)

    # A new deployment reading the same archive (a new stack, or lost checkpoints); its stream
    # holds what a stream retains (the last day, already archived) and then the fourth day.
    fresh = local_settings(aws={"bucket": running.aws.bucket})
    fresh_resources = provision(fresh)
    await produce(fresh, in_order(2, 3))
    kinesis, s3 = boto3.client("kinesis"), boto3.client("s3")
    plan = warm_start.plan(fresh, kinesis, s3)
    assert plan.days == 3  # the whole archive: its three days are within the core's memory of a store
    assert plan.span.events == len(in_order(0, 1, 2))
    result = await asyncio.to_thread(warm_start.run, fresh, plan)
    summary = result.summary()
    assert summary["stores"] == len(STORES)
    assert summary["events"] == len(in_order(0, 1, 2))
    assert summary["effects_not_sent"]["restock_request"] > 0  # the history's, not sent again

    # Its checkpoints carry no sequence number: the processor reads each shard from TRIM_HORIZON.
    async with AioClients(fresh, "s3") as clients:
        store = S3Checkpoints(clients["s3"], fresh.aws.bucket, fresh)
        for job in plan.jobs:
            checkpoint = await store.load(job.shard_id)
            assert checkpoint is not None
            assert checkpoint.sequence_number is None

    # The running deployment goes on with the fourth day; the warm-started one reads its stream.
    await produce(running, in_order(3))
    continuous = await process(running, running_resources)
    warmed = await process(fresh, fresh_resources)
    assert continuous, "the fourth day raises requests, stock-outs and an anomaly"
    assert {kind for _, kind, _ in continuous} == {"restock_request", "out_of_stock", "anomaly"}
    assert warmed == continuous


async def test_an_existing_checkpoint_is_kept_unless_forced(local_settings: Callable[..., Settings]) -> None:
    settings = local_settings()
    resources = provision(settings)
    await produce(settings, in_order(0))
    await process(settings, resources)  # archives the day and checkpoints every shard
    kinesis, s3 = boto3.client("kinesis"), boto3.client("s3")
    with pytest.raises(UsageError, match=r"already have a checkpoint .*--force"):
        warm_start.plan(settings, kinesis, s3)
    plan = warm_start.plan(settings, kinesis, s3, force=True, days=1)
    # Two shards in two processes, their progress reported back to this one.
    progress: Counter[str] = Counter()
    result = await asyncio.to_thread(
        lambda: warm_start.run(settings, plan, workers=2, progress=lambda s, n: progress.update({s: n}))
    )
    assert result.summary()["events"] == len(in_order(0))
    assert progress == {job.shard_id: job.events for job in plan.jobs}


def test_a_missing_archive_and_an_unknown_shard_are_one_clear_line(
    local_settings: Callable[..., Settings],
) -> None:
    settings = local_settings()
    provision(settings)
    kinesis, s3 = boto3.client("kinesis"), boto3.client("s3")
    with pytest.raises(UsageError, match="no archived events in"):
        warm_start.plan(settings, kinesis, s3)
    s3.put_object(
        Bucket=settings.aws.bucket,
        Key=f"{settings.prefixes.events}2026/08/01/00/part-1",
        Body=b"".join(data + b"\n" for data, _ in in_order(0)),
    )
    with pytest.raises(UsageError, match=r"shard shardId-999 is not an open shard .*shardId-000000000000"):
        warm_start.plan(settings, kinesis, s3, shard="shardId-999")
    one = warm_start.plan(settings, kinesis, s3, shard="shardId-000000000001")
    assert [job.shard_id for job in one.jobs] == ["shardId-000000000001"]


def test_the_command_says_what_it_did_or_one_clear_line(
    local_settings: Callable[..., Settings],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = local_settings()
    provision(settings)
    for group, name in (
        ("aws", "stream_name"),
        ("aws", "bucket"),
        ("history", "tables_catalog"),
        ("history", "archive_mirror"),
        ("history", "archive_cache"),
    ):
        monkeypatch.setenv(
            f"SHELFSTREAM_{group.upper()}__{name.upper()}", str(getattr(getattr(settings, group), name))
        )
    assert main(["warm-start"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("shelfstream: error: no archived events in")
    assert "\n" not in err
    boto3.client("s3").put_object(
        Bucket=settings.aws.bucket,
        Key=f"{settings.prefixes.events}2026/08/01/00/part-1",
        Body=b"".join(data + b"\n" for data, _ in in_order(0)),
    )
    assert main(["warm-start", "--shard", "shardId-7"]) == 2
    assert "shard shardId-7 is not an open shard" in capsys.readouterr().err
    assert main(["warm-start", "--json", "--shard", "shardId-000000000000"]) == 0
    summary = orjson.loads(capsys.readouterr().out)
    assert summary["shards"] == 1
    assert summary["days"] == 1
    assert 0 < summary["events"] < len(in_order(0))
