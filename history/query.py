"""`shelfstream query SQL`: DuckDB SQL over the archive (tables `events`, `windows`, `alerts`).

Only a single SELECT runs (DuckDB serializes nothing else to JSON, which is how we check). Objects are
pruned by store and date in two ways, both honest about their limits:
- `--store`, `--since`, `--until` filter rows and prune objects;
- a query on one table whose WHERE is an AND of simple terms (``store_id = 'x'``, ``store_id IN (...)``,
  comparisons and BETWEEN on the time column or ``dt``, with constants) prunes objects; anything else
  (OR, joins, CTEs, functions of the column) prunes nothing and reads every object.
Pruning only ever applies to keys that carry ``store_id=``/``dt=`` (the AWS layout).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import datetime as dt
import decimal
import logging
import re
import uuid
from dataclasses import dataclass, field, replace
from typing import IO, Any, Final

import duckdb
import orjson

from foundation.errors import ShelfstreamError, UsageError
from history.archive import (
    TABLES,
    Archive,
    ArchiveFilter,
    ArchiveSource,
    new_connection,
    open_archive,
    unreadable_json,
)

log = logging.getLogger(__name__)

# DuckDB errors that mean the SQL itself is wrong (exit 2), as opposed to a failure reading data.
_USER_ERRORS: Final = (
    duckdb.ParserException,
    duckdb.BinderException,
    duckdb.CatalogException,
    duckdb.ConversionException,
    duckdb.InvalidInputException,
    duckdb.NotImplementedException,
    duckdb.PermissionException,
    duckdb.OutOfRangeException,
)
_TIME_COLUMNS: Final = {
    "events": ("ts", "dt"),
    "windows": ("window_start", "dt"),
    "alerts": ("ts", "dt"),
    "rejected": ("kept_at", "dt"),
    "kpis_daily": ("day", "dt"),
    "kpis_store_daily": ("day", "dt"),
}
_FLIP: Final = {
    "COMPARE_GREATERTHAN": "COMPARE_LESSTHAN",
    "COMPARE_GREATERTHANOREQUALTO": "COMPARE_LESSTHANOREQUALTO",
    "COMPARE_LESSTHAN": "COMPARE_GREATERTHAN",
    "COMPARE_LESSTHANOREQUALTO": "COMPARE_GREATERTHANOREQUALTO",
    "COMPARE_EQUAL": "COMPARE_EQUAL",
}


@dataclass(frozen=True)
class QueryPlan:
    """What a query needs: the archive tables it names, and object pruning derived from its WHERE."""

    tables: tuple[str, ...]
    prune: dict[str, ArchiveFilter]


@dataclass(frozen=True)
class QueryResult:
    columns: list[str]
    rows: list[tuple[Any, ...]]
    source: str
    skipped: dict[str, int] = field(default_factory=dict)  # unreadable archive lines, per table
    note: str | None = None


def plan_query(sql: str) -> QueryPlan:
    """Check that ``sql`` is one SELECT and find what it reads; raises UsageError otherwise."""
    if not sql.strip():
        raise UsageError('empty SQL: give a SELECT, e.g. "SELECT count(*) FROM events"')
    con = new_connection()
    try:
        serialized = con.execute("SELECT json_serialize_sql(?)", [sql]).fetchall()[0][0]
    finally:
        con.close()
    tree = orjson.loads(serialized)
    if tree.get("error"):
        message = str(tree.get("error_message", "")).strip()
        if tree.get("error_type") == "parser":
            raise UsageError(f"bad SQL: {message}")
        raise UsageError(f"only a SELECT query can run here ({message})")
    statements = tree.get("statements", [])
    if len(statements) != 1:
        raise UsageError(f"give exactly one SELECT statement, not {len(statements)}")
    names = tuple(t for t in TABLES if re.search(rf"\b{t}\b", sql, re.IGNORECASE))
    return QueryPlan(names, derive_pruning(statements[0].get("node", {})))


def derive_pruning(node: dict[str, Any]) -> dict[str, ArchiveFilter]:
    """Store/date limits implied by a simple single-table WHERE; {} when nothing can be derived safely."""
    if node.get("type") != "SELECT_NODE" or _has_ctes(node):
        return {}
    source = node.get("from_table") or {}
    table = str(source.get("table_name", "")).lower()
    if source.get("type") != "BASE_TABLE" or table not in TABLES or source.get("schema_name"):
        return {}
    where = node.get("where_clause")
    if not where:
        return {}
    limits = ArchiveFilter()
    for term in _conjuncts(where):
        limits = limits.narrowed(_term_limits(term, _TIME_COLUMNS[table]))
    return {} if limits.unlimited else {table: limits}


def _has_ctes(node: dict[str, Any]) -> bool:
    ctes = node.get("cte_map") or {}
    return bool(ctes.get("map")) if isinstance(ctes, dict) else bool(ctes)


def _conjuncts(expr: dict[str, Any]) -> list[dict[str, Any]]:
    if expr.get("type") == "CONJUNCTION_AND":
        return [term for child in expr.get("children", []) for term in _conjuncts(child)]
    return [expr]


def _column(expr: dict[str, Any]) -> str | None:
    """The column an expression is, looking through casts (``CAST(ts AS DATE)``)."""
    while expr.get("class") == "CAST":
        expr = expr.get("child") or {}
    if expr.get("class") == "COLUMN_REF":
        names = expr.get("column_names") or []
        return str(names[-1]).lower() if names else None
    return None


def _constant(expr: dict[str, Any]) -> str | None:
    while expr.get("class") == "CAST":
        expr = expr.get("child") or {}
    if expr.get("class") != "CONSTANT":
        return None
    literal = expr.get("literal")
    if isinstance(literal, dict) and literal.get("text") is not None:
        return str(literal["text"])
    value = expr.get("value")
    if isinstance(value, dict) and value.get("value") is not None and not value.get("is_null"):
        return str(value["value"])
    return None


def _day(text: str | None) -> dt.date | None:
    if text is None:
        return None
    try:
        return dt.date.fromisoformat(text.strip()[:10])
    except ValueError:
        return None


def _term_limits(term: dict[str, Any], time_columns: tuple[str, ...]) -> ArchiveFilter:
    kind = str(term.get("type", ""))
    if kind == "COMPARE_IN":
        children = term.get("children") or []
        if children and children[0].get("class") == "COLUMN_REF" and _column(children[0]) == "store_id":
            values = [_constant(c) for c in children[1:]]
            if values and all(v is not None for v in values):
                return ArchiveFilter(stores=frozenset(str(v) for v in values))
        return ArchiveFilter()
    if kind == "COMPARE_BETWEEN":
        if _column(term.get("input") or {}) in time_columns:
            low, high = _day(_constant(term.get("lower") or {})), _day(_constant(term.get("upper") or {}))
            return ArchiveFilter(since=low, until=high)
        return ArchiveFilter()
    if kind not in _FLIP:
        return ArchiveFilter()
    left, right = term.get("left") or {}, term.get("right") or {}
    if _column(left) is None:
        left, right, kind = right, left, _FLIP[kind]
    column, value = _column(left), _constant(right)
    if column is None or value is None:
        return ArchiveFilter()
    if column == "store_id":
        # Only the bare column: through a cast, '05' and '5' could compare equal.
        if kind == "COMPARE_EQUAL" and left.get("class") == "COLUMN_REF":
            return ArchiveFilter(stores=frozenset({value}))
        return ArchiveFilter()
    if column not in time_columns or (day := _day(value)) is None:
        return ArchiveFilter()
    if kind == "COMPARE_EQUAL":
        return ArchiveFilter(since=day, until=day)
    if kind in ("COMPARE_GREATERTHAN", "COMPARE_GREATERTHANOREQUALTO"):
        return ArchiveFilter(since=day)
    return ArchiveFilter(until=day)  # < or <=: the day of the bound itself may still hold rows


def run_query(source: ArchiveSource, sql: str, keep: ArchiveFilter | None = None) -> QueryResult:
    """Run `sql` over the archive. A line DuckDB cannot read (an archive written before events were
    compacted, a file put there by hand) does not fail the query: it is read again, skipping and
    counting such lines (``QueryResult.skipped``)."""
    plan = plan_query(sql)
    try:
        with open_archive(source, plan.tables, keep, prune=plan.prune) as archive:
            return execute(archive, sql)
    except (UsageError, ShelfstreamError) as exc:
        if not unreadable_json(exc):
            raise
        log.warning("archive has unreadable lines; querying again, skipping them")
    with open_archive(source, plan.tables, keep, prune=plan.prune, tolerant=True) as archive:
        return replace(execute(archive, sql), skipped=dict(archive.skipped), note=archive.skipped_note())


def execute(archive: Archive, sql: str) -> QueryResult:
    """Run one SELECT; times with a time zone come back as UTC timestamps, JSON columns as values."""
    statement = sql.strip().rstrip(";").strip()
    try:
        described = archive.con.execute(f"DESCRIBE {statement}").fetchall()
        names = [str(row[0]) for row in described]
        types = [str(row[1]) for row in described]
        if any(t.endswith("WITH TIME ZONE") for t in types):
            # Converting zoned times to Python needs pytz; naive UTC is what the contract shows anyway.
            columns = ", ".join(
                f"CAST(#{i} AS TIMESTAMP) AS {_quote(n)}" if t == "TIMESTAMP WITH TIME ZONE" else f"#{i}"
                for i, (n, t) in enumerate(zip(names, types, strict=True), start=1)
            )
            statement = f"SELECT {columns} FROM ({statement}) AS q"
        rows = archive.con.execute(statement).fetchall()
    except _USER_ERRORS as exc:
        raise UsageError(f"bad SQL: {_one_line(exc)}") from exc
    except duckdb.Error as exc:
        raise ShelfstreamError(f"query failed: {_one_line(exc)}") from exc
    json_columns = [i for i, t in enumerate(types) if t == "JSON"]
    if json_columns:
        rows = [_decode_json(row, json_columns) for row in rows]
    return QueryResult(names, rows, archive.describe())


def _decode_json(row: tuple[Any, ...], columns: list[int]) -> tuple[Any, ...]:
    values = list(row)
    for i in columns:
        if isinstance(values[i], str):
            with contextlib.suppress(orjson.JSONDecodeError):
                values[i] = orjson.loads(values[i])
    return tuple(values)


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _one_line(exc: BaseException) -> str:
    text = " ".join(line.strip() for line in str(exc).strip().splitlines() if line.strip())
    return text[:500] or type(exc).__name__


# --- output ------------------------------------------------------------------------------------------


def plain(value: Any) -> Any:
    """A value as JSON or CSV shows it (times in the contract's RFC 3339 UTC form)."""
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(dt.UTC).replace(tzinfo=None)
        return value.isoformat(timespec="milliseconds") + "Z"
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    return value


def write_json(result: QueryResult, out: IO[str]) -> None:
    names = unique_names(result.columns)
    rows = [dict(zip(names, (plain(v) for v in row), strict=True)) for row in result.rows]
    out.write(orjson.dumps(rows, option=orjson.OPT_NON_STR_KEYS).decode() + "\n")


def unique_names(columns: list[str]) -> list[str]:
    """Column names as JSON keys: a repeated name gets _1, _2 (as DuckDB names them in a subquery)."""
    seen: set[str] = set()
    names = []
    for name in columns:
        candidate, n = name, 0
        while candidate in seen:
            n += 1
            candidate = f"{name}_{n}"
        seen.add(candidate)
        names.append(candidate)
    return names


def write_csv(result: QueryResult, out: IO[str]) -> None:
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(result.columns)
    for row in result.rows:
        writer.writerow(_cell(v) for v in row)


def _cell(value: Any) -> str:
    value = plain(value)
    if value is None:
        return ""
    if isinstance(value, list | dict):
        return orjson.dumps(value).decode()
    return str(value)


def write_table(result: QueryResult, out: IO[str]) -> None:
    from rich.table import Table

    from foundation.console import make_console

    table = Table(*result.columns, title=f"{len(result.rows):,} rows")
    for i, column in enumerate(table.columns):
        values = [row[i] for row in result.rows if row[i] is not None]
        if values and all(isinstance(v, int | float | decimal.Decimal) for v in values):
            column.justify = "right"
    for row in result.rows:
        table.add_row(*(_cell(v) if v is not None else "[dim]null[/dim]" for v in row))
    make_console(file=out, highlight=False, soft_wrap=True).print(table)


def parse_date(text: str | None, flag: str) -> dt.date | None:
    if text is None:
        return None
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise UsageError(f"{flag} {text!r} is not a date (YYYY-MM-DD)") from None


def filter_from_args(args: argparse.Namespace) -> ArchiveFilter:
    """The rows `--store`, `--since` and `--until` ask for (they prune objects too)."""
    since = parse_date(getattr(args, "since", None), "--since")
    until = parse_date(getattr(args, "until", None), "--until")
    if since is not None and until is not None and since > until:
        raise UsageError(f"--since {since} is after --until {until}")
    stores = frozenset(args.store) if getattr(args, "store", None) else None
    return ArchiveFilter(stores, since, until)
