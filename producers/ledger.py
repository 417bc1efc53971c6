"""The producers' own expected-stock book, kept apart from the processor so the demo can check it.

It shares only the contract (validation and semantics of docs/contract.md section 1) with the processor, never
its code: if the processor loses, doubles or misorders events, the two books disagree.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from foundation.contract import (
    Count,
    Event,
    Product,
    Refund,
    Rejection,
    Restock,
    Sale,
    Store,
    decode_event,
    encode,
)


class Ledger:
    """Expected on-hand stock per (store, product), from events in the order they were produced.

    One store is produced by one producer in order, so the order recorded here is that store's stream order.
    Products that only appear in ``product`` events have no stock entry (they change no stock).
    """

    def __init__(self) -> None:
        self._stock: dict[str, dict[str, int]] = {}
        self._seen: set[str] = set()
        self.applied = 0
        self.duplicates = 0
        self.invalid = 0

    def record(self, event: bytes | str | Mapping[str, Any] | Event) -> bool:
        """Apply one event; True if it was new and valid. Duplicates and invalid records change nothing."""
        decoded = _decode(event)
        if isinstance(decoded, Rejection):
            self.invalid += 1
            return False
        if decoded.event_id in self._seen:
            self.duplicates += 1
            return False
        self._seen.add(decoded.event_id)
        self.applied += 1
        match decoded:
            case Sale():
                self._add(decoded.store_id, decoded.product_id, -decoded.quantity)
            case Refund() | Restock():
                self._add(decoded.store_id, decoded.product_id, decoded.quantity)
            case Count():
                self._stock.setdefault(decoded.store_id, {})[decoded.product_id] = decoded.count
            case Product():
                pass
        return True

    def stock(self) -> dict[str, dict[str, int]]:
        """A copy: {store_id: {product_id: on_hand}}, the shape of backtest's inventory.json."""
        return {store: dict(products) for store, products in self._stock.items()}

    def on_hand(self, store_id: str, product_id: str) -> int:
        return self._stock.get(store_id, {}).get(product_id, 0)

    def _add(self, store_id: str, product_id: str, delta: int) -> None:
        products = self._stock.setdefault(store_id, {})
        products[product_id] = products.get(product_id, 0) + delta


def _decode(event: bytes | str | Mapping[str, Any] | Event) -> Event | Rejection:
    if isinstance(event, Sale | Refund | Restock | Count | Product | Store):
        return event
    if isinstance(event, str):
        return decode_event(event.encode())
    if isinstance(event, bytes | bytearray | memoryview):
        return decode_event(bytes(event))
    # A mapping goes through the same validation as bytes, so both books agree on what is valid.
    try:
        raw = encode(dict(event))
    except (TypeError, msgspec.EncodeError) as exc:
        return Rejection(f"not encodable as JSON: {exc}", repr(event).encode())
    return decode_event(raw)
