"""`shelfstream query`: SQL over a local archive in both key layouts (no AWS, no network)."""

from __future__ import annotations

import datetime as dt
import io
import json
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pytest

from config import Settings
from foundation.errors import UsageError
from history.archive import ArchiveFilter, LocalArchive, open_archive, partition_of
from history.query import QueryResult, plan_query, run_query, write_csv, write_json, write_table
from shelfstream.cli import main

SETTINGS = Settings()


def sale(eid: str, store: str, ts: str, qty: int = 1, price: float = 2.5, **extra: Any) -> dict[str, Any]:
    return {
        "type": "sale",
        "event_id": eid,
        "store_id": store,
        "ts": ts,
        "product_id": "milk",
        "quantity": qty,
        "unit_price": price,
        **extra,
    }


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))


def write_parquet(path: Path, records: list[dict[str, Any]]) -> None:
    """What AWS Firehose writes: Parquet with the Glue columns, ts as a string."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_suffix(".json")
    write_jsonl(staging, records)
    con = duckdb.connect()
    con.execute(
        f"COPY (SELECT * FROM read_json('{staging}', format = 'newline_delimited', "
        "columns = {'event_id': 'VARCHAR', 'type': 'VARCHAR', 'store_id': 'VARCHAR', 'ts': 'VARCHAR', "
        "'product_id': 'VARCHAR', 'quantity': 'INTEGER', 'unit_price': 'DOUBLE'})) "
        f"TO '{path}' (FORMAT parquet)"
    )
    con.close()
    staging.unlink()


@pytest.fixture
def moto_layout(tmp_path: Path) -> Path:
    """JSON lines under arrival-time folders, as the embedded AWS's Firehose writes them."""
    root = tmp_path / "moto"
    write_jsonl(
        root / "events/2026/08/03/10/archive-1-2026-08-03-10-00-00-uuid1",
        [
            sale("e1", "Berlin", "2026-08-03T09:00:00.000Z", 2, 3.0),
            sale("e2", "Berlin", "2026-08-04T09:00:00.000Z", 1, 3.0, loyalty_card="gold"),
            sale("e3", "Hamburg", "2026-08-03T10:00:00.000Z", 4, 1.5),
        ],
    )
    # Firehose delivers at least once: the same record again in another object.
    write_jsonl(
        root / "events/2026/08/03/11/archive-1-2026-08-03-11-00-00-uuid2",
        [sale("e3", "Hamburg", "2026-08-03T10:00:00.000Z", 4, 1.5)],
    )
    write_jsonl(
        root / "alerts/2026/08/03/10/alerts-1",
        [
            {
                "kind": "product_change",
                "alert_id": "pro-1",
                "store_id": "Berlin",
                "ts": "2026-08-03T09:00:00Z",
                "product_id": "milk",
                "changes": {"price": [1.0, 1.2]},
            }
        ],
    )
    return root


@pytest.fixture
def aws_layout(tmp_path: Path) -> Path:
    """Parquet under dt=/store_id= folders, as Firehose with dynamic partitioning writes them."""
    root = tmp_path / "aws"
    for day in ("2026-08-03", "2026-08-04"):
        for store in ("Berlin", "Hamburg"):
            write_parquet(
                root / f"events/dt={day}/store_id={store}/part-{store}.parquet",
                [sale(f"{store}-{day}", store, f"{day}T12:00:00.000Z", 1, 10.0)],
            )
    return root


def query(root: Path, sql: str, keep: ArchiveFilter | None = None) -> QueryResult:
    return run_query(LocalArchive(root, SETTINGS), sql, keep)


def test_the_daily_sales_example_runs_on_json_lines(moto_layout: Path) -> None:
    result = query(
        moto_layout,
        "SELECT store_id, CAST(ts AS DATE) AS day, SUM(quantity * unit_price) FROM events "
        "WHERE type = 'sale' GROUP BY 1, 2 ORDER BY 1, 2",
    )
    assert result.rows == [
        ("Berlin", dt.date(2026, 8, 3), 6.0),
        ("Berlin", dt.date(2026, 8, 4), 3.0),
        ("Hamburg", dt.date(2026, 8, 3), 6.0),  # once, though archived twice
    ]


def test_parquet_with_partitions_reads_the_same_columns(aws_layout: Path) -> None:
    result = query(aws_layout, "SELECT store_id, dt, ts, count, quantity FROM events ORDER BY 1, 2")
    assert result.rows[0] == ("Berlin", "2026-08-03", dt.datetime(2026, 8, 3, 12), None, 1)
    assert len(result.rows) == 4


