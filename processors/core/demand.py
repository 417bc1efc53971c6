"""Demand per store and product, learned online from the stream: the forecast the restock policy reads.

Compact by design, so a shard's state stays bounded by its stores and products, however long it runs:

- per store, the store's units sold per hour of the week (168 numbers, plus 24 for the hour of the
  day while a weekday has not been seen yet), an exponentially weighted average per hour;
- per store and product, the product's share of the store's units, counted only while the product was
  on the shelf (an empty shelf sells nothing, and that says nothing about demand): a few numbers;
- per store, the lead time from a restock request to the delivery that answers it (mean and variance).

A product's rate at an hour of the week is its share times the store's rate at that hour. Products of
one store then share the store's daily and weekly rhythm; what a product does differently within the
day is absorbed by the safety stock.

No clock: time is event time (epoch milliseconds) handed in by the caller.
"""

from __future__ import annotations

import math
from array import array
from bisect import bisect_left
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import TYPE_CHECKING, Final, Literal

from foundation.contract import Sale
from foundation.timeunits import DAY_MS, HOUR_MS

if TYPE_CHECKING:
    from processors.core.stock_ledger import StockChange

WEEK_HOURS: Final = 168
_MONDAY_OFFSET_H: Final = 72  # 1970-01-01 was a Thursday: hour 0 of the epoch is hour 72 of its week

# Which restock policy a core runs (processors/core/restock_policy.py has one class for each).
PolicyName = Literal["threshold", "forecast"]


@dataclass(frozen=True, slots=True)
class RestockConfig:
    """How restock requests are raised. ``threshold``: the catalog's fixed rule only (as before);
    ``forecast``: demand over the lead time plus safety stock, with the threshold as a floor."""

    policy: PolicyName = "forecast"
    service_level: float = 0.98  # the chance a store-product does not run out before a truck comes
    lead_time_prior_ms: int = HOUR_MS  # until the first delivery answers a request
    cycle_ms: int = 24 * HOUR_MS  # the planned time between two deliveries to a store
    min_history_ms: int = 24 * HOUR_MS  # a store's hours of sales before its forecasts are used
    min_item_exposure: float = 200.0  # store units seen while the product was on the shelf
    share_half_life_ms: int = 7 * DAY_MS
    hour_alpha: float = 0.25  # weight of the newest week in an hour-of-week average
    lead_alpha: float = 0.2
    forecast_error: float = 0.15  # relative error of a rate, on top of the randomness of sales
    stockout_horizon_ms: int = 7 * DAY_MS  # how far ahead an expected stock-out is looked for
    min_join_share: float = 0.2  # a product joins another's trip when it needs >= this share of its order
    # A delivery later than this after its request is not a lead time (a replayed file answered by trucks
    # stamping today's date, a request answered by chance): it teaches nothing.
    max_lead_ms: int = 2 * DAY_MS
    # Service level per class of product, by velocity and value: a stock-out of a fast mover loses many
    # sales in its hours, and so does one of a product whose sales are worth much a day; a slow mover's
    # extra unit of safety stock is cheap and covers days. `service_level` is for the rest.
    service_level_fast: float = 0.995  # at least `fast_daily_units` a day, or `valuable_daily_sales`
    service_level_slow: float = 0.98  # under `slow_daily_units` a day (and not valuable)
    fast_daily_units: float = 20.0
    slow_daily_units: float = 2.0
    valuable_daily_sales: float = 150.0  # money a day (units times the catalog's price)
    # The service levels' normal quantiles (default, fast, slow), worked out once.
    z: float = field(init=False, default=0.0)
    z_fast: float = field(init=False, default=0.0)
    z_slow: float = field(init=False, default=0.0)

    def __post_init__(self) -> None:
        for name in ("service_level", "service_level_fast", "service_level_slow"):
            level = getattr(self, name)
            if not 0.5 <= level < 1.0:
                raise ValueError(f"{name} must be within [0.5, 1), got {level}")
        object.__setattr__(self, "z", NormalDist().inv_cdf(self.service_level))
        object.__setattr__(self, "z_fast", NormalDist().inv_cdf(self.service_level_fast))
        object.__setattr__(self, "z_slow", NormalDist().inv_cdf(self.service_level_slow))

    def z_of(self, daily_units: float, price: float | None) -> float:
        """The safety factor of a product's class: its units a day, and their worth at `price`."""
        valuable = price is not None and daily_units * price >= self.valuable_daily_sales
        if daily_units >= self.fast_daily_units or valuable:
            return self.z_fast
        if daily_units < self.slow_daily_units:
            return self.z_slow
        return self.z


