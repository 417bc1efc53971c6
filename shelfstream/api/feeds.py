"""Feeds: what keeps the dashboard's view current, from the processor's own outputs.

* :class:`ProcessorFeed` (the demo): in-process, live. Alerts, requests and window results arrive
  through the processor's ``on_effects`` hook as they are sent; deliveries through the dispatcher's
  ``on_delivery``; stock and the trucks are read from the running cores and fleet every second.
* :class:`AwsFeed` (standalone ``serve``): stock from the processor's checkpoints in S3 (re-read when
  an object's ETag changes), alerts live from the dashboard's own SQS subscription to the alerts topic,
  window results, restock requests and deliveries from the archives Firehose writes to S3.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

import msgspec
import orjson
from botocore.exceptions import BotoCoreError, ClientError

from config import Settings
from foundation.contract import Restock, decode_alert, decode_event, format_ts
from foundation.timeunits import HOUR_S
from processors.checkpoints import decode_checkpoint
from processors.core import Effects, ShardCore
from shelfstream.api.state import DashboardState, stock_from_cores

log = logging.getLogger(__name__)

_AWS_ERRORS = (ClientError, BotoCoreError, OSError)


def delivery_json(event: Restock) -> dict[str, Any]:
    """A truck's restock event as the dashboard shows a delivery."""
    data: dict[str, Any] = {
        "delivery_id": event.delivery_id or event.event_id,
        "event_id": event.event_id,
        "truck_id": event.truck_id,
        "store_id": event.store_id,
        "product_id": event.product_id,
        "quantity": event.quantity,
        "ts": format_ts(event.ts_ms),
    }
    return data


async def _sleep(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)


# --- in process (the demo) -----------------------------------------------------------------------


class ProcessorFeed:
    """Feeds the view from a StreamProcessor and a Dispatcher running in the same event loop."""

    def __init__(self, state: DashboardState, interval_s: float = 1.0) -> None:
        self.state = state
        self.interval_s = interval_s
        self._cores: Callable[[], Iterable[ShardCore]] = list
        self._fleet: Any = None
        self._requests: dict[str, tuple[str, str]] = {}  # request id -> (store, product), for the trucks

    def watch(self, processor: Any, dispatcher: Any | None = None) -> None:
        """Read stock from `processor`'s cores, trucks from `dispatcher`'s fleet."""
        self._cores = lambda: [w.core for w in list(processor.workers.values())]
        self._fleet = dispatcher.fleet if dispatcher is not None else None

    def on_effects(self, shard_id: str, effects: Effects) -> None:
        """The processor's hook: called with each batch's effects once they were sent."""
        for request in effects.requests:
            self._requests[request.alert_id] = (request.store_id, request.product_id)
            self.state.add_alert(request)
        if len(self._requests) > 20_000:
            for old in list(self._requests)[:5_000]:
                del self._requests[old]
        for alert in effects.alerts:
            self.state.add_alert(alert)
        for window in effects.windows:
            self.state.add_window(window)

    def on_delivery(self, event: Restock) -> None:
        """The dispatcher's hook: called once a delivery's restock event is in the stream."""
        self.state.add_delivery(delivery_json(event))

    def refresh(self) -> None:
        self.state.replace_stock(stock_from_cores(self._cores()))
        if self._fleet is not None:
            self.state.set_trucks(self._trucks())

    def _trucks(self) -> list[dict[str, Any]]:
        trucks = []
        for truck in self._fleet.trucks:
            trip = truck.trip
            stops = (
                [
                    {
                        "store_id": stop.store_id,
                        "products": [load.request.product_id for load in stop.loads],
                        "units": stop.units,
                    }
                    for stop in trip.stops
                ]
                if trip is not None
                else []
            )
            store_id, product_id = self._requests.get(truck.busy_with or "", (None, None))
            if stops:
                store_id, product_id = stops[0]["store_id"], None
            trucks.append(
                {
                    "truck_id": truck.truck_id,
                    "status": "on the road" if truck.busy_with else "at the depot",
                    "store_id": store_id,
                    "product_id": product_id,
                    "trip_id": trip.trip_id if trip is not None else None,
                    "stops": stops,
                    "stores": [stop["store_id"] for stop in stops],
                    "units": trip.units if trip is not None else 0,
                    "deliveries": truck.deliveries,
                    "trips": truck.trips,
                    "capacity": truck.capacity,
                }
            )
        return trucks

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self.refresh()
            await _sleep(stop, self.interval_s)
        self.refresh()


