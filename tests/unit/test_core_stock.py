"""Stock, dedup, requests and alerts of the processor core (pure: no sockets, no clock)."""

from __future__ import annotations

from collections.abc import Iterable

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from foundation.contract import OutOfStock, ProductChange, format_ts
from processors.core import CoreConfig, ShardCore

T0 = 1_785_571_200_000  # 2026-08-01T08:00:00Z


def ev(kind: str, eid: str, store: str = "s1", product: str = "p1", t: int = 0, **fields: object) -> bytes:
    body = {"type": kind, "event_id": eid, "store_id": store, "ts": format_ts(T0 + t * 1000), **fields}
    if kind != "product" or "product_id" not in fields:
        body["product_id"] = product
    return orjson.dumps(body)


def sale(eid: str, qty: int, **kw: object) -> bytes:
    return ev("sale", eid, quantity=qty, unit_price=2.0, **kw)  # type: ignore[arg-type]


def run(records: Iterable[bytes], config: CoreConfig | None = None) -> ShardCore:
    core = ShardCore(config or CoreConfig(default_restock_threshold=5, default_target_stock=40))
    for i, raw in enumerate(records):
        core.apply(raw, str(i))
    return core


def test_sale_refund_restock_count_follow_the_contract() -> None:
    core = run(
        [
            ev("count", "c1", count=20),
            sale("s1", 3),
            ev("refund", "r1", quantity=1, unit_price=2.0),
            ev("restock", "d1", quantity=10),
            sale("s2", 4),
        ]
    )
    assert core.inventory() == {"s1": {"p1": 20 - 3 + 1 + 10 - 4}}


def test_stock_may_go_negative_and_is_reported_once() -> None:
    core = run([ev("count", "c1", count=1), sale("s1", 2), sale("s2", 1)])
    assert core.inventory()["s1"]["p1"] == -2
    outs = [a for a in core.drain().alerts if isinstance(a, OutOfStock)]
    assert [a.on_hand for a in outs] == [-1]


def test_one_open_restock_request_until_a_restock_arrives() -> None:
    core = run([ev("count", "c1", count=10), sale("s1", 5), sale("s2", 1), sale("s3", 1)])
    requests = core.drain().requests
    assert len(requests) == 1
    assert requests[0].on_hand == 5
    assert requests[0].threshold == 5
    assert requests[0].requested_quantity == 35
    core.apply(ev("restock", "d1", quantity=35))
    assert core.open_requests() == {}
    core.apply(sale("s4", 40))
    assert len(core.drain().requests) == 1


def test_catalog_thresholds_override_the_defaults() -> None:
    core = run(
        [
            ev(
                "product",
                "pr1",
                product_id="p1",
                name="Milk",
                price=1.0,
                restock_threshold=2,
                target_stock=12,
            ),
            ev("count", "c1", count=5),
            sale("s1", 2),
        ]
    )
    assert core.drain().requests == []
    core.apply(sale("s2", 1))
    (request,) = core.drain().requests
    assert (request.threshold, request.requested_quantity) == (2, 10)


def test_a_name_or_price_change_raises_a_product_change_alert() -> None:
    core = run(
        [
            ev("product", "pr1", product_id="p1", name="Milk", price=1.0),
            ev("product", "pr2", product_id="p1", name="Milk", price=1.0, category="dairy"),
            ev("product", "pr3", product_id="p1", name="Whole milk", price=1.2),
        ]
    )
    changes = [a for a in core.drain().alerts if isinstance(a, ProductChange)]
    assert len(changes) == 1
    assert changes[0].changes == {"name": ("Milk", "Whole milk"), "price": (1.0, 1.2)}


def test_rejected_records_are_kept_with_reason_and_processing_goes_on() -> None:
    core = run([b"{oops", ev("count", "c1", count=3), sale("s1", 1)])
    out = core.drain()
    assert len(out.rejected) == 1
    assert out.rejected[0].record == b"{oops"
    assert out.rejected[0].ref == "0"
    assert core.inventory() == {"s1": {"p1": 2}}
    assert core.stats.events_rejected == 1


