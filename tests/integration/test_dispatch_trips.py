"""The dispatcher over the AWS wire protocol (SQS, DynamoDB, Kinesis on the embedded AWS): whole orders
on one truck, and no request delivered twice or lost when a worker dies mid-trip."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import boto3
import orjson
import pytest

from config import Settings
from consumers.delivery_log import DynamoDeliveryLog
from consumers.dispatcher import Dispatcher, lease_seconds
from foundation.aws.clients import AioClients
from foundation.aws.provision import Resources
from foundation.clock import ScaledClock
from foundation.contract import Restock, RestockRequest, alert_id, encode, format_ts
from producers.kinesis_writer import KinesisWriter
from tests.integration.conftest import read_all_shards

pytestmark = pytest.mark.integration

T0 = 1_785_751_200_000


def _request(store: str, product: str, quantity: int) -> RestockRequest:
    return RestockRequest(
        alert_id=alert_id("restock_request", store, product, "e1"),
        store_id=store,
        ts=format_ts(T0),
        product_id=product,
        on_hand=2,
        threshold=5,
        requested_quantity=quantity,
        reason="forecast",
    )


def _send(url: str, requests: list[RestockRequest]) -> None:
    sqs = boto3.client("sqs")
    for request in requests:
        sqs.send_message(QueueUrl=url, MessageBody=encode(request).decode())


async def _until(check: Any, timeout: float = 30.0, describe: Any = None) -> None:
    for _ in range(int(timeout / 0.05)):
        if check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out: {describe() if describe else ''}")


def _queue_empty(url: str) -> bool:
    attributes = boto3.client("sqs").get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    )["Attributes"]
    return attributes == {"ApproximateNumberOfMessages": "0", "ApproximateNumberOfMessagesNotVisible": "0"}


async def test_a_stores_order_leaves_on_one_truck_and_capacity_splits_it(
    provisioned: tuple[Settings, Resources],
) -> None:
    settings, resources = provisioned
    settings = settings.replaced(trucks={"travel_s": 0.1, "count": 1, "capacity_units": 100})
    requests = [_request("store-001", p, 40) for p in ("milk", "bread", "eggs")]  # 120 units > 100
    _send(resources.restock_queue_url, requests)
    delivered: list[Restock] = []
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
        await _until(lambda: len(delivered) == 3)
        stop.set()
        await asyncio.wait_for(task, 30)
        await writer.close()
    assert dispatcher.stats.trips == 2
    by_trip = Counter(event.delivery_id for event in delivered)
    assert sorted(by_trip.values()) == [1, 2]  # two products on the first truck, the third after it
    assert {event.truck_id for event in delivered} == {"truck-01"}
    assert dispatcher.stats.units_per_trip == 60.0
    assert _queue_empty(resources.restock_queue_url)


@pytest.mark.slow
async def test_no_request_is_delivered_twice_or_lost_after_a_dispatcher_crash(
    provisioned: tuple[Settings, Resources],
) -> None:
    settings, resources = provisioned
    # One truck, two stores: its trip serves store-001, then (a 2 s hop) store-002. The worker dies
    # between the two stops, leaving claims and hidden messages behind and releasing nothing.
    settings = settings.replaced(
        trucks={
            "travel_s": 0.2,
            "travel_between_s": 2.0,
            "count": 1,
            "capacity_units": 400,
            "max_stops": 2,
            "visibility_s": 1,
        }
    )
    first = [_request("store-001", p, 10) for p in ("milk", "bread")]
    second = [_request("store-002", p, 10) for p in ("milk", "eggs")]
    _send(resources.restock_queue_url, first + second)
    delivered: list[Restock] = []
    lease = lease_seconds(settings)
    async with AioClients(settings, "kinesis", "sqs", "dynamodb") as clients:
        writer = KinesisWriter(clients["kinesis"], settings.aws.stream_name, settings)

        def worker() -> Dispatcher:
            return Dispatcher(
                settings,
                clients["sqs"],
                resources.restock_queue_url,
                writer,
                ScaledClock(T0, 1.0),
                delivery_log=DynamoDeliveryLog(
                    clients["dynamodb"], resources.deliveries_table, lease_s=lease
                ),
                on_delivery=delivered.append,
                wait_seconds=1,
            )

        dying = worker()

        async def no_release(alert_id: str) -> None:  # a dead process cleans nothing up
            return None

        dying._log.release = no_release  # type: ignore[method-assign]
        stop_dying = asyncio.Event()
        dying_task = asyncio.create_task(dying.run(stop_dying))
        await _until(lambda: len(delivered) == 2)  # store-001 done; the truck is on its way to store-002
        assert dying.stats.trips == 1
        assert [s.store_id for s in dying.recent_trips[-1][1].stops] == ["store-001", "store-002"]
        for trip in list(dying._trips):
            trip.cancel()
        dying_task.cancel()
        await asyncio.gather(dying_task, *dying._trips, return_exceptions=True)

        survivor = worker()
        stop = asyncio.Event()
        task = asyncio.create_task(survivor.run(stop))
        await _until(
            lambda: len(delivered) == 4 and _queue_empty(resources.restock_queue_url),
            timeout=60,
            describe=lambda: f"delivered {[e.event_id for e in delivered]}, survivor {survivor.stats}",
        )
        stop.set()
        await asyncio.wait_for(task, 30)
        await writer.close()
        stream = await read_all_shards(clients["kinesis"], settings.aws.stream_name)

    event_ids = [event.event_id for event in delivered]
    assert sorted(event_ids) == sorted(f"delivery-{r.alert_id}" for r in first + second)  # each once
    assert {e.store_id for e in delivered[2:]} == {"store-002"}  # the survivor took only what was left
    restocks = [orjson.loads(r["Data"]) for records in stream.values() for r in records]
    assert sorted(r["event_id"] for r in restocks) == sorted(event_ids)  # in the stream once each
    assert survivor.stats.deliveries == 2


async def test_a_separate_simulate_process_sees_its_trucks_deliveries(
    provisioned: tuple[Settings, Resources],
) -> None:
    from producers.deliveries import watch_deliveries
    from producers.simulator import StoreSimulator

    settings, _ = provisioned
    sim = StoreSimulator(1, 1, 2, T0, initial_stock=(0, 0))
    product = sim.catalog[0].product_id
    stop = asyncio.Event()
    async with AioClients(settings, "kinesis") as clients:
        watcher = asyncio.create_task(
            watch_deliveries(clients["kinesis"], settings.aws.stream_name, sim, stop, 0.05)
        )
        await asyncio.sleep(1.0)  # its iterators start at the newest record
        writer = KinesisWriter(clients["kinesis"], settings.aws.stream_name, settings)
        request = _request("store-001", product, 7)
        from consumers.dispatcher import restock_event

        delivery = encode(restock_event(request, 7, "trip-1", "truck-01", T0))
        for data in (delivery, delivery):  # written twice (a retried put): on the shelf once
            await writer.put(data, "store-001")
        await writer.flush()
        await _until(lambda: sim.shelves.on_hand("store-001", product) > 0, timeout=20)
        await asyncio.sleep(0.3)
        stop.set()
        taken = await watcher
        await writer.close()
    assert sim.shelves.on_hand("store-001", product) == 7
    assert taken == 1
