"""The dashboard's view of the world, kept in memory and fed by the processor's own outputs.

Stock comes from the processor's cores (live in the demo, checkpointed standalone), alerts and window
results from what the processor emits, deliveries from the trucks' restock events. Nothing here
recomputes stock: a feed hands over the processor's numbers and this keeps the latest and the recent.
Every change is also published on the hub for the live streams.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from foundation.contract import Alert, RestockRequest, encode, parse_ts
from processors.core import ShardCore
from shelfstream.api.auth import Principal
from shelfstream.api.hub import Hub


@dataclass(frozen=True, slots=True)
class ProductStock:
    on_hand: int
    threshold: int
    name: str | None = None
    open_request: bool = False

    @property
    def status(self) -> str:
        if self.on_hand <= 0:
            return "out"
        if self.on_hand <= self.threshold:
            return "low"
        return "ok"


@dataclass(frozen=True, slots=True)
class StoreStock:
    products: Mapping[str, ProductStock] = field(default_factory=dict)

    @property
    def stock_outs(self) -> int:
        return sum(1 for p in self.products.values() if p.on_hand <= 0)

    @property
    def open_requests(self) -> int:
        return sum(1 for p in self.products.values() if p.open_request)

    @property
    def on_hand_total(self) -> int:
        return sum(p.on_hand for p in self.products.values())

    def as_json(self, store_id: str) -> dict[str, Any]:
        return {
            "store_id": store_id,
            "on_hand_total": self.on_hand_total,
            "stock_outs": self.stock_outs,
            "open_requests": self.open_requests,
            "products": [
                {
                    "product_id": product_id,
                    "name": p.name,
                    "on_hand": p.on_hand,
                    "threshold": p.threshold,
                    "status": p.status,
                    "open_request": p.open_request,
                }
                for product_id, p in sorted(self.products.items())
            ],
        }


def stock_from_cores(cores: Iterable[ShardCore]) -> dict[str, StoreStock]:
    """The processor's stock, thresholds, names and open requests, per store, from its shard cores."""
    products: dict[str, dict[str, ProductStock]] = {}
    for core in cores:
        for line in core.stock_view():
            products.setdefault(line.store_id, {})[line.product_id] = ProductStock(
                on_hand=line.on_hand, threshold=line.threshold, name=line.name, open_request=line.open_request
            )
    return {store: StoreStock(items) for store, items in sorted(products.items())}


def alert_json(alert: Alert | RestockRequest) -> dict[str, Any]:
    data: dict[str, Any] = orjson.loads(encode(alert))
    return data


