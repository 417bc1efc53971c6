"""Metrics read from the services' own stats: the EMF records and the Prometheus text."""

from __future__ import annotations

import logging
from collections import Counter
from types import SimpleNamespace
from typing import Any

import orjson
import pytest

from consumers.dispatcher import DispatchStats
from consumers.metrics import dispatcher_source
from foundation import metrics
from foundation.metrics import Registry
from processors.core import CoreStats
from processors.metrics import processor_source
from processors.shard_worker import WorkerStatus
from processors.sinks import SinkStats
from processors.stream_silence import Quiet
from producers.kinesis_writer import WriterStats

TS = 1_785_571_200_000


class FakeProcessor:
    """The parts of StreamProcessor the metrics read, with the real stats types."""

    def __init__(self) -> None:
        self.core = CoreStats(
            events_valid=110,
            events_rejected=7,
            duplicates_ignored=3,
            late_events=2,
            alerts=Counter({"restock_request": 5, "out_of_stock": 4, "anomaly": 1}),
        )
        self.workers = {
            "shard-0": SimpleNamespace(status=WorkerStatus(records=70, millis_behind=1500, throttles=1)),
            "shard-1": SimpleNamespace(
                status=WorkerStatus(records=50, millis_behind=250, throttles=2, following=True)
            ),
            "shard-2": SimpleNamespace(
                status=WorkerStatus(records=9, millis_behind=99_000, ended=True, following=True)
            ),
        }
        self.sinks = SimpleNamespace(stats=SinkStats(entry_retries=6, dead_lettered=1, records_failed=1))
        self.silence = SimpleNamespace(state=Quiet(True, 400.0, 120.0))  # the feed is out
        self.outcomes: dict[str, int] = {}

    def stats(self) -> CoreStats:
        return self.core

    def feedback(self) -> dict[str, int]:
        return dict(self.outcomes)


def processor_registry(proc: FakeProcessor) -> Registry:
    return Registry({"Service": "process", "Stream": "events"}, [processor_source(proc)])  # type: ignore[arg-type]


def by_dims(records: list[dict[str, Any]]) -> dict[tuple[str, ...], dict[str, Any]]:
    return {tuple(r["_aws"]["CloudWatchMetrics"][0]["Dimensions"][0]): r for r in records}


