"""KPL de-aggregation against records made by `aws-kinesis-agg` (the KPL's format, in Python)."""

from __future__ import annotations

import hashlib

import pytest
from aws_kinesis_agg import aggregator as kpl  # installed by `make test` (dev extra)
from hypothesis import given, settings
from hypothesis import strategies as st

from processors.core import CoreConfig, ShardCore
from processors.kpl import MAGIC, deaggregate
from processors.records import apply_record

keys = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=1, max_size=20)


def aggregate(records: list[tuple[str, bytes, str | None]]) -> bytes:
    aggregator = kpl.RecordAggregator()
    for key, data, hash_key in records:
        assert aggregator.add_user_record(key, data, hash_key) is None
    _, _, data = aggregator.clear_and_get().get_contents()
    return bytes(data)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(keys, st.binary(max_size=200), st.none() | st.integers(0, 2**128 - 1).map(str)),
        min_size=1,
        max_size=30,
    )
)
def test_every_user_record_comes_back_in_order_with_its_partition_key(
    records: list[tuple[str, bytes, str | None]],
) -> None:
    result = deaggregate(aggregate(records), "outer")
    assert result.error is None
    assert [(r.index, r.partition_key, r.data) for r in result.records] == [
        (i, key, data) for i, (key, data, _) in enumerate(records)
    ]


def test_a_plain_record_is_its_own_only_record() -> None:
    (only,) = deaggregate(b'{"type":"sale"}', "store-1").records
    assert (only.index, only.partition_key, only.data) == (0, "store-1", b'{"type":"sale"}')


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda b: b[:-1] + bytes([b[-1] ^ 1]), "MD5"),
        (lambda b: b[:-3], "MD5"),  # cut short
        (lambda b: MAGIC + b"\x01", "too short"),
        (lambda b: MAGIC + b"\x1a\xff" + hashlib.md5(b"\x1a\xff").digest(), "not a valid AggregatedRecord"),
        (lambda b: MAGIC + b"\x1a\x02\x08\x05" + hashlib.md5(b"\x1a\x02\x08\x05").digest(), "misses"),
        (lambda b: MAGIC + hashlib.md5(b"").digest(), "holds no records"),
    ],
)
def test_a_damaged_aggregate_is_refused_whole_with_a_reason(damage: object, reason: str) -> None:
    good = aggregate([("store-1", b'{"a":1}', None), ("store-1", b'{"a":2}', None)])
    result = deaggregate(damage(good), "store-1")  # type: ignore[operator]
    assert result.records == []
    assert result.error is not None
    assert reason in result.error


def test_the_shell_applies_sub_records_and_rejects_a_damaged_aggregate_whole() -> None:
    ts = "2026-08-01T08:00:00Z"
    count = (
        b'{"type":"count","event_id":"c","store_id":"s1","ts":"%s","product_id":"p","count":9}' % ts.encode()
    )
    sales = [
        b'{"type":"sale","event_id":"s%d","store_id":"s1","ts":"%s","product_id":"p","quantity":1,"unit_price":1}'
        % (i, ts.encode())
        for i in range(3)
    ]
    core = ShardCore(CoreConfig())
    assert apply_record(core, aggregate([("s1", r, None) for r in [count, *sales]]), "100", "s1") == 4
    damaged = aggregate([("s1", b'{"x":1}', None)])[:-1] + b"\x00"
    assert apply_record(core, damaged, "101", "s1") == 1
    effects = core.drain()
    assert core.inventory() == {"s1": {"p": 6}}
    assert [(r.ref, r.record) for r in effects.rejected] == [("101", damaged)]
    assert core.stats.events_valid == 4
