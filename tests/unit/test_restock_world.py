"""The restock benchmark's varied world: the demand it promises, the same for every rule."""

from __future__ import annotations

import math

from benchmarks.restock_world import VariedWorld, make_items, units_per_line
from foundation.timeunits import DAY_MS, HOUR_MS

MONDAY = 1_785_628_800_000  # 2026-08-03 00:00 UTC


def test_the_fair_catalog_is_a_day_of_true_demand_to_reorder_and_three_to_fill() -> None:
    for item in make_items(5, 1, 25, fair=True):
        weekly_units = sum(item.lines_by_hour) * units_per_line(item.extra_units)
        assert math.isclose(weekly_units, 7 * item.daily_units)
        assert item.threshold == max(1, math.ceil(item.daily_units))
        assert item.target >= math.ceil(3 * item.daily_units)
        assert item.target > item.threshold


def test_rates_spread_over_orders_of_magnitude_and_shapes_differ() -> None:
    items = [i for s in range(1, 7) for i in make_items(5, s, 25, fair=True)]
    rates = sorted(i.daily_units for i in items)
    assert rates[0] < 1
    assert rates[-1] > 200
    peaks = {max(range(24), key=lambda h: i.lines_by_hour[24 * 2 + h]) for i in items}
    assert len(peaks) >= 6  # not one rhythm for all


def test_customers_want_the_same_whichever_catalog_and_shelf() -> None:
    """Demand does not depend on the rule: the same units are wanted with either catalog, and a
    delivery changes what is sold, not what is wanted."""
    wanted = []
    for fair, deliver in ((True, False), (False, True)):
        world = VariedWorld(3, 2, 10, MONDAY, fair=fair)
        world.events_until(MONDAY + DAY_MS)
        if deliver:
            world.deliver("store-001", "sku-0001", 500, MONDAY + DAY_MS)
        world.events_until(MONDAY + 3 * DAY_MS)
        wanted.append(world.figures().demand_units)
    assert wanted[0] == wanted[1] > 0


def test_the_over_dispersed_lines_are_over_dispersed() -> None:
    """Units sold are a compound count: their variance is E[q^2]/E[q] times their mean for sale lines
    of q units (1 for single units, as a Poisson count): here several times."""
    world = VariedWorld(4, 1, 25, MONDAY, fair=True)
    for item in world.items["store-001"]:
        world.shelves.set("store-001", item.product_id, 10**9, MONDAY)
    sizes: list[int] = []
    for event in world.events_until(MONDAY + 7 * DAY_MS):
        if b'"sale"' in event.data:
            sizes.append(int(event.data.split(b'"quantity":')[1].split(b",")[0]))
    assert sum(q * q for q in sizes) / sum(sizes) > 2.5


def test_lead_times_are_two_to_twelve_hours() -> None:
    world = VariedWorld(6, 6, 2, MONDAY, fair=True)
    leads = [world.lead_ms(s) / HOUR_MS for s in world.store_ids for _ in range(20)]
    assert min(leads) >= 2 * 0.8
    assert max(leads) <= 12 * 1.2
    assert max(leads) - min(leads) > 3
