"""The producers' independent stock ledger follows the contract's semantics (docs/contract.md section 1)."""

from __future__ import annotations

import ast
from collections import Counter
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from foundation.contract import Refund, Restock, Sale, decode_event, encode
from foundation.timeunits import DAY_MS
from producers.ledger import Ledger
from producers.simulator import StoreSimulator

TS = "2026-08-01T10:00:00.000Z"


def event(
    event_id: str, kind: str, product: str = "sku-1", store: str = "s1", **fields: Any
) -> dict[str, Any]:
    return {"event_id": event_id, "type": kind, "store_id": store, "ts": TS, "product_id": product, **fields}


def test_each_type_moves_stock_as_the_contract_says() -> None:
    ledger = Ledger()
    assert ledger.record(event("1", "count", count=10))
    assert ledger.record(event("2", "sale", quantity=3, unit_price=1.0))
    assert ledger.record(event("3", "refund", quantity=1, unit_price=1.0, reason="damaged"))
    assert ledger.record(event("4", "restock", quantity=20))
    assert ledger.record(event("5", "product", name="Milk", price=1.2))
    assert ledger.stock() == {"s1": {"sku-1": 28}}
    assert ledger.record(event("6", "count", count=4))
    assert ledger.record(event("7", "sale", quantity=9, unit_price=1.0))
    assert ledger.on_hand("s1", "sku-1") == -5  # oversold: not clamped
    assert ledger.applied == 7


def test_a_repeated_event_id_changes_nothing_even_with_other_content() -> None:
    ledger = Ledger()
    sale = encode(event("a", "sale", quantity=2, unit_price=1.0))
    assert ledger.record(sale)
    assert not ledger.record(sale)
    assert not ledger.record(event("a", "restock", quantity=50))
    assert ledger.stock() == {"s1": {"sku-1": -2}}
    assert ledger.duplicates == 2


def test_invalid_records_are_ignored_and_do_not_claim_their_event_id() -> None:
    ledger = Ledger()
    assert not ledger.record(b'{"event_id": "x", "type": "sale", ')
    assert not ledger.record(event("x", "sale", quantity=-1, unit_price=1.0))
    assert not ledger.record(event("x", "sale", unit_price=1.0))
    assert not ledger.record({"event_id": "x", "type": "sale", "weird": object()})
    assert ledger.invalid == 4
    assert ledger.stock() == {}
    assert ledger.record(event("x", "sale", quantity=1, unit_price=1.0))  # the id was never taken
    assert ledger.stock() == {"s1": {"sku-1": -1}}


def test_accepts_bytes_text_mappings_and_decoded_events_alike() -> None:
    ledger = Ledger()
    ledger.record(encode(event("1", "restock", quantity=1)))
    ledger.record(encode(event("2", "restock", quantity=2)).decode())
    ledger.record(event("3", "restock", quantity=4))
    decoded = decode_event(encode(event("4", "restock", quantity=8)))
    assert isinstance(decoded, Restock)
    ledger.record(decoded)
    assert ledger.on_hand("s1", "sku-1") == 15


def test_product_events_create_no_stock_and_stores_are_kept_apart() -> None:
    ledger = Ledger()
    ledger.record(event("1", "product", product="p", store="a", name="Milk"))
    ledger.record(event("2", "count", product="p", store="b", count=3))
    assert ledger.stock() == {"b": {"p": 3}}
    snapshot = ledger.stock()
    snapshot["b"]["p"] = 99
    assert ledger.on_hand("b", "p") == 3  # stock() hands out a copy


_ops = st.lists(
    st.tuples(
        st.sampled_from(["sale", "refund", "restock", "count", "product"]),
        st.integers(min_value=0, max_value=30),
        st.integers(min_value=0, max_value=15),  # event id: small range, so repeats happen
    ),
    max_size=60,
)


@given(ops=_ops)
def test_stock_is_the_last_count_plus_signed_quantities_since_it(ops: list[tuple[str, int, int]]) -> None:
    ledger = Ledger()
    seen: set[int] = set()
    expected = 0
    touched = False
    for kind, amount, ident in ops:
        fields: dict[str, Any] = {}
        if kind == "count":
            fields["count"] = amount
        elif kind != "product":
            fields["quantity"] = amount + 1
        if kind in ("sale", "refund"):
            fields["unit_price"] = 2.5
        ledger.record(event(str(ident), kind, **fields))
        if ident in seen:
            continue
        seen.add(ident)
        if kind == "count":
            expected, touched = amount, True
        elif kind != "product":
            expected += -(amount + 1) if kind == "sale" else amount + 1
            touched = True
    assert ledger.on_hand("s1", "sku-1") == expected
    assert ("s1" in ledger.stock()) == touched
    assert ledger.applied == len(seen)
    assert ledger.applied + ledger.duplicates == len(ops)


def test_fed_by_a_noisy_simulation_it_counts_each_good_event_once() -> None:
    start = 1_785_542_400_000  # 2026-08-01T00:00Z
    sim = StoreSimulator(4, 3, 10, start, bad_fraction=0.01, duplicate_fraction=0.02)
    ledger = Ledger()
    events = sim.events_until(start + DAY_MS)
    for record in events:
        ledger.record(record.data)
    expected = {store: dict(stock) for store, stock in sim.initial_stock.items()}
    for record in events:
        decoded = decode_event(record.data)
        if record.kind == "good" and isinstance(decoded, Sale):
            expected[decoded.store_id][decoded.product_id] -= decoded.quantity
        elif record.kind == "good" and isinstance(decoded, Refund):
            expected[decoded.store_id][decoded.product_id] += decoded.quantity
    assert ledger.stock() == expected
    kinds = Counter(r.kind for r in events)
    assert ledger.applied == kinds["good"]
    assert ledger.duplicates == kinds["duplicate"]
    assert ledger.invalid == kinds["bad"]


def test_the_ledger_does_not_share_code_with_the_processor() -> None:
    tree = ast.parse(Path(__file__).parents[2].joinpath("producers", "ledger.py").read_text())
    imported = [node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)] + [
        alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names
    ]
    assert imported
    assert not [name for name in imported if name.split(".")[0] == "processors"]
