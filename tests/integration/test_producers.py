"""Producers over the real Kinesis wire protocol (the embedded moto server), with injected failures.

No emulator ever throttles, so partial failures and throttling are injected on the real client through
botocore's event hooks: dropped entries are taken out of the request before it is sent (Kinesis never
sees them) and reported back as failed entries at their places, which is what a throttled shard does.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from config import Settings
from foundation.aws.clients import aio_client
from foundation.errors import UsageError
from foundation.timeunits import HOUR_MS
from producers.kinesis_writer import KinesisWriter
from producers.ledger import Ledger
from producers.replay import ReplayStats, replay_file, run_simulation
from producers.simulator import StoreSimulator

pytestmark = pytest.mark.integration

START_MS = 1_785_571_200_000  # 2026-08-01T08:00Z


class FaultInjector:
    """Partial failures and whole-call throttling on a real client, through botocore's event system."""

    def __init__(self, seed: int, drop_rate: float, throttle_every: int) -> None:
        self.rng = random.Random(seed)
        self.drop_rate = drop_rate
        self.throttle_every = throttle_every
        self.attempted: list[list[bytes]] = []  # every PutRecords call's records, as the writer sent them
        self.dropped = 0
        self.throttled = 0

    def install(self, client: Any) -> None:
        client.meta.events.register("provide-client-params.kinesis.PutRecords", self.drop_entries)
        client.meta.events.register("before-call.kinesis.PutRecords", self.maybe_throttle)
        client.meta.events.register("after-call.kinesis.PutRecords", self.report_dropped)

    def drop_entries(self, params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        records = params["Records"]
        self.attempted.append([record["Data"] for record in records])
        dropped = {i for i in range(len(records)) if self.rng.random() < self.drop_rate}
        dropped.discard(0)  # PutRecords needs at least one entry
        context["injected_drops"] = (dropped, len(records))
        params["Records"] = [record for i, record in enumerate(records) if i not in dropped]

    def maybe_throttle(self, context: dict[str, Any], **_: Any) -> None:
        if len(self.attempted) % self.throttle_every == 0:
            self.throttled += 1
            raise ClientError(
                {
                    "Error": {"Code": "ProvisionedThroughputExceededException", "Message": "Rate exceeded"},
                    "ResponseMetadata": {"HTTPStatusCode": 400},
                },
                "PutRecords",
            )

    def report_dropped(self, parsed: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        dropped, total = context.pop("injected_drops", (set(), 0))
        if not dropped or "Records" not in parsed:
            return
        answers = iter(parsed["Records"])
        parsed["Records"] = [
            {"ErrorCode": "ProvisionedThroughputExceededException", "ErrorMessage": "injected"}
            if i in dropped
            else next(answers)
            for i in range(total)
        ]
        parsed["FailedRecordCount"] = parsed.get("FailedRecordCount", 0) + len(dropped)
        self.dropped += len(dropped)


async def create_stream(kinesis: Any, settings: Settings) -> None:
    await kinesis.create_stream(StreamName=settings.aws.stream_name, ShardCount=settings.aws.shard_count)
    waiter = kinesis.get_waiter("stream_exists")
    await waiter.wait(StreamName=settings.aws.stream_name, WaiterConfig={"Delay": 1, "MaxAttempts": 30})


def in_stream_order(by_shard: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """All records; one key lives in one shard, so each key's records are in its stream order."""
    return [record for records in by_shard.values() for record in records]


async def test_writer_loses_nothing_and_doubles_nothing_through_partial_failures_and_throttling(
    make_settings: Any, read_stream: Any
) -> None:
    settings = make_settings(
        aws={"shard_count": 4},
        producers={"max_batches_in_flight": 4, "put_max_attempts": 12, "put_base_backoff_s": 0.002},
    )
    records = 3000
    stores = 40
    faults = FaultInjector(seed=11, drop_rate=0.1, throttle_every=4)
    sent: list[bytes] = []
    async with aio_client("kinesis", settings) as kinesis:
        await create_stream(kinesis, settings)
        faults.install(kinesis)
        async with KinesisWriter(kinesis, settings.aws.stream_name, settings, linger_s=0.005) as writer:
            for i in range(records):
                store = f"store-{i % stores:03d}"
                body = json.dumps({"store": store, "seq": i // stores}).encode()
                sent.append(body)
                assert await writer.put(body, store)
        by_shard = await read_stream(kinesis, settings.aws.stream_name)

    assert faults.dropped > 100
    assert faults.throttled > 2
    assert writer.stats.failed == 0
    assert writer.stats.records_sent == records
    assert writer.stats.throttles == faults.dropped + faults.throttled
    assert writer.stats.retries == sum(len(call) for call in faults.attempted) - records

    stream = in_stream_order(by_shard)
    arrived = Counter(record["Data"] for record in stream)
    assert set(arrived) == set(sent), f"{len(set(sent) - set(arrived))} records lost"
    assert max(arrived.values()) == 1, "a record arrived twice"

    shards_of: dict[str, set[str]] = {}
    for shard, shard_records in by_shard.items():
        for record in shard_records:
            assert json.loads(record["Data"])["store"] == record["PartitionKey"]
            shards_of.setdefault(record["PartitionKey"], set()).add(shard)
    assert all(len(shards) == 1 for shards in shards_of.values())
    assert len({shard for shards in shards_of.values() for shard in shards}) == 4

    # Records that went through on their first try reached their shard in put order.
    attempts = Counter(data for call in faults.attempted for data in call)
    checked = 0
    for store in shards_of:
        first_try = [
            json.loads(r["Data"])["seq"]
            for r in stream
            if r["PartitionKey"] == store and attempts[r["Data"]] == 1
        ]
        assert first_try == sorted(first_try)
        checked += len(first_try)
    assert checked > records // 3


async def test_replay_sends_each_line_untouched_keyed_by_its_store(
    make_settings: Any, read_stream: Any, tmp_path: Path
) -> None:
    settings = make_settings(aws={"shard_count": 2})
    sim = StoreSimulator(3, 3, 4, START_MS)
    good = [event.data for event in sim.events_until(START_MS + HOUR_MS)][:60]
    keyless = [b"not json at all", b'{"event_id": "x", "type": "sale"}', b'{"store_id": "no spaces allowed"}']
    path = tmp_path / "events.jsonl"
    lines = [*good[:30], b"", b"   ", *keyless, good[30] + b"\r", *good[31:]]
    path.write_bytes(b"\n".join(lines) + b"\n")
    progress: list[ReplayStats] = []

    async with aio_client("kinesis", settings) as kinesis:
        await create_stream(kinesis, settings)
        async with KinesisWriter(kinesis, settings.aws.stream_name, settings) as writer:
            stats = await replay_file(path, writer, progress.append, progress_every=25)
        by_shard = await read_stream(kinesis, settings.aws.stream_name)

    assert (stats.lines, stats.sent, stats.blank, stats.no_store_id, stats.refused) == (65, 63, 2, 3, 0)
    assert progress[-1] is stats
    assert len(progress) >= 3
    arrived = Counter((record["PartitionKey"], record["Data"]) for record in in_stream_order(by_shard))
    expected = Counter(
        [(json.loads(line)["store_id"], line) for line in good] + [("unknown", k) for k in keyless]
    )
    assert arrived == expected
    for store in sim.store_ids:  # and each store's lines keep their file order
        ours = [r["Data"] for r in in_stream_order(by_shard) if r["PartitionKey"] == store]
        assert ours == [line for line in good if json.loads(line)["store_id"] == store]


async def test_replay_refuses_a_missing_file_or_a_directory_in_one_line(tmp_path: Path) -> None:
    class NoSink:
        async def put(self, data: bytes, partition_key: str) -> bool:
            raise AssertionError("nothing should be sent")

        async def flush(self) -> None:
            raise AssertionError("nothing should be flushed")

    with pytest.raises(UsageError, match="no such file") as missing:
        await replay_file(tmp_path / "nope.jsonl", NoSink())
    assert "\n" not in str(missing.value)
    with pytest.raises(UsageError, match="is a directory"):
        await replay_file(tmp_path, NoSink())


async def test_simulated_stores_reach_the_stream_in_the_order_the_ledger_saw(
    make_settings: Any, read_stream: Any
) -> None:
    settings = make_settings(aws={"shard_count": 3})
    sim = StoreSimulator(8, 5, 12, START_MS, bad_fraction=0.01, duplicate_fraction=0.02)
    ledger = Ledger()
    now = [0.0]

    async def advance(seconds: float) -> None:
        now[0] += seconds
        await asyncio.sleep(0)

    async with aio_client("kinesis", settings) as kinesis:
        await create_stream(kinesis, settings)
        async with KinesisWriter(kinesis, settings.aws.stream_name, settings) as writer:
            stats = await run_simulation(
                writer,
                sim,
                rate=None,
                duration_s=3.0,
                speed=3600.0,
                ledger=ledger,
                clock=lambda: now[0],
                sleep=advance,
            )
        by_shard = await read_stream(kinesis, settings.aws.stream_name)

    stream = in_stream_order(by_shard)
    assert len(stream) == stats.records_put == sim.stats.records
    assert sim.stats.bad > 0
    assert sim.stats.duplicates > 0
    from_stream = Ledger()
    for record in stream:
        from_stream.record(record["Data"])
    assert from_stream.stock() == ledger.stock()
    assert (from_stream.applied, from_stream.duplicates, from_stream.invalid) == (
        ledger.applied,
        ledger.duplicates,
        ledger.invalid,
    )
    assert writer.stats.failed == 0
