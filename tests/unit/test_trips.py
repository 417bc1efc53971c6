"""Trip planning: a store's order on one truck, capacity, the routing rule, the fleet's clock."""

from __future__ import annotations

from consumers.fleet import TruckFleet
from consumers.trips import Travel, plan_trip, retime
from foundation.contract import RestockRequest, alert_id

TRAVEL = Travel(depot_s=10.0, between_s=30.0, pairs={"store-001|store-002": 3.0})


def request(
    store: str, product: str, quantity: int, ts: str = "2026-08-03T09:00:00.000Z", **kw: str
) -> RestockRequest:
    return RestockRequest(
        alert_id=alert_id("restock_request", store, product, ts),
        store_id=store,
        ts=ts,
        product_id=product,
        on_hand=3,
        threshold=5,
        requested_quantity=quantity,
        **kw,  # type: ignore[arg-type]
    )


def test_a_stores_whole_order_goes_on_one_truck() -> None:
    pending = [request("store-001", p, 20) for p in ("milk", "bread", "eggs")]
    trip = plan_trip(pending, 400, TRAVEL, 3, next_truck_in_s=0.0)
    assert trip is not None
    assert [s.store_id for s in trip.stops] == ["store-001"]
    assert {load.request.product_id for load in trip.stops[0].loads} == {"milk", "bread", "eggs"}
    assert trip.units == 60
    assert trip.stops[0].arrive_s == 10.0
    assert trip.back_s == 20.0


def test_capacity_splits_an_order_into_two_trips() -> None:
    pending = [request("store-001", p, 150) for p in ("milk", "bread", "eggs")]
    first = plan_trip(pending, 400, TRAVEL, 3, next_truck_in_s=0.0)
    assert first is not None
    assert first.units == 300
    assert len(first.requests) == 2
    left = [r for r in pending if r not in first.requests]
    second = plan_trip(left, 400, TRAVEL, 3, next_truck_in_s=0.0)
    assert second is not None
    assert second.requests == left
    assert first.trip_id != second.trip_id
    # one request larger than a whole truck is cut to a truckload
    huge = plan_trip([request("store-001", "water", 900)], 400, TRAVEL, 3, 0.0)
    assert huge is not None
    assert huge.units == 400


def test_a_trip_goes_on_to_a_nearby_store_only_when_that_gets_there_sooner() -> None:
    pending = [
        request("store-001", "milk", 50),
        request("store-002", "milk", 50),
        request("store-003", "milk", 50),
    ]
    # Another truck is free: it reaches store-002 in 10 s, this one only in 13 s; it does not go on.
    alone = plan_trip(pending, 400, TRAVEL, 3, next_truck_in_s=0.0)
    assert alone is not None
    assert [s.store_id for s in alone.stops] == ["store-001"]
    # Every other truck is out for 60 s more: going on is sooner for store-002 (13 s against 70 s)
    # and for store-003 too (13 + 30 = 43 s against 70 s).
    chained = plan_trip(pending, 400, TRAVEL, 3, next_truck_in_s=60.0)
    assert chained is not None
    assert [(s.store_id, s.arrive_s) for s in chained.stops] == [
        ("store-001", 10.0),
        ("store-002", 13.0),
        ("store-003", 43.0),
    ]
    assert chained.back_s == 53.0
    # ... but never beyond max_stops, nor beyond capacity
    two = plan_trip(pending, 400, TRAVEL, 2, next_truck_in_s=60.0)
    assert two is not None
    assert len(two.stops) == 2
    full = plan_trip(pending, 100, TRAVEL, 3, next_truck_in_s=60.0)
    assert full is not None
    assert [s.store_id for s in full.stops] == ["store-001", "store-002"]


def test_the_most_urgent_store_goes_first() -> None:
    calm = request("store-001", "milk", 10, expected_stockout_at="2026-08-03T18:00:00.000Z")
    urgent = request(
        "store-002",
        "milk",
        10,
        ts="2026-08-03T09:30:00.000Z",
        expected_stockout_at="2026-08-03T10:00:00.000Z",
    )
    trip = plan_trip([calm, urgent], 400, TRAVEL, 1, 0.0)
    assert trip is not None
    assert trip.stops[0].store_id == "store-002"


def test_retime_drops_requests_claimed_elsewhere() -> None:
    pending = [request("store-001", "milk", 50), request("store-002", "milk", 50)]
    trip = plan_trip(pending, 400, TRAVEL, 3, next_truck_in_s=60.0)
    assert trip is not None
    assert len(trip.stops) == 2
    only_second = retime(trip, {pending[1].alert_id}, TRAVEL)
    assert only_second is not None
    assert [(s.store_id, s.arrive_s) for s in only_second.stops] == [("store-002", 10.0)]
    assert retime(trip, set(), TRAVEL) is None


def test_the_fleet_knows_when_the_next_truck_is_back() -> None:
    fleet = TruckFleet.of(2, 400)
    trip = plan_trip([request("store-001", "milk", 5)], 400, TRAVEL, 1, 0.0)
    assert trip is not None
    assert fleet.next_truck_in_s(0) == 0.0  # two free
    truck = fleet.assign(trip, now_ms=1_000)
    assert truck is not None
    assert truck.back_ms == 21_000
    assert fleet.next_truck_in_s(1_000) == 20.0  # one free (about to leave): the other is back in 20 s
    fleet.release(truck, 1)
    assert truck.trips == 1
    assert truck.deliveries == 1
    assert fleet.free() == 2
