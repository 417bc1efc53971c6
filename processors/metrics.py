"""The processor's metric sources: figures read from its core stats, shard statuses and sink stats
when a report is due (nothing is counted in the hot path)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from foundation.metrics import Sample, Source

if TYPE_CHECKING:
    from processors.core import ShardCore
    from processors.stream_processor import StreamProcessor


def processor_source(processor: StreamProcessor) -> Source:
    """The processor's figures, read from its core stats, shard statuses and sink stats."""

    def read() -> Iterable[Sample]:
        stats = processor.stats()
        workers = list(processor.workers.values())
        live = [w for w in workers if not w.status.ended]
        sinks = processor.sinks.stats
        yield Sample("EventsProcessed", sum(w.status.records for w in workers))
        yield Sample("EventsRejected", stats.events_rejected)
        yield Sample("DuplicatesIgnored", stats.duplicates_ignored)
        yield Sample("LateEvents", stats.late_events)
        yield Sample("MillisBehindLatest", max((w.status.millis_behind for w in live), default=0))
        yield Sample("QuietShards", sum(w.status.following for w in live))
        yield Sample("StreamQuiet", int(processor.silence.state.quiet))
        yield Sample("RestockRequests", stats.alerts.get("restock_request", 0))
        for kind, count in sorted(stats.alerts.items()):
            if kind != "restock_request":
                yield Sample("Alerts", count, (("Kind", kind),))
        for outcome, n in sorted(processor.feedback().items()):
            yield Sample("Feedback", n, (("Outcome", outcome),))
        yield Sample("PutRetries", sinks.entry_retries)
        yield Sample("Throttles", sum(w.status.throttles for w in workers))
        yield Sample("DeadLettered", sinks.dead_lettered)
        yield Sample("RecordsFailed", sinks.records_failed)

    return read


def core_source(core: Callable[[], ShardCore | None]) -> Source:
    """One shard core's figures (the KCL record processor, which has a core per process)."""

    def read() -> Iterable[Sample]:
        current = core()
        if current is None:
            return
        stats = current.stats
        yield Sample("EventsProcessed", stats.events_read)
        yield Sample("EventsRejected", stats.events_rejected)
        yield Sample("DuplicatesIgnored", stats.duplicates_ignored)
        yield Sample("LateEvents", stats.late_events)
        yield Sample("RestockRequests", stats.alerts.get("restock_request", 0))
        for kind, count in sorted(stats.alerts.items()):
            if kind != "restock_request":
                yield Sample("Alerts", count, (("Kind", kind),))
        for outcome, n in sorted(current.feedback_outcomes().items()):
            yield Sample("Feedback", n, (("Outcome", outcome),))

    return read
