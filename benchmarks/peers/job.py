"""What every engine in the peer benchmark computes, and the plain-Python validation the peers share.

The job: decode JSON lines; validate (the contract's rules, docs/contract.md section 1); drop repeated
(store_id, event_id) pairs; per store, 15-minute tumbling windows of event time with 2 minutes of
allowed lateness, summing sales (sale events), units sold, revenue, refunds (refund events) and the
refunded amount; stock per store and product in stream order (sale minus, refund and restock plus,
count sets). Outputs, the same shape for every engine:

- ``windows.jsonl``: ``{"store_id", "start_ms", "sales", "units", "revenue", "refunds", "refund_amount"}``
  for every window that holds at least one sale or refund;
- ``inventory.json``: ``{store_id: {product_id: on_hand}}``.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any, Final

from foundation.timeunits import DAY_MS, MINUTE_MS, SECOND_MS

WINDOW_MS: Final = 15 * MINUTE_MS
LATENESS_MS: Final = 2 * MINUTE_MS
MAX_RECORD_BYTES: Final = 64 * 1024
_STORE_ID: Final = re.compile(r"^[A-Za-z0-9._-]+$")
_EPOCH: Final = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_TYPES: Final = frozenset({"sale", "refund", "restock", "count", "product"})


def _is_int(v: Any, low: int) -> bool:
    return type(v) is int and v >= low


def _is_money(v: Any) -> bool:
    return type(v) in (int, float) and v >= 0


def _is_id(v: Any, longest: int) -> bool:
    return type(v) is str and 1 <= len(v) <= longest


def valid(ev: Any) -> int | None:
    """The event's time in epoch ms when it is a valid event, else None (hand-written, for peers that
    validate in Python)."""
    if type(ev) is not dict or ev.get("type") not in _TYPES:
        return None
    store = ev.get("store_id")
    if not _is_id(ev.get("event_id"), 128) or not _is_id(store, 64) or not _STORE_ID.match(store):
        return None
    ts = ev.get("ts")
    if type(ts) is not str:
        return None
    try:
        when = dt.datetime.fromisoformat(ts)
    except ValueError:
        return None
    if when.tzinfo is None or when.utcoffset() != dt.timedelta(0):
        return None
    kind = ev["type"]
    if not _is_id(ev.get("product_id"), 128):
        return None
    if kind in ("sale", "refund"):
        if not _is_int(ev.get("quantity"), 1) or not _is_money(ev.get("unit_price")):
            return None
    elif kind == "restock":
        if not _is_int(ev.get("quantity"), 1):
            return None
    elif kind == "count" and not _is_int(ev.get("count"), 0):
        return None
    since = when - _EPOCH
    return since.days * DAY_MS + since.seconds * SECOND_MS + since.microseconds // 1000
