"""Long-running services behind the command line: each builds its clients, runs until SIGTERM or
SIGINT, then drains, flushes and checkpoints before returning."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from consumers.delivery_log import DynamoDeliveryLog
from consumers.dispatcher import Dispatcher, lease_seconds
from consumers.metrics import dispatcher_source
from foundation.clock import ScaledClock
from foundation.lifecycle import heartbeat, stop_on_signals
from foundation.metrics import Registry, observed
from processors.metrics import processor_source
from processors.stream_processor import StreamProcessor
from producers.kinesis_writer import KinesisWriter
from shelfstream.bootstrap import PROCESSOR_SERVICES, Wiring

log = logging.getLogger(__name__)


async def run_processor(wiring: Wiring) -> dict[str, Any]:
    settings, resources = wiring.settings, wiring.resources()
    stop = stop_on_signals()
    async with wiring.aio(*PROCESSOR_SERVICES) as clients:
        processor = StreamProcessor(settings, clients, resources)
        registry = Registry(
            {"Service": "process", "Stream": settings.aws.stream_name}, [processor_source(processor)]
        )
        beat = asyncio.create_task(heartbeat(settings.ops.health_file, stop))
        async with observed(registry, settings, stop):
            log.info("processor started", extra={"stream": settings.aws.stream_name})
            await processor.run(stop)
            stop.set()
            await beat
        stats = processor.stats()
        log.info(
            "processor stopped",
            extra={"records": processor.records_read(), "rejected": stats.events_rejected},
        )
        return {"records": processor.records_read(), "alerts": dict(processor.alert_counts)}


async def run_dispatcher(wiring: Wiring) -> dict[str, Any]:
    settings, resources = wiring.settings, wiring.resources()
    stop = stop_on_signals()
    async with wiring.aio("kinesis", "sqs", "dynamodb") as clients:
        writer = KinesisWriter(clients["kinesis"], settings.aws.stream_name, settings)
        dispatcher = Dispatcher(
            settings,
            clients["sqs"],
            resources.restock_queue_url,
            writer,
            ScaledClock.wall(),
            delivery_log=DynamoDeliveryLog(
                clients["dynamodb"], resources.deliveries_table, lease_s=lease_seconds(settings)
            ),
            wait_seconds=10,
        )
        registry = Registry(
            {"Service": "dispatch", "Stream": settings.aws.stream_name},
            [dispatcher_source(dispatcher, writer)],
        )
        beat = asyncio.create_task(heartbeat(settings.ops.health_file, stop))
        async with observed(registry, settings, stop):
            log.info("dispatcher started", extra={"queue": resources.restock_queue_url})
            await dispatcher.run(stop)
            await writer.close()
            stop.set()
            await beat
        return {"deliveries": dispatcher.stats.deliveries, "duplicates": dispatcher.stats.duplicates_dropped}