# --- standalone (`shelfstream serve`) ------------------------------------------------------------


class S3Tail:
    """New objects under a Firehose prefix, read once each, oldest first.

    Firehose names objects ``<prefix>YYYY/MM/DD/HH/<name>-<time>-<uuid>``; objects of the same second
    do not sort by arrival, so each poll lists from a little before the newest hour-folder seen and
    skips the keys it has read, instead of trusting ``StartAfter`` with the last key.
    """

    def __init__(
        self,
        s3: Any,
        bucket: str,
        prefix: str,
        history_s: float,
        lookback_s: float = 900.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._s3 = s3
        self._bucket = bucket
        self._prefix = prefix
        self._history_s = history_s
        self._lookback_s = lookback_s
        self._clock = clock
        self._seen: set[str] = set()
        self._first = True

    def _start_after(self) -> str:
        back = self._history_s if self._first else self._lookback_s
        when = dt.datetime.fromtimestamp(self._clock() - back, dt.UTC)
        return f"{self._prefix}{when:%Y/%m/%d/%H}"  # sorts before every key of that hour

    async def poll(self) -> list[bytes]:
        """The lines of the objects that appeared since the last poll."""
        start = self._start_after()
        keys: list[str] = []
        paginator = self._s3.get_paginator("list_objects_v2")
        async for page in paginator.paginate(Bucket=self._bucket, Prefix=self._prefix, StartAfter=start):
            keys.extend(obj["Key"] for obj in page.get("Contents", []))
        self._first = False
        lines: list[bytes] = []
        for key in sorted(keys):
            if key in self._seen:
                continue
            resp = await self._s3.get_object(Bucket=self._bucket, Key=key)
            async with resp["Body"] as body:
                data = await body.read()
            self._seen.add(key)
            lines.extend(line for line in data.splitlines() if line.strip())
        self._seen = {key for key in self._seen if key > start}
        return lines


class AwsFeed:
    """Feeds the view of a standalone server from what the processor left in AWS."""

    def __init__(
        self,
        state: DashboardState,
        settings: Settings,
        bucket: str,
        s3: Any,
        sqs: Any,
        queue_url: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.state = state
        self._settings = settings
        self._bucket = bucket
        self._s3 = s3
        self._sqs = sqs
        self._queue_url = queue_url
        self._checkpoint_prefix = f"{settings.prefixes.checkpoints}{settings.aws.stream_name}/"
        self._cores: dict[str, tuple[str, ShardCore]] = {}  # key -> (etag, core)
        history = float(settings.api.dashboard_history_s)
        self._windows = S3Tail(s3, bucket, settings.prefixes.windows, history, clock=clock)
        self._alerts = S3Tail(s3, bucket, settings.prefixes.alerts, history, clock=clock)
        # Deliveries are a small part of the event archive: read only the last minutes at startup.
        self._events = S3Tail(s3, bucket, settings.prefixes.events, min(history, 600.0), clock=clock)
        self._trucks: dict[str, dict[str, Any]] = {}

    async def run(self, stop: asyncio.Event) -> None:
        await asyncio.gather(
            self._every(stop, self.refresh_stock), self._alerts_loop(stop), self._archives(stop)
        )

    async def _every(self, stop: asyncio.Event, step: Callable[[], Any]) -> None:
        while not stop.is_set():
            try:
                await step()
            except _AWS_ERRORS as exc:
                log.warning("dashboard feed: AWS call failed; retrying", extra={"error": str(exc)})
            await _sleep(stop, self._settings.api.dashboard_refresh_s)

    async def refresh_stock(self) -> None:
        """Re-read the checkpoints whose ETag changed; hand the processor's stock to the view."""
        listed: dict[str, str] = {}
        paginator = self._s3.get_paginator("list_objects_v2")
        async for page in paginator.paginate(Bucket=self._bucket, Prefix=self._checkpoint_prefix):
            for obj in page.get("Contents", []):
                listed[obj["Key"]] = str(obj.get("ETag", ""))
        for key, etag in listed.items():
            known = self._cores.get(key)
            if known is not None and known[0] == etag:
                continue
            resp = await self._s3.get_object(Bucket=self._bucket, Key=key)
            async with resp["Body"] as body:
                blob = await body.read()
            try:
                checkpoint = await asyncio.to_thread(decode_checkpoint, blob)
            except Exception as exc:  # a checkpoint of another format: say so, keep the rest
                log.error("unreadable checkpoint", extra={"key": key, "error": str(exc)})
                continue
            self._cores[key] = (str(resp.get("ETag", etag)), checkpoint.core)
        for gone in set(self._cores) - set(listed):
            del self._cores[gone]
        self.state.replace_stock(stock_from_cores(core for _, core in self._cores.values()))

    async def _alerts_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.receive_alerts(wait_s=2)
            except _AWS_ERRORS as exc:
                log.warning("dashboard alerts queue: receive failed; retrying", extra={"error": str(exc)})
                await _sleep(stop, self._settings.api.dashboard_refresh_s)

    async def receive_alerts(self, wait_s: int) -> int:
        """One receive from the dashboard's own queue; taken messages are deleted (it is ours alone)."""
        resp = await self._sqs.receive_message(
            QueueUrl=self._queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=wait_s
        )
        messages = resp.get("Messages", [])
        taken = 0
        for message in messages:
            try:
                taken += self.state.add_alert(decode_alert(message["Body"]))
            except (msgspec.ValidationError, msgspec.DecodeError):
                log.warning(
                    "not an alert on the alerts topic", extra={"message_id": message.get("MessageId")}
                )
        if messages:
            await self._sqs.delete_message_batch(
                QueueUrl=self._queue_url,
                Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)],
            )
        return taken

    async def _archives(self, stop: asyncio.Event) -> None:
        await self._every(stop, self.poll_archives)

    async def poll_archives(self) -> None:
        for line in await self._windows.poll():
            with contextlib.suppress(orjson.JSONDecodeError):
                self.state.add_window(line)
        for line in await self._alerts.poll():
            with contextlib.suppress(msgspec.ValidationError, msgspec.DecodeError):
                self.state.add_alert(decode_alert(line))
        for line in await self._events.poll():
            if b'"restock"' not in line or b"truck_id" not in line:
                continue  # most archived events are sales: skip them before decoding
            event = decode_event(line)
            if (
                isinstance(event, Restock)
                and event.truck_id
                and self.state.add_delivery(delivery_json(event))
            ):
                self._saw_truck(event)
        self.state.set_trucks(sorted(self._trucks.values(), key=lambda t: str(t["truck_id"])))

    def _saw_truck(self, event: Restock) -> None:
        truck = self._trucks.setdefault(
            str(event.truck_id), {"truck_id": event.truck_id, "status": "delivered", "deliveries": 0}
        )
        truck.update(
            store_id=event.store_id,
            product_id=event.product_id,
            deliveries=truck["deliveries"] + 1,
            last_delivery_ts=format_ts(event.ts_ms),
        )


def ensure_dashboard_queue(settings: Settings, topic_arn: str) -> str:
    """The dashboard's own SQS queue on the alerts topic (created or re-applied; safe to repeat).

    Its own, so reading it consumes nothing another reader needs; messages live one hour, so a stopped
    dashboard does not hoard alerts.
    """
    from foundation.aws.provision import ensure_topic_queue

    name = settings.api.dashboard_queue or f"{settings.aws.alerts_queue}-dashboard"
    return ensure_topic_queue(settings, name, topic_arn, {"MessageRetentionPeriod": str(HOUR_S)})
