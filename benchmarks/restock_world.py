"""Stores whose demand the store simulator does not make: the restock benchmark's varied world.

The store simulator (producers/simulator.py) gives every store one daily rhythm and every product a
Zipf share of it, with shelves sized alike whatever a product sells. A restock policy tuned on it can
lean on that. Here, per store and product:

- a rate spread lognormally over three orders of magnitude (from under 1 to a few hundred units a day);
- its own hour-of-day shape within opening hours (half the products peak at an hour of their own,
  not their store's) and its own weekday shape (stores busier on Fridays and Saturdays, each product
  a little differently);
- over-dispersed baskets: units per sale line from a gamma-mixed count plus rare bulk buys, so the
  variance of units sold is several times their mean;
- a lead time per store from 2 to 12 hours (the warehouse's preparation before a truck leaves),
  varying from request to request.

Shelves, lost sales and availability are counted by the simulator's `Shelves`, so both worlds are
measured alike. Customers want the same whatever is on the shelf: every policy meets the same demand.

The catalog is either the careful one (`fair`: a restock threshold of a day of the product's true
demand and a target of three days) or the simulator's kind (thresholds 5-12 and targets 40-80,
whatever a product sells).
"""

from __future__ import annotations

import math
import random
from collections import deque
from dataclasses import dataclass

import numpy as np

from foundation.contract import encode, format_ts
from foundation.timeunits import DAY_MS, HOUR_MS
from producers.simulator import CLOSE_HOUR, OPEN_HOUR, ShelfFigures, Shelves

HOURS_OPEN = range(int(OPEN_HOUR), int(CLOSE_HOUR))
# A store's weekday shape, Monday first: Fridays and Saturdays busiest, Sundays quiet.
WEEKDAYS = (0.9, 0.9, 0.95, 1.0, 1.25, 1.4, 0.6)
MEDIAN_DAILY = 10.0  # units a day of the median product
RATE_SIGMA = 1.4  # of log daily units: 1% of products sell under 0.4 a day, 1% over 260
BULK_SHARE = 0.02  # of sale lines that are a bulk buy
BULK_TIMES = (3, 8)  # a bulk buy multiplies the line's units by this much (uniform integer)
DISPERSION_SHAPE = 0.5  # gamma shape of the extra units per line: variance well above the mean


@dataclass(frozen=True, slots=True)
class Item:
    """One product of one store: what its customers want and what its catalog says."""

    product_id: str
    price: float
    daily_units: float  # true mean units a day, over a week
    extra_units: float  # mean extra units per sale line above the first
    lines_by_hour: tuple[float, ...]  # expected sale lines per hour of the week (168, Monday 00:00 first)
    threshold: int
    target: int


@dataclass(frozen=True, slots=True)
class Event:
    ts_ms: int
    data: bytes


def units_per_line(extra: float) -> float:
    """Mean units of a sale line: one, plus the gamma-mixed extra, times the rare bulk buy."""
    bulk = 1 + BULK_SHARE * ((BULK_TIMES[0] + BULK_TIMES[1]) / 2 - 1)
    return (1 + extra) * bulk


def hour_shape(rng: random.Random) -> list[float]:
    """Relative demand by hour of the day: the store's lunch and evening peaks, and for half the
    products a peak of their own (mornings for some, late evenings for others)."""
    own = rng.random() < 0.5
    peak = rng.uniform(OPEN_HOUR + 1, CLOSE_HOUR - 1)
    shape = []
    for hour in range(24):
        if hour not in HOURS_OPEN:
            shape.append(0.0)
            continue
        h = hour + 0.5
        store = 0.4 + math.exp(-(((h - 12.5) / 1.3) ** 2)) + 1.1 * math.exp(-(((h - 17.5) / 1.6) ** 2))
        shape.append(0.3 * store + 2.0 * math.exp(-(((h - peak) / 1.5) ** 2)) if own else store)
    return shape