def test_store_and_date_in_a_simple_where_prune_partitioned_objects(aws_layout: Path) -> None:
    result = query(
        aws_layout,
        "SELECT count(*) FROM events WHERE store_id = 'Berlin' AND CAST(ts AS DATE) >= '2026-08-04'",
    )
    assert result.rows == [(1,)]
    assert "1 of 4 objects, 3 pruned" in result.source


def test_an_or_prunes_nothing_and_still_answers(aws_layout: Path) -> None:
    result = query(aws_layout, "SELECT count(*) FROM events WHERE store_id = 'Berlin' OR quantity > 0")
    assert result.rows == [(4,)]
    assert "4 of 4 objects" in result.source
    assert "pruned" not in result.source


def test_flags_filter_rows_even_where_keys_cannot_prune(moto_layout: Path) -> None:
    keep = ArchiveFilter(stores=frozenset({"Berlin"}), since=dt.date(2026, 8, 4))
    result = query(moto_layout, "SELECT event_id FROM events", keep)
    assert result.rows == [("e2",)]
    assert "pruned" not in result.source  # arrival-time folders say nothing about stores or event dates


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("SELECT * FROM events WHERE store_id = 'a'", ArchiveFilter(stores=frozenset({"a"}))),
        (
            "SELECT * FROM events WHERE 'a' = store_id AND type = 'sale'",
            ArchiveFilter(stores=frozenset({"a"})),
        ),
        ("SELECT * FROM events WHERE store_id IN ('a', 'b')", ArchiveFilter(stores=frozenset({"a", "b"}))),
        (
            "SELECT * FROM events WHERE ts >= '2026-08-01T10:00:00Z' AND ts < '2026-08-03'",
            ArchiveFilter(since=dt.date(2026, 8, 1), until=dt.date(2026, 8, 3)),
        ),
        (
            "SELECT * FROM events WHERE CAST(ts AS DATE) BETWEEN DATE '2026-08-01' AND DATE '2026-08-07'",
            ArchiveFilter(since=dt.date(2026, 8, 1), until=dt.date(2026, 8, 7)),
        ),
        (
            "SELECT * FROM events WHERE dt = '2026-08-02'",
            ArchiveFilter(None, dt.date(2026, 8, 2), dt.date(2026, 8, 2)),
        ),
        ("SELECT * FROM windows WHERE window_start > '2026-08-02'", ArchiveFilter(since=dt.date(2026, 8, 2))),
        ("SELECT * FROM events WHERE '2026-08-02' > ts", ArchiveFilter(until=dt.date(2026, 8, 2))),
    ],
)
def test_pruning_derived_from_where(sql: str, expected: ArchiveFilter) -> None:
    table = sql.split("FROM ")[1].split()[0]
    assert plan_query(sql).prune == {table: expected}


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT * FROM events WHERE store_id = 'a' OR store_id = 'b'",
        "SELECT * FROM events e JOIN alerts a USING (store_id) WHERE e.store_id = 'a'",
        "WITH x AS (SELECT * FROM events) SELECT * FROM x WHERE store_id = 'a'",
        "SELECT * FROM events WHERE lower(store_id) = 'a'",
        "SELECT * FROM events WHERE CAST(store_id AS INTEGER) = 5",
        "SELECT * FROM events WHERE ts > now() - INTERVAL 1 DAY",
        "SELECT * FROM (SELECT * FROM events) WHERE store_id = 'a'",
        "SELECT * FROM events WHERE store_id <> 'a'",
    ],
)
def test_nothing_is_pruned_when_it_might_be_wrong(sql: str) -> None:
    assert plan_query(sql).prune == {}


