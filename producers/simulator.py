"""Deterministic simulated stores: the same seed gives the same bytes, however the caller slices time.

Pure: no clock, no I/O, no asyncio. The caller asks for the events up to an event time
(``events_until``); pacing and time acceleration are the caller's business (producers.replay).

Each store has its own ``random.Random`` (seeded from the simulator's seed and the store id) and draws
from it strictly in event-time order, so the output does not depend on how time is sliced into calls.
Deliberately bad records and duplicates come from a second generator per store, so turning them on
leaves the good events unchanged.

Baskets arrive as a non-homogeneous Poisson process (thinning against ``RHYTHM_MAX``) following a daily
rhythm in store-local time, taken as UTC: closed 22:00-07:00, a morning ramp-up, lunch and late-afternoon
peaks, weekends busier. Which products a basket wants follows their popularity (a few fast movers, many
slow ones) and their category's own hours (bakery in the morning, snacks in the evening, household on
weekends).

Shelves are finite: a customer who wants more than the shelf holds buys what is there, and one who finds
it empty buys nothing. The units not sold are lost sales, counted here (``shelf``), never events; a
simulated shelf never goes below zero. Trucks fill shelves through ``deliver``. What customers want does
not depend on what is on the shelf (refunds draw from their own generator), so two restock policies
can be compared on the very same demand.
"""

from __future__ import annotations

import heapq
import math
import random
import uuid
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from foundation.contract import encode, format_ts
from foundation.timeunits import DAY_MS, HOUR_MS

OPEN_HOUR: Final = 7.0
CLOSE_HOUR: Final = 22.0
WEEKEND_FACTOR: Final = 1.35
# An upper bound of rhythm() (weekday peak ~1.30 times the weekend factor), the thinning envelope.
RHYTHM_MAX: Final = 1.8

RecordKind = Literal["good", "bad", "duplicate"]

_CATEGORIES: Final[dict[str, tuple[tuple[str, ...], float, float]]] = {
    "dairy": (("Whole Milk", "Greek Yogurt", "Butter", "Cheddar", "Cream"), 0.9, 6.5),
    "bakery": (("Sourdough", "Baguette", "Croissant", "Rye Bread", "Muffin"), 0.8, 5.0),
    "produce": (("Bananas", "Apples", "Tomatoes", "Spinach", "Avocado"), 0.5, 4.5),
    "beverages": (("Orange Juice", "Sparkling Water", "Cola", "Green Tea", "Coffee Beans"), 0.9, 12.0),
    "snacks": (("Potato Chips", "Pretzels", "Trail Mix", "Chocolate Bar", "Granola Bar"), 0.9, 5.5),
    "household": (("Dish Soap", "Paper Towels", "Laundry Pods", "Sponges", "Trash Bags"), 1.5, 18.0),
    "frozen": (("Frozen Pizza", "Ice Cream", "Frozen Peas", "Fish Sticks", "Waffles"), 1.5, 9.0),
    "personal care": (("Toothpaste", "Shampoo", "Hand Soap", "Deodorant", "Razors"), 1.2, 15.0),
}
_BRANDS: Final = ("Acme", "Northfield", "Green Valley", "Blue Harbor", "Sunrise", "Oak & Co", "Everyday")
_LINES: Final = (1, 2, 3, 4)
_LINE_CUM_WEIGHTS: Final = (45, 75, 90, 100)  # 45%, 30%, 15%, 10%
_QUANTITIES: Final = (1, 2, 3, 4, 6)
_QUANTITY_CUM_WEIGHTS: Final = (70, 88, 95, 98, 100)  # 70%, 18%, 7%, 3%, 2%
_REFUND_REASONS: Final = ("damaged", "wrong item", "changed mind", "expired", "defective")
# Category demand by hour of the day (weekday, weekend): (first hour, last hour + 1, factor) spans.
_CATEGORY_HOURS: Final[dict[str, tuple[tuple[int, int, float], ...]]] = {
    "bakery": ((7, 10, 1.8), (10, 16, 1.0), (16, 22, 0.6)),
    "dairy": ((7, 10, 1.3),),
    "produce": ((16, 19, 1.3),),
    "beverages": ((12, 17, 1.4),),
    "snacks": ((7, 12, 0.6), (18, 22, 1.5)),
    "frozen": ((7, 12, 0.7), (17, 21, 1.4)),
}
_CATEGORY_WEEKEND: Final[dict[str, float]] = {"household": 1.6, "beverages": 1.3, "snacks": 1.2}


