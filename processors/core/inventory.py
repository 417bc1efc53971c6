"""On-hand stock per (store, product), the catalog, and the stock rules that raise requests and alerts.

Stock follows stream order (per store, the order in the shard). It may go negative (oversold) and is
never clamped; a product at or below zero raises one out-of-stock alert until it is back above zero.
A product at or below its restock threshold raises one restock request, which stays open until a
restock for that product arrives. Under the `forecast` policy (processors/core/demand.py) a product
is also asked for when its stock would not last until a truck could come (reorder point = demand
over the lead time + safety stock), for enough to last until the next likely delivery; the other
products of the store that would need a truck before that one comes join the same order.
When a product that was out of stock is back above zero, a
`back_in_stock` note goes to the alerts archive (not to SNS): the end of the stock-out, so reports can
say how long it lasted.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Final

import msgspec

from foundation.contract import (
    Count,
    OutOfStock,
    Product,
    ProductChange,
    Refund,
    Restock,
    RestockReason,
    RestockRequest,
    Sale,
    alert_id,
    encode,
    format_ts,
)
from processors.core.demand import Demand, Plan, RestockConfig
from processors.core.effects import Effects

Key = tuple[str, str]
# How long (event time) a product's reorder point is reused before it is worked out again.
REORDER_POINT_TTL_MS: Final = 15 * 60_000


class BackInStock(msgspec.Struct, frozen=True, kw_only=True, tag_field="kind", tag="back_in_stock"):
    """The end of a stock-out, archived next to the alerts (same shape: kind, id, store, time)."""

    alert_id: str
    store_id: str
    ts: str
    product_id: str
    on_hand: int


@dataclass(slots=True)
class CatalogEntry:
    name: str | None = None
    category: str | None = None
    price: float | None = None
    restock_threshold: int | None = None
    target_stock: int | None = None


@dataclass(slots=True)
class Inventory:
    default_threshold: int
    default_target: int
    stock: dict[Key, int] = field(default_factory=dict)
    catalog: dict[Key, CatalogEntry] = field(default_factory=dict)
    open_requests: dict[Key, str] = field(default_factory=dict)
    out_of_stock: set[Key] = field(default_factory=set)
    # (threshold, target) per product, derived from the catalog; kept because every sale needs it.
    limits: dict[Key, tuple[int, int]] = field(default_factory=dict)
    restock_config: RestockConfig = field(default_factory=RestockConfig)
    # The forecast policy's state (None under the threshold policy): demand, lead times.
    demand: Demand | None = None
    # Event time of each open request, to learn the lead time from the delivery that answers it.
    requested_at: dict[Key, int] = field(default_factory=dict)
    # (valid until, reorder point) per product: part of the state, so a restored core decides alike.
    reorder_points: dict[Key, tuple[int, float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.ensure_demand()

    def ensure_demand(self) -> None:
        """Set up the forecast state when the policy needs it (also for a core restored from before it)."""
        if not hasattr(self, "requested_at"):
            self.requested_at = {}
        if not hasattr(self, "reorder_points"):
            self.reorder_points = {}
        if not hasattr(self, "restock_config"):
            self.restock_config = RestockConfig()
        if not hasattr(self, "demand") or (self.demand is None and self.restock_config.policy == "forecast"):
            self.demand = Demand(self.restock_config) if self.restock_config.policy == "forecast" else None

    def sale(self, ev: Sale, ts_ms: int, out: Effects, tally: Counter[str]) -> None:
        """The hot path (most events are sales): `_changed`'s common case, nothing to report, inlined.
        `ts_ms` is the event's time, worked out once by the caller."""
        store_id = ev.store_id
        product_id = ev.product_id
        key = (store_id, product_id)
        stock = self.stock
        on_hand = stock.get(key, 0) - ev.quantity
        demand = self.demand
        if demand is not None:
            demand.sale(store_id, product_id, ev.quantity, ts_ms, on_hand)
        limits = self.limits.get(key) or self.threshold_of(key)
        if on_hand > limits[0] and key not in self.out_of_stock:
            stock[key] = on_hand
            if demand is not None and key not in self.open_requests:
                cached = self.reorder_points.get(key)
                if cached is None or ts_ms >= cached[0] or on_hand <= cached[1]:
                    self._decide(key, on_hand, ev, ts_ms, limits, out, tally)
            return
        self._changed(key, on_hand, ev, ts_ms, out, tally)

    def refund(self, ev: Refund, ts_ms: int, out: Effects, tally: Counter[str]) -> None:
        key = (ev.store_id, ev.product_id)
        on_hand = self.stock.get(key, 0) + ev.quantity
        if self.demand is not None:
            self.demand.stock_changed(ev.store_id, ev.product_id, ts_ms, on_hand)
        self._changed(key, on_hand, ev, ts_ms, out, tally)

    def restock(self, ev: Restock, ts_ms: int, out: Effects, tally: Counter[str]) -> None:
        key = (ev.store_id, ev.product_id)
        request = self.open_requests.pop(key, None)
        asked = self.requested_at.pop(key, None)
        on_hand = self.stock.get(key, 0) + ev.quantity
        demand = self.demand
        if demand is not None:
            answers = ev.delivery_id is not None or ev.event_id == f"delivery-{request}"
            if request is not None and asked is not None and answers and ts_ms >= asked:
                demand.delivered(ev.store_id, ts_ms - asked)  # the lead time, learned
            demand.stock_changed(ev.store_id, ev.product_id, ts_ms, on_hand)
        self._changed(key, on_hand, ev, ts_ms, out, tally)

    def count(self, ev: Count, ts_ms: int, out: Effects, tally: Counter[str]) -> None:
        key = (ev.store_id, ev.product_id)
        if self.demand is not None:
            self.demand.stock_changed(ev.store_id, ev.product_id, ts_ms, ev.count)
        self._changed(key, ev.count, ev, ts_ms, out, tally)

    def product(self, ev: Product, out: Effects, tally: Counter[str]) -> None:
        key = (ev.store_id, ev.product_id)
        self.limits.pop(key, None)
        self.reorder_points.pop(key, None)
        entry = self.catalog.get(key)
        if entry is None:
            self.catalog[key] = CatalogEntry(
                ev.name, ev.category, ev.price, ev.restock_threshold, ev.target_stock
            )
            return
        changes: dict[str, tuple[str | float | None, str | float | None]] = {}
        if ev.name is not None and ev.name != entry.name:
            if entry.name is not None:
                changes["name"] = (entry.name, ev.name)
            entry.name = ev.name
        if ev.price is not None and ev.price != entry.price:
            if entry.price is not None:
                changes["price"] = (entry.price, ev.price)
            entry.price = ev.price
        if ev.category is not None:
            entry.category = ev.category
        if ev.restock_threshold is not None:
            entry.restock_threshold = ev.restock_threshold
        if ev.target_stock is not None:
            entry.target_stock = ev.target_stock
        if changes:
            tally["product_change"] += 1
            out.alerts.append(
                ProductChange(
                    alert_id=alert_id("product_change", ev.store_id, ev.product_id, ev.event_id),
                    store_id=ev.store_id,
                    ts=format_ts(ev.ts_ms),
                    product_id=ev.product_id,
                    changes=changes,
                )
            )

    def threshold_of(self, key: Key) -> tuple[int, int]:
        limits = self.limits.get(key)
        if limits is None:
            limits = self.limits[key] = self._limits_of(key)
        return limits

    def _limits_of(self, key: Key) -> tuple[int, int]:
        entry = self.catalog.get(key)
        threshold = self.default_threshold
        target = self.default_target
        if entry is not None:
            if entry.restock_threshold is not None:
                threshold = entry.restock_threshold
            if entry.target_stock is not None:
                target = entry.target_stock
        return threshold, max(target, threshold + 1)

    def _changed(
        self,
        key: Key,
        on_hand: int,
        ev: Sale | Refund | Restock | Count,
        ts_ms: int,
        out: Effects,
        tally: Counter[str],
    ) -> None:
        """`tally` counts what is raised by kind (the core's stats), here where it is raised."""
        self.stock[key] = on_hand
        limits = self.limits.get(key) or self.threshold_of(key)
        if on_hand > limits[0] and key not in self.out_of_stock:
            # The common case: nothing to report; under the forecast policy, maybe time to ask.
            if self.demand is not None and key not in self.open_requests:
                cached = self.reorder_points.get(key)
                if cached is None or ts_ms >= cached[0] or on_hand <= cached[1]:
                    self._decide(key, on_hand, ev, ts_ms, limits, out, tally)
            return
        cause = ev.event_id
        if on_hand <= 0:
            if key not in self.out_of_stock:
                self.out_of_stock.add(key)
                tally["out_of_stock"] += 1
                out.alerts.append(
                    OutOfStock(
                        alert_id=alert_id("out_of_stock", key[0], key[1], cause),
                        store_id=key[0],
                        ts=format_ts(ts_ms),
                        product_id=key[1],
                        on_hand=on_hand,
                    )
                )
        elif key in self.out_of_stock:
            self.out_of_stock.discard(key)
            out.notes.append(
                encode(
                    BackInStock(
                        alert_id=alert_id("back_in_stock", key[0], key[1], cause),
                        store_id=key[0],
                        ts=format_ts(ts_ms),
                        product_id=key[1],
                        on_hand=on_hand,
                    )
                )
            )
        if key not in self.open_requests:
            self._decide(key, on_hand, ev, ts_ms, limits, out, tally)

    def _decide(
        self,
        key: Key,
        on_hand: int,
        ev: Sale | Refund | Restock | Count,
        ts_ms: int,
        limits: tuple[int, int],
        out: Effects,
        tally: Counter[str],
    ) -> None:
        """Ask for a delivery when the threshold says so, or the forecast does (no request open)."""
        threshold = limits[0]
        demand = self.demand
        plan: Plan | None = None
        if demand is not None:
            cached = self.reorder_points.get(key)
            if on_hand > threshold and cached is not None and ts_ms < cached[0] and on_hand > cached[1]:
                return
            plan = demand.plan(key[0], key[1], ts_ms)
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
        elif plan is not None and on_hand <= plan.reorder_point:
            reason = "forecast"
        else:
            return
        self._request(key, on_hand, ev, ts_ms, limits, plan, reason, out, tally)
        if demand is not None:
            self._join(key, ev, ts_ms, out, tally)

    def _join(
        self,
        trigger: Key,
        ev: Sale | Refund | Restock | Count,
        ts_ms: int,
        out: Effects,
        tally: Counter[str],
    ) -> None:
        """The store's other products that would need a truck before the next likely one join this
        order: one truck then brings the store what it needs, instead of one truck per product."""
        demand = self.demand
        if demand is None:
            return
        store_id = trigger[0]
        share = demand.config.min_join_share
        for product_id in demand.items.get(store_id, {}):
            key = (store_id, product_id)
            if key == trigger or key in self.open_requests:
                continue
            on_hand = self.stock.get(key)
            if on_hand is None:
                continue
            limits = self.threshold_of(key)
            plan = demand.plan(store_id, product_id, ts_ms)
            if plan is None:
                continue
            up_to = demand.order_up_to(store_id, product_id, ts_ms, plan)
            quantity = _quantity(plan, up_to, limits, on_hand)
            if quantity >= max(1.0, share * min(limits[1], up_to)):
                self._request(key, on_hand, ev, ts_ms, limits, plan, "forecast", out, tally)

    def _request(
        self,
        key: Key,
        on_hand: int,
        ev: Sale | Refund | Restock | Count,
        ts_ms: int,
        limits: tuple[int, int],
        plan: Plan | None,
        reason: RestockReason,
        out: Effects,
        tally: Counter[str],
    ) -> None:
        threshold, target = limits
        rid = alert_id("restock_request", key[0], key[1], ev.event_id)
        self.open_requests[key] = rid
        self.requested_at[key] = ts_ms
        tally["restock_request"] += 1
        demand = self.demand
        quantity = target - on_hand
        stockout_at: str | None = None
        daily: float | None = None
        lead_s: float | None = None
        if plan is not None and demand is not None:
            quantity = _quantity(plan, demand.order_up_to(key[0], key[1], ts_ms, plan), limits, on_hand)
            stockout = demand.stockout_ms(key[0], key[1], on_hand, ts_ms)
            stockout_at = None if stockout is None else format_ts(stockout)
            daily = round(demand.daily(key[0], key[1], ts_ms), 2)
            lead_s = round(plan.lead_ms / 1000, 1)
        out.requests.append(
            RestockRequest(
                alert_id=rid,
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
        )

    def by_store(self) -> dict[str, dict[str, int]]:
        result: dict[str, dict[str, int]] = {}
        for (store, product), qty in sorted(self.stock.items()):
            result.setdefault(store, {})[product] = qty
        return result


def _quantity(plan: Plan, order_up_to: float, limits: tuple[int, int], on_hand: int) -> int:
    """Enough to reach the forecast's order-up-to level, but no more than fits under the target stock
    when the truck arrives (what is on hand now, less what sells meanwhile); at least one unit."""
    threshold, target = limits
    up_to = max(threshold + 1, math.ceil(order_up_to))
    at_arrival = max(0, math.floor(on_hand - plan.lead_demand))
    return max(1, min(up_to - on_hand, target - at_arrival))
