"""The peer job in Pathway 0.33: `pw.io.jsonlines` in static mode, `windowby` with
`pw.temporal.tumbling` per store (`instance`), `common_behavior(cutoff=2 min)`, run by `pw.run()`.

Pathway works on tables, not on a sequence: a static run sees the whole file as one batch, so no
event is late (the cutoff only drops data in streaming mode), and there is no stream order. Stock
is therefore folded per (store, product) in event-time order (ts, then the line's position among
that product's moves is not known): where a stock take and a sale share a millisecond, the order
may differ from the stream's.

    python -m benchmarks.peers.pathway_job FILE OUT_DIR
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import orjson
import pathway as pw

from benchmarks.peers.job import LATENESS_MS, WINDOW_MS


class EventSchema(pw.Schema):
    event_id: str
    store_id: str
    ts: str
    type: str
    product_id: str | None = pw.column_definition(default_value=None)
    quantity: int | None = pw.column_definition(default_value=None)
    unit_price: float | None = pw.column_definition(default_value=None)
    count: int | None = pw.column_definition(default_value=None)


def _fold_stock(moves: tuple[tuple[float, int, int], ...]) -> int:
    on_hand = 0
    for _, kind, amount in moves:  # sorted by event time
        on_hand = amount if kind == 0 else on_hand + amount
    return on_hand


def build(path: str, out: Path) -> None:
    raw = pw.io.jsonlines.read(path, schema=EventSchema, mode="static")
    this = pw.this
    ok_quantity = pw.coalesce(this.quantity, 0) >= 1
    ok_price = pw.coalesce(this.unit_price, -1.0) >= 0.0
    ok_count = pw.coalesce(this.count, -1) >= 0
    valid = raw.filter(
        (this.event_id.str.len() >= 1)
        & (this.event_id.str.len() <= 128)
        & (this.store_id.str.len() >= 1)
        & (this.store_id.str.len() <= 64)
        & this.product_id.is_not_none()
        & (
            (((this.type == "sale") | (this.type == "refund")) & ok_quantity & ok_price)
            | ((this.type == "restock") & ok_quantity)
            | ((this.type == "count") & ok_count)
            | (this.type == "product")
        )
    )
    timed = valid.select(
        *this,
        ts_ms=pw.cast(int, this.ts.dt.strptime("%Y-%m-%dT%H:%M:%S.%fZ").dt.timestamp(unit="ms")),
    )
    # Repeated (store_id, event_id): one row per pair.
    events = timed.groupby(this.store_id, this.event_id).reduce(
        this.store_id,
        this.event_id,
        type=pw.reducers.any(this.type),
        ts_ms=pw.reducers.any(this.ts_ms),
        product_id=pw.reducers.any(this.product_id),
        quantity=pw.reducers.any(this.quantity),
        unit_price=pw.reducers.any(this.unit_price),
        count=pw.reducers.any(this.count),
    )
    money = events.filter((this.type == "sale") | (this.type == "refund")).select(
        this.store_id,
        this.ts_ms,
        sale=pw.if_else(this.type == "sale", 1, 0),
        units=pw.if_else(this.type == "sale", pw.unwrap(this.quantity), 0),
        revenue=pw.if_else(this.type == "sale", pw.unwrap(this.quantity) * pw.unwrap(this.unit_price), 0.0),
        refund=pw.if_else(this.type == "refund", 1, 0),
        refund_amount=pw.if_else(
            this.type == "refund", pw.unwrap(this.quantity) * pw.unwrap(this.unit_price), 0.0
        ),
    )
    windows = money.windowby(
        money.ts_ms,
        window=pw.temporal.tumbling(duration=WINDOW_MS),
        instance=money.store_id,
        behavior=pw.temporal.common_behavior(cutoff=LATENESS_MS),
    ).reduce(
        store_id=pw.this._pw_instance,
        start_ms=pw.this._pw_window_start,
        sales=pw.reducers.sum(pw.this.sale),
        units=pw.reducers.sum(pw.this.units),
        revenue=pw.reducers.sum(pw.this.revenue),
        refunds=pw.reducers.sum(pw.this.refund),
        refund_amount=pw.reducers.sum(pw.this.refund_amount),
    )
    moves = events.filter(this.type != "product").select(
        this.store_id,
        this.product_id,
        move=pw.make_tuple(
            this.ts_ms,
            pw.if_else(this.type == "count", 0, 1),
            pw.if_else(
                this.type == "count",
                pw.unwrap(this.count),
                pw.if_else(this.type == "sale", -pw.unwrap(this.quantity), pw.unwrap(this.quantity)),
            ),
        ),
    )
    stock = moves.groupby(this.store_id, this.product_id).reduce(
        this.store_id,
        this.product_id,
        on_hand=pw.apply_with_type(_fold_stock, int, pw.reducers.sorted_tuple(this.move)),
    )
    pw.io.jsonlines.write(windows, str(out / "pathway-windows.jsonl"))
    pw.io.jsonlines.write(stock, str(out / "pathway-stock.jsonl"))


def _rows(path: Path) -> list[dict[str, Any]]:
    """Pathway's output stream (with `time` and `diff` columns) reduced to the rows that remain."""
    rows: dict[bytes, dict[str, Any]] = {}
    counts: dict[bytes, int] = {}
    for line in path.read_bytes().splitlines():
        row = orjson.loads(line)
        diff = row.pop("diff")
        row.pop("time", None)
        key = orjson.dumps(row, option=orjson.OPT_SORT_KEYS)
        counts[key] = counts.get(key, 0) + diff
        rows[key] = row
    return [rows[k] for k, n in counts.items() if n > 0]


def main(argv: list[str]) -> int:
    path, out_dir = argv
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    build(path, out)
    pw.run(monitoring_level=pw.MonitoringLevel.NONE)
    with (out / "windows.jsonl").open("wb") as fh:
        for row in _rows(out / "pathway-windows.jsonl"):
            fh.write(orjson.dumps(row) + b"\n")
    inventory: dict[str, dict[str, int]] = {}
    for row in _rows(out / "pathway-stock.jsonl"):
        inventory.setdefault(row["store_id"], {})[row["product_id"]] = row["on_hand"]
    (out / "inventory.json").write_bytes(orjson.dumps(inventory) + b"\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
