"""The dispatcher's metric source: deliveries, and the puts of the writer that sends its restock events."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from consumers.dispatcher import Dispatcher
from foundation.metrics import Sample, Source


def dispatcher_source(dispatcher: Dispatcher, writer: Any) -> Source:
    """The dispatcher's deliveries and the puts of the writer that sends its restock events."""

    def read() -> Iterable[Sample]:
        yield Sample("Deliveries", dispatcher.stats.deliveries)
        yield Sample("PutRetries", writer.stats.retries)
        yield Sample("Throttles", writer.stats.throttles)
        yield Sample("DeadLettered", writer.stats.failed)

    return read
