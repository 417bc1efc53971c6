"""The store simulator: deterministic, contract-valid, with a daily rhythm and optional noise."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections import Counter
from collections.abc import Callable

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from foundation.contract import Count, Product, Refund, Rejection, Sale, decode_event, parse_ts
from foundation.timeunits import DAY_MS, HOUR_MS
from producers.ledger import Ledger
from producers.replay import run_simulation
from producers.simulator import RHYTHM_MAX, SimEvent, StoreSimulator, rhythm

# A Wednesday and the Saturday after it, both at midnight UTC.
WEDNESDAY = int(dt.datetime(2026, 7, 29, tzinfo=dt.UTC).timestamp() * 1000)
SATURDAY = WEDNESDAY + 3 * DAY_MS


# Shelves that never run empty, for the tests of what customers want (rhythm, baskets, refunds).
FULL = (10**6, 10**6)


def day_of(
    seed: int = 1, stores: int = 3, products: int = 20, **kw: float
) -> tuple[StoreSimulator, list[SimEvent]]:
    sim = StoreSimulator(seed, stores, products, WEDNESDAY, run_id="r1", initial_stock=FULL, **kw)  # type: ignore[arg-type]
    return sim, sim.events_until(WEDNESDAY + DAY_MS)


def test_two_runs_of_the_same_seed_lose_nothing_to_each_others_ids() -> None:
    """`simulate` twice with the same seed: every good event of both runs is applied, none is taken
    for a redelivery of the other run's event (only each run's own duplicates are dropped)."""
    from processors.core import CoreConfig, ShardCore

    core = ShardCore(CoreConfig())
    runs = []
    for _ in range(2):
        sim = StoreSimulator(2, 2, 6, WEDNESDAY, bad_fraction=0.01, duplicate_fraction=0.02)
        for event in sim.events_until(WEDNESDAY + DAY_MS // 4):
            core.apply(event.data)
        runs.append(sim)
    assert runs[0].run_id != runs[1].run_id
    stats = core.stats
    assert stats.events_valid - stats.duplicates_ignored == sum(s.stats.good for s in runs)
    assert stats.duplicates_ignored == sum(s.stats.duplicates for s in runs)


def test_same_seed_gives_same_bytes_and_another_seed_does_not() -> None:
    _, first = day_of(seed=5, bad_fraction=0.01, duplicate_fraction=0.01)
    _, again = day_of(seed=5, bad_fraction=0.01, duplicate_fraction=0.01)
    _, other = day_of(seed=6, bad_fraction=0.01, duplicate_fraction=0.01)
    assert [e.data for e in first] == [e.data for e in again]
    assert [e.data for e in first] != [e.data for e in other]


_WHOLE_DAY = StoreSimulator(
    3, 2, 8, WEDNESDAY, bad_fraction=0.02, duplicate_fraction=0.02, run_id="r1"
).events_until(WEDNESDAY + DAY_MS)


@settings(max_examples=20, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0, max_value=DAY_MS), max_size=12))
def test_output_does_not_depend_on_how_time_is_sliced(cuts: list[int]) -> None:
    sim = StoreSimulator(3, 2, 8, WEDNESDAY, bad_fraction=0.02, duplicate_fraction=0.02, run_id="r1")
    sliced: list[SimEvent] = []
    for cut in sorted(cuts):
        sliced.extend(sim.events_until(WEDNESDAY + cut))
    sliced.extend(sim.events_until(WEDNESDAY + DAY_MS))
    # Across stores, equal timestamps may interleave differently; each store's own sequence may not.
    for store in ("store-001", "store-002"):
        assert [e.data for e in sliced if e.store_id == store] == [
            e.data for e in _WHOLE_DAY if e.store_id == store
        ]
    assert len(sliced) == len(_WHOLE_DAY)


def test_opening_sends_the_catalog_then_a_stock_take_of_every_product() -> None:
    sim = StoreSimulator(9, 2, 5, WEDNESDAY)
    opening = sim.events_until(WEDNESDAY)
    assert len(opening) == 2 * 2 * 5
    for store in sim.store_ids:
        decoded = [decode_event(e.data) for e in opening if e.store_id == store]
        products = [d for d in decoded if isinstance(d, Product)]
        counts = [d for d in decoded if isinstance(d, Count)]
        assert [p.product_id for p in products] == [f"sku-{i:04d}" for i in range(1, 6)]
        assert decoded[:5] == products  # catalog first, so the processor knows products before stock
        assert all(p.name and p.category and p.price and p.target_stock for p in products)
        assert [c.product_id for c in counts] == [p.product_id for p in products]
        assert all(15 <= c.count <= 60 for c in counts)
        assert {c.product_id: c.count for c in counts} == sim.initial_stock[store]
        assert all(d.ts_ms == WEDNESDAY for d in decoded if not isinstance(d, Rejection))
    assert sim.store_ids == ["store-001", "store-002"]


def test_every_good_record_is_a_valid_contract_event_with_a_unique_id() -> None:
    sim, events = day_of(seed=2, stores=4)
    decoded = [decode_event(e.data) for e in events]
    assert not [d for d in decoded if isinstance(d, Rejection)]
    ids = [d.event_id for d in decoded if not isinstance(d, Rejection)]
    assert len(ids) == len(set(ids)) == sim.stats.good == len(events)
    assert all(
        not isinstance(d, Rejection) and d.store_id == e.store_id
        for d, e in zip(decoded, events, strict=True)
    )
    types = Counter(type(d).__name__ for d in decoded)
    assert types["Sale"] > 1000
    assert types["Refund"] > 0
    assert types["Product"] > 4 * 20


def test_records_come_in_event_time_order_with_matching_timestamps() -> None:
    _, events = day_of(seed=4)
    stamps = [e.ts_ms for e in events]
    assert stamps == sorted(stamps)
    for event in events:
        assert parse_ts(orjson.loads(event.data)["ts"]) == event.ts_ms


def test_baskets_share_a_transaction_id_and_hold_one_to_four_lines() -> None:
    _, events = day_of(seed=8)
    lines = Counter(
        d.transaction_id for d in map(decode_event, [e.data for e in events]) if isinstance(d, Sale)
    )
    assert set(lines.values()) <= {1, 2, 3, 4}
    assert max(lines.values()) > 1


def test_refunds_are_two_to_three_percent_of_sale_lines_and_have_reasons() -> None:
    sim = StoreSimulator(11, 4, 30, WEDNESDAY, initial_stock=FULL)
    decoded = [decode_event(e.data) for e in sim.events_until(WEDNESDAY + 4 * DAY_MS)]
    sales = [d for d in decoded if isinstance(d, Sale)]
    refunds = [d for d in decoded if isinstance(d, Refund)]
    assert 0.015 <= len(refunds) / len(sales) <= 0.035
    assert all(r.reason for r in refunds)
    sold = {s.transaction_id for s in sales}
    assert all(r.transaction_id in sold for r in refunds)  # a refund refers to a real sale


def test_the_store_is_closed_at_night_and_busy_at_lunch() -> None:
    _, events = day_of(seed=1, stores=5)
    sales_by_hour = Counter(
        (d.ts_ms % DAY_MS) // HOUR_MS
        for d in map(decode_event, [e.data for e in events])
        if isinstance(d, Sale)
    )
    night = sum(sales_by_hour[h] for h in (23, 0, 1, 2, 3, 4, 5, 6))
    assert night == 0
    assert sales_by_hour[12] > 3 * sales_by_hour[9]
    assert sales_by_hour[17] > 2 * sales_by_hour[15]


def test_weekends_are_busier() -> None:
    weekday = StoreSimulator(1, 5, 20, WEDNESDAY, initial_stock=FULL)
    weekday.events_until(WEDNESDAY)
    wednesday = len(weekday.events_until(WEDNESDAY + DAY_MS))
    weekend = StoreSimulator(1, 5, 20, SATURDAY, initial_stock=FULL)
    weekend.events_until(SATURDAY)
    saturday = len(weekend.events_until(SATURDAY + DAY_MS))
    assert saturday > 1.15 * wednesday


@given(ts=st.integers(min_value=-10 * DAY_MS, max_value=10_000 * DAY_MS))
def test_rhythm_stays_within_the_thinning_envelope(ts: int) -> None:
    value = rhythm(ts)
    assert 0.0 <= value <= RHYTHM_MAX
    hour = (ts % DAY_MS) / HOUR_MS
    if hour < 7 or hour >= 22:
        assert value == 0.0


def test_price_changes_are_product_events_with_a_new_price_that_later_sales_use() -> None:
    sim = StoreSimulator(21, 1, 10, WEDNESDAY, price_changes_per_day=6)
    decoded = [decode_event(e.data) for e in sim.events_until(WEDNESDAY + 3 * DAY_MS)]
    prices = {item.product_id: item.price for item in sim.catalog}
    changes = 0
    for event in decoded[20:]:  # after the opening catalog and stock take
        if isinstance(event, Product):
            assert event.price is not None
            assert event.price != prices[event.product_id]
            prices[event.product_id] = event.price
            changes += 1
        elif isinstance(event, Sale):
            assert event.unit_price == prices[event.product_id]
    assert changes >= 5


def test_noise_is_off_by_default_and_counted_when_on() -> None:
    quiet, _ = day_of(seed=13)
    assert quiet.stats.bad == quiet.stats.duplicates == 0
    noisy, events = day_of(seed=13, bad_fraction=0.01, duplicate_fraction=0.02)
    kinds = Counter(e.kind for e in events)
    assert kinds["bad"] == noisy.stats.bad > 0
    assert kinds["duplicate"] == noisy.stats.duplicates > 0
    assert noisy.stats.records == len(events) == kinds["good"] + kinds["bad"] + kinds["duplicate"]


def test_noise_leaves_the_good_events_unchanged() -> None:
    _, clean = day_of(seed=17)
    _, noisy = day_of(seed=17, bad_fraction=0.05, duplicate_fraction=0.05)
    assert [e.data for e in noisy if e.kind == "good"] == [e.data for e in clean]


def test_bad_records_are_rejected_by_the_contract_and_duplicates_repeat_earlier_bytes() -> None:
    _, events = day_of(seed=19, stores=4, bad_fraction=0.05, duplicate_fraction=0.05)
    reasons = Counter()
    sent: set[bytes] = set()
    for event in events:
        decoded = decode_event(event.data)
        if event.kind == "bad":
            assert isinstance(decoded, Rejection)
            reasons[decoded.reason.split(":")[0]] += 1
        elif event.kind == "duplicate":
            assert event.data in sent
        else:
            assert not isinstance(decoded, Rejection)
            assert event.data not in sent
        sent.add(event.data)
    assert reasons["not valid JSON"] > 0
    assert reasons["invalid event"] > 0
    negatives = [e for e in events if e.kind == "bad" and b'"quantity":-' in e.data]
    missing = [
        e for e in events if e.kind == "bad" and e.data.endswith(b"}") and b'"quantity":-' not in e.data
    ]
    assert negatives
    assert missing


def test_time_never_goes_backwards() -> None:
    sim = StoreSimulator(1, 1, 3, WEDNESDAY)
    assert sim.events_until(WEDNESDAY + 12 * HOUR_MS)
    assert sim.events_until(WEDNESDAY) == []
    assert sim.position_ms == WEDNESDAY + 12 * HOUR_MS


@pytest.mark.parametrize(
    "kwargs",
    [
        {"stores": 0},
        {"products": 0},
        {"bad_fraction": 1.5},
        {"duplicate_fraction": -0.1},
        {"baskets_per_hour": 0},
    ],
)
def test_nonsense_parameters_are_refused(kwargs: dict[str, float]) -> None:
    args = {"stores": 1, "products": 1} | kwargs
    with pytest.raises(ValueError):  # noqa: PT011 - each case has its own message
        StoreSimulator(1, int(args.pop("stores")), int(args.pop("products")), WEDNESDAY, **args)


class FakeClock:
    """Seconds that pass only when the code under test sleeps: pacing without real waiting."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps = 0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps += 1
        self.now += seconds
        await asyncio.sleep(0)


