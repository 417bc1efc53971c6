"""On-hand stock per (store, product), the catalog and the open restock requests: the stock ledger.

The ledger applies one event to the stock and says what changed (a `StockChange`); it decides no
restock. The forecast (processors/core/demand.py) learns from the change, and the restock policy
(processors/core/restock_policy.py) reads the change and the forecast and decides; the requests it
makes come back here as open requests (`opened`). So an event passes each of the three once.

Stock follows stream order (per store, the order in the shard). It may go negative (oversold) and is
never clamped; a product at or below zero raises one out-of-stock alert until it is back above zero.
A restock closes the open request of its product. When a product that was out of stock is back above
zero, a `back_in_stock` note goes to the alerts archive (not to SNS): the end of the stock-out, so
reports can say how long it lasted.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

import msgspec

from foundation.contract import (
    Count,
    OutOfStock,
    Product,
    ProductChange,
    Refund,
    Restock,
    RestockRequest,
    Sale,
    alert_id,
    encode,
    format_ts,
)
from processors.core.effects import Effects

Key = tuple[str, str]


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
class StockChange:
    """What one stock event did to one store-product: all the forecast and the policy read of it."""

    event: Sale | Refund | Restock | Count
    key: Key
    ts_ms: int
    on_hand: int  # after the event
    limits: tuple[int, int]  # (restock threshold, target stock) from the catalog
    requested: bool  # a restock request for it is open (after the event)
    # A delivery that answers an open request: how long after the request it came (else None).
    lead_ms: int | None


@dataclass(slots=True)
class StockLedger:
    default_threshold: int
    default_target: int
    stock: dict[Key, int] = field(default_factory=dict)
    catalog: dict[Key, CatalogEntry] = field(default_factory=dict)
    open_requests: dict[Key, str] = field(default_factory=dict)
    out_of_stock: set[Key] = field(default_factory=set)
    # (threshold, target) per product, derived from the catalog; kept because every sale needs it.
    limits: dict[Key, tuple[int, int]] = field(default_factory=dict)
    # Event time of each open request, so the delivery that answers it tells the lead time.
    requested_at: dict[Key, int] = field(default_factory=dict)

    def sale(self, ev: Sale, ts_ms: int, out: Effects, tally: Counter[str]) -> StockChange:
        """The hot path (most events are sales): `_changed`'s common case, nothing to report, inlined.
        `ts_ms` is the event's time, worked out once by the caller."""
        key = (ev.store_id, ev.product_id)
        stock = self.stock
        on_hand = stock.get(key, 0) - ev.quantity
        limits = self.limits.get(key) or self.threshold_of(key)
        if on_hand > limits[0] and key not in self.out_of_stock:
            stock[key] = on_hand
            return StockChange(ev, key, ts_ms, on_hand, limits, key in self.open_requests, None)
        return self._changed(key, on_hand, ev, ts_ms, out, tally)

    def refund(self, ev: Refund, ts_ms: int, out: Effects, tally: Counter[str]) -> StockChange:
        key = (ev.store_id, ev.product_id)
        return self._changed(key, self.stock.get(key, 0) + ev.quantity, ev, ts_ms, out, tally)

    def restock(self, ev: Restock, ts_ms: int, out: Effects, tally: Counter[str]) -> StockChange:
        """Closes the product's open request, whatever answers it; a delivery that answers it (one
        with a delivery id, or named after the request) also tells how long the request took."""
        key = (ev.store_id, ev.product_id)
        request = self.open_requests.pop(key, None)
        asked = self.requested_at.pop(key, None)
        lead: int | None = None
        answers = ev.delivery_id is not None or ev.event_id == f"delivery-{request}"
        if request is not None and asked is not None and answers and ts_ms >= asked:
            lead = ts_ms - asked
        on_hand = self.stock.get(key, 0) + ev.quantity
        return self._changed(key, on_hand, ev, ts_ms, out, tally, lead)

    def count(self, ev: Count, ts_ms: int, out: Effects, tally: Counter[str]) -> StockChange:
        return self._changed((ev.store_id, ev.product_id), ev.count, ev, ts_ms, out, tally)

    def opened(self, requests: Iterable[RestockRequest], ts_ms: int) -> None:
        """The requests the policy made: open until a restock of their product arrives."""
        for request in requests:
            key = (request.store_id, request.product_id)
            self.open_requests[key] = request.alert_id
            self.requested_at[key] = ts_ms

    def product(self, ev: Product, out: Effects, tally: Counter[str]) -> None:
        key = (ev.store_id, ev.product_id)
        self.limits.pop(key, None)
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

    def price_of(self, key: Key) -> float | None:
        """The catalog's price of a product (None if not known)."""
        entry = self.catalog.get(key)
        return None if entry is None else entry.price

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
        lead_ms: int | None = None,
    ) -> StockChange:
        """`tally` counts what is raised by kind (the core's stats), here where it is raised."""
        self.stock[key] = on_hand
        limits = self.limits.get(key) or self.threshold_of(key)
        if on_hand > limits[0] and key not in self.out_of_stock:
            return StockChange(ev, key, ts_ms, on_hand, limits, key in self.open_requests, lead_ms)
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
        return StockChange(ev, key, ts_ms, on_hand, limits, key in self.open_requests, lead_ms)

    def by_store(self) -> dict[str, dict[str, int]]:
        result: dict[str, dict[str, int]] = {}
        for (store, product), qty in sorted(self.stock.items()):
            result.setdefault(store, {})[product] = qty
        return result
