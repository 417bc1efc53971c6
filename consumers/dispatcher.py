"""The truck dispatch worker: restock requests from SQS in, restock events into Kinesis out.

Requests are gathered per store and a truck takes a store's whole order (up to its capacity), going on
to a nearby store when that gets there sooner than another truck could (consumers/trips.py). Each
product delivered is one `restock` event carrying the trip's `delivery_id` and the `truck_id`.

Every request is claimed on its own in the delivery log before its truck leaves, and a message is
deleted only after its delivery event is written to the stream, so a crash mid-trip leaves the
undelivered requests on the queue for another worker, and a request already delivered is dropped when
it comes back. A delivery's event id is derived from the request's `alert_id`, so even a request that
slips past the log (written but not yet marked) produces an event the processor recognises as a repeat.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import msgspec

from config import Settings
from consumers.fleet import Truck, TruckFleet
from consumers.trips import Stop, Travel, Trip, plan_trip, retime
from foundation.clock import ScaledClock
from foundation.contract import (
    Restock,
    RestockRequest,
    decode_alert,
    encode,
    format_ts,
    parse_ts,
    to_datetime,
)
from foundation.errors import ShelfstreamError

log = logging.getLogger(__name__)


class WriterCounters(Protocol):
    @property
    def failed(self) -> int: ...


class EventWriter(Protocol):
    @property
    def stats(self) -> WriterCounters: ...

    async def put(self, data: bytes, partition_key: str) -> bool: ...

    async def flush(self) -> None: ...


Claim = Literal["claimed", "delivered", "busy"]


class DeliveryLog(Protocol):
    """Which requests were taken or delivered, so a repeated request sends no second truck."""

    async def claim(self, alert_id: str) -> Claim: ...

    async def delivered(self, alert_id: str) -> None: ...

    async def release(self, alert_id: str) -> None: ...


class MemoryDeliveryLog:
    """For one process (the demo); `DynamoDeliveryLog` is the one to share between workers."""

    def __init__(self) -> None:
        self._state: dict[str, Claim] = {}

    async def claim(self, alert_id: str) -> Claim:
        state = self._state.get(alert_id)
        if state is not None:
            return "delivered" if state == "delivered" else "busy"
        self._state[alert_id] = "claimed"
        return "claimed"

    async def delivered(self, alert_id: str) -> None:
        self._state[alert_id] = "delivered"

    async def release(self, alert_id: str) -> None:
        if self._state.get(alert_id) == "claimed":
            del self._state[alert_id]


@dataclass
class Delivery:
    delivery_id: str
    truck_id: str
    store_id: str
    product_id: str
    quantity: int
    requested_ts: str
    delivered_ts: str


@dataclass
class DispatchStats:
    received: int = 0
    deliveries: int = 0
    units_delivered: int = 0
    duplicates_dropped: int = 0
    poison_messages: int = 0
    busy_elsewhere: int = 0
    trips: int = 0
    stops: int = 0

    @property
    def units_per_trip(self) -> float:
        return self.units_delivered / self.trips if self.trips else 0.0


@dataclass
class _Pending:
    request: RestockRequest
    receipt: str


def restock_event(
    request: RestockRequest, quantity: int, delivery_id: str, truck_id: str, ts_ms: int
) -> Restock:
    return Restock(
        event_id=f"delivery-{request.alert_id}",
        store_id=request.store_id,
        ts=to_datetime(ts_ms),
        product_id=request.product_id,
        quantity=max(1, quantity),
        delivery_id=delivery_id,
        truck_id=truck_id,
    )


def travel_of(settings: Settings) -> Travel:
    return Travel(
        settings.trucks.travel_s, settings.trucks.travel_between_s, dict(settings.trucks.travel_pairs_s)
    )


def lease_seconds(settings: Settings) -> int:
    """Visibility timeout of a received request and the lease on its claim: the longest trip plus a margin."""
    return (
        math.ceil(travel_of(settings).longest_trip_s(settings.trucks.max_stops))
        + settings.trucks.visibility_s
    )


class Dispatcher:
    MAX_POOL = 500  # requests held at once while a store's order is gathered

    def __init__(
        self,
        settings: Settings,
        sqs: Any,
        queue_url: str,
        writer: EventWriter,
        clock: ScaledClock,
        delivery_log: DeliveryLog | None = None,
        on_delivery: Callable[[Restock], None] | None = None,
        wait_seconds: int = 5,
    ) -> None:
        self._settings = settings
        self._sqs = sqs
        self._queue_url = queue_url
        self._writer = writer
        self._clock = clock
        self._log = delivery_log or MemoryDeliveryLog()
        self._on_delivery = on_delivery
        self._wait_seconds = wait_seconds
        self._travel = travel_of(settings)
        self.fleet = TruckFleet.of(settings.trucks.count, settings.trucks.capacity_units)
        self.stats = DispatchStats()
        self.recent: deque[Delivery] = deque(maxlen=50)
        self.recent_trips: deque[tuple[str, Trip]] = deque(maxlen=20)  # (truck, trip), newest last
        self._pool: dict[str, _Pending] = {}  # alert id -> request, in arrival order
        self._trips: set[asyncio.Task[None]] = set()
        self._truck_free = asyncio.Event()

    async def run(self, stop: asyncio.Event, drain_timeout: float = 20.0) -> None:
        """Take requests until `stop`; then let trucks on the road finish (up to `drain_timeout`)."""
        visibility = lease_seconds(self._settings)
        while not stop.is_set():
            if self.fleet.free() == 0:
                self._truck_free.clear()
                await _first(stop.wait(), self._truck_free.wait())
                continue
            # Gather: long-poll while nothing waits, then take what else is there at once, so one
            # store's order (sent together) leaves on one truck.
            wait = 0 if self._pool else self._wait_seconds
            while len(self._pool) < self.MAX_POOL:
                resp = await self._sqs.receive_message(
                    QueueUrl=self._queue_url,
                    MaxNumberOfMessages=10,
                    WaitTimeSeconds=wait,
                    VisibilityTimeout=visibility,
                )
                messages = resp.get("Messages", [])
                for message in messages:
                    await self._handle(message)
                if len(messages) < 10 or stop.is_set():
                    break
                wait = 0
            await self._dispatch()
            if self._pool and self.fleet.free() > 0 and not self._trips:
                await asyncio.sleep(0.05)  # every pooled request was busy elsewhere: do not spin
        if self._trips:
            _, pending = await asyncio.wait(self._trips, timeout=drain_timeout)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        await self._writer.flush()

    async def _handle(self, message: dict[str, Any]) -> None:
        self.stats.received += 1
        try:
            request = decode_alert(message["Body"])
            if not isinstance(request, RestockRequest):
                raise ValueError(f"not a restock request: {type(request).__name__}")
        except (msgspec.ValidationError, msgspec.DecodeError, ValueError) as exc:
            # Left on the queue and made visible again at once: after maxReceiveCount receives SQS moves
            # it to the dead-letter queue, where people can read it.
            self.stats.poison_messages += 1
            log.error(
                "unreadable restock request",
                extra={"reason": str(exc), "message_id": message.get("MessageId")},
            )
            await self._sqs.change_message_visibility(
                QueueUrl=self._queue_url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0
            )
            return
        held = self._pool.get(request.alert_id)
        if held is not None:
            # The same request again (sent twice, or back after its visibility ran out): keep the newest
            # receipt (the only one SQS surely honours). Another copy left hidden comes back after its
            # lease and is dropped then, as delivered: nothing deleted here can be lost.
            held.receipt = message["ReceiptHandle"]
            return
        self._pool[request.alert_id] = _Pending(request, message["ReceiptHandle"])

    async def _dispatch(self) -> None:
        """Send trucks while trucks and requests wait."""
        while self._pool and self.fleet.free() > 0:
            now = self._clock.now_ms()
            trip = plan_trip(
                [p.request for p in self._pool.values()],
                self._settings.trucks.capacity_units,
                self._travel,
                self._settings.trucks.max_stops,
                self.fleet.next_truck_in_s(now),
            )
            if trip is None:
                return
            claimed: dict[str, str] = {}
            for request in trip.requests:
                pending = self._pool.pop(request.alert_id)
                claim = await self._log.claim(request.alert_id)
                if claim == "delivered":
                    self.stats.duplicates_dropped += 1
                    await self._delete(pending.receipt)
                elif claim == "busy":
                    # A truck is already on it (here or at another worker). This copy stays hidden for
                    # one lease and comes back: by then it is delivered (and dropped), or the claim has
                    # expired with its worker, and it is delivered. Never lost, never twice.
                    self.stats.busy_elsewhere += 1
                else:
                    claimed[request.alert_id] = pending.receipt
            final = retime(trip, set(claimed), self._travel)
            if final is None:
                continue
            truck = self.fleet.assign(final, now)
            if truck is None:  # cannot happen: we only plan while a truck is free
                for alert_id in claimed:
                    await self._log.release(alert_id)
                return
            self.stats.trips += 1
            self.stats.stops += len(final.stops)
            self.recent_trips.append((truck.truck_id, final))
            log.info(
                "truck leaves",
                extra={
                    "truck_id": truck.truck_id,
                    "delivery_id": final.trip_id,
                    "stops": [stop.store_id for stop in final.stops],
                    "units": final.units,
                },
            )
            task = asyncio.create_task(self._trip(truck, final, claimed))
            self._trips.add(task)
            task.add_done_callback(self._trips.discard)

    async def _trip(self, truck: Truck, trip: Trip, receipts: dict[str, str]) -> None:
        left = time.monotonic()  # travel times are wall-clock seconds
        delivered: set[str] = set()
        try:
            for stop in trip.stops:
                await asyncio.sleep(max(0.0, left + stop.arrive_s - time.monotonic()))
                # From here on the stop's delivery completes even if the worker is stopping.
                await asyncio.shield(self._deliver(truck, trip, stop, receipts, delivered))
            await asyncio.sleep(max(0.0, left + trip.back_s - time.monotonic()))
        except asyncio.CancelledError:
            await self._release_undelivered(trip, delivered)
            raise
        except Exception:
            await self._release_undelivered(trip, delivered)
            log.exception(
                "delivery failed; the undelivered requests stay on the queue",
                extra={"delivery_id": trip.trip_id},
            )
        finally:
            self.fleet.release(truck, len(delivered))
            self._truck_free.set()

    async def _release_undelivered(self, trip: Trip, delivered: set[str]) -> None:
        for request in trip.requests:
            if request.alert_id not in delivered:
                await self._log.release(request.alert_id)

    async def _deliver(
        self, truck: Truck, trip: Trip, stop: Stop, receipts: dict[str, str], delivered: set[str]
    ) -> None:
        now = self._clock.now_ms()
        events = [
            restock_event(load.request, load.quantity, trip.trip_id, truck.truck_id, now)
            for load in stop.loads
        ]
        failed_before = self._writer.stats.failed
        accepted = [await self._writer.put(encode(event), event.store_id) for event in events]
        await self._writer.flush()
        if not all(accepted) or self._writer.stats.failed > failed_before:
            # Possibly not in the stream: keep the messages. Should some have been written after all,
            # the redelivery writes the same event ids again, and the processor takes each once.
            raise ShelfstreamError(f"delivery events of {trip.trip_id} at {stop.store_id} were not written")
        # Marked delivered first, all of the stop, then the messages deleted: a worker that dies in
        # between leaves messages whose requests come back as delivered, and are dropped.
        for load in stop.loads:
            await self._log.delivered(load.request.alert_id)
            delivered.add(load.request.alert_id)
        for load, event in zip(stop.loads, events, strict=True):
            request = load.request
            if self._on_delivery is not None:
                self._on_delivery(event)
            await self._delete(receipts[request.alert_id])
            self.stats.deliveries += 1
            self.stats.units_delivered += event.quantity
            self.recent.append(
                Delivery(
                    delivery_id=trip.trip_id,
                    truck_id=truck.truck_id,
                    store_id=event.store_id,
                    product_id=event.product_id,
                    quantity=event.quantity,
                    requested_ts=request.ts,
                    delivered_ts=format_ts(now),
                )
            )
            log.info(
                "delivered",
                extra={
                    "alert_id": request.alert_id,
                    "delivery_id": trip.trip_id,
                    "truck_id": truck.truck_id,
                    "store_id": event.store_id,
                    "product_id": event.product_id,
                    "quantity": event.quantity,
                    "lead_ms": now - parse_ts(request.ts),
                },
            )

    async def _delete(self, receipt: str) -> None:
        await self._sqs.delete_message(QueueUrl=self._queue_url, ReceiptHandle=receipt)


async def _first(*aws: Any) -> None:
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
