"""The demand-aware restock policy of the core: what it learns, when it asks, and that it replays."""

from __future__ import annotations

import datetime as dt
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consumers.dispatcher import restock_event
from foundation.contract import RestockRequest, encode, format_ts
from processors.core import CoreConfig, ShardCore
from processors.core.demand import HOUR_MS, DemandForecast, RestockConfig
from producers.ledger import Ledger
from producers.simulator import StoreSimulator
from tests.unit.stored import encoded

MONDAY = int(dt.datetime(2026, 8, 3, tzinfo=dt.UTC).timestamp() * 1000)
STORE = "store-001"


def ev(kind: str, event_id: str, ts_ms: int, **fields: Any) -> bytes:
    return orjson.dumps(
        {"event_id": event_id, "type": kind, "store_id": STORE, "ts": format_ts(ts_ms), **fields}
    )


def core(policy: str = "forecast") -> ShardCore:
    return ShardCore(
        CoreConfig(archive=False, window_ms=0, restock=RestockConfig(policy=policy))  # type: ignore[arg-type]
    )


def history(days: int = 2, fast_per_hour: int = 12, slow_per_hour: int = 1) -> list[bytes]:
    """Two products on a deep shelf (no requests), selling 08:00-20:00: one fast, one slow."""
    out = [
        ev("count", "c-fast", MONDAY, product_id="fast", count=100_000),
        ev("count", "c-slow", MONDAY, product_id="slow", count=100_000),
    ]
    n = 0
    for day in range(days):
        for hour in range(8, 20):
            base = MONDAY + day * 24 * HOUR_MS + hour * HOUR_MS
            for product, per_hour in (("fast", fast_per_hour), ("slow", slow_per_hour)):
                for i in range(per_hour):
                    n += 1
                    at = base + (i * HOUR_MS) // per_hour + 1000
                    out.append(ev("sale", f"s{n}", at, product_id=product, quantity=1, unit_price=2.0))
    return out


def feed(c: ShardCore, records: list[bytes]) -> list[RestockRequest]:
    for record in records:
        c.apply(record)
    return c.drain().requests


def test_a_fast_mover_is_asked_for_before_a_slow_one_at_the_same_stock() -> None:
    c = core()
    assert feed(c, history()) == []
    t = MONDAY + 2 * 24 * HOUR_MS + 9 * HOUR_MS  # Wednesday 09:00
    requests = feed(
        c,
        [
            ev("count", "w-fast", t, product_id="fast", count=20),
            ev("count", "w-slow", t, product_id="slow", count=20),
        ],
    )
    assert [r.product_id for r in requests] == ["fast"]
    fast = requests[0]
    assert fast.reason == "forecast"
    assert fast.on_hand == 20
    assert fast.on_hand > fast.threshold
    assert fast.daily_demand is not None
    assert 100 < fast.daily_demand < 200
    assert fast.lead_time_s == 3600.0  # the prior: nothing delivered yet
    assert fast.expected_stockout_at is not None
    hours_left = (
        dt.datetime.fromisoformat(fast.expected_stockout_at.replace("Z", "+00:00")).timestamp() * 1000 - t
    ) / HOUR_MS
    assert 1.3 < hours_left < 2.0  # 20 units at 12 an hour
    # the slow mover at the same stock is asked for only when the threshold floor is reached
    assert feed(c, [ev("count", "w-slow-2", t + 60_000, product_id="slow", count=5)])[0].reason == "threshold"


def test_the_threshold_policy_ignores_the_forecast() -> None:
    c = core("threshold")
    feed(c, history())
    t = MONDAY + 2 * 24 * HOUR_MS + 9 * HOUR_MS
    assert feed(c, [ev("count", "w-fast", t, product_id="fast", count=20)]) == []
    request = feed(c, [ev("count", "w-fast-2", t + 1, product_id="fast", count=4)])[0]
    assert request.reason == "threshold"
    assert request.requested_quantity == 40 - 4
    assert request.daily_demand is None
    assert request.expected_stockout_at is None