class FakeSink:
    def __init__(self, refuse: Callable[[bytes], bool] = lambda data: False) -> None:
        self.put_records: list[tuple[str, bytes]] = []
        self.flushes = 0
        self.refuse = refuse

    async def put(self, data: bytes, partition_key: str) -> bool:
        if self.refuse(data):
            return False
        self.put_records.append((partition_key, data))
        return True

    async def flush(self) -> None:
        self.flushes += 1


async def test_run_simulation_paces_simulated_time_by_speed_and_feeds_the_ledger() -> None:
    clock, sink, ledger = FakeClock(), FakeSink(), Ledger()
    sim = StoreSimulator(5, 3, 10, WEDNESDAY + 8 * HOUR_MS, duplicate_fraction=0.02, bad_fraction=0.01)
    stats = await run_simulation(
        sink, sim, rate=None, duration_s=6.0, speed=1800.0, ledger=ledger, clock=clock, sleep=clock.sleep
    )
    # 60 ticks of 0.1 s; the last one ran at 5.9 s, i.e. 5.9 x 1800 s = 2.95 h of store time.
    assert stats.ticks == 60
    assert stats.simulated_until_ms == WEDNESDAY + 8 * HOUR_MS + int(5.9 * 1800 * 1000)
    assert sink.flushes == 1
    assert stats.records_put == len(sink.put_records) == sim.stats.records
    assert stats.backlog == 0
    # Everything produced was recorded in order; the same records replayed into a fresh ledger agree.
    again = Ledger()
    for _, data in sink.put_records:
        again.record(data)
    assert again.stock() == ledger.stock()
    assert ledger.applied == sim.stats.good
    assert ledger.duplicates == sim.stats.duplicates
    assert all(key == orjson.loads(data)["store_id"] for key, data in sink.put_records if data.endswith(b"}"))


