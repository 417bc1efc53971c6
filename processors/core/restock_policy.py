"""When to ask for a delivery, and how much: the restock policy, one object per core.

It reads what the stock ledger says changed (processors/core/stock_ledger.py) and the demand forecast
(processors/core/demand.py), and returns the requests to make; the ledger keeps them open until a
restock arrives. It is called once per stock event, after the ledger and the forecast:

- `ThresholdPolicy`: the catalog's fixed rule. A product at or below its restock threshold, with no
  request open, is asked for up to its target stock.
- `ForecastPolicy`: the threshold as a floor, and a product is also asked for when its stock would
  not last until a truck could come (reorder point = demand over the lead time and until its next
  sale is seen, plus safety stock), for enough to last until the next likely delivery (order-up-to
  level); the other products of the store that would ask before the store's next delivery could come
  join the same order, so one truck brings the store what it needs.

Neither asks for a shelf that holds its target stock, nor for nothing: every request is for at least one
unit that fits under the target.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final, Protocol

from foundation.contract import RestockReason, RestockRequest, alert_id, format_ts
from processors.core.demand import DemandForecast, PolicyName, ReorderPlan
from processors.core.stock_ledger import Key, StockChange, StockLedger

# How long (event time) a product's reorder point is reused before it is worked out again.
REORDER_POINT_TTL_MS: Final = 15 * 60_000
_NONE: Final[tuple[RestockRequest, ...]] = ()


class RestockPolicy(Protocol):
    def decide(
        self, change: StockChange, ledger: StockLedger, forecast: DemandForecast | None
    ) -> Sequence[RestockRequest]:
        """The requests one stock change calls for (none while the product has one open)."""
        ...

    def catalog_changed(self, key: Key) -> None:
        """A product's catalog entry changed (its threshold or target may have)."""
        ...


def policy_for(name: PolicyName) -> RestockPolicy:
    return ForecastPolicy() if name == "forecast" else ThresholdPolicy()


@dataclass(slots=True)
class ThresholdPolicy:
    def decide(
        self, change: StockChange, ledger: StockLedger, forecast: DemandForecast | None
    ) -> Sequence[RestockRequest]:
        if change.on_hand > change.limits[0] or change.requested:
            return _NONE
        limits = change.limits
        quantity = limits[1] - change.on_hand  # >= 1: the ledger keeps the target above the threshold
        return (_request(change, change.key, change.on_hand, limits, quantity, None, None, "threshold"),)

    def catalog_changed(self, key: Key) -> None:
        """The rule reads the threshold afresh from every change: nothing kept to forget."""


