"""End-to-end latency on the embedded AWS: from an event's put to its effect visible in SQS.

Two processes: the embedded AWS (`shelfstream local-aws`, Kinesis's per-shard limits on: 5
GetRecords/s per shard), as a service of its own; and in this one the stream processor
(``StreamProcessor``) at its default settings (polling every 200 ms), the producer putting
1,000 events/s in all, and among them probes whose effects are known in advance. A probe is
a product of its own in one of a few probe stores: a stock take of 6 (threshold 5, so nothing
happens), then a sale of 1 (stock 5: a restock request on the SQS restock queue), then a sale of 5
(stock 0: an ``out_of_stock`` alert via SNS on the alerts inbox queue). Latency is from the moment
the sale is handed to the producer (its batching linger included) to the moment a receiver polling
the queue gets the message.

The background stores get a large stock take first, so their sales raise nothing and only probes
make messages.

    python -m benchmarks.latency [--duration 30] [--rate 1000] [--probes 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from config import Settings
from foundation.aws.clients import AioClients, point_at
from foundation.aws.provision import provision
from foundation.contract import format_ts
from processors.stream_processor import StreamProcessor
from producers.kinesis_writer import KinesisWriter
from shelfstream.services import PROCESSOR_SERVICES

TARGET_P99_S = 1.0
BACKGROUND_STORES = 16
BACKGROUND_PRODUCTS = 20
PROBE_STORES = 8


@dataclass
class LatencyResult:
    rate: float
    background_sent: int
    probes: int
    restock_received: int
    alert_received: int
    restock_p50_ms: float | None
    restock_p95_ms: float | None
    restock_p99_ms: float | None
    restock_max_ms: float | None
    alert_p50_ms: float | None
    alert_p95_ms: float | None
    alert_p99_ms: float | None
    alert_max_ms: float | None
    poll_interval_s: float
    read_throttles: int


class _AllSeen(asyncio.Event):
    """Set once every probe's two messages have arrived (``expected`` grows as probes are put)."""

    expected = -1

    def check(self, seen: int) -> None:
        if seen == self.expected:
            self.set()


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(1000 * ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))], 1)


def _event(event_id: str, kind: str, store: str, product: str, **fields: Any) -> bytes:
    return orjson.dumps(
        {
            "event_id": event_id,
            "type": kind,
            "store_id": store,
            "ts": format_ts(int(time.time() * 1000)),
            "product_id": product,
            **fields,
        }
    )


async def _receive(
    sqs: Any,
    url: str,
    kind: str,
    seen: dict[tuple[str, str, str], float],
    stop: asyncio.Event,
    done: _AllSeen,
) -> None:
    """Long-poll a queue; note when each probe's message of ``kind`` first arrived, delete everything."""
    while not stop.is_set():
        answer = await sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
        now = time.perf_counter()
        messages = answer.get("Messages", [])
        for message in messages:
            body = orjson.loads(message["Body"])
            store = str(body.get("store_id", ""))
            if body.get("kind", kind) == kind and store.startswith("probe-"):
                seen.setdefault((store, str(body.get("product_id", "")), kind), now)
                done.check(len(seen))
        if messages:
            await sqs.delete_message_batch(
                QueueUrl=url,
                Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)],
            )