def test_alert_ids_repeat_when_the_same_cause_is_replayed() -> None:
    records = [ev("count", "c1", count=6), sale("s1", 6)]
    first = run(records).drain()
    second = run(records).drain()
    assert [a.alert_id for a in first.alerts] == [a.alert_id for a in second.alerts]
    assert [r.alert_id for r in first.requests] == [r.alert_id for r in second.requests]


def test_snapshot_restores_the_same_state() -> None:
    core = run([ev("count", "c1", count=6), sale("s1", 2)])
    restored = ShardCore.restore(core.snapshot())
    assert restored.inventory() == core.inventory()
    restored.apply(sale("s1", 2))  # same event id: still a repeat after restore
    assert restored.inventory() == core.inventory()
    assert restored.stats.duplicates_ignored == 1


# --- properties ---------------------------------------------------------------------------------

STORES = ["s1", "s2"]
PRODUCTS = ["p1", "p2", "p3"]


@st.composite
def event_streams(draw: st.DrawFn) -> list[tuple[str, str, str, int]]:
    n = draw(st.integers(min_value=0, max_value=60))
    out = []
    for _ in range(n):
        kind = draw(st.sampled_from(["sale", "refund", "restock", "count", "product"]))
        out.append(
            (
                kind,
                draw(st.sampled_from(STORES)),
                draw(st.sampled_from(PRODUCTS)),
                draw(st.integers(min_value=0 if kind == "count" else 1, max_value=30)),
            )
        )
    return out


def encode_stream(stream: list[tuple[str, str, str, int]]) -> list[bytes]:
    out = []
    for i, (kind, store, product, qty) in enumerate(stream):
        fields: dict[str, object] = {}
        if kind in ("sale", "refund"):
            fields = {"quantity": qty, "unit_price": 1.0}
        elif kind == "restock":
            fields = {"quantity": qty}
        elif kind == "count":
            fields = {"count": qty}
        else:
            fields = {"product_id": product, "name": f"n{qty}"}
        out.append(ev(kind, f"e{i}", store=store, product=product, t=i, **fields))
    return out


def ledger(stream: list[tuple[str, str, str, int]]) -> dict[str, dict[str, int]]:
    stock: dict[tuple[str, str], int] = {}
    for kind, store, product, qty in stream:
        key = (store, product)
        if kind == "sale":
            stock[key] = stock.get(key, 0) - qty
        elif kind in ("refund", "restock"):
            stock[key] = stock.get(key, 0) + qty
        elif kind == "count":
            stock[key] = qty
    result: dict[str, dict[str, int]] = {}
    for (store, product), qty in sorted(stock.items()):
        result.setdefault(store, {})[product] = qty
    return result


@settings(max_examples=200, deadline=None)
@given(event_streams())
def test_stock_equals_the_ledger_for_any_event_sequence(stream: list[tuple[str, str, str, int]]) -> None:
    assert run(encode_stream(stream)).inventory() == ledger(stream)


@settings(max_examples=200, deadline=None)
@given(event_streams(), st.data())
def test_delivering_any_prefix_twice_changes_nothing(
    stream: list[tuple[str, str, str, int]], data: st.DataObject
) -> None:
    records = encode_stream(stream)
    cut = data.draw(st.integers(min_value=0, max_value=len(records)))
    once = run(records)
    twice = run(records[:cut] + records)
    assert twice.inventory() == once.inventory()
    assert twice.stats.duplicates_ignored == cut
    a, b = once.drain(), twice.drain()
    assert [x.alert_id for x in a.alerts] == [x.alert_id for x in b.alerts]
    assert [x.alert_id for x in a.requests] == [x.alert_id for x in b.requests]


@given(event_streams(), st.data())
def test_a_checkpoint_anywhere_gives_the_same_end_state(
    stream: list[tuple[str, str, str, int]], data: st.DataObject
) -> None:
    records = encode_stream(stream)
    cut = data.draw(st.integers(min_value=0, max_value=len(records)))
    first = run(records[:cut])
    resumed = ShardCore.restore(first.snapshot())
    for raw in records[cut:]:
        resumed.apply(raw)
    assert resumed.inventory() == run(records).inventory()
