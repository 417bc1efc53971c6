"""On-hand stock per (store, product), the catalog, and the stock rules that raise requests and alerts.

Stock follows stream order (per store, the order in the shard). It may go negative (oversold) and is
never clamped; a product at or below zero raises one out-of-stock alert until it is back above zero.
A product at or below its restock threshold raises one restock request, which stays open until a
restock for that product arrives. When a product that was out of stock is back above zero, a
`back_in_stock` note goes to the alerts archive (not to SNS): the end of the stock-out, so reports can
say how long it lasted.
"""

from __future__ import annotations

from collections import Counter
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
class Inventory:
    default_threshold: int
    default_target: int
    stock: dict[Key, int] = field(default_factory=dict)
    catalog: dict[Key, CatalogEntry] = field(default_factory=dict)
    open_requests: dict[Key, str] = field(default_factory=dict)
    out_of_stock: set[Key] = field(default_factory=set)
    # (threshold, target) per product, derived from the catalog; kept because every sale needs it.
    limits: dict[Key, tuple[int, int]] = field(default_factory=dict)

    def sale(self, ev: Sale, out: Effects, tally: Counter[str]) -> None:
        key = (ev.store_id, ev.product_id)
        self._changed(key, self.stock.get(key, 0) - ev.quantity, ev, out, tally)

    def refund(self, ev: Refund, out: Effects, tally: Counter[str]) -> None:
        key = (ev.store_id, ev.product_id)
        self._changed(key, self.stock.get(key, 0) + ev.quantity, ev, out, tally)

    def restock(self, ev: Restock, out: Effects, tally: Counter[str]) -> None:
        key = (ev.store_id, ev.product_id)
        self.open_requests.pop(key, None)
        self._changed(key, self.stock.get(key, 0) + ev.quantity, ev, out, tally)

    def count(self, ev: Count, out: Effects, tally: Counter[str]) -> None:
        key = (ev.store_id, ev.product_id)
        self._changed(key, ev.count, ev, out, tally)

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
        self, key: Key, on_hand: int, ev: Sale | Refund | Restock | Count, out: Effects, tally: Counter[str]
    ) -> None:
        """`tally` counts what is raised by kind (the core's stats), here where it is raised."""
        self.stock[key] = on_hand
        limits = self.limits.get(key) or self.threshold_of(key)
        if on_hand > limits[0] and key not in self.out_of_stock:
            return  # the common case: nothing to report
        cause = ev.event_id
        ts_ms = ev.ts_ms
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
        threshold, target = limits
        if on_hand <= threshold and key not in self.open_requests:
            rid = alert_id("restock_request", key[0], key[1], cause)
            self.open_requests[key] = rid
            tally["restock_request"] += 1
            out.requests.append(
                RestockRequest(
                    alert_id=rid,
                    store_id=key[0],
                    ts=format_ts(ts_ms),
                    product_id=key[1],
                    on_hand=on_hand,
                    threshold=threshold,
                    requested_quantity=target - on_hand,
                )
            )

    def by_store(self) -> dict[str, dict[str, int]]:
        result: dict[str, dict[str, int]] = {}
        for (store, product), qty in sorted(self.stock.items()):
            result.setdefault(store, {})[product] = qty
        return result
