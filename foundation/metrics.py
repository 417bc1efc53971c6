"""Service metrics: CloudWatch Embedded Metric Format lines on stderr, and a Prometheus text endpoint.

Nothing here counts anything in the hot path: sources read the stats objects the services already keep
(processor core stats and shard statuses, sink, writer and dispatch stats) when a report is due. EMF carries
counters as the increase since the previous report (CloudWatch sums data points, so cumulative totals would
be counted again at every report); Prometheus gets the running totals, as its counters expect.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import orjson

from foundation.errors import ShelfstreamError

if TYPE_CHECKING:
    from config import Settings

log = logging.getLogger(__name__)
emf_log = logging.getLogger("foundation.metrics.emf")

NAMESPACE = "shelfstream"
PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

Kind = Literal["counter", "gauge"]


@dataclass(frozen=True)
class MetricDef:
    name: str
    unit: str
    kind: Kind
    help: str


METRICS: dict[str, MetricDef] = {
    m.name: m
    for m in (
        MetricDef("EventsProcessed", "Count", "counter", "Kinesis records read by the processor."),
        MetricDef("EventsRejected", "Count", "counter", "Records rejected as invalid (kept with a reason)."),
        MetricDef("DuplicatesIgnored", "Count", "counter", "Redelivered events that changed nothing."),
        MetricDef("LateEvents", "Count", "counter", "Events behind their window's watermark."),
        MetricDef("MillisBehindLatest", "Milliseconds", "gauge", "Lag behind the stream, max over shards."),
        MetricDef(
            "QuietShards",
            "Count",
            "gauge",
            "Open shards that read nothing for the patience and follow the others' event time.",
        ),
        MetricDef(
            "StreamQuiet",
            "Count",
            "gauge",
            "1 while every shard is silent and the stores' histories expected sales: the feed is out.",
        ),
        MetricDef("Alerts", "Count", "counter", "Alerts sent, by kind."),
        MetricDef("RestockRequests", "Count", "counter", "Restock requests sent to the restock queue."),
        MetricDef(
            "Feedback",
            "Count",
            "counter",
            "Operators' feedback events, by outcome (applied, unknown_alert, no_detector).",
        ),
        MetricDef("PutRetries", "Count", "counter", "Entries sent again after a failed put."),
        MetricDef("Throttles", "Count", "counter", "Throttled Kinesis calls or entries."),
        MetricDef("DeadLettered", "Count", "counter", "Entries given up on and kept as dead letters."),
        MetricDef(
            "RecordsFailed",
            "Count",
            "counter",
            "Stream records the processor could not apply.",
        ),
        MetricDef("Deliveries", "Count", "counter", "Restock deliveries made by the trucks."),
        MetricDef("RowsProcessed", "Count", "counter", "Rows of ingested files read."),
        MetricDef("RowsSucceeded", "Count", "counter", "Ingested rows sent to the stream."),
        MetricDef("RowsRejected", "Count", "counter", "Ingested rows rejected (kept with a reason)."),
        MetricDef("RowsErrored", "Count", "counter", "Valid ingested rows the stream would not take."),
    )
}


@dataclass(frozen=True)
class Sample:
    name: str
    value: float
    dimensions: tuple[tuple[str, str], ...] = ()


Source = Callable[[], Iterable[Sample]]


class Registry:
    """The metrics of one service: fixed dimensions (Service, Stream) plus what its sources read."""

    def __init__(self, dimensions: dict[str, str], sources: Sequence[Source] = ()) -> None:
        self.dimensions = dict(dimensions)
        self._sources = list(sources)
        self._reported: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}

    def add(self, source: Source) -> None:
        self._sources.append(source)

    def collect(self) -> list[Sample]:
        """Every sample, the same name and dimensions summed across sources (processor + trucks)."""
        totals: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        for source in self._sources:
            for sample in source():
                if sample.name not in METRICS:
                    raise ValueError(f"unknown metric {sample.name!r}")
                key = (sample.name, sample.dimensions)
                if METRICS[sample.name].kind == "gauge":
                    totals[key] = max(totals.get(key, sample.value), sample.value)
                else:
                    totals[key] = totals.get(key, 0) + sample.value
        return [Sample(name, value, dims) for (name, dims), value in totals.items()]

    def emf_records(self, ts_ms: int) -> list[dict[str, Any]]:
        """EMF records since the last call: counters as increases, gauges as they are now.

        One record per set of extra dimensions (Alerts by Kind get their own), as an EMF record holds
        one value per metric name."""
        groups: dict[tuple[tuple[str, str], ...], list[tuple[MetricDef, float]]] = {}
        for sample in self.collect():
            metric = METRICS[sample.name]
            key = (sample.name, sample.dimensions)
            value = sample.value
            if metric.kind == "counter":
                # A drop means the totals restarted (a new process reads from zero): count from there.
                previous = self._reported.get(key, 0)
                value = sample.value - previous if sample.value >= previous else sample.value
                self._reported[key] = sample.value
            groups.setdefault(sample.dimensions, []).append((metric, value))
        records = []
        for extra, values in groups.items():
            dims = {**self.dimensions, **dict(extra)}
            record: dict[str, Any] = {
                "_aws": {
                    "Timestamp": ts_ms,
                    "CloudWatchMetrics": [
                        {
                            "Namespace": NAMESPACE,
                            "Dimensions": [list(dims)],
                            "Metrics": [{"Name": m.name, "Unit": m.unit} for m, _ in values],
                        }
                    ],
                },
                **dims,
            }
            for metric, value in values:
                record[metric.name] = _number(value)
            records.append(record)
        return records

    def prometheus_text(self) -> str:
        """The Prometheus text exposition format (0.0.4), totals as they are now."""
        by_name: dict[str, list[Sample]] = {}
        for sample in self.collect():
            by_name.setdefault(sample.name, []).append(sample)
        lines: list[str] = []
        for name, samples in by_name.items():
            metric = METRICS[name]
            prom = prometheus_name(metric)
            lines.append(f"# HELP {prom} {metric.help}")
            lines.append(f"# TYPE {prom} {metric.kind}")
            for sample in samples:
                labels = {**self.dimensions, **dict(sample.dimensions)}
                text = ",".join(f'{_snake(k)}="{_escape(v)}"' for k, v in labels.items())
                lines.append(f"{prom}{{{text}}} {_number(sample.value)}")
        return "\n".join(lines) + "\n"


def prometheus_name(metric: MetricDef) -> str:
    base = f"{NAMESPACE}_{_snake(metric.name)}"
    return f"{base}_total" if metric.kind == "counter" else base


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> int | float:
    return int(value) if float(value).is_integer() else value


# --- EMF on stderr ------------------------------------------------------------------------------------


class _StderrLines(logging.Handler):
    """The message alone on whatever sys.stderr is now: EMF needs ``_aws`` at the top level, a key the
    JSON log formatter leaves out as private."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(record.getMessage() + "\n")
            sys.stderr.flush()
        except Exception:
            self.handleError(record)