def _category_factor(category: str, hour: int, weekend: bool) -> float:
    factor = 1.0
    for first, end, value in _CATEGORY_HOURS.get(category, ()):
        if first <= hour < end:
            factor = value
    return factor * (_CATEGORY_WEEKEND.get(category, 1.0) if weekend else 1.0)


def is_open(ts_ms: float) -> bool:
    hour = (ts_ms % DAY_MS) / HOUR_MS
    return OPEN_HOUR <= hour < CLOSE_HOUR


def open_ms_between(start_ms: float, end_ms: float) -> float:
    """Milliseconds of opening hours within [start_ms, end_ms)."""
    total = 0.0
    day = (start_ms // DAY_MS) * DAY_MS
    while day < end_ms:
        a = max(start_ms, day + OPEN_HOUR * HOUR_MS)
        b = min(end_ms, day + CLOSE_HOUR * HOUR_MS)
        if b > a:
            total += b - a
        day += DAY_MS
    return total


def rhythm(ts_ms: float) -> float:
    """Relative basket rate at an event time: 0 when closed, ~1.3 at a weekday's peaks."""
    hour = (ts_ms % DAY_MS) / HOUR_MS
    if hour < OPEN_HOUR or hour >= CLOSE_HOUR:
        return 0.0
    ramp_up = min(1.0, (hour - OPEN_HOUR) / 2.0)
    wind_down = min(1.0, (CLOSE_HOUR - hour) / 1.5)
    shape = (
        0.3 + 0.9 * math.exp(-(((hour - 12.5) / 1.1) ** 2)) + 1.0 * math.exp(-(((hour - 17.5) / 1.4) ** 2))
    )
    weekday = (int(ts_ms // DAY_MS) + 3) % 7  # 1970-01-01 was a Thursday; Monday is 0
    return ramp_up * wind_down * shape * (WEEKEND_FACTOR if weekday >= 5 else 1.0)


def _next_opening(ts_ms: float) -> float:
    day_start = (ts_ms // DAY_MS) * DAY_MS
    opening = day_start + OPEN_HOUR * HOUR_MS
    return opening if ts_ms < opening else opening + DAY_MS


@dataclass(frozen=True, slots=True)
class CatalogItem:
    product_id: str
    name: str
    category: str
    price: float
    restock_threshold: int
    target_stock: int


@dataclass(frozen=True, slots=True)
class SimEvent:
    """One record to produce: its bytes, the partition key (the store) and what it is meant to be."""

    ts_ms: int
    store_id: str
    data: bytes
    kind: RecordKind


@dataclass
class ShelfFigures:
    """What the shelves went through, summed over store-products (differences of two give a period)."""

    at_ms: int = 0
    open_ms: float = 0.0  # store-product milliseconds while open
    out_open_ms: float = 0.0  # of those, with an empty shelf
    stockouts: int = 0  # episodes: a shelf going empty
    lost_units: int = 0
    lost_value: float = 0.0
    demand_units: int = 0
    stock_ms: float = 0.0  # on-hand units x milliseconds, all hours

    def minus(self, earlier: ShelfFigures) -> ShelfFigures:
        return ShelfFigures(
            at_ms=self.at_ms,
            open_ms=self.open_ms - earlier.open_ms,
            out_open_ms=self.out_open_ms - earlier.out_open_ms,
            stockouts=self.stockouts - earlier.stockouts,
            lost_units=self.lost_units - earlier.lost_units,
            lost_value=self.lost_value - earlier.lost_value,
            demand_units=self.demand_units - earlier.demand_units,
            stock_ms=self.stock_ms - earlier.stock_ms,
        )

    @property
    def availability(self) -> float:
        """Share of store-product minutes in stock while open."""
        return 1.0 - self.out_open_ms / self.open_ms if self.open_ms > 0 else 1.0

    def average_stock(self, span_ms: float, items: int) -> float:
        return self.stock_ms / (span_ms * items) if span_ms > 0 and items else 0.0


@dataclass(slots=True)
class _Shelf:
    on_hand: int = 0
    since_ms: float = 0.0  # when on_hand last changed
    empty_since_ms: float | None = None


class Shelves:
    """The simulated stores' real shelves: stock, stock-outs while open, lost sales, stock held."""

    def __init__(self, start_ms: int) -> None:
        self.start_ms = start_ms
        self.shelves: dict[tuple[str, str], _Shelf] = {}
        self.stockouts = 0
        self.lost_units = 0
        self.lost_value = 0.0
        self.demand_units = 0
        self._out_open_ms = 0.0  # closed episodes
        self._stock_ms = 0.0  # closed intervals

    def on_hand(self, store_id: str, product_id: str) -> int:
        shelf = self.shelves.get((store_id, product_id))
        return shelf.on_hand if shelf is not None else 0

    def set(self, store_id: str, product_id: str, on_hand: int, ts_ms: float) -> None:
        if on_hand < 0:
            raise ValueError(f"a shelf cannot hold {on_hand} units")
        key = (store_id, product_id)
        shelf = self.shelves.get(key)
        if shelf is None:
            shelf = self.shelves[key] = _Shelf(0, ts_ms, ts_ms)
        self._stock_ms += shelf.on_hand * (ts_ms - shelf.since_ms)
        shelf.since_ms = ts_ms
        if on_hand == 0 and shelf.empty_since_ms is None:
            shelf.empty_since_ms = ts_ms
            self.stockouts += 1
        elif on_hand > 0 and shelf.empty_since_ms is not None:
            self._out_open_ms += open_ms_between(shelf.empty_since_ms, ts_ms)
            shelf.empty_since_ms = None
        shelf.on_hand = on_hand

    def add(self, store_id: str, product_id: str, quantity: int, ts_ms: float) -> None:
        self.set(store_id, product_id, self.on_hand(store_id, product_id) + quantity, ts_ms)

    def take(self, store_id: str, product_id: str, wanted: int, price: float, ts_ms: float) -> int:
        """A customer wants ``wanted`` units: returns how many the shelf gives; the rest are lost."""
        have = self.on_hand(store_id, product_id)
        sold = min(have, wanted)
        self.demand_units += wanted
        if wanted > sold:
            self.lost_units += wanted - sold
            self.lost_value += (wanted - sold) * price
        if sold:
            self.set(store_id, product_id, have - sold, ts_ms)
        return sold

    def figures(self, now_ms: float) -> ShelfFigures:
        out_open = self._out_open_ms
        stock = self._stock_ms
        for shelf in self.shelves.values():
            if shelf.empty_since_ms is not None:
                out_open += open_ms_between(shelf.empty_since_ms, now_ms)
            stock += shelf.on_hand * (now_ms - shelf.since_ms)
        return ShelfFigures(
            at_ms=int(now_ms),
            open_ms=open_ms_between(self.start_ms, now_ms) * len(self.shelves),
            out_open_ms=out_open,
            stockouts=self.stockouts,
            lost_units=self.lost_units,
            lost_value=round(self.lost_value, 2),
            demand_units=self.demand_units,
            stock_ms=stock,
        )


@dataclass
class SimulatorStats:
    records: int = 0  # everything produced: good + bad + duplicate
    good: int = 0
    bad: int = 0
    duplicates: int = 0
    baskets: int = 0
    by_type: Counter[str] = field(default_factory=Counter)  # good events by contract type
    delivered_units: int = 0


@dataclass(eq=False)
class _Store:
    store_id: str
    rng: random.Random
    noise: random.Random
    refunds: random.Random
    baskets_per_ms: float
    prices: dict[str, float]
    seq: int = 0
    transactions: int = 0
    bad_seq: int = 0
    next_basket_ms: float = 0.0
    next_price_ms: float = 0.0
    recent_sales: deque[tuple[str, int, float, str]] = field(default_factory=lambda: deque(maxlen=200))
    recent_records: deque[bytes] = field(default_factory=lambda: deque(maxlen=100))


def new_run_id() -> str:
    """A short id of one simulation run (8 hex digits: 4 billion runs before a likely repeat)."""
    return uuid.uuid4().hex[:8]


def _check_options(
    stores: int,
    products: int,
    baskets_per_hour: float,
    price_changes_per_day: float,
    fractions: dict[str, float],
    initial_stock: tuple[int, int],
    shelf_scale: float,
) -> None:
    """ValueError for a simulation that cannot run: no store or product, rates or shares out of range."""
    if stores < 1 or products < 1:
        raise ValueError("a simulation needs at least one store and one product")
    if baskets_per_hour <= 0 or price_changes_per_day < 0:
        raise ValueError("rates must be positive")
    for name, value in fractions.items():
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must be within 0-1, got {value}")
    if not 0 <= initial_stock[0] <= initial_stock[1]:
        raise ValueError(f"initial_stock must be a range (low, high) of units, got {initial_stock}")
    if shelf_scale <= 0:
        raise ValueError(f"shelf_scale must be positive, got {shelf_scale}")


def _popularity(
    catalog: list[CatalogItem], seed: int
) -> tuple[list[CatalogItem], dict[tuple[bool, int], list[float]]]:
    """The catalog from the most to the least popular (Zipf-like: a few products sell much more than
    the rest), and the cumulative weights of a draw per (weekend, hour of the day): popularity times
    the product's category's hours."""
    order = list(range(len(catalog)))
    random.Random(f"{seed}:popularity").shuffle(order)
    by_popularity = [catalog[i] for i in order]
    popularity = [1.0 / (rank + 1) ** 0.8 for rank in range(len(catalog))]
    cumulative = {
        (weekend, hour): list(
            _accumulate(
                [
                    weight * _category_factor(item.category, hour, weekend)
                    for weight, item in zip(popularity, by_popularity, strict=True)
                ]
            )
        )
        for weekend in (False, True)
        for hour in range(24)
    }
    return by_popularity, cumulative


class StoreSimulator:
    """Stores selling a shared catalog; ``events_until`` yields their records in event-time order."""

    def __init__(
        self,
        seed: int,
        stores: int,
        products: int,
        start_ms: int,
        *,
        baskets_per_hour: float = 90.0,
        price_changes_per_day: float = 2.0,
        refund_rate: float = 0.025,
        bad_fraction: float = 0.0,
        duplicate_fraction: float = 0.0,
        run_id: str | None = None,
        initial_stock: tuple[int, int] = (15, 60),
        shelf_scale: float = 1.0,
    ) -> None:
        """`run_id` goes into every event id, so two runs (even with the same seed) never repeat each
        other's ids, which the processor would drop as redeliveries; a new one is drawn if not given.

        The catalog's shelves (restock threshold, target stock, starting stock) are sized for about 90
        baskets an hour; `shelf_scale` makes them that much larger for busier stores (the draws stay
        the same, so the catalog is otherwise unchanged)."""
        _check_options(
            stores,
            products,
            baskets_per_hour,
            price_changes_per_day,
            {
                "refund_rate": refund_rate,
                "bad_fraction": bad_fraction,
                "duplicate_fraction": duplicate_fraction,
            },
            initial_stock,
            shelf_scale,
        )
        initial_stock = (round(initial_stock[0] * shelf_scale), round(initial_stock[1] * shelf_scale))
        self.seed = seed
        self.run_id = run_id if run_id is not None else new_run_id()
        self.start_ms = start_ms
        self.initial_stock_range = initial_stock
        self.shelves = Shelves(start_ms)
        self.position_ms = start_ms  # every event up to here has been handed out
        self.refund_rate = refund_rate
        self.bad_fraction = bad_fraction
        self.duplicate_fraction = duplicate_fraction
        self._price_changes_per_ms = price_changes_per_day / DAY_MS
        self.stats = SimulatorStats()
        self._last_ts: tuple[int, str] = (-1, format_ts(0))
        self.catalog = _make_catalog(random.Random(f"{seed}:catalog"), products, shelf_scale)
        self._by_popularity, self._cum_by_hour = _popularity(self.catalog, seed)
        self.initial_stock: dict[str, dict[str, int]] = {}
        self._stores: list[_Store] = []
        self._initial: list[list[SimEvent]] = []
        for index in range(1, stores + 1):
            self._open_store(f"store-{index:03d}", baskets_per_hour, start_ms)

    def _open_store(self, store_id: str, baskets_per_hour: float, start_ms: int) -> None:
        """A store of the simulation: its own random streams (from the seed and its id, so adding a
        store changes no other), its rate of baskets, its opening events and first draws."""
        rng = random.Random(f"{self.seed}:{store_id}")
        store = _Store(
            store_id=store_id,
            rng=rng,
            noise=random.Random(f"{self.seed}:{store_id}:noise"),
            refunds=random.Random(f"{self.seed}:{store_id}:refunds"),
            baskets_per_ms=baskets_per_hour * rng.uniform(0.6, 1.4) / HOUR_MS,
            prices={item.product_id: item.price for item in self.catalog},
        )
        self._stores.append(store)
        self._initial.append(self._opening_events(store, start_ms))
        store.next_basket_ms = self._next_basket(store, float(start_ms))
        store.next_price_ms = self._next_price_change(store, float(start_ms))

    @property
    def store_ids(self) -> list[str]:
        return [store.store_id for store in self._stores]

    def deliver(self, store_id: str, product_id: str, quantity: int, ts_ms: int | None = None) -> None:
        """A truck put ``quantity`` units on the shelf (at ``ts_ms``, by default where time has got to).

        Times before the last handed-out event are taken as that time: a shelf's book runs forwards."""
        if quantity < 1:
            raise ValueError(f"a delivery brings at least one unit, not {quantity}")
        at = self.position_ms if ts_ms is None else max(ts_ms, self.position_ms)
        self.shelves.add(store_id, product_id, quantity, at)
        self.stats.delivered_units += quantity

    def figures(self) -> ShelfFigures:
        """Availability, lost sales and stock held so far (up to where time has got to)."""
        return self.shelves.figures(self.position_ms)

    def events_until(self, ts_ms: int) -> list[SimEvent]:
        """Every record with event time in (last position, ``ts_ms``], ordered by event time.

        One store's records are in the order they happened, which is the order they must be produced in.
        """
        if ts_ms < self.position_ms:
            return []
        per_store: list[list[SimEvent]] = []
        for index, store in enumerate(self._stores):
            out = self._initial[index]
            self._initial[index] = []
            self._advance(store, ts_ms, out)
            per_store.append(out)
        self.position_ms = ts_ms
        return list(heapq.merge(*per_store, key=lambda event: event.ts_ms))

    # --- generation ------------------------------------------------------------------------------

    def _opening_events(self, store: _Store, ts_ms: int) -> list[SimEvent]:
        """The catalog, then a stock take of every product: what a store says when it comes online."""
        out: list[SimEvent] = []
        stock: dict[str, int] = {}
        for item in self.catalog:
            self._emit(store, ts_ms, "product", _product_fields(item, item.price), out)
        low, high = self.initial_stock_range
        for item in self.catalog:
            stock[item.product_id] = store.rng.randint(low, high)
            self.shelves.set(store.store_id, item.product_id, stock[item.product_id], ts_ms)
            self._emit(
                store, ts_ms, "count", {"product_id": item.product_id, "count": stock[item.product_id]}, out
            )
        self.initial_stock[store.store_id] = stock
        return out

    def _advance(self, store: _Store, until_ms: int, out: list[SimEvent]) -> None:
        while True:
            basket_at, price_at = store.next_basket_ms, store.next_price_ms
            if min(basket_at, price_at) > until_ms:
                return
            if basket_at <= price_at:
                self._basket(store, int(basket_at), out)
                store.next_basket_ms = self._next_basket(store, basket_at)
            else:
                self._price_change(store, int(price_at), out)
                store.next_price_ms = self._next_price_change(store, price_at)

    def _next_basket(self, store: _Store, after_ms: float) -> float:
        envelope = store.baskets_per_ms * RHYTHM_MAX
        ts = after_ms
        while True:
            ts += store.rng.expovariate(envelope)
            hour = (ts % DAY_MS) / HOUR_MS
            if hour < OPEN_HOUR or hour >= CLOSE_HOUR:
                ts = _next_opening(ts)  # rate is zero while closed; the process is memoryless
                continue
            if store.rng.random() * RHYTHM_MAX < rhythm(ts):
                return ts

    def _next_price_change(self, store: _Store, after_ms: float) -> float:
        if self._price_changes_per_ms <= 0:
            return math.inf
        return after_ms + store.rng.expovariate(self._price_changes_per_ms)

    def _basket(self, store: _Store, ts_ms: int, out: list[SimEvent]) -> None:
        rng = store.rng
        self.stats.baskets += 1
        store.transactions += 1
        transaction_id = f"{store.store_id}-{self.run_id}-t{store.transactions}"
        lines = rng.choices(_LINES, cum_weights=_LINE_CUM_WEIGHTS)[0]
        weekend = (ts_ms // DAY_MS + 3) % 7 >= 5
        cum_weights = self._cum_by_hour[(weekend, int(ts_ms % DAY_MS // HOUR_MS))]
        picked = rng.choices(self._by_popularity, cum_weights=cum_weights, k=lines)
        seen: set[str] = set()
        sold: list[tuple[str, int, float, str]] = []
        for item in picked:
            if item.product_id in seen:
                continue
            seen.add(item.product_id)
            wanted = rng.choices(_QUANTITIES, cum_weights=_QUANTITY_CUM_WEIGHTS)[0]
            price = store.prices[item.product_id]
            quantity = self.shelves.take(store.store_id, item.product_id, wanted, price, ts_ms)
            if quantity == 0:
                continue  # an empty shelf: a lost sale, not an event
            self._emit(
                store,
                ts_ms,
                "sale",
                {
                    "product_id": item.product_id,
                    "quantity": quantity,
                    "unit_price": price,
                    "transaction_id": transaction_id,
                },
                out,
            )
            sold.append((item.product_id, quantity, price, transaction_id))
            if store.refunds.random() < self.refund_rate and store.recent_sales:
                self._refund(store, ts_ms, out)
        store.recent_sales.extend(sold)

    def _refund(self, store: _Store, ts_ms: int, out: list[SimEvent]) -> None:
        rng = store.refunds
        index = rng.randrange(len(store.recent_sales))
        product_id, quantity, price, transaction_id = store.recent_sales[index]
        del store.recent_sales[index]
        back = rng.randint(1, quantity)
        self.shelves.add(store.store_id, product_id, back, ts_ms)  # the item goes back on the shelf
        self._emit(
            store,
            ts_ms,
            "refund",
            {
                "product_id": product_id,
                "quantity": back,
                "unit_price": price,
                "transaction_id": transaction_id,
                "reason": rng.choice(_REFUND_REASONS),
            },
            out,
        )

    def _price_change(self, store: _Store, ts_ms: int, out: list[SimEvent]) -> None:
        rng = store.rng
        item = self.catalog[rng.randrange(len(self.catalog))]
        old = store.prices[item.product_id]
        new = max(0.19, round(old * rng.uniform(0.85, 1.15), 2))
        if new == old:
            new = round(old + 0.1, 2)
        store.prices[item.product_id] = new
        self._emit(store, ts_ms, "product", _product_fields(item, new), out)

    def _emit(
        self, store: _Store, ts_ms: int, kind: str, fields: dict[str, Any], out: list[SimEvent]
    ) -> None:
        store.seq += 1
        event = {
            "event_id": f"{store.store_id}-{self.run_id}-{store.seq}",
            "type": kind,
            "store_id": store.store_id,
            "ts": self._format_ts(ts_ms),
        }
        data = encode(event | fields)
        out.append(SimEvent(ts_ms, store.store_id, data, "good"))
        store.recent_records.append(data)
        self.stats.records += 1
        self.stats.good += 1
        self.stats.by_type[kind] += 1
        noise = store.noise
        if noise.random() < self.bad_fraction:
            out.append(SimEvent(ts_ms, store.store_id, self._bad_record(store, ts_ms, data), "bad"))
            self.stats.records += 1
            self.stats.bad += 1
        if noise.random() < self.duplicate_fraction:
            again = store.recent_records[noise.randrange(len(store.recent_records))]
            out.append(SimEvent(ts_ms, store.store_id, again, "duplicate"))
            self.stats.records += 1
            self.stats.duplicates += 1

    def _format_ts(self, ts_ms: int) -> str:
        """format_ts, remembering the last answer: a basket's lines share one timestamp."""
        if ts_ms != self._last_ts[0]:
            self._last_ts = (ts_ms, format_ts(ts_ms))
        return self._last_ts[1]

    def _bad_record(self, store: _Store, ts_ms: int, good: bytes) -> bytes:
        """One of the mistakes real feeds make; each must be rejected by the contract's validation."""
        noise = store.noise
        store.bad_seq += 1
        flavour = noise.randrange(3)
        if flavour == 0:  # truncated in transit: not valid JSON
            return good[: noise.randint(1, len(good) - 2)]
        record: dict[str, Any] = {
            "event_id": f"{store.store_id}-{self.run_id}-bad-{store.bad_seq}",
            "type": "sale",
            "store_id": store.store_id,
            "ts": format_ts(ts_ms),
            "product_id": self.catalog[noise.randrange(len(self.catalog))].product_id,
            "quantity": noise.randint(1, 3),
            "unit_price": 1.99,
        }
        if flavour == 1:  # a required field missing
            del record[noise.choice(("product_id", "quantity", "unit_price"))]
        else:  # an impossible value
            record["quantity"] = -record["quantity"]
        return encode(record)


def _accumulate(values: list[float]) -> list[float]:
    total = 0.0
    out = []
    for value in values:
        total += value
        out.append(total)
    return out


def _make_catalog(rng: random.Random, products: int, shelf_scale: float = 1.0) -> list[CatalogItem]:
    categories = sorted(_CATEGORIES)
    catalog = []
    for index in range(1, products + 1):
        category = categories[(index - 1) % len(categories)]
        nouns, low, high = _CATEGORIES[category]
        catalog.append(
            CatalogItem(
                product_id=f"sku-{index:04d}",
                name=f"{rng.choice(_BRANDS)} {rng.choice(nouns)}",
                category=category,
                price=round(rng.uniform(low, high), 2),
                restock_threshold=round(rng.randint(5, 12) * shelf_scale),
                target_stock=round(rng.randint(40, 80) * shelf_scale),
            )
        )
    return catalog


def _product_fields(item: CatalogItem, price: float) -> dict[str, Any]:
    """A catalog entry as a `product` event's fields, at `price`."""
    return {
        "product_id": item.product_id,
        "name": item.name,
        "category": item.category,
        "price": price,
        "restock_threshold": item.restock_threshold,
        "target_stock": item.target_stock,
    }
