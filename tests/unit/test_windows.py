"""Event-time windows: boundaries, the watermark, lateness, empty windows, hopping windows, state."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from foundation.contract import format_ts
from processors.core import CoreConfig, ShardCore
from processors.core.detectors import DetectorConfig
from processors.core.windows import WindowEngine, WindowResult, WindowSpec

MIN = 60_000
HOUR = 60 * MIN
DAY = 24 * HOUR
T0 = 1_773_043_200_000  # 2026-03-09T08:00:00Z, a Monday, on a window boundary
SPECS = (WindowSpec(15 * MIN, 15 * MIN), WindowSpec(HOUR, 15 * MIN))


def engine(lateness: int = 2 * MIN, specs: tuple[WindowSpec, ...] = SPECS) -> WindowEngine:
    return WindowEngine(specs, lateness, 7 * DAY)


def sell(
    eng: WindowEngine, ts: int, store: str = "s1", qty: int = 1, tid: str | None = None
) -> list[WindowResult]:
    """What the core does per sale: add it to its window, then move the watermark."""
    assert eng.sale(store, ts, qty, 2.0, tid)
    return eng.advance(ts)


def tumbling(windows: list[WindowResult]) -> list[WindowResult]:
    return [w for w in windows if w.spec.kind == "tumbling"]


# --- boundaries and the watermark ----------------------------------------------------------------


def test_an_event_on_a_boundary_belongs_to_the_window_that_starts_there() -> None:
    eng = engine(lateness=0)
    sell(eng, T0)
    sell(eng, T0 + 15 * MIN - 1)
    closed = sell(eng, T0 + 15 * MIN)  # watermark reaches the end of [08:00, 08:15): it closes
    (first,) = tumbling(closed)
    assert (first.start_ms, first.end_ms, first.lines) == (T0, T0 + 15 * MIN, 2)
    closed = eng.advance(T0 + 30 * MIN)
    (second,) = tumbling(closed)
    assert (second.start_ms, second.lines) == (T0 + 15 * MIN, 1)


def test_a_window_closes_when_the_watermark_passes_its_end_and_not_before() -> None:
    eng = engine(lateness=2 * MIN)
    sell(eng, T0 + MIN)
    assert eng.advance(T0 + 17 * MIN - 1) == []  # watermark 08:14:59.999
    closed = eng.advance(T0 + 17 * MIN)  # watermark exactly 08:15
    assert [(w.start_ms, w.lines) for w in tumbling(closed)] == [(T0, 1)]
    assert eng.watermark_ms == T0 + 15 * MIN


def test_out_of_order_events_within_the_lateness_land_in_their_window() -> None:
    eng = engine(lateness=2 * MIN)
    sell(eng, T0 + 14 * MIN)
    sell(eng, T0 + 16 * MIN)  # watermark 08:14: [08:00, 08:15) still open
    assert eng.sale("s1", T0 + 10 * MIN, 3, 2.0, None)  # late by 6 minutes of event time, on time here
    closed = eng.advance(T0 + 17 * MIN)
    (first,) = tumbling(closed)
    assert (first.lines, first.units) == (2, 4)


def test_an_event_beyond_the_lateness_is_late_and_not_added() -> None:
    eng = engine(lateness=2 * MIN)
    sell(eng, T0 + MIN)
    (first,) = tumbling(sell(eng, T0 + 17 * MIN))
    assert eng.sale("s1", T0 + 14 * MIN, 1, 2.0, None) is False
    assert eng.refund("s1", T0 + 14 * MIN, 1, 2.0, None) is False
    assert first.lines == 1  # the emitted window is never changed afterwards


def test_late_events_are_counted_archived_and_still_move_stock() -> None:
    # No late bound: every late event is only counted (with one, this one would revise its window:
    # tests/unit/test_late_windows.py)
    core = ShardCore(CoreConfig(archive=True, allowed_lateness_ms=2 * MIN, late_bound_ms=0))
    records = [
        _event("sale", "a", T0 + MIN),
        _event("sale", "b", T0 + 20 * MIN),  # watermark 08:18: [08:00, 08:15) has closed
        _event("sale", "c", T0 + 5 * MIN),  # 15 minutes late
    ]
    for raw in records:
        assert core.apply(raw)
    assert core.stats.late_events == 1
    out = core.drain()
    assert out.archive == records  # the late one is archived like any other
    assert core.inventory() == {"s1": {"p1": -3}}
    first = orjson.loads(out.windows[0])
    assert (first["window_start"], first["lines"]) == (format_ts(T0), 1)


def test_only_sales_and_refunds_move_the_watermark_and_stock_events_are_never_late() -> None:
    # A truck or a stock-take system stamps its events with its own clock (a replay of last month meets
    # today's trucks): those must not close the windows of the sales still to come.
    core = ShardCore(CoreConfig(allowed_lateness_ms=0))
    core.apply(_event("sale", "a", T0 + MIN))
    core.apply(_event("count", "c", T0 + 30 * MIN, count=10))
    core.apply(_event("restock", "far", T0 + 90 * 24 * 60 * MIN, quantity=1))
    core.apply(_event("restock", "r", T0, quantity=5))  # behind the sales: still applied
    assert core.drain().windows == []  # nothing closed: no sale or refund moved time on
    core.apply(_event("sale", "b", T0 + 2 * MIN))  # so this one is on time
    core.apply(_event("sale", "z", T0 + 30 * MIN))
    assert core.stats.late_events == 0
    assert core.inventory() == {"s1": {"p1": 14}}
    assert [orjson.loads(w)["window_start"] for w in core.drain().windows] == [
        format_ts(T0),
        format_ts(T0 + 15 * MIN),
    ]


# --- what a window holds ------------------------------------------------------------------------


def test_sales_are_distinct_transactions_and_refunds_are_counted_apart() -> None:
    eng = engine(lateness=0)
    for tid, qty in (("t1", 1), ("t1", 2), ("t2", 1)):
        assert eng.sale("s1", T0 + MIN, qty, 2.5, tid)
    assert eng.sale("s1", T0 + MIN, 1, 4.0, None)  # no transaction id: a sale of its own
    assert eng.refund("s1", T0 + 2 * MIN, 2, 3.0, "t1")
    (w,) = tumbling(eng.advance(T0 + 15 * MIN))
    assert (w.sales, w.lines, w.units) == (3, 4, 5)
    assert w.revenue == pytest.approx(4 * 2.5 + 4.0)
    assert (w.refunds, w.refund_lines, w.refund_units, w.refund_amount) == (1, 1, 2, 6.0)
    assert w.refund_ratio == pytest.approx(6.0 / 14.0)
    assert w.avg_basket == pytest.approx(14.0 / 3)


def test_stores_have_their_own_windows() -> None:
    eng = engine(lateness=0)
    sell(eng, T0 + MIN, store="a")
    sell(eng, T0 + 2 * MIN, store="b", qty=3)
    closed = tumbling(eng.advance(T0 + 15 * MIN))
    assert {(w.store_id, w.units) for w in closed} == {("a", 1), ("b", 3)}


def test_empty_windows_at_night_are_still_emitted() -> None:
    eng = engine(lateness=0)
    evening = T0 + 12 * HOUR  # 20:00, the last sale of the day
    sell(eng, evening)
    closed = sell(eng, evening + 12 * HOUR)  # 08:00 next morning
    night = tumbling(closed)
    assert len(night) == 12 * 4  # one per 15 minutes, 20:00 to 08:00
    assert night[0].lines == 1
    assert all(w.empty and w.sales == 0 for w in night[1:])
    assert [w.start_ms for w in night] == [evening + i * 15 * MIN for i in range(48)]
    assert all(w.avg_basket is None and w.refund_ratio is None for w in night[1:])


def test_hopping_windows_cover_an_hour_every_quarter_hour() -> None:
    eng = engine(lateness=0)
    closed: list[WindowResult] = []
    for minute in range(0, 120, 5):
        closed += sell(eng, T0 + minute * MIN, qty=minute // 5 + 1)
    closed += eng.advance(T0 + 3 * HOUR)
    hourly = [w for w in closed if w.spec.kind == "hopping"]
    quarters = {w.start_ms: w for w in tumbling(closed)}
    # The store's first hopping window is the first full hour of its history.
    assert hourly[0].start_ms == T0
    assert [w.start_ms for w in hourly[:5]] == [T0 + i * 15 * MIN for i in range(5)]
    for w in hourly:
        assert w.end_ms - w.start_ms == HOUR
        parts = [quarters[w.start_ms + i * 15 * MIN] for i in range(4)]
        assert w.units == sum(p.units for p in parts)
        assert w.lines == sum(p.lines for p in parts)
    assert hourly[0].spec.name == "1h/15m"


def test_finish_closes_every_window_that_holds_data() -> None:
    core = ShardCore(CoreConfig(detection=DetectorConfig(kind="off")))
    core.apply(_event("sale", "a", T0 + 20 * MIN))
    assert core.drain().windows == []
    core.finish()
    records = [orjson.loads(w) for w in core.drain().windows]
    # The input ends at 08:20: the windows over it end after that, so they are emitted partial (not
    # judged), and the ones that start after it say nothing and are not emitted at all. (Before, the
    # quarters up to 09:15 were closed empty "as if time moved past them", and judged as silence.)
    assert [(r["window"], r["window_start"], r["sales"], r.get("partial")) for r in records] == [
        ("15m", format_ts(T0 + 15 * MIN), 1, True),
        ("1h/15m", format_ts(T0 + 15 * MIN), 1, True),
    ]
    core.finish()
    assert core.drain().windows == []


def test_an_idle_shard_moves_on_with_the_shells_clock() -> None:
    core = ShardCore(CoreConfig(allowed_lateness_ms=2 * MIN))
    core.apply(_event("sale", "a", T0 + MIN))
    # The store is silent: its windows close once the shard's clock is the idle bound past them
    core.advance_watermark(T0 + 45 * MIN + CoreConfig().store_idle_ms)
    starts = [orjson.loads(w)["window_start"] for w in core.drain().windows if b'"tumbling"' in w]
    assert starts == [format_ts(T0), format_ts(T0 + 15 * MIN), format_ts(T0 + 30 * MIN)]
    core.advance_watermark(T0)  # time never goes back
    assert core.drain().windows == []


def test_a_jump_far_ahead_is_not_filled_with_empty_windows() -> None:
    eng = WindowEngine(SPECS, 0, 2 * DAY)
    sell(eng, T0 + MIN)
    closed = sell(eng, T0 + 30 * DAY)
    # The open window is flushed, the month in between is skipped, and windows go on afterwards.
    assert len(closed) < 10
    assert tumbling(closed)[0].lines == 1
    later = tumbling(eng.advance(T0 + 30 * DAY + 15 * MIN))
    assert [(w.start_ms, w.lines) for w in later] == [(T0 + 30 * DAY, 1)]


def _store_sale(store: str, eid: str, ts: int) -> bytes:
    return orjson.dumps(orjson.loads(_event("sale", eid, ts)) | {"store_id": store})


def _starts(windows: list[bytes], store: str) -> list[tuple[str, int]]:
    rows = [orjson.loads(w) for w in windows]
    mine = [r for r in rows if r["store_id"] == store and r["kind"] == "tumbling"]
    return [(r["window_start"], r["lines"]) for r in mine]


def test_a_till_with_a_wrong_clock_does_not_close_the_other_stores_windows() -> None:
    # s2's till sends local time as UTC, 9 hours ahead, between s1's sales: one minute apart each.
    core = ShardCore(CoreConfig(allowed_lateness_ms=2 * MIN, detection=DetectorConfig(kind="off")))
    for i in range(120):
        assert core.apply(_store_sale("s1", f"a{i}", T0 + i * MIN))
        assert core.apply(_store_sale("s2", f"b{i}", T0 + 9 * HOUR + i * MIN))
    assert core.stats.late_events == 0  # without the guard, every s1 sale after the first was late
    closed = _starts(core.drain().windows, "s1")
    # s1's windows closed as its own time went by, each with its 15 sales
    assert closed == [(format_ts(T0 + k * 15 * MIN), 15) for k in range(7)]
    core.finish()
    last = _starts(core.drain().windows, "s1")
    assert last[0] == (format_ts(T0 + 105 * MIN), 15)  # then the empty ones the last hour's windows need
    assert last[-1][0] < format_ts(T0 + 3 * HOUR)
    assert sum(n for _, n in last) == 15
    assert core.inventory()["s2"] == {"p1": -120}  # its sales still count for stock


def test_time_moves_on_when_a_second_store_agrees_after_an_outage() -> None:
    core = ShardCore(CoreConfig(allowed_lateness_ms=0, detection=DetectorConfig(kind="off")))
    core.apply(_store_sale("s1", "a", T0 + MIN))
    core.apply(_store_sale("s2", "b", T0 + 2 * MIN))
    core.drain()
    core.apply(_store_sale("s1", "c", T0 + 3 * HOUR + MIN))  # three hours later: one clock says so
    assert core.drain().windows == []
    core.apply(_store_sale("s2", "d", T0 + 3 * HOUR + 2 * MIN))  # a second agrees: time moved on
    windows = core.drain().windows
    assert _starts(windows, "s1")[0] == (format_ts(T0), 1)
    assert _starts(windows, "s1")[-1] == (format_ts(T0 + 3 * HOUR - 15 * MIN), 0)  # the outage's windows too
    assert core.stats.late_events == 0


def test_one_store_alone_moves_the_clock_after_a_quarter_hour_of_its_own_time() -> None:
    core = ShardCore(CoreConfig(allowed_lateness_ms=0, detection=DetectorConfig(kind="off")))
    core.apply(_store_sale("s1", "night", T0 - 10 * HOUR))  # last night
    core.drain()
    for i in range(5):  # the morning: every 4 minutes, 16 minutes in all
        core.apply(_store_sale("s1", f"m{i}", T0 + i * 4 * MIN))
        if i < 4:
            assert core.drain().windows == []  # not yet: could be a wrong clock
    # believed at the fifth: the night's windows and the first quarter hour close at once
    assert _starts(core.drain().windows, "s1")[-2:] == [(format_ts(T0 - 15 * MIN), 0), (format_ts(T0), 4)]
    core.apply(_store_sale("s1", "m5", T0 + 31 * MIN))
    assert _starts(core.drain().windows, "s1") == [(format_ts(T0 + 15 * MIN), 1)]
    assert core.stats.late_events == 0


def test_the_end_of_input_does_not_fill_the_time_up_to_a_wrong_clock() -> None:
    core = ShardCore(CoreConfig(allowed_lateness_ms=0, detection=DetectorConfig(kind="off")))
    for i in range(10):
        core.apply(_store_sale("s1", f"a{i}", T0 + i * MIN))
    core.apply(_store_sale("s2", "far", T0 + 3 * DAY))  # three days ahead, under the 7-day gap
    core.apply(_store_sale("s1", "z", T0 + 10 * MIN))
    core.finish()
    rows = [orjson.loads(w) for w in core.drain().windows]
    assert max(r["window_end"] for r in rows) <= format_ts(T0 + 2 * HOUR)  # not three days of empty ones
    assert sum(r["lines"] for r in rows if r["kind"] == "tumbling") == 11


def test_window_records_carry_the_metrics() -> None:
    core = ShardCore(CoreConfig(allowed_lateness_ms=0))
    core.apply(_event("sale", "a", T0 + MIN, quantity=2, unit_price=1.25, transaction_id="t1"))
    core.apply(_event("refund", "b", T0 + 2 * MIN, quantity=1, unit_price=1.25))
    core.apply(_event("sale", "c", T0 + 15 * MIN))
    record = orjson.loads(core.drain().windows[0])
    assert record == {
        "store_id": "s1",
        "window": "15m",
        "kind": "tumbling",
        "window_start": "2026-03-09T08:00:00.000Z",
        "window_end": "2026-03-09T08:15:00.000Z",
        "sales": 1,
        "lines": 1,
        "units": 2,
        "revenue": 2.5,
        "refunds": 1,
        "refund_lines": 1,
        "refund_units": 1,
        "refund_amount": 1.25,
        "refund_ratio": 0.5,
        "avg_basket": 2.5,
    }  # no "expected" yet: the detector has no history for this store


def test_bad_window_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="hop"):
        WindowSpec(15 * MIN, 30 * MIN)
    with pytest.raises(ValueError, match="positive"):
        WindowSpec(0, 0)
    with pytest.raises(ValueError, match="lateness"):
        WindowEngine(SPECS, -1, DAY)


def test_windows_off_leaves_only_the_stock_core() -> None:
    core = ShardCore(CoreConfig(window_ms=0))
    core.apply(_event("sale", "a", T0))
    core.apply(_event("sale", "b", T0 + DAY))
    core.finish()
    assert core.drain().windows == []
    assert core.inventory() == {"s1": {"p1": -2}}


# --- state ----------------------------------------------------------------------------------------


def test_window_state_survives_a_checkpoint_mid_window() -> None:
    records = [_event("sale", f"e{i}", T0 + i * 7 * MIN, transaction_id=f"t{i // 2}") for i in range(40)]
    whole = ShardCore()
    for raw in records:
        whole.apply(raw)
    whole.finish()
    expected = whole.drain().windows

    first = ShardCore()
    for raw in records[:17]:
        first.apply(raw)
    before = first.drain().windows
    resumed = ShardCore.restore(first.snapshot())
    for raw in records[17:]:
        resumed.apply(raw)
    resumed.finish()
    assert before + resumed.drain().windows == expected


# --- properties -----------------------------------------------------------------------------------


@st.composite
def sale_streams(draw: st.DrawFn) -> tuple[int, list[int]]:
    """Event times of one shard in arrival order: mostly forward, sometimes back by up to 20 minutes."""
    lateness = draw(st.sampled_from([0, MIN, 5 * MIN]))
    steps = draw(st.lists(st.integers(min_value=-20 * MIN, max_value=40 * MIN), min_size=1, max_size=80))
    times = []
    t = T0 + draw(st.integers(min_value=0, max_value=HOUR))
    for step in steps:
        t = max(T0, t + step)
        times.append(t)
    return lateness, times


@settings(max_examples=150, deadline=None)
@given(sale_streams())
def test_every_on_time_sale_is_in_exactly_one_tumbling_window(stream: tuple[int, list[int]]) -> None:
    lateness, times = stream
    eng = engine(lateness=lateness)
    closed: list[WindowResult] = []
    on_time: list[int] = []
    late = 0
    for ts in times:
        if eng.sale("s1", ts, 1, 1.0, None):
            on_time.append(ts)
        else:
            late += 1
            assert ts < eng.watermark_ms  # type: ignore[operator]
        closed += eng.advance(ts)
    closed += eng.flush()
    quarters = tumbling(closed)
    assert late + len(on_time) == len(times)
    assert sum(w.lines for w in quarters) == len(on_time)
    for w in quarters:
        assert w.lines == sum(1 for ts in on_time if w.start_ms <= ts < w.end_ms)
    # consecutive, no gaps, no overlaps
    starts = [w.start_ms for w in quarters]
    assert starts == list(range(starts[0], starts[0] + 15 * MIN * len(starts), 15 * MIN))


@settings(max_examples=60, deadline=None)
@given(sale_streams())
def test_hopping_windows_are_sums_of_their_quarters(stream: tuple[int, list[int]]) -> None:
    lateness, times = stream
    eng = engine(lateness=lateness)
    closed: list[WindowResult] = []
    for ts in times:
        eng.sale("s1", ts, 2, 1.0, None)
        closed += eng.advance(ts)
    closed += eng.flush()
    quarters = {w.start_ms: w.units for w in tumbling(closed)}
    for w in closed:
        if w.spec.kind == "hopping" and not w.partial:
            assert w.units == sum(quarters[w.start_ms + i * 15 * MIN] for i in range(4))


def _event(kind: str, eid: str, ts: int, **fields: object) -> bytes:
    body: dict[str, object] = {
        "type": kind,
        "event_id": eid,
        "store_id": "s1",
        "ts": format_ts(ts),
        "product_id": "p1",
    }
    if kind in ("sale", "refund"):
        body.update(quantity=1, unit_price=1.0)
    body.update(fields)
    return orjson.dumps(body)


@settings(max_examples=60, deadline=None)
@given(
    sale_streams(),
    st.lists(st.sampled_from(["t1", "t2", "t3", None]), min_size=80, max_size=80),
    st.lists(st.integers(min_value=1, max_value=5), min_size=80, max_size=80),
)
def test_the_core_fills_windows_exactly_as_the_engine_does(
    stream: tuple[int, list[int]], tids: list[str | None], quantities: list[int]
) -> None:
    """ShardCore.apply inlines WindowEngine.sale for speed: both must give the same windows."""
    lateness, times = stream
    config = CoreConfig(allowed_lateness_ms=lateness, detection=DetectorConfig(kind="off"))
    core = ShardCore(config)
    eng = WindowEngine(
        SPECS, lateness, 7 * DAY, idle_ms=config.store_idle_ms, late_bound_ms=config.late_bound_ms
    )
    closed: list[WindowResult] = []
    late = 0
    for i, ts in enumerate(times):
        tid, qty = tids[i], quantities[i]
        extra: dict[str, object] = {} if tid is None else {"transaction_id": tid}
        core.apply(_event("sale", f"e{i}", ts, quantity=qty, unit_price=1.5, **extra))
        late += not eng.sale("s1", ts, qty, 1.5, tid)
        closed += eng.advance(ts)
    core.finish()
    closed += eng.flush()
    from_core = [orjson.loads(w) for w in core.drain().windows]
    assert core.stats.late_events == late
    assert [(w["window_start"], w["sales"], w["lines"], w["units"], w["revenue"]) for w in from_core] == [
        (format_ts(w.start_ms), w.sales, w.lines, w.units, round(w.revenue, 2)) for w in closed
    ]