def test_too_little_history_falls_back_to_the_threshold() -> None:
    c = core()
    feed(c, history(days=0))
    t = MONDAY + 9 * HOUR_MS
    assert feed(c, [ev("count", "w", t, product_id="fast", count=20)]) == []
    assert feed(c, [ev("count", "w2", t + 1, product_id="fast", count=5)])[0].reason == "threshold"


def test_the_lead_time_is_learned_from_the_deliveries_that_answer_requests() -> None:
    c = core()
    feed(c, history())
    t = MONDAY + 2 * 24 * HOUR_MS + 9 * HOUR_MS
    first = feed(c, [ev("count", "w-fast", t, product_id="fast", count=20)])[0]
    delivered_at = t + 2 * HOUR_MS
    feed(
        c,
        [
            ev(
                "restock",
                f"delivery-{first.alert_id}",
                delivered_at,
                product_id="fast",
                quantity=50,
                delivery_id="trip-1",
                truck_id="truck-01",
            )
        ],
    )
    demand = c.state.forecast
    assert demand is not None
    assert demand.lead_ms(STORE) == 2 * HOUR_MS
    second = feed(c, [ev("count", "w-fast-2", delivered_at + 60_000, product_id="fast", count=20)])[0]
    assert second.lead_time_s == 7200.0
    # a restock that answers no request (a stock take, a delivery nobody asked for) teaches nothing
    feed(c, [ev("restock", "manual-1", delivered_at + 2 * HOUR_MS, product_id="slow", quantity=5)])
    assert demand.lead_ms(STORE) == 2 * HOUR_MS


def test_the_order_fits_under_the_target_stock_on_arrival() -> None:
    c = core()
    feed(c, history())
    feed(c, [ev("product", "p-fast", MONDAY + 2 * 24 * HOUR_MS, product_id="fast", target_stock=60)])
    t = MONDAY + 2 * 24 * HOUR_MS + 9 * HOUR_MS
    request = feed(c, [ev("count", "w-fast", t, product_id="fast", count=20)])[0]
    # 20 on hand, about 12 sell in the hour the truck takes: no more than 60 - 8 fit when it comes,
    # although a day's demand is far more than that
    assert 45 <= request.requested_quantity <= 60 - 7


def test_other_products_that_will_need_a_truck_join_the_order() -> None:
    c = core()
    feed(c, history())
    t = MONDAY + 2 * 24 * HOUR_MS + 9 * HOUR_MS
    feed(c, [ev("count", "w-slow", t, product_id="slow", count=2 + 5)])  # above its floor of 5
    requests = feed(c, [ev("count", "w-fast", t + 1, product_id="fast", count=20)])
    assert [r.product_id for r in requests] == ["fast", "slow"]
    assert requests[0].ts == requests[1].ts  # asked for together, one truck


