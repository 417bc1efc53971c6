"""Checkpoints of a core written by an earlier release, kept as test data (tests/unit/data/), and the
events that go on from them.

`python -m tests.unit.old_checkpoints OUT.json`, run with the code of the release whose checkpoints
are to be kept, writes the file: a whole snapshot and a checkpoint head of a forecast-policy core and
of a threshold-policy core, each after two days of sales and an open request, and the requests that
core made for the events of `after()`. tests/unit/test_old_checkpoints.py restores them with today's
code and checks that it goes on alike.
"""

from __future__ import annotations

import base64
import datetime as dt
import sys
from pathlib import Path
from typing import Any

import orjson

from foundation.contract import encode, format_ts
from processors.core import CoreConfig, ShardCore
from processors.core.demand import HOUR_MS, RestockConfig

MONDAY = int(dt.datetime(2026, 8, 3, tzinfo=dt.UTC).timestamp() * 1000)
STORE = "store-001"
WEDNESDAY_9 = MONDAY + 2 * 24 * HOUR_MS + 9 * HOUR_MS


def ev(kind: str, event_id: str, ts_ms: int, **fields: Any) -> bytes:
    return orjson.dumps(
        {"event_id": event_id, "type": kind, "store_id": STORE, "ts": format_ts(ts_ms), **fields}
    )


def core(policy: str) -> ShardCore:
    restock = RestockConfig(policy=policy)  # type: ignore[arg-type]
    return ShardCore(CoreConfig(archive=False, window_ms=0, restock=restock))


def before() -> list[bytes]:
    """Two days of three products selling 08:00-20:00 (one fast, two slow), then stock takes that
    leave requests open (under the threshold rule too)."""
    out = [ev("count", f"c-{p}", MONDAY, product_id=p, count=100_000) for p in ("fast", "slow", "rare")]
    out.append(ev("product", "p-rare", MONDAY, product_id="rare", restock_threshold=3, target_stock=30))
    n = 0
    for day in range(2):
        for hour in range(8, 20):
            base = MONDAY + day * 24 * HOUR_MS + hour * HOUR_MS
            for product, per_hour in (("fast", 12), ("slow", 2), ("rare", 1)):
                for i in range(per_hour):
                    n += 1
                    at = base + (i * HOUR_MS) // per_hour + 1000
                    out.append(ev("sale", f"s{n}", at, product_id=product, quantity=1, unit_price=2.0))
    out.append(ev("count", "w-slow", WEDNESDAY_9, product_id="slow", count=12))
    out.append(ev("count", "w-rare", WEDNESDAY_9, product_id="rare", count=9))
    out.append(ev("count", "w-fast", WEDNESDAY_9 + 1, product_id="fast", count=20))
    out.append(ev("count", "w2-rare", WEDNESDAY_9 + 2, product_id="rare", count=2))
    return out


def after(open_requests: dict[str, str]) -> list[bytes]:
    """Sales, a delivery answering the request open for `fast` (when there is one), refunds and stock
    takes: every kind of stock event, and requests again."""
    t = WEDNESDAY_9 + 60_000
    out = [
        ev("sale", f"a{i}", t + i * 300_000, product_id="fast", quantity=1, unit_price=2.0) for i in range(6)
    ]
    if "fast" in open_requests:
        delivery = f"delivery-{open_requests['fast']}"
        out.append(ev("restock", delivery, t + 2 * HOUR_MS, product_id="fast", quantity=60, delivery_id="d1"))
    out.append(ev("refund", "r1", t + 2 * HOUR_MS + 1, product_id="slow", quantity=1, unit_price=2.0))
    out += [
        ev("sale", f"b{i}", t + 3 * HOUR_MS + i * 60_000, product_id="slow", quantity=1, unit_price=2.0)
        for i in range(8)
    ]
    out.append(ev("count", "w2-fast", t + 4 * HOUR_MS, product_id="fast", count=15))
    out.append(ev("count", "w3-rare", t + 4 * HOUR_MS, product_id="rare", count=1))
    return out


def main(path: str) -> None:
    cases: dict[str, Any] = {}
    for policy in ("forecast", "threshold"):
        c = core(policy)
        for record in before():
            c.apply(record)
        made = [orjson.loads(encode(r)) for r in c.drain().requests]
        opened = {p: rid for (_, p), rid in c.open_requests().items()}
        snapshot = c.snapshot()
        head = c.checkpoint_parts().head
        for record in after(opened):
            c.apply(record)
        cases[policy] = {
            "snapshot": base64.b64encode(snapshot).decode(),
            "head": base64.b64encode(head).decode(),
            "requests_before": made,
            "open_requests": opened,
            "stock": c.inventory(),
            "requests_after": [orjson.loads(encode(r)) for r in c.drain().requests],
        }
    Path(path).write_bytes(orjson.dumps(cases, option=orjson.OPT_INDENT_2) + b"\n")


if __name__ == "__main__":
    main(sys.argv[1])