async def test_run_simulation_respects_the_rate_cap_by_slowing_simulated_time() -> None:
    clock, sink = FakeClock(), FakeSink()
    sim = StoreSimulator(5, 6, 10, WEDNESDAY + 11 * HOUR_MS)
    stats = await run_simulation(
        sink, sim, rate=50.0, duration_s=10.0, speed=3600.0, ledger=None, clock=clock, sleep=clock.sleep
    )
    assert 400 <= stats.records_put <= 50 * 10 + 10  # rate x duration, plus one tick's burst
    assert stats.backlog > 0
    # Uncapped, those 10 s would have covered ~10 store hours; capped, time waited for the backlog.
    assert stats.simulated_until_ms < WEDNESDAY + 14 * HOUR_MS
    assert stats.records_put + stats.backlog <= sim.stats.records


async def test_records_the_writer_refuses_stay_out_of_the_ledger() -> None:
    clock, ledger = FakeClock(), Ledger()
    sink = FakeSink(refuse=lambda data: b'"type":"count"' in data)
    sim = StoreSimulator(2, 1, 4, WEDNESDAY + 9 * HOUR_MS)
    stats = await run_simulation(
        sink, sim, rate=None, duration_s=1.0, speed=600.0, ledger=ledger, clock=clock, sleep=clock.sleep
    )
    assert stats.refused == 4
    assert ledger.applied == stats.records_put