def test_emf_records_carry_the_stats_with_units_and_dimensions() -> None:
    records = processor_registry(FakeProcessor()).emf_records(TS)
    groups = by_dims(records)
    assert len(records) == 3  # the main record and one per alert kind
    assert set(groups) == {("Service", "Stream"), ("Service", "Stream", "Kind")}
    main = groups[("Service", "Stream")]
    block = main["_aws"]
    assert block["Timestamp"] == TS
    (directive,) = block["CloudWatchMetrics"]
    assert directive["Namespace"] == "shelfstream"
    assert directive["Dimensions"] == [["Service", "Stream"]]
    units = {m["Name"]: m["Unit"] for m in directive["Metrics"]}
    assert units == {
        "EventsProcessed": "Count",
        "EventsRejected": "Count",
        "DuplicatesIgnored": "Count",
        "LateEvents": "Count",
        "MillisBehindLatest": "Milliseconds",
        "QuietShards": "Count",
        "StreamQuiet": "Count",
        "RestockRequests": "Count",
        "PutRetries": "Count",
        "Throttles": "Count",
        "DeadLettered": "Count",
        "RecordsFailed": "Count",
    }
    assert main["Service"] == "process"
    assert main["Stream"] == "events"
    assert main["EventsProcessed"] == 129  # every shard's records, the ended one too
    assert main["EventsRejected"] == 7
    assert main["DuplicatesIgnored"] == 3
    assert main["LateEvents"] == 2
    assert main["MillisBehindLatest"] == 1500  # max over the open shards only
    assert main["QuietShards"] == 1  # open shards following the others' event time (not the ended one)
    assert main["StreamQuiet"] == 1  # every shard silent while the stores would trade
    assert main["RestockRequests"] == 5
    assert main["PutRetries"] == 6
    assert main["Throttles"] == 3
    assert main["DeadLettered"] == 1
    assert main["RecordsFailed"] == 1
    alerts = {r["Kind"]: r for r in records if "Kind" in r}
    assert set(alerts) == {"out_of_stock", "anomaly"}
    for kind, want in (("out_of_stock", 4), ("anomaly", 1)):
        record = alerts[kind]
        assert record["Alerts"] == want
        assert record["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["Service", "Stream", "Kind"]]
        assert record["_aws"]["CloudWatchMetrics"][0]["Metrics"] == [{"Name": "Alerts", "Unit": "Count"}]
    for record in records:  # every metric named in the directive has a number at the top level
        for m in record["_aws"]["CloudWatchMetrics"][0]["Metrics"]:
            assert isinstance(record[m["Name"]], int | float)


def test_emf_counters_are_increases_and_gauges_are_current() -> None:
    proc = FakeProcessor()
    registry = processor_registry(proc)
    registry.emf_records(TS)
    proc.workers["shard-0"].status.records += 30
    proc.workers["shard-0"].status.millis_behind = 400
    proc.core.events_rejected += 2
    proc.core.alerts["anomaly"] += 3
    second = by_dims(registry.emf_records(TS + 60_000))
    main = second[("Service", "Stream")]
    assert main["EventsProcessed"] == 30
    assert main["EventsRejected"] == 2
    assert main["DuplicatesIgnored"] == 0
    assert main["MillisBehindLatest"] == 400
    assert {r["Kind"]: r["Alerts"] for r in registry.emf_records(TS) if "Kind" in r} == {
        "out_of_stock": 0,
        "anomaly": 0,
    }


def test_emit_emf_writes_one_json_line_per_record_on_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    logging.getLogger("foundation.metrics.emf").handlers.clear()
    metrics.emit_emf(processor_registry(FakeProcessor()))
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = [orjson.loads(line) for line in captured.err.splitlines()]
    assert len(lines) == 3
    assert all(line["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "shelfstream" for line in lines)


def test_dispatcher_and_processor_sources_sum_into_one_registry() -> None:
    dispatcher = SimpleNamespace(stats=DispatchStats(deliveries=12))
    writer = SimpleNamespace(stats=WriterStats(retries=4, throttles=3, failed=2))
    registry = Registry(
        {"Service": "demo", "Stream": "events"},
        [processor_source(FakeProcessor()), dispatcher_source(dispatcher, writer)],  # type: ignore[arg-type]
    )
    main = by_dims(registry.emf_records(TS))[("Service", "Stream")]
    assert main["Deliveries"] == 12
    assert main["PutRetries"] == 6 + 4
    assert main["Throttles"] == 3 + 3
    assert main["DeadLettered"] == 1 + 2


def test_prometheus_text_has_help_type_and_labelled_totals() -> None:
    proc = FakeProcessor()
    registry = processor_registry(proc)
    registry.emf_records(TS)  # EMF's increases must not change the totals Prometheus sees
    text = registry.prometheus_text()
    assert text.endswith("\n")
    lines = text.splitlines()
    assert "# TYPE shelfstream_events_processed_total counter" in lines
    assert "# TYPE shelfstream_millis_behind_latest gauge" in lines
    assert any(line.startswith("# HELP shelfstream_events_rejected_total ") for line in lines)
    labels = 'service="process",stream="events"'
    assert f"shelfstream_events_processed_total{{{labels}}} 129" in lines
    assert f"shelfstream_events_rejected_total{{{labels}}} 7" in lines
    assert f"shelfstream_millis_behind_latest{{{labels}}} 1500" in lines
    assert f'shelfstream_alerts_total{{{labels},kind="out_of_stock"}} 4' in lines
    assert f'shelfstream_alerts_total{{{labels},kind="anomaly"}} 1' in lines
    assert lines.count("# TYPE shelfstream_alerts_total counter") == 1


def test_prometheus_label_values_are_escaped() -> None:
    registry = Registry({"Service": 'a"b\\c\nd'}, [lambda: [metrics.Sample("Deliveries", 1)]])
    assert 'shelfstream_deliveries_total{service="a\\"b\\\\c\\nd"} 1' in registry.prometheus_text()


def test_an_unknown_metric_name_is_refused() -> None:
    registry = Registry({}, [lambda: [metrics.Sample("Nope", 1)]])
    with pytest.raises(ValueError, match="Nope"):
        registry.collect()


async def test_observed_reports_until_stopped_and_once_more_on_the_way_out(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """However many periodic reports there were, their increases add up to the totals, and the last
    report (after the service's drain) carries what happened after the stop."""
    import asyncio

    from config import Settings

    logging.getLogger("foundation.metrics.emf").handlers.clear()
    proc = FakeProcessor()
    stop = asyncio.Event()
    async with metrics.observed(
        processor_registry(proc), Settings(ops={"metrics_every_s": 0.01}), stop
    ) as server:
        assert server is None  # metrics_port 0: no endpoint
        seen = ""
        for _ in range(1000):  # until a periodic report is out, however busy the machine
            await asyncio.sleep(0.01)
            seen += capsys.readouterr().err
            if seen.strip():
                break
        stop.set()
        proc.workers["shard-1"].status.records += 11  # the final drain, after the stop
    lines = [orjson.loads(line) for line in (seen + capsys.readouterr().err).splitlines()]
    main = [line for line in lines if "Kind" not in line]
    assert sum(line["EventsProcessed"] for line in main) == 129 + 11
    assert main[-1]["EventsProcessed"] == 11


def test_a_shard_core_reports_its_own_figures() -> None:
    from foundation.metrics import Registry
    from processors.core import ShardCore
    from processors.metrics import core_source

    core = ShardCore()
    core.apply(b"{bad")
    core.apply(
        b'{"type":"sale","event_id":"e","store_id":"s","ts":"2026-08-01T10:00:00Z","product_id":"p",'
        b'"quantity":1,"unit_price":1.0}'
    )
    holder: list[ShardCore | None] = [core]
    registry = Registry({"Service": "processor", "Stream": "s"}, [core_source(lambda: holder[0])])
    samples = {(s.name, s.dimensions): s.value for s in registry.collect()}
    assert samples[("EventsProcessed", ())] == 2
    assert samples[("EventsRejected", ())] == 1
    assert samples[("RestockRequests", ())] == 1
    assert samples[("Alerts", (("Kind", "out_of_stock"),))] == 1
    holder[0] = None  # lease lost: nothing to report
    assert registry.collect() == []


def test_feedback_outcomes_are_a_metric_by_outcome() -> None:
    proc = FakeProcessor()
    proc.outcomes = {"applied": 3, "unknown_alert": 1}
    records = processor_registry(proc).emf_records(TS)
    outcomes = {r["Outcome"]: r["Feedback"] for r in records if "Outcome" in r}
    assert outcomes == {"applied": 3, "unknown_alert": 1}