def make_items(seed: int, store_index: int, products: int, fair: bool) -> list[Item]:
    rng = random.Random(f"{seed}:varied:{store_index}")
    weekday_of_store = [w * rng.uniform(0.9, 1.1) for w in WEEKDAYS]
    items = []
    for index in range(1, products + 1):
        daily = min(600.0, MEDIAN_DAILY * math.exp(rng.gauss(0.0, RATE_SIGMA)))
        extra = rng.uniform(0.0, 1.5)
        shape = hour_shape(rng)
        weekday = [w * math.exp(rng.gauss(0.0, 0.15)) for w in weekday_of_store]
        raw = [weekday[b // 24] * shape[b % 24] for b in range(168)]
        lines_per_week = 7 * daily / units_per_line(extra)
        total = sum(raw)
        lines = tuple(r * lines_per_week / total for r in raw)
        # Both catalogs drawn alike, so the demand is the same whichever a run uses.
        threshold, target = rng.randint(5, 12), rng.randint(40, 80)  # whatever a product sells
        if fair:  # a day of demand to reorder at, three to fill to
            threshold = max(1, math.ceil(daily))
            target = max(threshold + 1, math.ceil(3 * daily))
        price = round(math.exp(rng.uniform(math.log(0.5), math.log(40.0))), 2)
        items.append(Item(f"sku-{index:04d}", price, daily, extra, lines, threshold, target))
    return items


class VariedWorld:
    """The stores' demand and shelves, handed out as events up to an event time (as the simulator)."""

    def __init__(self, seed: int, stores: int, products: int, start_ms: int, *, fair: bool) -> None:
        if start_ms % DAY_MS:
            raise ValueError("the world starts at midnight UTC")
        self.start_ms = start_ms
        self.position_ms = start_ms
        self.shelves = Shelves(start_ms)
        self.store_ids = [f"store-{i:03d}" for i in range(1, stores + 1)]
        rng = random.Random(f"{seed}:varied:world")
        # Lead time per store (hours), the warehouse's preparation included: 2 to 12.
        self.lead_h = {store: rng.uniform(2.0, 12.0) for store in self.store_ids}
        self.items = {
            store: make_items(seed, i, products, fair) for i, store in enumerate(self.store_ids, start=1)
        }
        self._leads = random.Random(f"{seed}:varied:leads")
        self._demand = np.random.default_rng(seed * 7919 + 1)
        self._hour = start_ms // HOUR_MS  # the next hour to draw demand for
        self._queue: deque[tuple[int, str, Item, int]] = deque()  # drawn, not handed out yet
        self._seq = 0
        self._opening: list[Event] = []
        stock = random.Random(f"{seed}:varied:stock")  # the same start whichever catalog
        for store in self.store_ids:
            for item in self.items[store]:
                self._opening.append(self._event(start_ms, store, "product", self._catalog(item)))
            for item in self.items[store]:
                count = stock.randint(math.ceil(1.5 * item.daily_units), math.ceil(3 * item.daily_units) + 1)
                self.shelves.set(store, item.product_id, count, start_ms)
                self._opening.append(
                    self._event(start_ms, store, "count", {"product_id": item.product_id, "count": count})
                )

    @staticmethod
    def _catalog(item: Item) -> dict[str, object]:
        return {
            "product_id": item.product_id,
            "name": item.product_id,
            "category": "varied",
            "price": item.price,
            "restock_threshold": item.threshold,
            "target_stock": item.target,
        }

    def targets(self) -> dict[tuple[str, str], int]:
        return {(s, i.product_id): i.target for s, items in self.items.items() for i in items}

    def lead_ms(self, store_id: str) -> float:
        """This request's lead time at `store_id`: the store's, give or take a fifth."""
        return self.lead_h[store_id] * self._leads.uniform(0.8, 1.2) * HOUR_MS

    def _event(self, ts_ms: int, store_id: str, kind: str, fields: dict[str, object]) -> Event:
        self._seq += 1
        event = {"event_id": f"v-{self._seq}", "type": kind, "store_id": store_id, "ts": format_ts(ts_ms)}
        return Event(ts_ms, encode(event | fields))

    def _draw_hour(self) -> None:
        """Every sale line wanted in the next hour, in time order."""
        hour = self._hour
        self._hour += 1
        b = (hour + 72) % 168  # 1970-01-01 was a Thursday: hour of the week, Monday 00:00 first
        drawn: list[tuple[int, str, Item, int]] = []
        gen = self._demand
        for store in self.store_ids:
            for item in self.items[store]:
                lam = item.lines_by_hour[b]
                if lam <= 0:
                    continue
                n = int(gen.poisson(lam))
                if not n:
                    continue
                at = gen.integers(0, HOUR_MS, size=n)
                extra = gen.poisson(gen.gamma(DISPERSION_SHAPE, item.extra_units / DISPERSION_SHAPE, size=n))
                bulk = gen.random(size=n) < BULK_SHARE
                times = gen.integers(BULK_TIMES[0], BULK_TIMES[1] + 1, size=n)
                for k in range(n):
                    units = 1 + int(extra[k])
                    if bulk[k]:
                        units *= int(times[k])
                    drawn.append((hour * HOUR_MS + int(at[k]), store, item, units))
        drawn.sort(key=lambda line: line[0])
        self._queue.extend(drawn)

    def events_until(self, ts_ms: int) -> list[Event]:
        """Every sale in (last position, ts_ms], each taken from the shelf as it happens."""
        out, self._opening = self._opening, []
        if ts_ms < self.position_ms:
            return out
        while self._hour * HOUR_MS <= ts_ms:
            self._draw_hour()
        queue = self._queue
        while queue and queue[0][0] <= ts_ms:
            at, store, item, wanted = queue.popleft()
            sold = self.shelves.take(store, item.product_id, wanted, item.price, at)
            if sold:
                fields = {"product_id": item.product_id, "quantity": sold, "unit_price": item.price}
                out.append(self._event(at, store, "sale", fields))
        self.position_ms = ts_ms
        return out

    def deliver(self, store_id: str, product_id: str, quantity: int, ts_ms: int) -> None:
        self.shelves.add(store_id, product_id, quantity, max(ts_ms, self.position_ms))

    def figures(self) -> ShelfFigures:
        return self.shelves.figures(self.position_ms)
