"""No one event can make the archive unreadable: accepted events are archived as one compact UTF-8
line each, and `query`/`report` skip (and count) a line they cannot read instead of failing."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from config import Settings
from foundation.contract import Rejection, compact, decode_event
from history.archive import LocalArchive, open_archive
from history.query import run_query
from processors.core import CoreConfig, ShardCore
from processors.sinks.firehose import pack_lines
from shelfstream.cli import main

SETTINGS = Settings()
PRETTY = b"""{
  "type": "sale",
  "event_id": "e1",
  "store_id": "s1",
  "ts": "2026-08-01T08:00:00Z",
  "product_id": "milk",
  "quantity": 2,
  "unit_price": 1.5,
  "note": {"till": "front desk", "tags": [1, 2]}
}"""


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_a_pretty_printed_event_is_archived_as_one_compact_line_with_its_unknown_fields() -> None:
    core = ShardCore(CoreConfig())
    assert core.apply(PRETTY, "1")
    (line,) = pack_lines([compact(r) for r in core.drain().archive])
    assert line[0].count(b"\n") == 1
    assert line[0] == (
        b'{"type":"sale","event_id":"e1","store_id":"s1","ts":"2026-08-01T08:00:00Z","product_id":"milk",'
        b'"quantity":2,"unit_price":1.5,"note":{"till":"front desk","tags":[1,2]}}\n'
    )
    assert orjson.loads(line[0]) == orjson.loads(PRETTY)


@pytest.mark.parametrize(
    "raw",
    [
        b'{"type":"sale","event_id":"e1","store_id":"s1","ts":"2026-08-01T08:00:00Z","product_id":"p",'
        b'"quantity":1,"unit_price":1,"note":"caf\xe9"}',  # Latin-1 in a field nobody reads
        b'{"type":"sale","event_id":"e1","store_id":"s1","ts":"2026-08-01T08:00:00Z","product_id":"p",'
        b'"quantity":1,"unit_price":1,"note":"\\ud800"}',  # a lone surrogate: no reader takes it
    ],
)
def test_an_event_the_archive_could_not_hold_is_rejected(raw: bytes) -> None:
    assert isinstance(decode_event(raw), Rejection)
    core = ShardCore(CoreConfig())
    assert not core.apply(raw, "1")
    effects = core.drain()
    assert effects.archive == []
    assert [r.record for r in effects.rejected] == [raw]


def write_archive(root: Path) -> None:
    folder = root / "events" / "2026" / "08" / "01" / "08"
    folder.mkdir(parents=True)
    good = [
        orjson.dumps(
            {
                "type": "sale",
                "event_id": f"e{i}",
                "store_id": "s1",
                "ts": "2026-08-01T08:00:00Z",
                "product_id": "milk",
                "quantity": 1,
                "unit_price": 2.0,
            }
        )
        for i in range(3)
    ]
    # What an older processor archived as it came: a pretty-printed event, a raw non-UTF-8 line.
    lines = [good[0], PRETTY, good[1], b'{"event_id":"x\xff","type":"sale"}', good[2]]
    (folder / "part-1").write_bytes(b"\n".join(lines) + b"\n")


def test_query_skips_and_counts_lines_it_cannot_read(tmp_path: Path) -> None:
    write_archive(tmp_path)
    result = run_query(LocalArchive(tmp_path, SETTINGS), "SELECT count(*) AS n FROM events")
    assert result.rows == [(3,)]
    assert result.skipped == {"events": 11}  # the pretty event's 10 lines and the raw one
    assert result.note is not None
    assert "11 in events" in result.note


def test_query_and_report_commands_say_what_they_skipped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_archive(tmp_path)
    assert main(["query", "SELECT sum(quantity) AS units FROM events", "--archive", str(tmp_path)]) == 0
    captured = capsys.readouterr()
    assert "3" in captured.out
    assert "skipped archive lines" in captured.err
    out = tmp_path / "reports"
    assert main(["report", "--week", "2026-W31", "--archive", str(tmp_path), "--out", str(out)]) == 0
    assert "skipped archive lines" in capsys.readouterr().err
    with open_archive(LocalArchive(tmp_path, SETTINGS), ("events",), materialize=True) as archive:
        assert archive.skipped == {"events": 11}
        assert archive.con.execute("SELECT count(*) FROM events").fetchone() == (3,)
