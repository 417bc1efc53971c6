"""The Prometheus endpoint scraped over HTTP while a stream processor runs against the embedded AWS."""

from __future__ import annotations

import asyncio
import socket
import urllib.error
import urllib.request

import orjson
import pytest

from config import Settings
from foundation.aws.clients import AioClients
from foundation.aws.provision import Resources
from foundation.contract import format_ts
from foundation.errors import ShelfstreamError
from foundation.metrics import PROMETHEUS_CONTENT_TYPE, PrometheusServer, Registry
from processors.metrics import processor_source
from processors.stream_processor import StreamProcessor
from producers.kinesis_writer import KinesisWriter
from shelfstream.services import PROCESSOR_SERVICES

pytestmark = pytest.mark.integration

T0 = 1_785_571_200_000


def scrape(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, resp.headers["Content-Type"], resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.headers["Content-Type"], err.read().decode()


async def test_metrics_endpoint_serves_the_running_processors_figures(
    provisioned: tuple[Settings, Resources],
) -> None:
    settings, resources = provisioned
    records = [
        orjson.dumps(
            {
                "type": "sale",
                "event_id": f"e{i}",
                "store_id": f"store-{i % 3}",
                "ts": format_ts(T0 + i * 1000),
                "product_id": "milk",
                "quantity": 1,
                "unit_price": 1.0,
            }
        )
        for i in range(12)
    ]
    records += [b"{not json", b'{"type":"sale","event_id":"x","store_id":"store-1"}']
    stop = asyncio.Event()
    async with AioClients(settings, *PROCESSOR_SERVICES) as clients:
        async with KinesisWriter(clients["kinesis"], settings.aws.stream_name, settings) as writer:
            for i, data in enumerate(records):
                await writer.put(data, f"store-{i % 3}")
        processor = StreamProcessor(settings, clients, resources)
        registry = Registry(
            {"Service": "process", "Stream": settings.aws.stream_name}, [processor_source(processor)]
        )
        task = asyncio.create_task(processor.run(stop))
        try:
            async with PrometheusServer(registry, 0) as server:
                assert await processor.wait_caught_up(timeout=30)
                url = f"http://127.0.0.1:{server.port}"
                status, ctype, text = await asyncio.to_thread(scrape, f"{url}/metrics")
                missing, _, _ = await asyncio.to_thread(scrape, f"{url}/nothing-here")
        finally:
            stop.set()
            await asyncio.wait_for(task, 30)
    assert status == 200
    assert ctype == PROMETHEUS_CONTENT_TYPE
    assert missing == 404
    labels = f'service="process",stream="{settings.aws.stream_name}"'
    lines = text.splitlines()
    assert f"shelfstream_events_processed_total{{{labels}}} 14" in lines
    assert f"shelfstream_events_rejected_total{{{labels}}} 2" in lines
    assert "# TYPE shelfstream_millis_behind_latest gauge" in lines
    lag = [line for line in lines if line.startswith("shelfstream_millis_behind_latest{")]
    assert len(lag) == 1
    assert int(lag[0].rsplit(" ", 1)[1]) >= 0


async def test_a_taken_metrics_port_is_one_clear_error() -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        server = PrometheusServer(Registry({"Service": "process"}), taken.getsockname()[1])
        with pytest.raises(ShelfstreamError, match=r"metrics endpoint on 127\.0\.0\.1:\d+"):
            await server.start()
    finally:
        taken.close()