def emit_emf(registry: Registry, extra: dict[str, Any] | None = None) -> None:
    """The registry's EMF records on stderr; `extra` adds context fields (not metrics) to each."""
    if not emf_log.handlers:
        emf_log.addHandler(_StderrLines())
        emf_log.propagate = False
        emf_log.setLevel(logging.INFO)
    for record in registry.emf_records(int(time.time() * 1000)):
        emf_log.info(orjson.dumps({**record, **(extra or {})}).decode())


async def report_every(registry: Registry, every_s: float, stop: asyncio.Event) -> None:
    """An EMF report every `every_s` seconds until `stop`; the service sends the last one itself, after
    its final drain, so the figures of the shutdown are in it."""
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=every_s)
        if not stop.is_set():
            emit_emf(registry)


# --- Prometheus endpoint ----------------------------------------------------------------------------


class PrometheusServer:
    """``GET /metrics`` on 127.0.0.1, served in the service's own event loop, so reading the stats
    never races the tasks that update them."""

    def __init__(self, registry: Registry, port: int, host: str = "127.0.0.1") -> None:
        self._registry = registry
        self._host = host
        self._port = port
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the metrics endpoint is not started")
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> PrometheusServer:
        try:
            self._server = await asyncio.start_server(self._handle, self._host, self._port)
        except OSError as exc:
            raise ShelfstreamError(f"metrics endpoint on {self._host}:{self._port}: {exc.strerror}") from exc
        log.info("metrics endpoint", extra={"url": f"http://{self._host}:{self.port}/metrics"})
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> PrometheusServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5)
            method, _, rest = head.split(b"\r\n", 1)[0].decode("latin-1").partition(" ")
            path = rest.split(" ", 1)[0].split("?", 1)[0]
            if method not in ("GET", "HEAD"):
                status, body, ctype = "405 Method Not Allowed", b"only GET\n", "text/plain"
            elif path != "/metrics":
                status, body, ctype = "404 Not Found", b"see /metrics\n", "text/plain"
            else:
                status, ctype = "200 OK", PROMETHEUS_CONTENT_TYPE
                body = self._registry.prometheus_text().encode()
            header = (
                f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                "Connection: close\r\n\r\n"
            )
            writer.write(header.encode() + (b"" if method == "HEAD" else body))
            await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ConnectionError):
            pass  # a client that went away or sent no request: nothing to answer
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


@contextlib.asynccontextmanager
async def observed(
    registry: Registry, settings: Settings, stop: asyncio.Event, *, emf: bool = True
) -> AsyncIterator[PrometheusServer | None]:
    """A service's metrics for the life of the block: the Prometheus endpoint when `metrics_port` is
    set, EMF reports every `metrics_every_s` and one last report on the way out (after the drain)."""
    server = (
        await PrometheusServer(registry, settings.ops.metrics_port).start()
        if settings.ops.metrics_port
        else None
    )
    reporter = (
        asyncio.create_task(report_every(registry, settings.ops.metrics_every_s, stop)) if emf else None
    )
    try:
        yield server
    finally:
        if reporter is not None:
            reporter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reporter
            emit_emf(registry)
        if server is not None:
            await server.stop()
