"""Synthetic store history for the history tables' benchmark and tests: stores in their own time zones,
products with prices, opening stock counts, sales in opening hours, refunds, and deliveries that come
late enough for shelves to run empty now and then (so stock-outs, lost sales and cover all move).

Deterministic for a seed; events are yielded per day in time order, as JSON-ready dicts.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Iterator
from typing import Any

ZONES = ("Europe/Berlin", "America/New_York", "UTC", "Asia/Kolkata", "Australia/Sydney")


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def generate(
    stores: int, days: int, start: dt.date, products: int = 8, sales_per_day: int = 60, seed: int = 7
) -> Iterator[dict[str, Any]]:
    """Events of ``stores`` stores over ``days`` local days from ``start``."""
    rng = random.Random(seed)
    ids = [f"store-{i:03d}" for i in range(1, stores + 1)]
    zones = {s: ZONES[i % len(ZONES)] for i, s in enumerate(ids)}
    prices = {f"p{j:02d}": round(1 + rng.random() * 9, 2) for j in range(products)}
    stock = {(s, p): 0 for s in ids for p in prices}
    seq = 0
    from zoneinfo import ZoneInfo

    for d in range(days):
        day = start + dt.timedelta(days=d)
        day_events: list[tuple[dt.datetime, dict[str, Any]]] = []
        for s in ids:
            tz = ZoneInfo(zones[s])
            opening = dt.datetime.combine(day, dt.time(8), tz)
            closing = dt.datetime.combine(day, dt.time(20), tz)
            span = (closing - opening).total_seconds()
            if rng.random() < 0.03 and d > 0:
                continue  # the feed was silent that day (missing, not zero)
            store_events: list[tuple[dt.datetime, dict[str, Any]]] = []
            if d == 0:
                store_events.append(
                    (opening - dt.timedelta(hours=1), {"type": "store", "timezone": zones[s]})
                )
                for p, price in prices.items():
                    store_events.append(
                        (
                            opening - dt.timedelta(minutes=50),
                            {"type": "product", "product_id": p, "price": price},
                        )
                    )
                    store_events.append(
                        (opening - dt.timedelta(minutes=40), {"type": "count", "product_id": p, "count": 20})
                    )
            for _ in range(rng.randint(sales_per_day // 2, sales_per_day * 3 // 2)):
                at = opening + dt.timedelta(seconds=rng.random() * span)
                p = rng.choice(list(prices))
                kind = "refund" if rng.random() < 0.03 else "sale"
                store_events.append(
                    (
                        at,
                        {
                            "type": kind,
                            "product_id": p,
                            "quantity": rng.randint(1, 3),
                            "unit_price": prices[p],
                        },
                    )
                )
            for p in prices:
                if rng.random() < 0.35:
                    at = opening + dt.timedelta(seconds=rng.random() * span)
                    store_events.append(
                        (at, {"type": "restock", "product_id": p, "quantity": rng.randint(10, 30)})
                    )
            if rng.random() < 0.1:
                p = rng.choice(list(prices))
                store_events.append(
                    (
                        closing + dt.timedelta(minutes=5),
                        {"type": "count", "product_id": p, "count": rng.randint(0, 15)},
                    )
                )
            for at, body in store_events:
                seq += 1
                body = {"event_id": f"e{seq}", "store_id": s, "ts": _iso(at), **body}
                if body["type"] in ("sale",) and "product_id" in body:
                    stock[(s, body["product_id"])] -= body["quantity"]
                day_events.append((at, body))
        day_events.sort(key=lambda item: item[0])
        for _, body in day_events:
            yield body