@dataclass(slots=True)
class ForecastPolicy:
    # (valid until, reorder point) per product: part of the state, so a restored core decides alike.
    reorder_points: dict[Key, tuple[int, float]] = field(default_factory=dict)

    def decide(
        self, change: StockChange, ledger: StockLedger, forecast: DemandForecast | None
    ) -> Sequence[RestockRequest]:
        if change.requested:
            return _NONE
        key = change.key
        on_hand = change.on_hand
        ts_ms = change.ts_ms
        threshold = change.limits[0]
        cached = self.reorder_points.get(key)
        if on_hand > threshold and cached is not None and ts_ms < cached[0] and on_hand > cached[1]:
            return _NONE  # the common case: well above a reorder point worked out a moment ago
        plan: ReorderPlan | None = None
        if forecast is not None:
            plan = forecast.plan(key[0], key[1], ts_ms, ledger.price_of(key))
            point = plan.reorder_point if plan is not None else -math.inf
            # Far above it, the point is good for longer: demand does not triple within an hour, nor
            # grow four-fold in four or eight-fold within a day (a slow product of a small store sells
            # less often than every quarter of an hour: each of its sales worked the point out again).
            headroom = on_hand / (point + 2) if point > -math.inf else math.inf
            if headroom >= 8:
                ttl = REORDER_POINT_TTL_MS * 96
            elif headroom >= 4:
                ttl = REORDER_POINT_TTL_MS * 16
            elif headroom >= 2:
                ttl = REORDER_POINT_TTL_MS * 4
            else:
                ttl = REORDER_POINT_TTL_MS
            self.reorder_points[key] = (ts_ms + ttl, point)
        reason: RestockReason
        if on_hand <= threshold:
            reason = "threshold"
        elif plan is not None and on_hand <= plan.reorder_point and on_hand < change.limits[1]:
            # At its target the shelf is full, whatever the forecast says: the catalog's target is
            # what the shelf holds.
            reason = "forecast"
        else:
            return _NONE
        quantity = _order(key, on_hand, change.limits, plan, forecast, ts_ms)
        if quantity < 1:
            return _NONE  # the forecast's level is already on the shelf
        requests = [_request(change, key, on_hand, change.limits, quantity, plan, forecast, reason)]
        if forecast is not None:
            self._join(change, ledger, forecast, requests)
        return requests

    def catalog_changed(self, key: Key) -> None:
        self.reorder_points.pop(key, None)

    @staticmethod
    def _join(
        change: StockChange, ledger: StockLedger, forecast: DemandForecast, requests: list[RestockRequest]
    ) -> None:
        """The store's other products that would ask for a truck before the store's next delivery
        could come join this order: one truck then brings the store what it needs, instead of one
        truck per product. A product that would last until then waits for that delivery (joining now
        would top up a shelf that needs nothing yet), and so does one whose order would be a sliver
        of its target (less than `min_join_share` of it)."""
        trigger = change.key
        store_id = trigger[0]
        ts_ms = change.ts_ms
        cfg = forecast.config
        for product_id in forecast.items.get(store_id, {}):
            key = (store_id, product_id)
            if key == trigger or key in ledger.open_requests:
                continue
            on_hand = ledger.stock.get(key)
            if on_hand is None:
                continue
            limits = ledger.threshold_of(key)
            if on_hand >= limits[1]:
                continue
            plan = forecast.plan(store_id, product_id, ts_ms, ledger.price_of(key))
            if plan is None:
                continue
            until_next = forecast.demand(store_id, product_id, ts_ms, cfg.cycle_ms)
            if on_hand - until_next > max(limits[0], plan.reorder_point):
                continue
            up_to = forecast.order_up_to(store_id, product_id, ts_ms, plan)
            quantity = _quantity(plan, up_to, limits, on_hand)
            if quantity >= 1 and quantity >= cfg.min_join_share * min(limits[1], up_to):
                requests.append(_request(change, key, on_hand, limits, quantity, plan, forecast, "forecast"))


def _request(
    change: StockChange,
    key: Key,
    on_hand: int,
    limits: tuple[int, int],
    quantity: int,
    plan: ReorderPlan | None,
    forecast: DemandForecast | None,
    reason: RestockReason,
) -> RestockRequest:
    """A request for `quantity` of `key`, named after the event that caused it (a replay asks under the
    same id), with the forecast's figures when there is a plan."""
    threshold = limits[0]
    ts_ms = change.ts_ms
    stockout_at: str | None = None
    daily: float | None = None
    lead_s: float | None = None
    if plan is not None and forecast is not None:
        stockout = forecast.stockout_ms(key[0], key[1], on_hand, ts_ms)
        stockout_at = None if stockout is None else format_ts(stockout)
        daily = round(forecast.daily(key[0], key[1], ts_ms), 2)
        lead_s = round(plan.lead_ms / 1000, 1)
    return RestockRequest(
        alert_id=alert_id("restock_request", key[0], key[1], change.event.event_id),
        store_id=key[0],
        ts=format_ts(ts_ms),
        product_id=key[1],
        on_hand=on_hand,
        threshold=threshold,
        requested_quantity=quantity,
        reason=reason,
        expected_stockout_at=stockout_at,
        daily_demand=daily,
        lead_time_s=lead_s,
    )


def _order(
    key: Key,
    on_hand: int,
    limits: tuple[int, int],
    plan: ReorderPlan | None,
    forecast: DemandForecast | None,
    ts_ms: int,
) -> int:
    """How much to ask for: without a plan, up to the target stock; with one, what the forecast says."""
    if plan is None or forecast is None:
        return limits[1] - on_hand
    return _quantity(plan, forecast.order_up_to(key[0], key[1], ts_ms, plan), limits, on_hand)


def _quantity(plan: ReorderPlan, order_up_to: float, limits: tuple[int, int], on_hand: int) -> int:
    """Enough to reach the forecast's order-up-to level, but no more than fits under the target stock
    when the truck arrives (what is on hand now, less what sells meanwhile). Zero or less: nothing to
    ask for (the caller asks for nothing then; never a request for a unit nobody needs)."""
    threshold, target = limits
    up_to = max(threshold + 1, math.ceil(order_up_to))
    at_arrival = max(0, math.floor(on_hand - plan.lead_demand))
    return min(up_to - on_hand, target - at_arrival)