async def test_run_simulation_refuses_nonsense() -> None:
    sim = StoreSimulator(1, 1, 1, WEDNESDAY)
    with pytest.raises(ValueError, match="rate"):
        await run_simulation(FakeSink(), sim, rate=-1, duration_s=1, speed=1, ledger=None)
    with pytest.raises(ValueError, match="speed"):
        await run_simulation(FakeSink(), sim, rate=None, duration_s=1, speed=0, ledger=None)


# --- finite shelves ---------------------------------------------------------------------------------


def _shelves_through_a_day(
    seed: int, deliveries: list[tuple[int, int, int]]
) -> tuple[StoreSimulator, Ledger, list[int]]:
    """A day of two stores with trucks at the given (minute, product index, units); every record goes
    to a ledger, whose lowest stock is tracked as it goes."""
    sim = StoreSimulator(seed, 2, 6, WEDNESDAY, initial_stock=(0, 12))
    ledger = Ledger()
    lowest: list[int] = []

    def record(data: bytes) -> None:
        ledger.record(data)
        fields = orjson.loads(data)
        if "product_id" in fields:  # the stock just changed here: is it still >= 0?
            lowest.append(ledger.on_hand(fields["store_id"], fields["product_id"]))

    for index, (minute, product, units) in enumerate(sorted(deliveries)):
        for event in sim.events_until(WEDNESDAY + minute * 60_000):
            record(event.data)
        item = sim.catalog[product % len(sim.catalog)]
        store = sim.store_ids[minute % 2]
        sim.deliver(store, item.product_id, units, WEDNESDAY + minute * 60_000)
        ledger.record(
            {
                "event_id": f"truck-{index}",
                "type": "restock",
                "store_id": store,
                "ts": "2026-07-29T00:00:00Z",
                "product_id": item.product_id,
                "quantity": units,
            }
        )
    for event in sim.events_until(WEDNESDAY + DAY_MS):
        record(event.data)
    return sim, ledger, lowest


