"""Trip planning: which open restock requests one truck takes, and in which order it visits stores.

Pure (no I/O, no clock: times are seconds from the truck's departure), so the dispatch worker and the
restock benchmark run the very same rules.

The rule, in full:

1. The first stop is the store of the most urgent open request: the earliest expected stock-out
   (`expected_stockout_at`), or for requests without one, the oldest (by `ts`). The truck loads that
   store's requests, most urgent first, as long as they fit in what is left of its capacity (units);
   a request that does not fit waits for the next truck (a store's order larger than a truck goes in
   two trips). A single request larger than a whole truck is cut to the truck's capacity.
2. The truck goes on to another store, up to ``max_stops`` stores, only when that gets it there sooner
   than any other truck could: arriving via this trip (the stops so far, then the hop between the two
   stores) must beat the moment the next truck is free (now, when one is waiting at the depot) plus
   the drive from the depot. Among such stores, the nearest to the last stop; its requests are loaded
   as in 1.
3. The truck then drives back to the depot.

Travel times: ``travel_seconds`` from the depot to any store, ``travel_pairs`` for pairs of stores
(either order) and ``travel_between_s`` for pairs not listed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from foundation.contract import RestockRequest


@dataclass(frozen=True)
class Travel:
    depot_s: float
    between_s: float
    pairs: Mapping[str, float] = field(default_factory=dict)

    def depot(self, store_id: str) -> float:
        return self.depot_s

    def between(self, a: str, b: str) -> float:
        if a == b:
            return 0.0
        hop = self.pairs.get(f"{a}|{b}")
        if hop is None:
            hop = self.pairs.get(f"{b}|{a}")
        return self.between_s if hop is None else hop

    def longest_trip_s(self, max_stops: int) -> float:
        """An upper bound of a trip's duration, for leases and visibility timeouts."""
        hop = max([self.between_s, *self.pairs.values()])
        return 2 * self.depot_s + (max_stops - 1) * hop


@dataclass(frozen=True)
class Load:
    request: RestockRequest
    quantity: int


@dataclass(frozen=True)
class Stop:
    store_id: str
    arrive_s: float  # seconds after departure
    loads: tuple[Load, ...]

    @property
    def units(self) -> int:
        return sum(load.quantity for load in self.loads)


@dataclass(frozen=True)
class Trip:
    trip_id: str
    stops: tuple[Stop, ...]
    back_s: float  # seconds after departure when the truck is back at the depot

    @property
    def units(self) -> int:
        return sum(stop.units for stop in self.stops)

    @property
    def requests(self) -> list[RestockRequest]:
        return [load.request for stop in self.stops for load in stop.loads]


def trip_id(requests: Sequence[RestockRequest]) -> str:
    """Deterministic from the requests it carries (as delivery ids are from their cause)."""
    digest = hashlib.blake2b(
        "\x1f".join(sorted(r.alert_id for r in requests)).encode(), digest_size=8
    ).hexdigest()
    return f"trip-{digest}"


def urgency(request: RestockRequest) -> str:
    """Sort key: when the shelf is expected to be empty, else when it was asked for (RFC 3339 UTC
    strings of one format sort as times)."""
    return request.expected_stockout_at or request.ts


def _load(requests: Sequence[RestockRequest], room: int, empty: bool) -> tuple[list[Load], int]:
    loads: list[Load] = []
    for request in requests:
        quantity = max(1, request.requested_quantity)
        if quantity > room and empty and not loads:
            quantity = room  # one request larger than the whole truck: cut to a truckload
        if quantity <= room:
            loads.append(Load(request, quantity))
            room -= quantity
        if room <= 0:
            break
    return loads, room


def plan_trip(
    pending: Sequence[RestockRequest],
    capacity: int,
    travel: Travel,
    max_stops: int,
    next_truck_in_s: float,
) -> Trip | None:
    """One truck's trip from the open requests ``pending`` (oldest first). ``next_truck_in_s``: when
    another truck could leave the depot (0 when one is free besides this one). None: nothing to do."""
    if not pending or capacity < 1:
        return None
    by_store: dict[str, list[RestockRequest]] = {}
    for request in sorted(pending, key=urgency):
        by_store.setdefault(request.store_id, []).append(request)
    first = min(pending, key=urgency).store_id
    loads, room = _load(by_store.pop(first), capacity, empty=True)
    clock = travel.depot(first)
    stops = [Stop(first, clock, tuple(loads))]
    while len(stops) < max_stops and room > 0 and by_store:
        last = stops[-1].store_id
        best: tuple[float, str] | None = None
        for store_id, requests in by_store.items():
            if min(max(1, r.requested_quantity) for r in requests) > room:
                continue
            via = clock + travel.between(last, store_id)
            direct = next_truck_in_s + travel.depot(store_id)
            if via < direct and (best is None or via < best[0]):
                best = (via, store_id)
        if best is None:
            break
        clock, store_id = best
        loads, room = _load(by_store.pop(store_id), room, empty=False)
        stops.append(Stop(store_id, clock, tuple(loads)))
    back = clock + travel.depot(stops[-1].store_id)
    carried = [load.request for stop in stops for load in stop.loads]
    return Trip(trip_id(carried), tuple(stops), back)


def retime(trip: Trip, keep: set[str], travel: Travel) -> Trip | None:
    """The same trip with only the requests in ``keep`` (by alert id), stops without any dropped and
    arrival times worked out again. None when nothing is left."""
    stops: list[Stop] = []
    clock = 0.0
    for stop in trip.stops:
        loads = tuple(load for load in stop.loads if load.request.alert_id in keep)
        if not loads:
            continue
        clock += (
            travel.depot(stop.store_id) if not stops else travel.between(stops[-1].store_id, stop.store_id)
        )
        stops.append(Stop(stop.store_id, clock, loads))
    if not stops:
        return None
    carried = [load.request for stop in stops for load in stop.loads]
    return Trip(trip_id(carried), tuple(stops), clock + travel.depot(stops[-1].store_id))