def hour_of_week(hour_index: int) -> int:
    """Hour of the week (Monday 00:00 UTC = 0) of an absolute hour index (epoch ms // HOUR_MS)."""
    return (hour_index + _MONDAY_OFFSET_H) % WEEK_HOURS


@dataclass(slots=True)
class StoreDemand:
    week: array[float] = field(default_factory=lambda: array("d", bytes(8 * WEEK_HOURS)))
    week_seen: bytearray = field(default_factory=lambda: bytearray(WEEK_HOURS))
    # How far an hour's units stray from `week` from one week to the next (an exponentially weighted
    # variance, from an hour's second week on): what an average rate misses, by hour of the week.
    week_var: array[float] = field(default_factory=lambda: array("d", bytes(8 * WEEK_HOURS)))
    day: array[float] = field(default_factory=lambda: array("d", bytes(8 * 24)))
    day_seen: bytearray = field(default_factory=lambda: bytearray(24))
    hour: int = -1  # the hour being counted (absolute index); -1: nothing yet
    hour_units: float = 0.0
    hours_seen: int = 0
    cum: float = 0.0  # every unit the store ever sold: the clock of product shares
    lines: float = 0.0  # decayed count of sale lines, units and squared units: the size of a sale
    line_units: float = 0.0
    line_units_sq: float = 0.0
    lead_ms: float = 0.0
    lead_var: float = 0.0
    lead_n: int = 0
    # Units expected before each hour of the week (169 sums of `rate`), worked out when first needed
    # after the hour rolls: demand over any span is then two lookups instead of a walk over its hours.
    sums: array[float] | None = None
    # The same for the hours' relative variance beyond a compound Poisson count's, weighted by their units
    # (169 sums of extra variance / units): a span's relative variance is then two lookups too.
    noise_sums: array[float] | None = None

    def observe(self, ts_ms: int, quantity: int, alpha: float) -> None:
        hour = ts_ms // HOUR_MS
        if hour != self.hour:
            self._roll(hour, alpha)
        self.hour_units += quantity
        self.cum += quantity
        self.lines = self.lines * 0.999 + 1.0
        self.line_units = self.line_units * 0.999 + quantity
        self.line_units_sq = self.line_units_sq * 0.999 + quantity * quantity

    def _roll(self, hour: int, alpha: float) -> None:
        if self.hour < 0 or hour < self.hour:
            if self.hour < 0:
                self.hour = hour
            return  # a late event: counted in the hour being counted
        # Close the hour being counted, then the silent hours up to the new one (at most a week of them).
        self.sums = self.noise_sums = None
        self._fold(self.hour, self.hour_units, alpha)
        for silent in range(self.hour + 1, min(hour, self.hour + 1 + WEEK_HOURS)):
            self._fold(silent, 0.0, alpha)
        self.hour = hour
        self.hour_units = 0.0

    def _fold(self, hour: int, units: float, alpha: float) -> None:
        b = hour_of_week(hour)
        if self.week_seen[b]:
            diff = units - self.week[b]
            self.week[b] += alpha * diff
            self.week_var[b] = (1 - alpha) * (self.week_var[b] + alpha * diff * diff)
        else:
            self.week[b] = units
            self.week_seen[b] = 1
        h = b % 24
        if self.day_seen[h]:
            self.day[h] += alpha * (units - self.day[h])
        else:
            self.day[h] = units
            self.day_seen[h] = 1
        self.hours_seen += 1

    def rate(self, hour: int) -> float:
        """Units per hour the store is expected to sell in the absolute hour ``hour``."""
        b = hour_of_week(hour)
        if self.week_seen[b]:
            return self.week[b]
        if self.day_seen[b % 24]:
            return self.day[b % 24]
        # An hour of the day not seen yet: the store's average hour so far.
        return (self.cum - self.hour_units) / self.hours_seen if self.hours_seen else 0.0

    def week_sums(self) -> array[float]:
        """sums[b]: units expected from Monday 00:00 UTC up to hour b of the week (sums[168]: a week)."""
        sums = self.sums
        if sums is None:
            sums = array("d", bytes(8 * (WEEK_HOURS + 1)))
            total = 0.0
            week, week_seen, day, day_seen = self.week, self.week_seen, self.day, self.day_seen
            average = (self.cum - self.hour_units) / self.hours_seen if self.hours_seen else 0.0
            for b in range(WEEK_HOURS):
                # rate() by hour of the week (it depends on nothing else until the hour rolls)
                if week_seen[b]:
                    total += week[b]
                elif day_seen[b % 24]:
                    total += day[b % 24]
                else:
                    total += average
                sums[b + 1] = total
            self.sums = sums
        return sums

    def units_before(self, t_ms: float) -> float:
        """Units expected from the epoch's first Monday up to `t_ms` (a running total of `rate`)."""
        return _running(self.week_sums(), t_ms)

    def relative_variance(self, start_ms: float, end_ms: float) -> float:
        """The variance of the units of [start_ms, end_ms) beyond a compound Poisson count's, relative to
        their square: the week-to-week spread of its hours, weighted by their units (the hours stray
        together, as a busy day makes every hour busy). 0 for hours seen in one week only."""
        units = self.units_before(end_ms) - self.units_before(start_ms)
        if units <= 0:
            return 0.0
        sums = self.noise_sums
        if sums is None:
            sums = array("d", bytes(8 * (WEEK_HOURS + 1)))
            total = 0.0
            dispersion = self.dispersion()
            for b in range(WEEK_HOURS):
                mean = self.week[b]
                if self.week_seen[b] and mean > 0:
                    total += max(0.0, self.week_var[b] - dispersion * mean) / mean
                sums[b + 1] = total
            self.noise_sums = sums
        return (_running(sums, end_ms) - _running(sums, start_ms)) / units

    def time_of(self, units: float) -> float | None:
        """When `units_before` reaches `units` (the inverse of it; None if the store sells nothing)."""
        sums = self.week_sums()
        per_week = sums[WEEK_HOURS]
        if per_week <= 0:
            return None
        weeks = math.floor(units / per_week)
        left = units - weeks * per_week
        i = bisect_left(sums, left)
        if i > WEEK_HOURS:  # rounding at the very end of a week
            i = WEEK_HOURS
        if i == 0:
            hours = 0.0
        else:
            b = i - 1
            hours = b + (left - sums[b]) / (sums[i] - sums[b])
        return ((weeks * WEEK_HOURS + hours) - _MONDAY_OFFSET_H) * HOUR_MS

    def dispersion(self) -> float:
        """Variance over mean of units sold: E[q^2] / E[q] for sale lines of q units (1 if unknown)."""
        return self.line_units_sq / self.line_units if self.line_units > 0 else 1.0

    def learn_lead(self, lead_ms: int, alpha: float) -> None:
        if self.lead_n == 0:
            self.lead_ms, self.lead_var = float(lead_ms), 0.0
        else:
            diff = lead_ms - self.lead_ms
            self.lead_ms += alpha * diff
            self.lead_var = (1 - alpha) * (self.lead_var + alpha * diff * diff)
        self.lead_n += 1


