"""The dashboard's view is the processor's own numbers: fed from real shard cores and their effects."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import orjson

from consumers.fleet import TruckFleet
from consumers.trips import Travel, plan_trip
from foundation.contract import Restock, decode_alert, parse_ts, to_datetime
from processors.core import ShardCore
from shelfstream.api.feeds import ProcessorFeed, delivery_json
from shelfstream.api.state import DashboardState, ProductStock, StoreStock, stock_from_cores

T0 = parse_ts("2026-08-01T10:00:00Z")


def _event(event_id: str, kind: str, minute: float, store: str = "store-001", **fields: Any) -> bytes:
    ts = to_datetime(T0 + int(minute * 60_000)).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    return orjson.dumps({"event_id": event_id, "type": kind, "store_id": store, "ts": ts, **fields})


def _core() -> ShardCore:
    core = ShardCore()
    core.apply(_event("p1", "product", 0, product_id="apples", name="Apples", restock_threshold=3))
    core.apply(_event("c1", "count", 0, product_id="apples", count=5))
    core.apply(_event("c2", "count", 0, product_id="milk", count=30))
    core.apply(_event("c3", "count", 0, store="store-002", product_id="milk", count=8))
    for i in range(5):
        core.apply(_event(f"s{i}", "sale", 1 + i, product_id="apples", quantity=1, unit_price=2.0))
    # Past the first 15-minute window and its 2 minutes of lateness: the window closes.
    core.apply(_event("s9", "sale", 40, product_id="milk", quantity=1, unit_price=1.0))
    return core


def test_stock_comes_from_the_cores_with_thresholds_names_and_open_requests() -> None:
    stores = stock_from_cores([_core()])
    assert list(stores) == ["store-001", "store-002"]
    apples = stores["store-001"].products["apples"]
    assert apples == ProductStock(on_hand=0, threshold=3, name="Apples", open_request=True)
    assert apples.status == "out"
    assert stores["store-001"].products["milk"].on_hand == 29
    assert stores["store-001"].stock_outs == 1
    assert stores["store-001"].open_requests == 1
    assert stores["store-001"].on_hand_total == 29
    assert stores["store-002"].products["milk"].status == "ok"


def test_the_processor_feed_passes_on_alerts_requests_windows_and_stock() -> None:
    core = _core()
    state = DashboardState()
    feed = ProcessorFeed(state)
    feed.on_effects("shard-0", core.drain())
    kinds = sorted(a["kind"] for a in state.alerts(_hq()))
    assert kinds == ["out_of_stock", "restock_request"]
    windows = state.windows("store-001", "15m")
    assert windows
    assert windows[0]["sales"] == 5
    assert windows[0]["window_end"] == "2026-08-01T10:15:00.000Z"

    fleet = TruckFleet.of(2, 100)
    request = next(a for a in state.alerts(_hq()) if a["kind"] == "restock_request")
    trip = plan_trip([decode_alert(orjson.dumps(request))], 100, Travel(1.0, 1.0), 3, 0.0)  # type: ignore[list-item]
    assert trip is not None
    fleet.assign(trip)
    feed.watch(SimpleNamespace(workers={"shard-0": SimpleNamespace(core=core)}), SimpleNamespace(fleet=fleet))
    feed.refresh()
    assert state.stock["store-001"].products["apples"].on_hand == 0
    assert state.trucks[0] == {
        "truck_id": "truck-01",
        "status": "on the road",
        "store_id": "store-001",
        "product_id": None,
        "trip_id": trip.trip_id,
        "stops": [{"store_id": "store-001", "products": ["apples"], "units": trip.units}],
        "stores": ["store-001"],
        "units": trip.units,
        "deliveries": 0,
        "trips": 0,
        "capacity": 100,
    }
    assert state.trucks_for(_hq(), "store-001") == [state.trucks[0]]
    assert state.trucks[1]["status"] == "at the depot"

    event = Restock(
        event_id="delivery-x",
        store_id="store-001",
        ts=to_datetime(T0 + 3_600_000),
        product_id="apples",
        quantity=40,
        delivery_id="dlv-1",
        truck_id="truck-01",
    )
    feed.on_delivery(event)
    assert state.recent_deliveries(_hq()) == [delivery_json(event)]
    assert delivery_json(event)["ts"] == "2026-08-01T11:00:00.000Z"


def test_changes_are_published_once_and_repeats_are_dropped() -> None:
    state = DashboardState()
    stock = StoreStock({"milk": ProductStock(5, 3)})
    assert state.set_stock("store-001", stock) is True
    assert state.set_stock("store-001", StoreStock({"milk": ProductStock(5, 3)})) is False
    alert = {
        "kind": "out_of_stock",
        "alert_id": "a1",
        "store_id": "store-001",
        "ts": "2026-08-01T10:00:00Z",
        "product_id": "m",
        "on_hand": 0,
    }
    assert state.add_alert(alert) is True
    assert state.add_alert(dict(alert)) is False  # a replay repeats the id: one alert
    window = {"store_id": "store-001", "window": "15m", "window_end": "2026-08-01T10:15:00.000Z", "sales": 1}
    assert state.add_window(orjson.dumps(window)) is True
    assert state.add_window(window) is False
    assert state.set_trucks([{"truck_id": "t"}]) is True
    assert state.set_trucks([{"truck_id": "t"}]) is False
    kinds = [m.kind for m in state.hub._backlog]
    assert kinds == ["stock", "alert", "window", "trucks"]


def test_malformed_feed_entries_are_ignored_not_fatal() -> None:
    state = DashboardState()
    assert state.add_alert({"kind": "x", "alert_id": "a", "store_id": "s", "ts": "not a time"}) is False
    assert state.add_alert({"kind": "x", "store_id": "s", "ts": "2026-08-01T10:00:00Z"}) is False
    assert state.add_window({"window": "15m"}) is False
    assert state.add_delivery({"store_id": "s"}) is False
    assert state.hub._backlog == type(state.hub._backlog)(maxlen=state.hub._backlog.maxlen)


def test_a_store_that_vanished_from_the_processor_is_emptied() -> None:
    state = DashboardState()
    state.replace_stock(
        {"a": StoreStock({"x": ProductStock(1, 0)}), "b": StoreStock({"y": ProductStock(2, 0)})}
    )
    state.replace_stock({"a": StoreStock({"x": ProductStock(1, 0)})})
    assert state.stock["b"] == StoreStock()


def _hq() -> Any:
    from shelfstream.api.auth import Principal

    return Principal("hq", None, "k")


def test_items_at_risk_come_from_requests_and_leave_with_their_delivery() -> None:
    state = DashboardState()
    for product, when in (("milk", "2026-08-03T12:00:00.000Z"), ("bread", "2026-08-03T10:30:00.000Z")):
        state.add_alert(
            {
                "kind": "restock_request",
                "alert_id": f"res-{product}",
                "store_id": "store-001",
                "ts": "2026-08-03T09:00:00.000Z",
                "product_id": product,
                "on_hand": 9,
                "threshold": 5,
                "requested_quantity": 30,
                "reason": "forecast",
                "expected_stockout_at": when,
            }
        )
    summary = state.summaries(_hq())[0]
    assert [i["product_id"] for i in summary["at_risk"]] == ["bread", "milk"]  # soonest first
    state.add_delivery(
        {
            "event_id": "delivery-res-bread",
            "delivery_id": "trip-1",
            "store_id": "store-001",
            "product_id": "bread",
        }
    )
    state.add_delivery(  # same trip, another product: a delivery of its own
        {
            "event_id": "delivery-res-eggs",
            "delivery_id": "trip-1",
            "store_id": "store-001",
            "product_id": "eggs",
        }
    )
    assert len(state.deliveries) == 2
    assert [i["product_id"] for i in state.summaries(_hq())[0]["at_risk"]] == ["milk"]


def test_a_window_revision_replaces_the_window_it_revises() -> None:
    state = DashboardState()
    window = {"store_id": "store-001", "window": "15m", "window_end": "2026-08-01T10:15:00.000Z", "sales": 1}
    assert state.add_window(window) is True
    assert state.add_window(window | {"sales": 40, "revision": 2}) is True
    assert state.add_window(window | {"sales": 30, "revision": 1}) is False  # older, after a newer one
    assert [(w["sales"], w.get("revision")) for w in state.windows("store-001")] == [(40, 2)]


def test_a_stores_zone_is_its_latest_windows_and_utc_until_one_gave_it() -> None:
    from shelfstream.api.auth import Principal

    state = DashboardState()
    hq = Principal("hq", None, "k")
    state.set_stock("store-a", StoreStock({"p": ProductStock(1, 5)}))
    assert [s["timezone"] for s in state.summaries(hq)] == ["UTC"]
    base = {"store_id": "store-a", "window": "15m", "kind": "tumbling"}
    state.add_window(base | {"window_end": "2026-08-01T10:15:00.000Z", "timezone": "Europe/Berlin"})
    assert [s["timezone"] for s in state.summaries(hq)] == ["Europe/Berlin"]
    state.add_window(base | {"window_end": "2026-08-01T10:30:00.000Z"})  # a record without one keeps it
    assert [s["timezone"] for s in state.summaries(hq)] == ["Europe/Berlin"]