class DashboardState:
    """Latest stock per store and recent alerts, windows and deliveries, bounded in memory."""

    def __init__(
        self,
        hub: Hub | None = None,
        alerts_per_store: int = 200,
        windows_per_store: int = 400,
        deliveries_kept: int = 500,
    ) -> None:
        self.hub = hub or Hub()
        self.stock: dict[str, StoreStock] = {}
        self._alerts: dict[str, deque[tuple[int, dict[str, Any]]]] = {}
        self._alert_ids: dict[str, None] = {}  # insertion-ordered, bounded: the repeats to drop
        self._alerts_per_store = alerts_per_store
        self._windows: dict[str, deque[dict[str, Any]]] = {}
        self._window_keys: dict[tuple[str, str, str, int], None] = {}
        self._windows_per_store = windows_per_store
        self.deliveries: deque[dict[str, Any]] = deque(maxlen=deliveries_kept)
        self._delivery_ids: dict[str, None] = {}
        self.trucks: list[dict[str, Any]] = []
        # Per store, the products a restock request expects to run out (until their delivery comes).
        self.at_risk: dict[str, dict[str, dict[str, Any]]] = {}
        # Per store, its local time zone as its latest window record gave it: the dashboard shows every
        # time of the store (alerts, deliveries, items at risk) in it, so they read on one clock.
        self.zones: dict[str, str] = {}

    # --- feeding ------------------------------------------------------------------------------------

    def set_stock(self, store_id: str, stock: StoreStock) -> bool:
        """Replace one store's stock; publishes it when it changed."""
        if self.stock.get(store_id) == stock:
            return False
        self.stock[store_id] = stock
        self.hub.publish("stock", store_id, stock.as_json(store_id))
        return True

    def replace_stock(self, stores: Mapping[str, StoreStock]) -> int:
        """Take the processor's whole stock view; returns how many stores changed."""
        changed = sum(self.set_stock(store_id, stock) for store_id, stock in stores.items())
        for gone in set(self.stock) - set(stores):  # a store only vanishes if its shard's state did
            self.set_stock(gone, StoreStock())
        return changed

    def add_alert(self, alert: Alert | RestockRequest | Mapping[str, Any]) -> bool:
        """Keep and publish one alert or request; repeats (same ``alert_id``) are dropped."""
        data = dict(alert) if isinstance(alert, Mapping) else alert_json(alert)
        aid = str(data.get("alert_id", ""))
        store_id = data.get("store_id")
        if not aid or not isinstance(store_id, str) or aid in self._alert_ids:
            return False
        try:
            ts_ms = parse_ts(str(data.get("ts", "")))
        except ValueError:
            return False
        self._alert_ids[aid] = None
        if len(self._alert_ids) > 50_000:
            for old in list(self._alert_ids)[:10_000]:
                del self._alert_ids[old]
        self._alerts.setdefault(store_id, deque(maxlen=self._alerts_per_store)).append((ts_ms, data))
        if data.get("kind") == "restock_request" and data.get("expected_stockout_at"):
            risky = self.at_risk.setdefault(store_id, {})
            if len(risky) < 1000:
                risky[str(data.get("product_id"))] = {
                    k: data.get(k)
                    for k in (
                        "product_id",
                        "expected_stockout_at",
                        "on_hand",
                        "requested_quantity",
                        "reason",
                        "daily_demand",
                        "ts",
                    )
                }
        self.hub.publish("alert", store_id, data)
        return True

    def find_alert(self, alert_id: str) -> dict[str, Any] | None:
        """A recent alert by its id (the view's, so only what it still holds), or None."""
        if alert_id not in self._alert_ids:
            return None
        for recent in self._alerts.values():
            for _, data in recent:
                if data.get("alert_id") == alert_id:
                    return data
        return None

    def mark_feedback(self, alert_id: str, verdict: str) -> bool:
        """Note on a held alert that an operator gave feedback on it (shown by the dashboard); the
        detector learns it from the feedback event, not from here."""
        data = self.find_alert(alert_id)
        if data is None:
            return False
        data["feedback"] = verdict
        return True

    def add_window(self, record: bytes | Mapping[str, Any]) -> bool:
        """Keep and publish one closed window (the processor's window record)."""
        data: dict[str, Any] = orjson.loads(record) if isinstance(record, bytes) else dict(record)
        store_id = data.get("store_id")
        if not isinstance(store_id, str) or "window_end" not in data:
            return False
        # A revision (late sales added: `revision` 1, 2, ...) replaces the window it revises
        revision = int(data.get("revision") or 0)
        key = (store_id, str(data.get("window")), str(data.get("window_end")), revision)
        if key in self._window_keys:
            return False
        self._window_keys[key] = None
        if len(self._window_keys) > 50_000:
            for old in list(self._window_keys)[:10_000]:
                del self._window_keys[old]
        kept = self._windows.setdefault(store_id, deque(maxlen=self._windows_per_store))
        if revision:
            same = [
                w
                for w in kept
                if w.get("window") == data.get("window") and w.get("window_end") == data.get("window_end")
            ]
            if any((w.get("revision") or 0) > revision for w in same):
                return False  # an older revision arriving after a newer one
            for w in same:
                kept.remove(w)
        kept.append(data)
        zone = data.get("timezone")
        if isinstance(zone, str) and zone:
            self.zones[store_id] = zone
        self.hub.publish("window", store_id, data)
        return True

    def add_delivery(self, delivery: Mapping[str, Any]) -> bool:
        data = dict(delivery)
        # One trip (delivery_id) brings several products, each its own restock event.
        did = str(data.get("event_id") or data.get("delivery_id") or "")
        store_id = data.get("store_id")
        if not did or not isinstance(store_id, str) or did in self._delivery_ids:
            return False
        self._delivery_ids[did] = None
        if len(self._delivery_ids) > 50_000:
            for old in list(self._delivery_ids)[:10_000]:
                del self._delivery_ids[old]
        self.deliveries.append(data)
        self.at_risk.get(store_id, {}).pop(str(data.get("product_id")), None)
        self.hub.publish("delivery", store_id, data)
        return True

    def set_trucks(self, trucks: list[dict[str, Any]]) -> bool:
        if trucks == self.trucks:
            return False
        self.trucks = trucks
        self.hub.publish("trucks", None, trucks)
        return True

    # --- reading ------------------------------------------------------------------------------------

    def store_ids(self) -> list[str]:
        return sorted(set(self.stock) | set(self._alerts) | set(self._windows))

    def summaries(self, principal: Principal) -> list[dict[str, Any]]:
        """The stores overview: stock totals, stock-outs, open requests and recent anomalies."""
        ids = self.store_ids() if principal.role == "hq" else [str(principal.store_id)]
        result = []
        for store_id in ids:
            stock = self.stock.get(store_id, StoreStock())
            anomalies = [a for _, a in self._alerts.get(store_id, ()) if a.get("kind") == "anomaly"]
            last = anomalies[-1] if anomalies else None
            result.append(
                {
                    "store_id": store_id,
                    "timezone": self.zones.get(store_id, "UTC"),
                    "products": len(stock.products),
                    "on_hand_total": stock.on_hand_total,
                    "stock_outs": stock.stock_outs,
                    "open_requests": stock.open_requests,
                    "recent_anomalies": len(anomalies),
                    "at_risk": self.items_at_risk(store_id),
                    "last_anomaly": None
                    if last is None
                    else {k: last.get(k) for k in ("ts", "severity", "metric", "explanation")},
                }
            )
        return result

    def items_at_risk(self, store_id: str, limit: int = 10) -> list[dict[str, Any]]:
        """The store's products expected to run out before their truck comes, soonest first."""
        items = sorted(self.at_risk.get(store_id, {}).values(), key=lambda i: str(i["expected_stockout_at"]))
        return items[:limit]

    def inventory(self, store_id: str) -> dict[str, Any] | None:
        stock = self.stock.get(store_id)
        if stock is None:
            return None if store_id not in self.store_ids() else StoreStock().as_json(store_id)
        return stock.as_json(store_id)

    def alerts(
        self,
        principal: Principal,
        store_id: str | None = None,
        kind: str | None = None,
        since_ms: int | None = None,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        """Recent alerts the principal may see, newest first."""
        if store_id is not None:
            stores = [store_id]
        elif principal.role == "hq":
            stores = list(self._alerts)
        else:
            stores = [str(principal.store_id)]
        picked: list[tuple[int, dict[str, Any]]] = []
        for sid in stores:
            for ts_ms, data in self._alerts.get(sid, ()):
                if kind is not None and data.get("kind") != kind:
                    continue
                if since_ms is not None and ts_ms <= since_ms:
                    continue
                picked.append((ts_ms, data))
        picked.sort(key=lambda item: item[0], reverse=True)
        return [data for _, data in picked[:limit]]

    def windows(self, store_id: str, window: str | None = None, limit: int = 200) -> list[dict[str, Any]]:
        """Closed windows of one store, oldest first (the chart's order)."""
        items = [w for w in self._windows.get(store_id, ()) if window is None or w.get("window") == window]
        items.sort(key=lambda w: str(w.get("window_end")))
        return items[-limit:]

    def recent_deliveries(
        self, principal: Principal, store_id: str | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        """Recent deliveries the principal may see, newest first."""
        wanted = store_id if store_id is not None else principal.store_id
        result = [
            d
            for d in reversed(self.deliveries)
            if (wanted is None or d.get("store_id") == wanted) and principal.can_see(d.get("store_id"))
        ]
        return result[:limit]

    def trucks_for(self, principal: Principal, store_id: str | None = None) -> list[dict[str, Any]]:
        wanted = store_id if store_id is not None else principal.store_id
        if principal.role == "hq" and wanted is None:
            return list(self.trucks)
        return [
            t
            for t in self.trucks
            if (wanted in (t.get("stores") or []) or t.get("store_id") == wanted)
            and principal.can_see(wanted)
        ]