def test_a_query_names_only_the_tables_it_reads() -> None:
    assert plan_query("SELECT count(*) FROM alerts").tables == ("alerts",)
    assert plan_query("SELECT 1").tables == ()
    assert set(plan_query("SELECT * FROM events JOIN windows USING (store_id)").tables) == {
        "events",
        "windows",
    }


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("DROP TABLE events", "only a SELECT"),
        ("COPY events TO 'x.csv'", "only a SELECT"),
        ("SELEC 1", "bad SQL: syntax error"),
        ("SELECT 1; SELECT 2", "exactly one"),
        ("   ", "empty SQL"),
    ],
)
def test_only_one_select_runs(sql: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        plan_query(sql)


def test_an_empty_archive_still_has_typed_tables(tmp_path: Path) -> None:
    result = query(tmp_path, "SELECT count(*), sum(quantity), max(ts) FROM events")
    assert result.rows == [(0, None, None)]


def test_unknown_fields_are_kept_as_json_columns(moto_layout: Path) -> None:
    result = query(moto_layout, "SELECT loyalty_card FROM events WHERE event_id = 'e2'")
    assert result.rows == [("gold",)]
    changes = query(moto_layout, "SELECT changes FROM alerts").rows[0][0]
    assert changes == {"price": [1.0, 1.2]}


def test_json_csv_and_table_output(moto_layout: Path) -> None:
    result = query(
        moto_layout, "SELECT event_id, ts, quantity, now() AS asked FROM events ORDER BY 1 LIMIT 2"
    )
    out = io.StringIO()
    write_json(result, out)
    rows = json.loads(out.getvalue())
    assert rows[0]["event_id"] == "e1"
    assert rows[0]["ts"] == "2026-08-03T09:00:00.000Z"
    assert rows[0]["asked"].endswith("Z")  # a zoned time comes back in UTC
    out = io.StringIO()
    write_csv(result, out)
    lines = out.getvalue().splitlines()
    assert lines[0] == "event_id,ts,quantity,asked"
    assert lines[1].startswith("e1,2026-08-03T09:00:00.000Z,2,")
    out = io.StringIO()
    write_table(result, out)
    assert "e1" in out.getvalue()
    assert "2 rows" in out.getvalue()


def test_partition_values_are_read_from_keys() -> None:
    assert partition_of("events/dt=2026-08-01/store_id=Berlin/x.parquet") == ("Berlin", dt.date(2026, 8, 1))
    assert partition_of("events/store_id=b/dt=2026-08-02/x") == ("b", dt.date(2026, 8, 2))
    assert partition_of("events/2026/08/01/10/archive-1") == (None, None)
    assert partition_of("events/dt=garbage/x") == (None, None)


def test_open_archive_materializes_on_request(moto_layout: Path) -> None:
    with open_archive(LocalArchive(moto_layout, SETTINGS), ["events"], materialize=True) as archive:
        kind = archive.con.execute(
            "SELECT table_type FROM information_schema.tables WHERE table_name = 'events'"
        )
        assert kind.fetchall() == [("BASE TABLE",)]
        assert archive.con.execute("SELECT count(*) FROM events").fetchall() == [(3,)]


# --- the command line ---------------------------------------------------------------------------------


def test_query_command_prints_json_and_names_its_source(
    moto_layout: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sql = "SELECT store_id, count(*) AS n FROM events GROUP BY 1 ORDER BY 1"
    code = main(["query", sql, "--archive", str(moto_layout), "--format", "json"])
    out, err = capsys.readouterr()
    assert code == 0
    assert json.loads(out) == [{"store_id": "Berlin", "n": 2}, {"store_id": "Hamburg", "n": 1}]
    assert f"source: local archive {moto_layout}" in err


def test_query_command_reads_the_mirror_when_no_aws_is_configured(
    moto_layout: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    assert main(["query", "SELECT 1"]) == 2
    assert "no AWS configured and no local archive" in capsys.readouterr().err
    mirror = work / ".shelfstream" / "archive"
    mirror.parent.mkdir()
    moto_layout.rename(mirror)
    assert main(["query", "SELECT count(*) FROM events", "--format", "csv", "--store", "Berlin"]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines() == ["count_star()", "2"]
    assert "no AWS configured: reading the local mirror" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["query", "SELECT nope FROM events"], "bad SQL"),
        (["query", "DELETE FROM events"], "only a SELECT"),
        (["query", "SELECT 1", "--since", "yesterday"], "--since 'yesterday' is not a date"),
        (["query", "SELECT 1", "--since", "2026-08-02", "--until", "2026-08-01"], "is after --until"),
    ],
)
def test_query_mistakes_are_one_line_and_exit_2(
    moto_layout: Path, argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*argv, "--archive", str(moto_layout)]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert len(err.strip().splitlines()) == 1


def test_a_table_into_a_pipe_keeps_every_column_whole(
    moto_layout: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Not a terminal (a pipe, a file, capsys): rich sized tables to 80 columns and cut or folded them."""
    sql = (
        "SELECT store_id, event_id, ts, type, product_id, quantity, unit_price, "
        "repeat('x', 120) AS long_note FROM events ORDER BY event_id"
    )
    assert main(["query", sql, "--archive", str(moto_layout), "--format", "table"]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if "e1" in line)
    assert "x" * 120 in row
    for cell in ("Berlin", "2026-08-03", "sale", "long_note"):
        assert cell in out
    assert all(len(line) > 160 for line in out.splitlines() if "e1" in line or "e2" in line)


def test_a_console_is_full_width_only_where_no_terminal_reads_it() -> None:
    import io

    from foundation.console import PIPE_WIDTH, make_console

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert make_console(file=io.StringIO()).width == PIPE_WIDTH
    assert make_console(file=Tty(), width=100).width == 100
    assert make_console(file=Tty()).width < PIPE_WIDTH
