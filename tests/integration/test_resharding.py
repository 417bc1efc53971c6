"""Resharding against kinesis-local: children are read only after their parent is finished, and
continue from the parent's state cut along their hash-key range (split) or joined (merge)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import orjson
import pytest

from config import Settings
from foundation.aws.clients import AioClients, sync_client
from foundation.aws.provision import Resources, provision
from foundation.contract import format_ts
from processors.checkpoints import load_all_sync
from processors.stream_processor import StreamProcessor
from tests.integration.kinesis_local import kinesis_local

pytestmark = [pytest.mark.integration, pytest.mark.npm, pytest.mark.daemon]

T0 = 1_785_571_200_000
STORES = [f"store-{i:02d}" for i in range(16)]
SERVICES = ("kinesis", "sqs", "sns", "firehose", "s3")


@pytest.fixture
def resharding_stack(
    make_settings: Callable[..., Settings], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Settings, Resources]]:
    with kinesis_local(tmp_path / "kinesis-local") as endpoint:
        monkeypatch.setenv("AWS_ENDPOINT_URL_KINESIS", endpoint)  # Kinesis there, the rest on moto
        settings = make_settings(
            aws={"shard_count": 1}, processor={"poll_interval_s": 0.05, "max_poll_interval_s": 0.2}
        )
        yield settings, provision(settings)


def put(kinesis: Any, stream: str, events: list[dict[str, Any]]) -> None:
    for start in range(0, len(events), 100):
        batch = events[start : start + 100]
        resp = kinesis.put_records(
            StreamName=stream,
            Records=[{"Data": orjson.dumps(e), "PartitionKey": e["store_id"]} for e in batch],
        )
        assert resp["FailedRecordCount"] == 0


def wave(n: int, counts: bool = False) -> list[dict[str, Any]]:
    out = []
    for store in STORES:
        if counts:
            out.append(
                {
                    "type": "count",
                    "event_id": f"{store}-count",
                    "store_id": store,
                    "ts": format_ts(T0),
                    "product_id": "milk",
                    "count": 100,
                }
            )
        for i in range(3):
            out.append(
                {
                    "type": "sale",
                    "event_id": f"{store}-w{n}-{i}",
                    "store_id": store,
                    "ts": format_ts(T0 + (n * 10 + i) * 1000),
                    "product_id": "milk",
                    "quantity": 1 + i,
                    "unit_price": 1.0,
                }
            )
    return out


def wait_active(kinesis: Any, stream: str) -> None:
    for _ in range(200):
        if (
            kinesis.describe_stream_summary(StreamName=stream)["StreamDescriptionSummary"]["StreamStatus"]
            == "ACTIVE"
        ):
            return
        time.sleep(0.05)
    raise AssertionError("stream never became ACTIVE")


async def until(check: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.1)


async def test_split_then_merge_keeps_every_stores_stock_exact(
    resharding_stack: tuple[Settings, Resources],
) -> None:
    settings, resources = resharding_stack
    kinesis = sync_client("kinesis", settings)
    stream = settings.aws.stream_name
    expected = {store: {"milk": 100} for store in STORES}

    def sold(n: int) -> None:
        for store in STORES:
            expected[store]["milk"] -= 1 + 2 + 3
        put(kinesis, stream, wave(n, counts=n == 0))

    sold(0)
    stop = asyncio.Event()
    async with AioClients(settings, *SERVICES) as clients:
        processor = StreamProcessor(settings, clients, resources)
        processor.RELIST_S = 0.5
        task = asyncio.create_task(processor.run(stop))
        await until(lambda: processor.inventory() == expected)

        (parent,) = kinesis.list_shards(StreamName=stream)["Shards"]
        middle = (
            int(parent["HashKeyRange"]["StartingHashKey"]) + int(parent["HashKeyRange"]["EndingHashKey"])
        ) // 2
        kinesis.split_shard(StreamName=stream, ShardToSplit=parent["ShardId"], NewStartingHashKey=str(middle))
        wait_active(kinesis, stream)
        sold(1)
        children = [s for s in kinesis.list_shards(StreamName=stream)["Shards"] if s.get("ParentShardId")]
        assert len(children) == 2
        await until(lambda: processor.inventory() == expected)
        parent_worker = processor.workers[parent["ShardId"]]
        assert parent_worker.status.ended
        for child in children:
            worker = processor.workers[child["ShardId"]]
            assert worker.status.started_at >= parent_worker.status.ended_at  # parent first
            assert worker.core.inventory()  # each child got its own stores from the parent
        owned = [set(processor.workers[c["ShardId"]].core.inventory()) for c in children]
        assert owned[0].isdisjoint(owned[1])
        assert owned[0] | owned[1] == set(STORES)

        kinesis.merge_shards(
            StreamName=stream,
            ShardToMerge=children[0]["ShardId"],
            AdjacentShardToMerge=children[1]["ShardId"],
        )
        wait_active(kinesis, stream)
        sold(2)
        await until(lambda: processor.inventory() == expected)
        merged = [
            s for s in kinesis.list_shards(StreamName=stream)["Shards"] if s.get("AdjacentParentShardId")
        ]
        assert len(merged) == 1
        assert set(processor.workers[merged[0]["ShardId"]].core.inventory()) == set(STORES)
        stop.set()
        await asyncio.wait_for(task, 30)

    s3 = boto3.client("s3")
    live = load_all_sync(s3, resources.bucket, settings)
    assert [c.shard_id for c in live] == [merged[0]["ShardId"]]
    assert live[0].core.inventory() == expected
    every = load_all_sync(s3, resources.bucket, settings, include_ended=True)
    assert sum(c.shard_ended for c in every) == 3  # the parent and both children are finished
