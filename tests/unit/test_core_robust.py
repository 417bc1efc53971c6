"""Whatever bytes a producer sends, the core returns: each record is counted once, as valid or as
rejected with a reason, and a rejected record changes no stock."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from foundation.contract import Rejection, decode_event, format_ts, is_store_id
from processors.backtest import run_backtest
from processors.core import CoreConfig, ShardCore

T0 = 1_785_571_200_000

BAD_RECORDS = [
    (b'{"event_id":"x\xff","type":"sale"}', "not valid UTF-8"),  # invalid UTF-8 inside a JSON string
    (b'{"type":"sale","note":"\xc3\x28"}', "not valid UTF-8"),  # ... inside a field nobody reads
    (b'{"type":"sale","a":' * 3000 + b"1" + b"}" * 3000, "nested too deeply"),
    (b"[" * 5000 + b"]" * 5000, ""),
    (b'{"type":"sale","event_id":"\\ud800"}', ""),  # a lone surrogate
    (b"\xf3\x89\x9a\xc2\x00\x01", "not valid UTF-8"),  # a KPL aggregate's magic, where JSON was expected
    (b"", "not valid JSON"),
    (b"\x00" * 10, ""),
]


def good(eid: str, store: str = "s1", **fields: object) -> bytes:
    body = {"type": "sale", "event_id": eid, "store_id": store, "ts": format_ts(T0), "product_id": "p1"}
    body.update({"quantity": 1, "unit_price": 2.0})
    body.update(fields)
    return json.dumps(body, separators=(",", ":")).encode()


def stocked_core() -> ShardCore:
    core = ShardCore(CoreConfig())
    count = {"type": "count", "event_id": "c", "store_id": "s1", "ts": format_ts(T0)}
    assert core.apply(orjson.dumps({**count, "product_id": "p1", "count": 20}), "0")
    core.drain()
    return core


@pytest.mark.parametrize(("raw", "reason"), BAD_RECORDS)
def test_every_decode_failure_is_a_rejection_with_a_reason(raw: bytes, reason: str) -> None:
    found = decode_event(raw)
    assert isinstance(found, Rejection)
    assert reason in found.reason
    core = stocked_core()
    assert core.apply(raw, "7") is False
    effects = core.drain()
    assert [(r.ref, r.record) for r in effects.rejected] == [("7", raw)]
    assert effects.rejected[0].reason
    assert core.stats.events_rejected == 1
    assert core.inventory() == {"s1": {"p1": 20}}


@pytest.mark.parametrize(
    ("fields", "where"),
    [
        ({"store_id": "store-002\n"}, "store_id"),
        ({"quantity": 10**20}, "quantity"),
        ({"unit_price": 1e300}, "unit_price"),
    ],
)
def test_values_no_store_or_archive_can_hold_are_rejected(fields: dict[str, object], where: str) -> None:
    found = decode_event(good("e1", **fields))
    assert isinstance(found, Rejection)
    assert where in found.reason


def test_store_ids_are_matched_whole() -> None:
    assert is_store_id("store-001")
    for bad in ("store-001\n", "", "x" * 65, "a b", None, "store-001%0A"):
        assert not is_store_id(bad)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(st.binary(max_size=300), st.builds(good, st.text(max_size=5))), max_size=20))
def test_arbitrary_bytes_never_escape_the_core(records: list[bytes]) -> None:
    core = stocked_core()
    before = core.stats.events_read
    for i, raw in enumerate(records):
        stock = core.inventory()
        accepted = core.apply(raw, str(i))
        effects = core.drain()
        if effects.rejected:
            assert not accepted
            assert core.inventory() == stock
    assert core.stats.events_read - before == len(records)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_a_damaged_event_is_applied_or_rejected_never_raised(data: st.DataObject) -> None:
    """A valid event with some bytes changed: the kind of damage a hand-made producer does."""
    raw = bytearray(good("e1"))
    for _ in range(data.draw(st.integers(1, 4))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    core = stocked_core()
    accepted = core.apply(bytes(raw), "1")
    effects = core.drain()
    assert core.stats.events_read == 2
    assert accepted or effects.rejected or core.stats.duplicates_ignored
    if effects.rejected:
        assert core.inventory() == {"s1": {"p1": 20}}


def test_backtest_rejects_bad_lines_and_keeps_their_bytes(tmp_path: Path) -> None:
    source = tmp_path / "b.jsonl"
    source.write_bytes(b'{"event_id":"x\xff","type":"sale"}\n' + good("e1") + b"\n")
    result = run_backtest(str(source), str(tmp_path / "out"))
    assert result.summary["events_rejected"] == 1
    assert result.summary["events_valid"] == 1
    lines = [json.loads(line) for line in (tmp_path / "out" / "rejected.jsonl").read_bytes().splitlines()]
    assert lines[0]["line"] == 1
    assert "UTF-8" in lines[0]["reason"]
    assert base64.b64decode(lines[0]["record_b64"]) == b'{"event_id":"x\xff","type":"sale"}'
