"""The event contract: what is accepted, what is refused and why (docs/contract.md section 1)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from foundation.contract import (
    MAX_RECORD_BYTES,
    MAX_REF_CHARS,
    MAX_TEXT_CHARS,
    Count,
    Product,
    Rejection,
    Sale,
    alert_id,
    decode_event,
    encode,
    format_ts,
    parse_ts,
)

GOOD_SALE = (
    b'{"type":"sale","event_id":"e1","store_id":"Berlin-1","ts":"2026-08-01T10:15:30.123Z",'
    b'"product_id":"sku-1","quantity":2,"unit_price":1.5}'
)


def test_a_valid_sale_decodes_with_its_event_time() -> None:
    event = decode_event(GOOD_SALE)
    assert isinstance(event, Sale)
    assert event.quantity == 2
    assert format_ts(event.ts_ms) == "2026-08-01T10:15:30.123Z"


def test_unknown_fields_are_ignored() -> None:
    event = decode_event(GOOD_SALE[:-1] + b',"loyalty_card":"X1"}')
    assert isinstance(event, Sale)


@pytest.mark.parametrize(
    ("raw", "reason_part"),
    [
        (b"not json", "not valid JSON"),
        (b"[1, 2]", "Expected `object`"),
        (b'{"type":"sale"}', "missing required field"),
        (GOOD_SALE.replace(b'"quantity":2', b'"quantity":0'), "`$.quantity`"),
        (GOOD_SALE.replace(b'"quantity":2', b'"quantity":"2"'), "`$.quantity`"),
        (GOOD_SALE.replace(b'"quantity":2', b'"quantity":true'), "`$.quantity`"),
        (GOOD_SALE.replace(b'"unit_price":1.5', b'"unit_price":-1'), "`$.unit_price`"),
        (GOOD_SALE.replace(b'"Berlin-1"', b'"Berlin 1"'), "`$.store_id`"),
        (GOOD_SALE.replace(b'"Berlin-1"', b'""'), "`$.store_id`"),
        (GOOD_SALE.replace(b'"sale"', b'"theft"'), "`$.type`"),
        (GOOD_SALE.replace(b"10:15:30.123Z", b"10:15:30.123"), "`$.ts`"),
        (GOOD_SALE.replace(b"10:15:30.123Z", b"10:15:30.123+02:00"), "UTC"),
        (GOOD_SALE.replace(b"2026-08-01T", b"yesterday "), "`$.ts`"),
        (GOOD_SALE.replace(b'"e1"', b'"' + b"x" * 129 + b'"'), "`$.event_id`"),
    ],
)
def test_bad_records_are_rejected_with_a_reason(raw: bytes, reason_part: str) -> None:
    result = decode_event(raw)
    assert isinstance(result, Rejection)
    assert reason_part in result.reason
    assert result.record == raw


def test_records_over_64_kib_are_rejected_before_decoding() -> None:
    raw = GOOD_SALE[:-1] + b',"pad":"' + b"x" * MAX_RECORD_BYTES + b'"}'
    result = decode_event(raw)
    assert isinstance(result, Rejection)
    assert "64 KiB" in result.reason


def test_count_and_product_events() -> None:
    count = decode_event(
        b'{"type":"count","event_id":"c","store_id":"s","ts":"2026-08-01T00:00:00Z",'
        b'"product_id":"p","count":0}'
    )
    assert isinstance(count, Count)
    assert count.count == 0
    product = decode_event(
        b'{"type":"product","event_id":"p","store_id":"s","ts":"2026-08-01T00:00:00Z",'
        b'"product_id":"p","name":"Echo Dot","price":49.99,"target_stock":30}'
    )
    assert isinstance(product, Product)
    assert product.target_stock == 30


def test_alert_ids_are_deterministic_and_distinct() -> None:
    assert alert_id("out_of_stock", "s", "p", "e1") == alert_id("out_of_stock", "s", "p", "e1")
    assert alert_id("out_of_stock", "s", "p", "e1") != alert_id("out_of_stock", "s", "p", "e2")
    assert alert_id("out_of_stock", "s", "p", "e1") != alert_id("restock_request", "s", "p", "e1")


@given(st.integers(min_value=0, max_value=4_102_444_800_000))
def test_timestamps_round_trip(ts_ms: int) -> None:
    assert parse_ts(format_ts(ts_ms)) == ts_ms


@given(st.integers(min_value=1, max_value=10_000), st.floats(min_value=0, max_value=1e6, allow_nan=False))
def test_encoded_events_decode_to_the_same_event(quantity: int, price: float) -> None:
    event = Sale(
        event_id="e",
        store_id="s",
        ts=decode_event(GOOD_SALE).ts,  # type: ignore[union-attr]
        product_id="p",
        quantity=quantity,
        unit_price=price,
    )
    assert decode_event(encode(event)) == event


# --- free text and references are bounded ------------------------------------------------------------

BASE = {"event_id": "e1", "store_id": "Berlin-1", "ts": "2026-08-01T10:15:30.123Z"}
ITEM = {"product_id": "sku-1", "quantity": 1}
BOUNDED = [
    ("product", {"product_id": "sku-1"}, "name", MAX_TEXT_CHARS),
    ("product", {"product_id": "sku-1"}, "category", MAX_TEXT_CHARS),
    ("store", {"timezone": "Europe/Berlin"}, "name", MAX_TEXT_CHARS),
    ("refund", {**ITEM, "unit_price": 1.0}, "reason", MAX_TEXT_CHARS),
    ("sale", {**ITEM, "unit_price": 1.0}, "transaction_id", MAX_REF_CHARS),
    ("refund", {**ITEM, "unit_price": 1.0}, "transaction_id", MAX_REF_CHARS),
    ("restock", ITEM, "delivery_id", MAX_REF_CHARS),
    ("restock", ITEM, "truck_id", MAX_REF_CHARS),
]


@pytest.mark.parametrize(("kind", "fields", "name", "limit"), BOUNDED)
def test_free_text_and_references_are_bounded_with_a_reason_naming_the_field(
    kind: str, fields: dict[str, object], name: str, limit: int
) -> None:
    import orjson

    def record(value: str) -> bytes:
        return orjson.dumps({"type": kind, **BASE, **fields, name: value})

    assert (MAX_TEXT_CHARS, MAX_REF_CHARS) == (200, 128)  # docs/contract.md says so
    at_limit = decode_event(record("é" * limit))  # characters, not bytes: 2 bytes each here
    assert not isinstance(at_limit, Rejection)
    assert getattr(at_limit, name) == "é" * limit
    over = decode_event(record("x" * (limit + 1)))
    assert isinstance(over, Rejection)
    assert over.reason == f"invalid event: Expected `str` of length <= {limit} - at `$.{name}`"
    assert not isinstance(decode_event(record("")), Rejection)  # empty stays allowed, as before


def test_a_long_name_sent_to_the_api_is_that_entry_rejected_and_the_rest_accepted() -> None:
    import orjson

    from shelfstream.api.auth import Principal
    from shelfstream.api.ingest import parse_batch

    good = {"type": "product", **BASE, "product_id": "sku-1", "name": "Milk 1 l"}
    long = {**good, "event_id": "e2", "name": "M" * 201}
    batch = parse_batch(orjson.dumps([good, long]), Principal("hq", None, "test"), 500)
    assert [e.index for e in batch.valid] == [0]
    assert [(r.index, r.reason) for r in batch.rejected] == [
        (1, "invalid event: Expected `str` of length <= 200 - at `$.name`")
    ]
