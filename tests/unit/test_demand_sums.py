"""Demand over a span from the week's running sums equals the walk over its hours (the definition)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from processors.core.demand import DAY_MS, HOUR_MS, DemandForecast, RestockConfig, StoreDemand

T0 = 1_773_000_000_000


def _walk(store: StoreDemand, start: float, end: float) -> float:
    total, t = 0.0, start
    while t < end:
        hour = int(t // HOUR_MS)
        nxt = min(end, (hour + 1) * HOUR_MS)
        total += store.rate(hour) * (nxt - t) / HOUR_MS
        t = nxt
    return total


@st.composite
def stores(draw: st.DrawFn) -> StoreDemand:
    store = StoreDemand()
    t = T0
    for gap, qty in draw(st.lists(st.tuples(st.integers(1, 3 * HOUR_MS), st.integers(1, 9)), max_size=400)):
        t += gap
        store.observe(t, qty, 0.25)
    return store


@settings(max_examples=60, deadline=None)
@given(
    store=stores(),
    start=st.integers(T0 - 3 * DAY_MS, T0 + 30 * DAY_MS),
    span=st.integers(0, 10 * DAY_MS),
    share=st.floats(0.01, 1.0),
    units=st.floats(0.0, 500.0),
)
def test_sums_give_what_the_walk_gives(
    store: StoreDemand, start: int, span: int, share: float, units: float
) -> None:
    demand = DemandForecast(RestockConfig())
    want = _walk(store, start, start + span) * share
    got = demand.expected(store, share, start, start + span)
    # A difference of two running totals: its rounding error is relative to the totals, not to it.
    scale = max(1.0, want, abs(store.units_before(start)), abs(store.units_before(start + span)))
    assert abs(got - want) <= 1e-9 * scale
    when = demand.time_to_sell(store, share, start, units, 7 * DAY_MS)
    if when is None:  # not sold within the horizon: the walk agrees
        assert _walk(store, start, start + 7 * DAY_MS) * share <= units * (1 + 1e-9) + 1e-9
    else:
        assert start <= when <= start + 7 * DAY_MS
        assert abs(_walk(store, start, when) * share - units) <= 1e-6 * max(1.0, units)


def test_the_sums_are_made_again_when_the_hour_rolls() -> None:
    store = StoreDemand()
    store.observe(T0, 5, 0.25)
    store.observe(T0 + HOUR_MS, 5, 0.25)
    before = store.units_before(T0 + 5 * DAY_MS)
    store.observe(T0 + 2 * HOUR_MS, 50, 0.25)  # the hour with 5 units is folded in: rates change
    store.observe(T0 + 3 * HOUR_MS, 1, 0.25)
    assert store.units_before(T0 + 5 * DAY_MS) != before
    assert abs(store.units_before(T0 + 5 * DAY_MS) - _walk(store, -72 * HOUR_MS, T0 + 5 * DAY_MS)) < 1e-6
