"""The core's state stays bounded and survives a checkpoint in parts: duplicates per store, restore
equality (a restored core gives identical effects), silent stores forgotten, split and merge."""

from __future__ import annotations

import random

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from foundation.contract import format_ts
from processors.core import CoreConfig, ShardCore
from processors.core.dedup import Run
from processors.core.partition import merge, split

T0 = 1_785_571_200_000  # 2026-08-01T08:00:00Z
MIN = 60_000
DAY = 24 * 60 * MIN


def event(kind: str, eid: str, store: str, t_ms: int, product: str = "p1", **fields: object) -> bytes:
    body = {
        "type": kind,
        "event_id": eid,
        "store_id": store,
        "ts": format_ts(T0 + t_ms),
        "product_id": product,
    }
    body.update(fields)
    return orjson.dumps(body)


def sale(eid: str, store: str, t_ms: int, qty: int = 1, product: str = "p1") -> bytes:
    return event("sale", eid, store, t_ms, product, quantity=qty, unit_price=2.5)


def test_two_stores_on_one_shard_may_use_the_same_event_id() -> None:
    core = ShardCore()
    core.apply(event("count", "c-1", "store-001", 0, count=20))
    core.apply(event("count", "c-1", "store-015", 0, count=20))  # the same id, another store
    core.apply(sale("t-1", "store-001", MIN, 3))
    core.apply(sale("t-1", "store-015", MIN, 5))  # must count: it is another store's sale
    core.apply(sale("t-1", "store-015", MIN, 5))  # a true repeat
    assert core.inventory() == {"store-001": {"p1": 17}, "store-015": {"p1": 15}}
    assert core.stats.duplicates_ignored == 1


def stream(seed: int, n: int, stores: int = 4, start_ms: int = 0) -> list[bytes]:
    rng = random.Random(seed)
    out = []
    t = start_ms
    for i in range(n):
        t += rng.randrange(0, 20_000)
        store = f"store-{rng.randrange(stores):03d}"
        product = f"p{rng.randrange(6)}"
        kind = rng.choice(["sale"] * 8 + ["refund", "restock", "count"])
        eid = f"{seed}-{i}"
        if kind == "count":
            out.append(event(kind, eid, store, t, product, count=rng.randrange(0, 30)))
        elif kind == "restock":
            out.append(event(kind, eid, store, t, product, quantity=rng.randrange(1, 30)))
        else:
            out.append(event(kind, eid, store, t, product, quantity=rng.randrange(1, 4), unit_price=3.0))
        if rng.random() < 0.1 and out:  # a redelivery of some earlier record
            out.append(out[rng.randrange(len(out))])
    return out


def effects_of(core: ShardCore, records: list[bytes]) -> tuple[object, ...]:
    for i, raw in enumerate(records):
        core.apply(raw, i)
    out = core.drain()
    return (
        [repr(r) for r in out.requests],
        sorted(repr(a) for a in out.alerts),
        out.archive,
        out.windows,
        core.inventory(),
        core.open_requests(),
        core.stats.duplicates_ignored,
    )


def restored(core: ShardCore) -> ShardCore:
    parts = core.checkpoint_parts()
    runs = {name: Run.from_bytes(name, run.to_bytes()) for name, run in parts.runs.items()}
    assert ShardCore.head_names(parts.head) == parts.names
    return ShardCore.from_parts(parts.head, runs, parts.pieces)


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 2**31), st.integers(50, 400), st.integers(1, 300))
def test_a_core_restored_from_its_parts_gives_identical_effects(seed: int, n: int, m: int) -> None:
    config = CoreConfig(dedup_bucket_ms=5 * MIN, dedup_horizon_ms=60 * MIN)
    first = stream(seed, n)
    later = stream(seed + 1, m, start_ms=n * 10_000)
    later += first[-min(len(first), 30) :]  # redeliveries of what the checkpoint already holds
    a = ShardCore(config)
    effects_of(a, first)
    b = restored(a)
    assert effects_of(b, later) == effects_of(a, later)
    assert len(b.state.dedup) == len(a.state.dedup)


def test_a_store_that_stops_sending_is_forgotten_after_the_retention() -> None:
    config = CoreConfig(store_retention_ms=7 * DAY)
    core = ShardCore(config)
    core.apply(event("count", "c", "closed", 0, count=5))
    core.apply(sale("x", "closed", MIN))
    for hour in range(24 * 10):  # ten days of another store's sales
        core.apply(sale(f"o{hour}", "open", hour * 60 * MIN + 2 * MIN))
    state = core.state
    assert "closed" not in state.last_seen
    assert all(k[0] != "closed" for k in state.inventory.stock)
    assert state.windows is not None
    assert "closed" not in state.windows.stores
    assert state.monitor is not None
    assert "closed" not in state.monitor.detectors
    assert core.stats.stores_forgotten == 1
    assert core.inventory() == {"open": {"p1": -240}}
    core.apply(event("count", "c2", "closed", 10 * DAY, count=7))  # it comes back: a new store
    assert core.inventory()["closed"] == {"p1": 7}


def test_split_and_merge_carry_the_dedup_memory() -> None:
    core = ShardCore()
    records = stream(7, 300)
    effects_of(core, records)
    left = split(core, lambda s: s in {"store-000", "store-001"})
    right = split(core, lambda s: s not in {"store-000", "store-001"})
    for child in (left, right):
        assert all(not child.apply(raw) for raw in records)  # every earlier record: a repeat
        assert child.stats.events_valid == child.stats.duplicates_ignored
    joined = merge([restored(left), restored(right)])
    names = list(joined.state.dedup.runs())
    assert len(names) == len(set(names))
    assert all(not joined.apply(raw) for raw in records)
    assert joined.apply(sale("new", "store-000", 300 * 20_000))
    assert joined.state.last_seen.keys() == core.state.last_seen.keys()


def test_an_old_whole_snapshot_still_restores() -> None:
    core = ShardCore()
    effects_of(core, stream(3, 50))
    again = ShardCore.restore(core.snapshot())
    assert again.inventory() == core.inventory()
    assert len(again.state.dedup) == len(core.state.dedup)
