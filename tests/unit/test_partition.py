"""Resharding's state surgery: split along store lines, merge back, and processing goes on exactly."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from foundation.aws.lineage import ShardInfo, hash_key, ready
from processors.core import ShardCore
from processors.core.partition import merge, split
from tests.unit.test_core_stock import encode_stream, event_streams, run


@settings(max_examples=100, deadline=None)
@given(event_streams(), event_streams(), st.sets(st.sampled_from(["s1", "s2"])))
def test_split_then_continue_equals_one_uninterrupted_core(
    before: list[tuple[str, str, str, int]], after: list[tuple[str, str, str, int]], left: set[str]
) -> None:
    first = encode_stream(before)
    second = [r.replace(b'"e', b'"f') for r in encode_stream(after)]  # new event ids
    parent = run(first)
    children = [split(parent, lambda s: s in left), split(parent, lambda s: s not in left)]
    for raw in second:
        children[0 if orjson.loads(raw)["store_id"] in left else 1].apply(raw)
    whole = run(first + second)
    joined: dict[str, dict[str, int]] = {}
    for child in children:
        joined.update(child.inventory())
    assert joined == whole.inventory()
    assert merge(children).inventory() == whole.inventory()


def test_a_split_keeps_requests_alerts_and_dedup() -> None:
    core = run(encode_stream([("count", "s1", "p1", 3), ("sale", "s1", "p1", 3), ("count", "s2", "p1", 9)]))
    child = split(core, lambda s: s == "s1")
    assert child.inventory() == {"s1": {"p1": 0}}
    assert child.open_requests() == {("s1", "p1"): core.open_requests()[("s1", "p1")]}
    assert child.state.inventory.out_of_stock == {("s1", "p1")}
    assert child.stats.events_read == 0  # its own counts start afresh
    assert not child.apply(encode_stream([("count", "s1", "p1", 3)])[0])  # event e0 seen in the parent


def test_children_wait_for_their_parents() -> None:
    parent = ShardInfo("p", (), 0, 2**128 - 1)
    a = ShardInfo("a", ("p",), 0, 2**127 - 1)
    b = ShardInfo("b", ("p",), 2**127, 2**128 - 1)
    merged = ShardInfo("m", ("a", "b"), 0, 2**128 - 1)
    shards = [parent, a, b, merged]
    assert ready(shards, set(), set()) == [parent]
    assert ready(shards, {"p"}, set()) == [a, b]
    assert ready(shards, {"p", "a"}, {"b"}) == []
    assert ready(shards, {"p", "a", "b"}, set()) == [merged]
    assert ready([a, b], set(), set()) == [a, b]  # parent aged out of retention
    assert a.owns("store-1") != b.owns("store-1")
    assert 0 <= hash_key("store-1") < 2**128


def test_merge_needs_something() -> None:
    with pytest.raises(ValueError, match="nothing"):
        merge([])
    assert isinstance(merge([ShardCore()]), ShardCore)


def test_a_merge_of_shards_with_different_clocks_closes_no_window_twice() -> None:
    def sale(eid: str, store: str, minute: int) -> bytes:
        return orjson.dumps(
            {
                "type": "sale",
                "event_id": eid,
                "store_id": store,
                "product_id": "p",
                "ts": f"2026-03-02T{8 + minute // 60:02d}:{minute % 60:02d}:00Z",
                "quantity": 1,
                "unit_price": 1.0,
            }
        )

    ahead, behind = ShardCore(), ShardCore()
    for m in range(0, 120, 5):
        ahead.apply(sale(f"a{m}", "s1", m))
    for m in range(0, 30, 5):
        behind.apply(sale(f"b{m}", "s2", m))
    emitted = [orjson.loads(w) for core in (ahead, behind) for w in core.drain().windows]
    merged = merge([ahead, behind])
    for m in range(120, 180, 5):
        merged.apply(sale(f"a{m}", "s1", m))
        merged.apply(sale(f"b{m}", "s2", m))
    emitted += [orjson.loads(w) for w in merged.drain().windows]
    keys = [(w["store_id"], w["window_start"], w["window_end"]) for w in emitted]
    assert len(keys) == len(set(keys))  # every window once
    assert any(k[0] == "s2" and k[1] > "2026-03-02T08:30" for k in keys)  # the lagging store went on


def test_a_merge_keeps_each_stores_time_zone_and_product_mix() -> None:
    def event(kind: str, eid: str, store: str, minute: int, **fields: object) -> bytes:
        ts = f"2026-03-02T08:{minute:02d}:00Z"
        return orjson.dumps({"type": kind, "event_id": eid, "store_id": store, "ts": ts} | fields)

    tokyo, berlin = ShardCore(), ShardCore()
    for core, store, zone in ((tokyo, "s1", "Asia/Tokyo"), (berlin, "s2", "Europe/Berlin")):
        core.apply(event("store", f"z-{store}", store, 0, timezone=zone))
        for m in range(0, 60, 5):
            core.apply(event("sale", f"{store}-{m}", store, m, product_id="p", quantity=1, unit_price=1.0))
    berlin.apply(event("store", "z-s3", "s3", 59, timezone="Europe/Lisbon"))  # announced, nothing sold
    merged = merge([tokyo, berlin])
    monitor = merged.state.monitor
    assert monitor is not None
    assert (monitor.zone("s1"), monitor.zone("s2")) == ("Asia/Tokyo", "Europe/Berlin")
    assert set(monitor.mix) == {"s1", "s2"}  # what each store sells, for an alert's contributors
    assert monitor.zone("s3") == "Europe/Lisbon"