@settings(max_examples=15, deadline=None)
@given(
    seed=st.integers(min_value=0, max_value=1000),
    deliveries=st.lists(
        st.tuples(st.integers(0, 24 * 60 - 1), st.integers(0, 5), st.integers(1, 40)), max_size=15
    ),
)
def test_simulated_stock_never_goes_below_zero(seed: int, deliveries: list[tuple[int, int, int]]) -> None:
    sim, ledger, lowest = _shelves_through_a_day(seed, deliveries)
    assert min(lowest) >= 0
    shelves = {
        store: {p: sim.shelves.on_hand(store, p) for p in ledger.stock()[store]} for store in sim.store_ids
    }
    assert shelves == ledger.stock()  # the shelves are what the events say, to the unit


def test_an_empty_shelf_is_a_lost_sale_and_no_event() -> None:
    sim, _, _ = _shelves_through_a_day(4, [])
    figures = sim.figures()
    assert figures.lost_units > 0
    assert figures.lost_value > 0
    assert figures.stockouts > 0
    assert 0.0 < figures.availability < 1.0
    # what customers wanted does not depend on the shelves: the same seed with trucks wants the same
    stocked, _, _ = _shelves_through_a_day(4, [(m, p, 40) for m in range(0, 24 * 60, 30) for p in range(6)])
    assert stocked.figures().demand_units == figures.demand_units
    assert stocked.figures().lost_units < figures.lost_units
    assert stocked.figures().availability > figures.availability


def test_deliveries_cannot_go_back_in_time_and_bring_at_least_one_unit() -> None:
    sim = StoreSimulator(1, 1, 2, WEDNESDAY, initial_stock=(0, 0))
    sim.events_until(WEDNESDAY + 10 * HOUR_MS)
    with pytest.raises(ValueError, match="at least one unit"):
        sim.deliver("store-001", "sku-0001", 0)
    sim.deliver("store-001", "sku-0001", 5, WEDNESDAY)  # taken as "now": 10:00
    assert sim.shelves.on_hand("store-001", "sku-0001") == 5
    assert sim.stats.delivered_units == 5


def test_shelves_scale_for_busier_stores_and_nothing_else_changes() -> None:
    plain = StoreSimulator(3, 2, 6, 1_772_409_600_000, run_id="r")
    busy = StoreSimulator(3, 2, 6, 1_772_409_600_000, run_id="r", shelf_scale=10.0)
    for a, b in zip(plain.catalog, busy.catalog, strict=True):
        assert (a.product_id, a.name, a.category, a.price) == (b.product_id, b.name, b.category, b.price)
        assert (b.restock_threshold, b.target_stock) == (10 * a.restock_threshold, 10 * a.target_stock)
    assert busy.initial_stock_range == (150, 600)
    with pytest.raises(ValueError, match="shelf_scale"):
        StoreSimulator(3, 2, 6, 1_772_409_600_000, shelf_scale=0)
