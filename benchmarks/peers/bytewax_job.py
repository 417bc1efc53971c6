"""The peer job in Bytewax 0.21: a dataflow over a `FileSource`, `fold_window` with a `TumblingWindower`
and an `EventClock` (2 minutes of allowed lateness), run in one worker (`run_main`).

    python -m benchmarks.peers.bytewax_job FILE OUT_DIR
"""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path
from typing import Any

import bytewax.operators as op
import orjson
from bytewax.connectors.files import FileSource
from bytewax.dataflow import Dataflow
from bytewax.operators.windowing import EventClock, TumblingWindower, fold_window
from bytewax.testing import TestingSink, run_main

from benchmarks.peers.job import LATENESS_MS, MAX_RECORD_BYTES, WINDOW_MS, valid

_ALIGN = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def _decode(line: str) -> dict[str, Any] | None:
    if len(line) > MAX_RECORD_BYTES or not line.strip():
        return None
    try:
        ev = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    ts_ms = valid(ev)
    if ts_ms is None:
        return None
    ev["ts_ms"] = ts_ms
    return ev  # type: ignore[no-any-return]


def _first_time(seen: set[str] | None, ev: dict[str, Any]) -> tuple[set[str], list[dict[str, Any]]]:
    if seen is None:
        seen = set()
    eid = ev["event_id"]
    if eid in seen:
        return seen, []
    seen.add(eid)
    return seen, [ev]


def _when(ev: dict[str, Any]) -> dt.datetime:
    return _ALIGN + dt.timedelta(milliseconds=ev["ts_ms"])


def _fold(acc: list[float], ev: dict[str, Any]) -> list[float]:
    amount = ev["quantity"] * ev["unit_price"]
    if ev["type"] == "sale":
        acc[0] += 1
        acc[1] += ev["quantity"]
        acc[2] += amount
    else:
        acc[3] += 1
        acc[4] += amount
    return acc


def _merge(a: list[float], b: list[float]) -> list[float]:
    return [x + y for x, y in zip(a, b, strict=True)]


def _stock(on_hand: int | None, ev: dict[str, Any]) -> int:
    kind = ev["type"]
    if kind == "count":
        return int(ev["count"])
    on_hand = on_hand or 0
    return on_hand - ev["quantity"] if kind == "sale" else on_hand + ev["quantity"]


def build(path: str, windows: list[Any], stock: list[Any]) -> Dataflow:
    flow = Dataflow("shelfstream_peer")
    lines = op.input("lines", flow, FileSource(path, batch_size=1000))
    events = op.filter_map("decode_validate", lines, _decode)
    by_store = op.key_on("by_store", events, lambda ev: ev["store_id"])
    fresh = op.stateful_flat_map("dedup", by_store, _first_time)
    money = op.filter_value("sales_refunds", fresh, lambda ev: ev["type"] in ("sale", "refund"))
    clock = EventClock(_when, wait_for_system_duration=dt.timedelta(milliseconds=LATENESS_MS))
    windower = TumblingWindower(length=dt.timedelta(milliseconds=WINDOW_MS), align_to=_ALIGN)
    folded = fold_window(
        "windows", money, clock, windower, lambda: [0, 0, 0.0, 0, 0.0], _fold, _merge, ordered=False
    )
    op.output("windows_out", folded.down, TestingSink(windows))
    moves = op.filter_value("stock_moves", fresh, lambda ev: ev["type"] != "product")
    per_item = op.key_on(
        "by_store_product",
        op.map("drop_key", moves, lambda kv: kv[1]),
        lambda ev: f"{ev['store_id']}\x1f{ev['product_id']}",
    )
    final = op.fold_final("stock", per_item, lambda: None, _stock)
    op.output("stock_out", final, TestingSink(stock))
    return flow


def main(argv: list[str]) -> int:
    path, out_dir = argv
    windows: list[Any] = []
    stock: list[Any] = []
    run_main(build(path, windows, stock))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with (out / "windows.jsonl").open("wb") as fh:
        for store_id, (window_id, acc) in windows:
            start_ms = window_id * WINDOW_MS
            fh.write(
                orjson.dumps(
                    {
                        "store_id": store_id,
                        "start_ms": start_ms,
                        "sales": acc[0],
                        "units": acc[1],
                        "revenue": acc[2],
                        "refunds": acc[3],
                        "refund_amount": acc[4],
                    }
                )
                + b"\n"
            )
    inventory: dict[str, dict[str, int]] = {}
    for key, on_hand in stock:
        store_id, product_id = key.split("\x1f", 1)
        inventory.setdefault(store_id, {})[product_id] = on_hand
    (out / "inventory.json").write_bytes(orjson.dumps(inventory) + b"\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
