"""The truck dispatch worker: restock requests from SQS in, restock events into Kinesis out.

A message is deleted only after its delivery event is written to the stream, so a crash mid-trip
leaves the request on the queue for another worker. A delivery's event id is derived from the
request's `alert_id`, so even a request that slips past the dispatcher's own memory (redelivered
after a crash) produces an event the processor recognises as a repeat.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import msgspec

from config import Settings
from consumers.fleet import Fleet, Truck
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


def restock_event(request: RestockRequest, truck: Truck, ts_ms: int) -> Restock:
    token = request.alert_id.split("-", 1)[-1]
    return Restock(
        event_id=f"delivery-{request.alert_id}",
        store_id=request.store_id,
        ts=to_datetime(ts_ms),
        product_id=request.product_id,
        quantity=max(1, min(request.requested_quantity, truck.capacity)),
        delivery_id=f"dlv-{token[:16]}",
        truck_id=truck.truck_id,
    )


def lease_seconds(settings: Settings) -> int:
    """Visibility timeout of a received request and the lease on its claim: the trip plus a margin."""
    return math.ceil(settings.travel_seconds) + settings.restock_visibility_s


class Dispatcher:
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
        self.fleet = Fleet.of(settings.trucks, settings.truck_capacity)
        self.stats = DispatchStats()
        self.recent: deque[Delivery] = deque(maxlen=50)
        self._trips: set[asyncio.Task[None]] = set()
        self._truck_free = asyncio.Event()

    async def run(self, stop: asyncio.Event, drain_timeout: float = 20.0) -> None:
        """Take requests until `stop`; then let trucks on the road finish (up to `drain_timeout`)."""
        visibility = lease_seconds(self._settings)
        while not stop.is_set():
            free = self.fleet.free()
            if free == 0:
                self._truck_free.clear()
                await _first(stop.wait(), self._truck_free.wait())
                continue
            resp = await self._sqs.receive_message(
                QueueUrl=self._queue_url,
                MaxNumberOfMessages=min(10, free),
                WaitTimeSeconds=self._wait_seconds,
                VisibilityTimeout=visibility,
            )
            for message in resp.get("Messages", []):
                await self._handle(message)
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
        claim = await self._log.claim(request.alert_id)
        if claim == "delivered":
            self.stats.duplicates_dropped += 1
            await self._sqs.delete_message(QueueUrl=self._queue_url, ReceiptHandle=message["ReceiptHandle"])
            return
        if claim == "busy":
            # A truck is already on it (here or at another worker). This copy stays hidden for one
            # lease and comes back: by then the request is delivered (and the copy dropped), or the
            # claim has expired with its worker, and the copy is delivered. Never lost, never twice.
            self.stats.busy_elsewhere += 1
            return
        truck = self.fleet.assign(request.alert_id)
        if truck is None:  # cannot happen: we never receive more than the free trucks
            await self._log.release(request.alert_id)
            return
        task = asyncio.create_task(self._trip(truck, request, message["ReceiptHandle"]))
        self._trips.add(task)
        task.add_done_callback(self._trips.discard)

    async def _trip(self, truck: Truck, request: RestockRequest, receipt: str) -> None:
        delivered = False
        try:
            await asyncio.sleep(self._settings.travel_seconds)
            # From here on the delivery completes even if the worker is stopping.
            await asyncio.shield(self._deliver(truck, request, receipt))
            delivered = True
        except asyncio.CancelledError:
            if not delivered:
                await self._log.release(request.alert_id)
            raise
        except Exception:
            await self._log.release(request.alert_id)
            log.exception(
                "delivery failed; the request stays on the queue", extra={"alert_id": request.alert_id}
            )
        finally:
            self.fleet.release(truck, delivered)
            self._truck_free.set()

    async def _deliver(self, truck: Truck, request: RestockRequest, receipt: str) -> None:
        now = self._clock.now_ms()
        event = restock_event(request, truck, now)
        failed_before = self._writer.stats.failed
        accepted = await self._writer.put(encode(event), event.store_id)
        await self._writer.flush()
        if not accepted or self._writer.stats.failed > failed_before:
            # Possibly not in the stream: keep the message. Should it have been written after all, the
            # redelivery writes the same event id again, and the processor takes it once.
            raise ShelfstreamError(f"delivery event for {request.alert_id} was not written")
        await self._log.delivered(request.alert_id)
        if self._on_delivery is not None:
            self._on_delivery(event)
        await self._sqs.delete_message(QueueUrl=self._queue_url, ReceiptHandle=receipt)
        self.stats.deliveries += 1
        self.stats.units_delivered += event.quantity
        self.recent.append(
            Delivery(
                delivery_id=event.delivery_id or "",
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
                "truck_id": truck.truck_id,
                "store_id": event.store_id,
                "product_id": event.product_id,
                "quantity": event.quantity,
                "lead_ms": now - parse_ts(request.ts),
            },
        )


async def _first(*aws: Any) -> None:
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
