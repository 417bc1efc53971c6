"""File ingest: parsing and validation of store CSVs and warehouse JSON lines (pure: no AWS, no clock)."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from foundation.contract import Count, Product, decode_event
from producers.ingest import (
    Accepted,
    FileContext,
    FileRefused,
    IngestReport,
    Rejected,
    Row,
    detect_format,
    emf_record,
    emit_metrics,
    iter_lines,
    parse_file,
    product_slug,
)
from shelfstream.cli import main

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
MTIME_MS = 1_785_744_000_000  # 2026-08-03T08:00:00Z
NOW_MS = 1_786_000_000_000


def ctx(name: str = "f.csv", max_line: int = 64 * 1024, digest: str = "a" * 20) -> FileContext:
    return FileContext(name, digest, MTIME_MS, NOW_MS, max_line)


def parse(data: bytes, file_type: str = "csv", **kw: object) -> list[Row]:
    return list(parse_file(io.BytesIO(data), file_type, ctx(**kw)))  # type: ignore[arg-type]


def rejected(rows: list[Row]) -> dict[int, str]:
    return {r.line: r.reason for r in rows if isinstance(r, Rejected)}


def accepted(rows: list[Row]) -> list[Accepted]:
    return [r for r in rows if isinstance(r, Accepted)]


# --- the store seed ----------------------------------------------------------------------------------


def test_store_seed_good_rows_become_product_and_count_events() -> None:
    rows = parse((EXAMPLES / "store_seed.csv").read_bytes(), name="store_seed.csv")
    good = accepted(rows)
    assert [r.line for r in good] == [2, 3, 4, 5, 6, 14]
    first = [decode_event(e) for e in good[0].events]
    assert isinstance(first[0], Product)
    assert isinstance(first[1], Count)
    assert first[0].name == "Echo Dot"
    assert (first[1].store_id, first[1].product_id, first[1].count) == ("Berlin", "echo-dot", 12)
    assert first[1].ts_ms == MTIME_MS  # the format carries no time: the file's modification time
    assert good[0].event_ids == (f"ingest-{'a' * 20}-2-p", f"ingest-{'a' * 20}-2")
    quoted = [decode_event(e) for e in good[4].events]
    assert quoted[0].name == "Echo Show 8, 2nd Gen"  # type: ignore[union-attr]
    assert quoted[1].product_id == "echo-show-8-2nd-gen"  # type: ignore[union-attr]


def test_store_seed_bad_rows_are_rejected_with_line_and_reason() -> None:
    reasons = rejected(parse((EXAMPLES / "store_seed.csv").read_bytes()))
    assert sorted(reasons) == [7, 8, 9, 10, 11, 12, 13]
    assert "negative" in reasons[7]
    assert reasons[8] == "item is empty"
    assert "'New York' is not a valid store id" in reasons[9]
    assert "duplicate" in reasons[10]
    assert "line 2" in reasons[10]
    assert "'twelve' is not a whole number" in reasons[11]
    assert "'4.5' is not a whole number" in reasons[12]
    assert "expected 3 fields" in reasons[13]


def test_rejected_rows_keep_the_raw_record() -> None:
    rows = parse(b"store,item,count\nBerlin,Echo Dot,-1\n")
    (row,) = rows
    assert isinstance(row, Rejected)
    kept = json.loads(row.to_line())
    assert (kept["line"], kept["reason"], kept["record"]) == (2, row.reason, "Berlin,Echo Dot,-1")
    assert base64.b64decode(kept["record_b64"]) == b"Berlin,Echo Dot,-1"


def test_same_content_same_ids_different_content_different_ids() -> None:
    data = b"store,item,count\nBerlin,Echo Dot,3\n"
    once = accepted(parse(data, digest="1" * 20))
    again = accepted(parse(data, digest="1" * 20))
    other = accepted(parse(data, digest="2" * 20))
    assert once[0].event_ids == again[0].event_ids
    assert once[0].events == again[0].events
    assert set(once[0].event_ids).isdisjoint(other[0].event_ids)


# --- malformed files ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"\n\n  \n", "empty"),
        (b"store,item,count\n", "header but no rows"),
        (b"shop,product,qty\nBerlin,Echo Dot,1\n", "header must be store,item,count"),
        (b"store;item;count\nBerlin;Echo Dot;1\n", "uses ';'"),
        (b'{"inventory_id": 1}\n', "looks like JSON lines"),
        (b"Dear team, please find the stock attached.\nRegards\n", "header must be store,item,count"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00", "binary"),
        (b"PK\x03\x04\x14\x00\x06\x00", "zip archive"),
        (b"\x1f\x8b\x08\x00\x00\x00", "gzip"),
        ("store,item,count\nBerlin,Echo Dot,1\n".encode("utf-16"), "UTF-16"),
        (b"store,it\xe9m,count\nBerlin,Echo Dot,1\n", "not valid UTF-8"),
    ],
)
def test_file_level_problems_refuse_the_whole_file(data: bytes, message: str) -> None:
    def check() -> None:
        detect_format("stock.csv", data[:8192])  # what no parser can read
        parse(data)  # what only the content shows (header, rows)

    with pytest.raises(FileRefused, match=message):
        check()


def test_header_is_case_and_whitespace_tolerant_and_a_bom_is_fine() -> None:
    rows = parse(b"\xef\xbb\xbf Store , ITEM ,Count\r\nBerlin, Echo Dot , 4 \r\n")
    (row,) = accepted(rows)
    assert decode_event(row.events[1]).count == 4  # type: ignore[union-attr]


def test_latin1_rows_are_rejected_with_the_byte_and_column_not_a_crash() -> None:
    data = b"store,item,count\nBerlin,Caf\xe9 Cr\xe8me,3\nBerlin,Echo Dot,2\n"
    rows = parse(data)
    reasons = rejected(rows)
    assert reasons[2].startswith("not valid UTF-8 (byte 0xe9 at column 11)")
    assert [r.line for r in accepted(rows)] == [3]


def test_a_very_long_line_is_rejected_without_holding_it() -> None:
    long_item = "x" * 200_000
    data = f"store,item,count\nBerlin,{long_item},1\nBerlin,Echo Dot,2\n".encode()
    rows = parse(data)
    bad = next(r for r in rows if isinstance(r, Rejected))
    assert bad.line == 2
    assert "over the 65,536-byte limit" in bad.reason
    assert len(bad.record) < 2000  # only the start of it is kept in the reason's record
    assert [r.line for r in accepted(rows)] == [3]


def test_a_long_line_at_the_end_without_a_newline_is_measured() -> None:
    lines = list(iter_lines(io.BytesIO(b"a\n" + b"b" * 1000), max_bytes=300))
    assert [(ln.number, ln.length, ln.too_long) for ln in lines] == [(1, 1, False), (2, 1000, True)]


def test_item_length_limit_and_malformed_quotes() -> None:
    data = b"store,item,count\nBerlin," + b"y" * 129 + b',1\nBerlin,"Echo Dot,1\nBerlin,"",1\n'
    reasons = rejected(parse(data))
    assert "129 characters" in reasons[2]
    assert reasons[3].startswith("malformed CSV")
    assert reasons[4] == "item is empty"


def test_unicode_items_get_stable_slugs() -> None:
    assert product_slug("Echo Dot") == "echo-dot"
    assert product_slug("  Café  Crème ") == "cafe-creme"
    assert product_slug("日本茶") == product_slug("日本茶")
    assert product_slug("日本茶").startswith("item-")
    assert product_slug("日本茶") != product_slug("緑茶")


@given(st.text(min_size=1, max_size=128))
def test_any_item_name_gives_a_valid_product_id(name: str) -> None:
    slug = product_slug(name)
    assert 1 <= len(slug) <= 128
    assert slug == product_slug(name)


def test_a_comma_free_semicolon_file_is_not_mistaken_for_rows() -> None:
    with pytest.raises(FileRefused) as caught:
        parse(b"store;item;count\n")
    assert caught.value.line == 1
    assert caught.value.record == "store;item;count"


# --- warehouse JSON lines ------------------------------------------------------------------------------


def test_warehouse_batch_good_and_bad_rows() -> None:
    rows = parse((EXAMPLES / "warehouse_inventory.jsonl").read_bytes(), "jsonl", name="w.jsonl")
    good = accepted(rows)
    assert [r.line for r in good] == [1, 2, 3, 4, 5, 13]
    product, count = (decode_event(e) for e in good[0].events)
    assert isinstance(product, Product)
    assert product.restock_threshold == 50
    assert isinstance(count, Count)
    assert (count.store_id, count.product_id, count.count) == ("wh-berlin-1", "echo-dot", 340)
    assert count.ts_ms == 1_785_571_200_000  # last_updated is the event time
    assert decode_event(good[2].events[1]).ts_ms == 1_785_571_320_500  # type: ignore[union-attr]
    assert decode_event(good[3].events[1]).product_id == "880123"  # type: ignore[union-attr]
    reasons = rejected(rows)
    assert sorted(reasons) == [6, 7, 8, 9, 10, 11, 12]
    assert "negative" in reasons[6]
    assert reasons[7] == "missing field: stock_level"
    assert "milliseconds" in reasons[8]
    assert "not a valid store id" in reasons[9]
    assert "stale" in reasons[10]
    assert "line 1" in reasons[10]
    assert "whole number" in reasons[11]
    assert reasons[12].startswith("not valid JSON")


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        ("[1, 2]", "expected a JSON object"),
        ('{"inventory_id": "i"}', "missing fields: product_id, warehouse_id"),
        (
            '{"inventory_id": true, "product_id": "p", "warehouse_id": "w", "stock_level": 1, '
            '"restock_threshold": 1, "last_updated": 1785571200}',
            "inventory_id must be",
        ),
        (
            '{"inventory_id": "i", "product_id": "p", "warehouse_id": "w", "stock_level": 1.5, '
            '"restock_threshold": 1, "last_updated": 1785571200}',
            "stock_level must be a whole number",
        ),
        (
            '{"inventory_id": "i", "product_id": "p", "warehouse_id": "w", "stock_level": 1, '
            '"restock_threshold": -1, "last_updated": 1785571200}',
            "restock_threshold -1 is negative",
        ),
        (
            '{"inventory_id": "i", "product_id": "p", "warehouse_id": "w", "stock_level": 1, '
            '"restock_threshold": 1, "last_updated": 12345}',
            "before 2000-01-01",
        ),
        (
            '{"inventory_id": "i", "product_id": "p", "warehouse_id": "w", "stock_level": 1, '
            '"restock_threshold": 1, "last_updated": 1790000000}',
            "in the future",
        ),
        (
            '{"inventory_id": "i", "product_id": "p", "warehouse_id": "w", "stock_level": 1, '
            '"restock_threshold": 1, "last_updated": "yesterday"}',
            "last_updated must be epoch seconds",
        ),
    ],
)
def test_warehouse_rows_are_checked_field_by_field(record: str, reason: str) -> None:
    (row,) = parse(record.encode() + b"\n", "jsonl")
    assert isinstance(row, Rejected)
    assert reason in row.reason


def test_a_newer_update_of_the_same_product_is_accepted() -> None:
    base = '{"inventory_id": "i", "product_id": "p", "warehouse_id": "w", "restock_threshold": 1'
    data = (
        f'{base}, "stock_level": 5, "last_updated": 1785571200}}\n'
        f'{base}, "stock_level": 3, "last_updated": 1785574800}}\n'
    ).encode()
    assert [r.line for r in accepted(parse(data, "jsonl"))] == [1, 2]


def test_format_is_chosen_by_name_then_by_content() -> None:
    assert detect_format("a.CSV", b"{") == "csv"
    assert detect_format("a.jsonl", b"store") == "jsonl"
    assert detect_format("upload", b'\xef\xbb\xbf {"a":1}') == "jsonl"
    assert detect_format("upload", b"store,item,count") == "csv"
    assert detect_format("a.csv", b"x", "jsonl") == "jsonl"


# --- figures -----------------------------------------------------------------------------------------


def test_emf_record_has_the_cloudwatch_shape(capsys: pytest.CaptureFixture[str]) -> None:
    report = IngestReport("s3://b/incoming/x.csv", "x.csv", "csv", "h", processed=9, succeeded=6, rejected=3)
    record = emf_record(report, 1_785_744_000_000)
    directive = record["_aws"]["CloudWatchMetrics"][0]
    assert directive["Namespace"] == "shelfstream"
    assert directive["Dimensions"] == [["FileType"]]
    for metric in directive["Metrics"]:
        assert metric["Unit"] == "Count"
        assert metric["Name"] in record  # every metric has its value at the top level
    assert (record["FileType"], record["RowsProcessed"], record["RowsRejected"]) == ("csv", 9, 3)
    emit_metrics(report)
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert orjson.loads(line)["RowsSucceeded"] == 6


# --- the command line, before any AWS call ------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "the file is empty"),
        (b"shop,product,qty\nBerlin,Echo Dot,1\n", "the header must be store,item,count"),
        (b"\x00\x01\x02binary", "binary"),
    ],
)
def test_ingest_refuses_a_bad_file_in_one_line_exit_2(
    tmp_path: Path, content: bytes, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "stock.csv"
    path.write_bytes(content)
    assert main(["ingest", str(path)]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert len(err.strip().splitlines()) == 1
    assert "Traceback" not in err


def test_ingest_needs_a_file_or_watch(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ingest"]) == 2
    assert "--watch" in capsys.readouterr().err