def _running(sums: array[float], t_ms: float) -> float:
    """A running total from the epoch's first Monday up to `t_ms` of hour-of-week values whose sums
    from Monday 00:00 are `sums` (169: sums[168] is a week's)."""
    h = t_ms / HOUR_MS + _MONDAY_OFFSET_H
    weeks, into = divmod(h, WEEK_HOURS)
    b = int(into)
    return weeks * sums[WEEK_HOURS] + sums[b] + (into - b) * (sums[b + 1] - sums[b])


@dataclass(slots=True)
class ItemDemand:
    units: float = 0.0  # decayed units sold
    exposure: float = 0.0  # decayed store units sold while this product was on the shelf
    mark: float = 0.0  # the store's `cum` when last brought up to date
    in_stock: bool = True
    last_ms: int = 0


@dataclass(frozen=True, slots=True)
class ReorderPlan:
    """What the forecast says for one store-product at one moment: when to ask, and the lead time."""

    reorder_point: float  # ask when on hand is at or below this
    lead_ms: float
    lead_demand: float  # units expected to sell before a truck asked now arrives
    z: float  # the safety factor of the product's class (RestockConfig.z_of)


@dataclass(slots=True)
class DemandForecast:
    """Sale rates per store and product, and lead times per store, learned from the stock ledger's
    changes; read by the forecast restock policy. It decides nothing."""

    config: RestockConfig
    stores: dict[str, StoreDemand] = field(default_factory=dict)
    items: dict[str, dict[str, ItemDemand]] = field(default_factory=dict)  # store -> product -> item

    # --- learning ------------------------------------------------------------------------------

    def learn(self, change: StockChange) -> None:
        """What one event teaches: a sale is demand; a refund, restock or stock take changes only
        whether the shelf is stocked; a delivery that answers a request is a lead time."""
        ev = change.event
        if type(ev) is Sale:
            self.sale(ev.store_id, ev.product_id, ev.quantity, change.ts_ms, change.on_hand)
            return
        if change.lead_ms is not None:
            self.delivered(ev.store_id, change.lead_ms)
        self.stock_changed(ev.store_id, ev.product_id, change.ts_ms, change.on_hand)

    def _item(self, store_id: str, product_id: str, store: StoreDemand) -> ItemDemand:
        items = self.items.get(store_id)
        if items is None:
            items = self.items[store_id] = {}
        item = items.get(product_id)
        if item is None:
            item = items[product_id] = ItemDemand(mark=store.cum)
        return item

    def _store(self, store_id: str) -> StoreDemand:
        store = self.stores.get(store_id)
        if store is None:
            store = self.stores[store_id] = StoreDemand()
        return store

    def sale(self, store_id: str, product_id: str, quantity: int, ts_ms: int, on_hand: int) -> None:
        # The hot path (every sale): the common case inlined, the rest in the helpers.
        store = self.stores.get(store_id) or self._store(store_id)
        hour = ts_ms // HOUR_MS
        if hour != store.hour:
            store._roll(hour, self.config.hour_alpha)
        # StoreDemand.observe, inlined
        store.hour_units += quantity
        cum = store.cum = store.cum + quantity
        store.lines = store.lines * 0.999 + 1.0
        store.line_units = store.line_units * 0.999 + quantity
        store.line_units_sq = store.line_units_sq * 0.999 + quantity * quantity
        items = self.items.get(store_id)
        item = items.get(product_id) if items is not None else None
        if item is None:
            item = self._item(store_id, product_id, store)
        if ts_ms - item.last_ms >= HOUR_MS:
            self._catch_up(item, store, ts_ms)
        else:  # _catch_up within the hour, inlined
            if item.in_stock:
                item.exposure += cum - item.mark
            item.mark = cum
        if not item.in_stock:  # sold from an empty book (real data): the sale still shows demand
            item.exposure += quantity
        item.units += quantity
        item.in_stock = on_hand > 0

    def stock_changed(self, store_id: str, product_id: str, ts_ms: int, on_hand: int) -> None:
        """A refund, restock or stock take: the shelf's state changes, demand does not."""
        store = self._store(store_id)
        item = self._item(store_id, product_id, store)
        self._catch_up(item, store, ts_ms)
        item.in_stock = on_hand > 0

    def _catch_up(self, item: ItemDemand, store: StoreDemand, ts_ms: int) -> None:
        if ts_ms - item.last_ms >= HOUR_MS:  # decay in steps of an hour or more (0.4% a step)
            if item.last_ms:
                decay = 0.5 ** ((ts_ms - item.last_ms) / self.config.share_half_life_ms)
                item.units *= decay
                item.exposure *= decay
            item.last_ms = ts_ms
        if item.in_stock:
            item.exposure += store.cum - item.mark
        item.mark = store.cum

    def delivered(self, store_id: str, lead_ms: int) -> None:
        """A delivery answered a request after ``lead_ms``."""
        if 0 <= lead_ms <= self.config.max_lead_ms:
            self._store(store_id).learn_lead(lead_ms, self.config.lead_alpha)

    # --- forecasting ---------------------------------------------------------------------------

    def lead_ms(self, store_id: str) -> float:
        store = self.stores.get(store_id)
        if store is None or store.lead_n == 0:
            return float(self.config.lead_time_prior_ms)
        return store.lead_ms

    def share(self, store_id: str, product_id: str) -> float | None:
        """The product's share of its store's units, or None while there is too little history."""
        store = self.stores.get(store_id)
        item = self.items.get(store_id, {}).get(product_id)
        if store is None or item is None or store.hours_seen * HOUR_MS < self.config.min_history_ms:
            return None
        exposure = item.exposure + (store.cum - item.mark if item.in_stock else 0.0)
        if exposure < self.config.min_item_exposure:
            return None
        return item.units / exposure

    def expected(self, store: StoreDemand, share: float, start_ms: float, end_ms: float) -> float:
        """Units of the product expected to sell in [start_ms, end_ms)."""
        if end_ms <= start_ms:
            return 0.0
        return (store.units_before(end_ms) - store.units_before(start_ms)) * share

    def time_to_sell(
        self, store: StoreDemand, share: float, start_ms: float, units: float, horizon_ms: float
    ) -> float | None:
        """When ``units`` will have sold, counting from ``start_ms`` (None if not within the horizon)."""
        if units <= 0:
            return start_ms
        if share <= 0:
            return None
        when = store.time_of(store.units_before(start_ms) + units / share)
        if when is None or when >= start_ms + horizon_ms:
            return None
        return max(when, start_ms)

    def plan(
        self, store_id: str, product_id: str, ts_ms: int, price: float | None = None
    ) -> ReorderPlan | None:
        """Reorder point now, at the service level of the product's class (`price`: the catalog's, for
        its value); None while the product has too little history."""
        share = self.share(store_id, product_id)
        store = self.stores.get(store_id)
        if share is None or store is None:
            return None
        cfg = self.config
        lead = self.lead_ms(store_id)
        lead_sd = math.sqrt(store.lead_var) if store.lead_n > 1 else 0.25 * lead
        # Asking waits for the product's next sale (the next event that looks at it): the reorder point
        # covers the time until then, plus the lead time. At closing time that is the next morning.
        one_line = store.line_units / store.lines if store.lines > 0 else 1.0
        # expected() and time_to_sell() spelled out on one running total taken once at ts_ms
        now = store.units_before(ts_ms)
        next_look = store.time_of(now + one_line / share) if share > 0 else None
        if next_look is None or next_look >= ts_ms + DAY_MS:
            look_ms: float = DAY_MS
        else:
            look_ms = max(next_look - ts_ms, 0.0)
        cover = (store.units_before(ts_ms + look_ms + lead) - now) * share
        z = cfg.z_of((store.units_before(ts_ms + DAY_MS) - now) * share, price)
        safety = self._safety(store, ts_ms, ts_ms + look_ms + lead, cover, lead_sd, z)
        return ReorderPlan(
            reorder_point=cover + safety,
            lead_ms=lead,
            lead_demand=(store.units_before(ts_ms + lead) - now) * share if lead > 0 else 0.0,
            z=z,
        )

    def order_up_to(self, store_id: str, product_id: str, ts_ms: int, plan: ReorderPlan) -> float:
        """Enough to last until the next likely delivery: demand over the lead time and the planned
        cycle, plus safety stock (worked out only when a request is made: it looks a day ahead)."""
        share = self.share(store_id, product_id)
        store = self.stores.get(store_id)
        if share is None or store is None:
            return plan.reorder_point
        lead_sd = math.sqrt(store.lead_var) if store.lead_n > 1 else 0.25 * plan.lead_ms
        horizon = plan.lead_ms + self.config.cycle_ms
        demand = self.expected(store, share, ts_ms, ts_ms + horizon)
        up_to = demand + self._safety(store, ts_ms, ts_ms + horizon, demand, lead_sd, plan.z)
        return max(up_to, plan.reorder_point)

    def stockout_ms(self, store_id: str, product_id: str, on_hand: int, ts_ms: int) -> int | None:
        """When the shelf is expected to be empty (None: not within the horizon, or no forecast)."""
        share = self.share(store_id, product_id)
        store = self.stores.get(store_id)
        if share is None or store is None:
            return None
        when = self.time_to_sell(store, share, ts_ms, float(max(on_hand, 0)), self.config.stockout_horizon_ms)
        return None if when is None else int(when)

    def daily(self, store_id: str, product_id: str, ts_ms: int) -> float:
        """Units expected to sell over the next 24 hours (0 without a forecast)."""
        return self.demand(store_id, product_id, ts_ms, DAY_MS)

    def demand(self, store_id: str, product_id: str, ts_ms: int, span_ms: float) -> float:
        """Units expected to sell in the `span_ms` from `ts_ms` (0 without a forecast)."""
        share = self.share(store_id, product_id)
        store = self.stores.get(store_id)
        if share is None or store is None:
            return 0.0
        return self.expected(store, share, ts_ms, ts_ms + span_ms)

    def _safety(
        self, store: StoreDemand, start_ms: float, end_ms: float, mean: float, lead_sd: float, z: float
    ) -> float:
        """Safety stock for `mean` units expected in [start_ms, end_ms), at the safety factor `z`."""
        # Sales are a compound Poisson count (variance = mean x E[q^2]/E[q]); the rate itself strays
        # from its average (by hour of the week as learned, `forecast_error` at least: a rate is an
        # estimate even where the weeks agree); the lead time varies (its spread times the rate).
        span_ms = end_ms - start_ms
        rate = mean / span_ms if span_ms > 0 else 0.0
        relative = max(self.config.forecast_error**2, store.relative_variance(start_ms, end_ms))
        variance = mean * store.dispersion() + relative * mean * mean + (rate * lead_sd) ** 2
        return z * math.sqrt(variance)
