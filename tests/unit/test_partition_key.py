"""Partition key = store_id: an event put under another store's key is rejected (not applied to an
empty stock in the wrong shard), and no view of stock merges two shards' views of a store silently."""

from __future__ import annotations

import orjson

from foundation.aws.lineage import ShardInfo, hash_key
from foundation.contract import format_ts
from processors.checkpoints import merge_inventories
from processors.core import CoreConfig, ShardCore

T0 = 1_785_571_200_000


def event(kind: str, eid: str, store: str, **fields: object) -> bytes:
    body = {"type": kind, "event_id": eid, "store_id": store, "ts": format_ts(T0), "product_id": "milk"}
    return orjson.dumps({**body, **fields})


def test_an_event_under_another_stores_key_is_rejected_with_the_reason() -> None:
    shard_b = ShardCore(CoreConfig())
    shard_b.apply(event("count", "c", "store-b", count=20), "1", partition_key="store-b")
    sale_a = event("sale", "s", "store-a", quantity=1, unit_price=1.0)
    assert not shard_b.apply(sale_a, "2", partition_key="store-b")
    effects = shard_b.drain()
    assert [r.record for r in effects.rejected] == [sale_a]
    assert "partition key 'store-b' is not the store_id 'store-a'" in effects.rejected[0].reason
    assert effects.requests == []  # no spurious restock request for an empty stock
    assert shard_b.inventory() == {"store-b": {"milk": 20}}
    assert (shard_b.stats.events_valid, shard_b.stats.events_rejected) == (1, 1)
    # Without a stream (a backtest file) there is no key to check.
    assert shard_b.apply(sale_a, "3")


def test_a_store_two_shards_hold_is_reported_and_the_owning_shards_view_taken() -> None:
    middle = 2**127
    low, high = ShardInfo("shard-0", (), 0, middle - 1), ShardInfo("shard-1", (), middle, 2**128 - 1)
    store = next(f"store-{i:03d}" for i in range(100) if hash_key(f"store-{i:03d}") < middle)
    views = [("shard-1", {store: {"milk": 1}, "other": {"tea": 3}}), ("shard-0", {store: {"milk": 22}})]
    merged = merge_inventories(views, [low, high])
    assert merged.stock == {"other": {"tea": 3}, store: {"milk": 22}}
    assert merged.conflicts == {store: ("shard-0", ("shard-1", "shard-0"), True)}
    (warning,) = merged.warnings()
    assert store in warning
    assert "shard-0" in warning
    assert "shard-1" in warning
    unknown = merge_inventories(views)
    assert unknown.conflicts[store][2] is False
    assert "not known" in unknown.warnings()[0]