async def _measure(settings: Settings, rate: float, duration_s: float, probes: int) -> LatencyResult:
    resources = await asyncio.to_thread(provision, settings)
    stop_processor = asyncio.Event()
    stop_receivers = asyncio.Event()
    seen: dict[tuple[str, str, str], float] = {}
    all_seen = _AllSeen()
    put_at: dict[tuple[str, str], float] = {}  # probe (store, product) -> time its first sale was put
    alert_put_at: dict[tuple[str, str], float] = {}
    async with AioClients(settings, *PROCESSOR_SERVICES) as clients:
        processor = StreamProcessor(settings, clients, resources)
        processing = asyncio.create_task(processor.run(stop_processor))
        receivers = [
            asyncio.create_task(
                _receive(
                    clients["sqs"],
                    resources.restock_queue_url,
                    "restock_request",
                    seen,
                    stop_receivers,
                    all_seen,
                )
            ),
            asyncio.create_task(
                _receive(
                    clients["sqs"], resources.alerts_queue_url, "out_of_stock", seen, stop_receivers, all_seen
                )
            ),
        ]
        writer = KinesisWriter(clients["kinesis"], settings.aws.stream_name, settings)
        run = uuid.uuid4().hex[:8]
        background = [f"bg-{i:02d}" for i in range(BACKGROUND_STORES)]
        for store in background:
            for p in range(BACKGROUND_PRODUCTS):
                await writer.put(_event(f"{run}-c-{store}-{p}", "count", store, f"p{p}", count=10**9), store)
        await writer.flush()
        await processor.wait_caught_up(timeout=60)
        loop = asyncio.get_running_loop()
        start = loop.time()
        sent = 0
        probe_every = duration_s / probes
        next_probe = start
        probe = 0
        while (now := loop.time()) - start < duration_s:
            # Probes are part of the offered rate (3 events each).
            due = int((now - start) * rate) - 3 * probe
            while sent < due:
                store = background[sent % BACKGROUND_STORES]
                data = _event(
                    f"{run}-s{sent}",
                    "sale",
                    store,
                    f"p{sent % BACKGROUND_PRODUCTS}",
                    quantity=1,
                    unit_price=1.0,
                )
                await writer.put(data, store)
                sent += 1
            while loop.time() >= next_probe and probe < probes:
                store = f"probe-{run}-{probe % PROBE_STORES}"
                product = f"p{probe}"
                key = f"{run}-{probe}"
                await writer.put(_event(f"{key}-c", "count", store, product, count=6), store)
                put_at[(store, product)] = time.perf_counter()
                await writer.put(
                    _event(f"{key}-s1", "sale", store, product, quantity=1, unit_price=1.0), store
                )
                alert_put_at[(store, product)] = time.perf_counter()
                await writer.put(
                    _event(f"{key}-s2", "sale", store, product, quantity=5, unit_price=1.0), store
                )
                probe += 1
                next_probe += probe_every
            await asyncio.sleep(0.005)
        await writer.close()
        all_seen.expected = 2 * probe
        all_seen.check(len(seen))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(all_seen.wait(), timeout=30)
        stop_receivers.set()
        stop_processor.set()
        for task in receivers:
            task.cancel()
        for task in receivers:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await processing
    restock = [
        seen[(*k, "restock_request")] - t for k, t in put_at.items() if (*k, "restock_request") in seen
    ]
    alerts = [seen[(*k, "out_of_stock")] - t for k, t in alert_put_at.items() if (*k, "out_of_stock") in seen]
    return LatencyResult(
        rate=rate,
        background_sent=sent,
        probes=probe,
        restock_received=len(restock),
        alert_received=len(alerts),
        restock_p50_ms=_percentile(restock, 0.5),
        restock_p95_ms=_percentile(restock, 0.95),
        restock_p99_ms=_percentile(restock, 0.99),
        restock_max_ms=_percentile(restock, 1.0),
        alert_p50_ms=_percentile(alerts, 0.5),
        alert_p95_ms=_percentile(alerts, 0.95),
        alert_p99_ms=_percentile(alerts, 0.99),
        alert_max_ms=_percentile(alerts, 1.0),
        poll_interval_s=settings.processor.poll_interval_s,
        read_throttles=sum(w.status.throttles for w in processor.workers.values()),
    )


def describe(r: LatencyResult) -> list[str]:
    def verdict(p99: float | None, received: int) -> str:
        ok = p99 is not None and p99 < TARGET_P99_S * 1000 and received == r.probes
        return "met" if ok else "NOT met"

    return [
        "| effect | measured | p50 ms | p95 ms | p99 ms | max ms | target p99 < 1 s |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- |",
        f"| put -> restock request on SQS | {r.restock_received:,}/{r.probes:,} | {r.restock_p50_ms} | "
        f"{r.restock_p95_ms} | {r.restock_p99_ms} | {r.restock_max_ms} | "
        f"{verdict(r.restock_p99_ms, r.restock_received)} |",
        f"| put -> out_of_stock alert on the alerts queue (SNS -> SQS) | {r.alert_received:,}/{r.probes:,} | "
        f"{r.alert_p50_ms} | {r.alert_p95_ms} | {r.alert_p99_ms} | {r.alert_max_ms} | "
        f"{verdict(r.alert_p99_ms, r.alert_received)} |",
        "",
        f"{r.background_sent + 3 * r.probes:,} events at {r.rate:,.0f}/s ({r.background_sent:,} background "
        f"sales, {r.probes:,} probes of 3 events); processor polling every {r.poll_interval_s * 1000:.0f} ms "
        f"(the default) under Kinesis's read limit of 5 GetRecords/s per shard: {r.read_throttles} reads "
        "throttled.",
    ]


@contextlib.contextmanager
def _local_aws() -> Iterator[str]:
    """`shelfstream local-aws` in a process of its own, on a free port; stopped with SIGTERM."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "shelfstream.cli", "--log-level", "WARNING", "local-aws", "--port", str(port)],
        stdout=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the embedded AWS did not start") from None
                time.sleep(0.2)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--probes", type=int, default=1000)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    uid = uuid.uuid4().hex[:8]
    settings = Settings(
        aws={"stream_name": f"lat-{uid}-events", "bucket": f"lat-{uid}-bucket", "shard_count": 2}
    )
    with _local_aws() as endpoint:
        point_at(endpoint)
        result = asyncio.run(_measure(settings, args.rate, args.duration, args.probes))
    print("\n".join(describe(result)))
    return 0 if result.restock_received == result.probes and result.alert_received == result.probes else 1


if __name__ == "__main__":
    sys.exit(main())