def test_replay_and_checkpoints_give_the_same_requests() -> None:
    records = history()
    t = MONDAY + 2 * 24 * HOUR_MS + 9 * HOUR_MS
    records += [ev("count", f"w{i}", t + i * HOUR_MS, product_id="fast", count=20 - i) for i in range(5)]
    records += [
        ev("sale", f"late{i}", t + 6 * HOUR_MS + i, product_id="fast", quantity=1, unit_price=2.0)
        for i in range(20)
    ]
    whole = feed(core(), records)
    assert whole
    for cut in (len(records) // 3, len(records) - 10):
        first = core()
        before = feed(first, records[:cut])
        restored = ShardCore.restore(first.snapshot())
        assert before + feed(restored, records[cut:]) == whole  # same ids, same fields


def test_the_learned_state_stays_bounded() -> None:
    c = core()
    feed(c, history(days=21, fast_per_hour=2, slow_per_hour=1))
    demand = c.state.forecast
    assert demand is not None
    store = demand.stores[STORE]
    assert len(store.week) == 168
    assert len(store.day) == 24
    assert sum(len(items) for items in demand.items.values()) == 2
    assert len(encoded(demand, DemandForecast)) < 20_000


@settings(max_examples=10, deadline=None)
@given(
    seed=st.integers(min_value=0, max_value=10_000),
    trucks=st.lists(st.tuples(st.integers(1, 3 * 24 * 60), st.integers(1, 60)), max_size=20),
)
def test_stock_still_equals_the_ledger_with_forecasts_and_trucks(
    seed: int, trucks: list[tuple[int, int]]
) -> None:
    """Simulated stores over three days, the core under the forecast policy, and trucks answering its
    requests at random times: the core's stock is the producers' ledger and the simulated shelves."""
    sim = StoreSimulator(seed, 2, 8, MONDAY, baskets_per_hour=30)
    c = ShardCore(CoreConfig(archive=False, window_ms=0))
    ledger = Ledger()
    open_requests: list[RestockRequest] = []
    for minute, units in sorted(trucks):
        at = MONDAY + minute * 60_000
        for event in sim.events_until(at):
            c.apply(event.data)
            ledger.record(event.data)
        open_requests.extend(c.drain().requests)
        if open_requests:
            request = open_requests.pop(0)
            sim.deliver(request.store_id, request.product_id, units, at)
            restock = encode(restock_event(request, units, "trip-x", "truck-01", sim.position_ms))
            c.apply(restock)
            ledger.record(restock)
    for event in sim.events_until(MONDAY + 3 * 24 * HOUR_MS):
        c.apply(event.data)
        ledger.record(event.data)
    assert c.inventory() == ledger.stock()
    assert all(
        sim.shelves.on_hand(s, p) == n for s, products in ledger.stock().items() for p, n in products.items()
    )


def test_a_delivery_days_after_its_request_is_not_a_lead_time() -> None:
    c = core()
    feed(c, history())
    t = MONDAY + 2 * 24 * HOUR_MS + 9 * HOUR_MS
    first = feed(c, [ev("count", "w-fast", t, product_id="fast", count=20)])[0]
    late = t + 200 * 24 * HOUR_MS  # a replayed file answered by trucks that stamp today's date
    feed(
        c, [ev("restock", f"delivery-{first.alert_id}", late, product_id="fast", quantity=5, delivery_id="d")]
    )
    demand = c.state.forecast
    assert demand is not None
    assert demand.lead_ms(STORE) == 3_600_000  # still the prior


def test_a_product_that_sells_nothing_does_not_join_above_its_threshold() -> None:
    """A product on the shelf that never sells has nothing to order: it waits for its threshold."""
    c = core()
    feed(c, [ev("count", "c-idle", MONDAY, product_id="idle", count=7), *history()])
    t = MONDAY + 2 * 24 * HOUR_MS + 9 * HOUR_MS
    requests = feed(c, [ev("count", "w-fast", t, product_id="fast", count=20)])
    assert [r.product_id for r in requests] == ["fast"]
    # at its threshold (5) it is asked for, alone or with the next order
    requests = feed(c, [ev("count", "w-idle", t + 1, product_id="idle", count=5)])
    assert [(r.product_id, r.reason, r.requested_quantity) for r in requests] == [("idle", "threshold", 1)]


def test_a_shelf_at_its_target_does_not_join_however_small_the_target() -> None:
    c = core()
    feed(c, history())
    t = MONDAY + 2 * 24 * HOUR_MS + 9 * HOUR_MS
    feed(c, [ev("product", "p-slow", t, product_id="slow", restock_threshold=1, target_stock=4)])
    feed(c, [ev("count", "w-slow", t, product_id="slow", count=4)])
    requests = feed(c, [ev("count", "w-fast", t + 1, product_id="fast", count=20)])
    assert [r.product_id for r in requests] == ["fast"]
    # one below its target, it sells more than that before a truck comes: it is asked for
    requests = feed(c, [ev("count", "w-slow2", t + 2, product_id="slow", count=3)])
    assert [(r.product_id, r.reason) for r in requests] == [("slow", "forecast")]


def test_a_fast_mover_above_its_target_is_not_asked_for() -> None:
    """A target below the demand over the lead time: the shelf holds no more, so none is asked for
    until it is below its target."""
    c = core()
    feed(c, history())
    t = MONDAY + 2 * 24 * HOUR_MS + 9 * HOUR_MS
    feed(c, [ev("product", "p-fast", t, product_id="fast", restock_threshold=1, target_stock=10)])
    assert feed(c, [ev("count", "w-fast", t, product_id="fast", count=10)]) == []
    requests = feed(c, [ev("count", "w-fast2", t + 1, product_id="fast", count=9)])
    # all 9 sell before the truck comes (about 12 an hour): 10 fit when it comes
    assert [(r.product_id, r.requested_quantity) for r in requests] == [("fast", 10)]


@settings(max_examples=8, deadline=None)
@given(
    seed=st.integers(min_value=0, max_value=10_000),
    trucks=st.lists(st.tuples(st.integers(1, 3 * 24 * 60), st.integers(1, 90)), max_size=25),
)
def test_no_request_for_a_full_shelf_nor_for_nothing(seed: int, trucks: list[tuple[int, int]]) -> None:
    """Simulated stores whose shelves start anywhere from empty to well over their target, trucks that
    bring any amount: every request is for at least one unit, of a shelf below its target."""
    # shelves of a small store (targets 4-8): the join bar of a fifth of an order is below one unit
    sim = StoreSimulator(seed, 2, 10, MONDAY, baskets_per_hour=60, initial_stock=(0, 120), shelf_scale=0.1)
    c = ShardCore(CoreConfig(archive=False, window_ms=0))
    targets = {item.product_id: item.target_stock for item in sim.catalog}
    made: list[RestockRequest] = []
    open_requests: list[RestockRequest] = []
    for minute, units in [*sorted(trucks), (3 * 24 * 60, 0)]:
        at = MONDAY + minute * 60_000
        for event in sim.events_until(at):
            c.apply(event.data)
        new = c.drain().requests
        made += new
        open_requests += new
        if open_requests and units:
            request = open_requests.pop(0)
            sim.deliver(request.store_id, request.product_id, units, at)
            c.apply(encode(restock_event(request, units, "trip-x", "truck-01", sim.position_ms)))
    assert made  # the property is about requests: there must be some
    for r in made:
        assert r.requested_quantity >= 1, r
        assert r.on_hand < targets[r.product_id], r


def test_the_service_level_is_per_class_of_velocity_and_value() -> None:
    cfg = RestockConfig(service_level=0.97, service_level_fast=0.995, service_level_slow=0.9)
    assert cfg.z_of(25.0, None) == cfg.z_fast  # fast: 20 a day or more
    assert cfg.z_of(5.0, 1.0) == cfg.z  # neither fast nor slow, worth 5 a day
    assert cfg.z_of(5.0, 40.0) == cfg.z_fast  # worth 200 a day: valuable
    assert cfg.z_of(1.0, None) == cfg.z_slow
    assert cfg.z_of(1.0, 500.0) == cfg.z_fast  # slow but worth 500 a day
    assert cfg.z_slow < cfg.z < cfg.z_fast
    with pytest.raises(ValueError, match="service_level_fast"):
        RestockConfig(service_level_fast=1.0)


def test_a_fast_movers_reorder_point_follows_its_class_level_and_a_medium_ones_does_not() -> None:
    """history(): fast sells 144 a day (fast class), slow 12 (the default class)."""
    t = MONDAY + 2 * 24 * HOUR_MS + 9 * HOUR_MS
    points = []
    for fast_level in (0.95, 0.999):
        c = ShardCore(
            CoreConfig(archive=False, window_ms=0, restock=RestockConfig(service_level_fast=fast_level))
        )
        feed(c, history())
        demand = c.state.forecast
        assert demand is not None
        points.append([demand.plan(STORE, p, t).reorder_point for p in ("fast", "slow")])  # type: ignore[union-attr]
    assert points[1][0] > points[0][0] + 1
    assert points[1][1] == points[0][1]
