"""The API and the standalone dashboard feed against the embedded AWS, over the real wire protocol."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from config import Settings
from config.settings import to_env
from consumers.alerts_inbox import read_alerts
from foundation.aws.clients import AioClients, sync_client
from foundation.aws.embedded import EmbeddedAws
from foundation.aws.provision import Resources
from foundation.contract import OutOfStock, RestockRequest, encode, parse_ts, to_datetime
from processors.checkpoints import S3Checkpoints
from processors.core import ShardCore
from processors.sinks import Sinks
from shelfstream.api.app import create_app
from shelfstream.api.auth import TokenStore
from shelfstream.api.feeds import AwsFeed, ensure_dashboard_queue
from shelfstream.api.ingest import KinesisEventSink
from shelfstream.api.state import DashboardState

pytestmark = pytest.mark.integration

HQ = "integration-hq-token-0123456789"
STORE = "integration-store-token-012345"
TOKENS = {HQ: {"role": "hq"}, STORE: {"role": "store", "store_id": "store-007"}}
T0 = parse_ts("2026-08-01T10:00:00Z")


def _event(event_id: str, kind: str, store: str, minute: float = 0, **fields: Any) -> dict[str, Any]:
    ts = to_datetime(T0 + int(minute * 60_000)).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    return {"event_id": event_id, "type": kind, "store_id": store, "ts": ts, **fields}


def _sale(event_id: str, store: str, minute: float = 0) -> dict[str, Any]:
    return _event(event_id, "sale", store, minute, product_id="p-1", quantity=1, unit_price=2.0)


async def test_posted_events_are_in_the_stream_and_rejected_ones_are_kept(
    provisioned: tuple[Settings, Resources], read_stream: Callable[..., Any]
) -> None:
    settings, resources = provisioned
    batch = [
        _sale("e0", "store-007"),
        _sale("e1", "store-008"),
        {"event_id": "bad", "type": "sale"},
        _sale("e3", "store-007", 1),
        _event("e4", "count", "store-007", 2, product_id="p-1", count=12, note="extra fields travel along"),
    ]
    async with AioClients(settings, "kinesis", "s3") as clients:
        sink = KinesisEventSink(clients["kinesis"], clients["s3"], settings, resources.bucket)
        app = create_app(DashboardState(), TokenStore(TOKENS), sink, settings)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://test"
        ) as client:
            resp = await client.post(
                "/v1/events", content=orjson.dumps(batch), headers={"Authorization": f"Bearer {HQ}"}
            )
            refused = await client.post(
                "/v1/events",
                content=orjson.dumps([_sale("x", "store-008")]),
                headers={"Authorization": f"Bearer {STORE}"},
            )
        assert resp.status_code == 202, resp.text
        body = resp.json()
        assert body["accepted"] == 4
        assert [r["index"] for r in body["rejected"]] == [2]
        assert refused.status_code == 403

        # "accepted" means in the stream: read it back right away.
        shards = await read_stream(clients["kinesis"], settings.aws.stream_name)
        records = [r for rs in shards.values() for r in rs]
        assert sorted(orjson.loads(r["Data"])["event_id"] for r in records) == ["e0", "e1", "e3", "e4"]
        for r in records:
            assert r["PartitionKey"] == orjson.loads(r["Data"])["store_id"]
        store7 = [
            orjson.loads(r["Data"]) for rs in shards.values() for r in rs if r["PartitionKey"] == "store-007"
        ]
        assert [e["event_id"] for e in store7] == ["e0", "e3", "e4"]  # one store's order kept
        assert store7[2]["note"] == "extra fields travel along"

        # The rejected entry is kept with its index and reason.
        listed = await clients["s3"].list_objects_v2(
            Bucket=resources.bucket, Prefix=f"{settings.prefixes.rejected}api/"
        )
        [obj] = listed["Contents"]
        assert obj["Key"].endswith(f"{body['request_id']}.jsonl")
        got = await clients["s3"].get_object(Bucket=resources.bucket, Key=obj["Key"])
        async with got["Body"] as stream:
            [line] = (await stream.read()).splitlines()
        kept = orjson.loads(line)
        assert kept["index"] == 2
        assert "missing required field" in kept["reason"]
        assert kept["token"] == "hq"
        assert orjson.loads(kept["record"]) == batch[2]


def _core() -> ShardCore:
    core = ShardCore()
    for raw in (
        _event("c1", "count", "store-007", product_id="apples", count=2),
        _event("c2", "count", "store-007", product_id="milk", count=20),
        _sale("s1", "store-007", 1) | {"product_id": "apples"},
        _sale("s2", "store-007", 2) | {"product_id": "apples"},
    ):
        core.apply(orjson.dumps(raw))
    core.drain()
    return core


async def test_the_standalone_feed_reads_what_the_processor_left_in_aws(
    provisioned: tuple[Settings, Resources],
) -> None:
    settings, resources = provisioned
    queue_url = ensure_dashboard_queue(settings, resources.topic_arn)
    assert ensure_dashboard_queue(settings, resources.topic_arn) == queue_url  # safe to repeat
    async with AioClients(settings, "kinesis", "s3", "sqs", "sns", "firehose") as clients:
        state = DashboardState()
        feed = AwsFeed(state, settings, resources.bucket, clients["s3"], clients["sqs"], queue_url)
        sinks = Sinks(clients, settings, resources)

        # Stock: the processor's checkpoint.
        await S3Checkpoints(clients["s3"], resources.bucket, settings).save(
            "shardId-000000000000", "42", _core()
        )
        await feed.refresh_stock()
        products = state.stock["store-007"].products
        assert products["apples"].on_hand == 0
        assert products["apples"].open_request
        assert products["milk"].on_hand == 20

        # Alerts: live from the topic, through the dashboard's own queue; the inbox still has its copy.
        alert = OutOfStock(
            alert_id="oos-1",
            store_id="store-007",
            ts="2026-08-01T10:02:00.000Z",
            product_id="apples",
            on_hand=0,
        )
        await sinks.publish_alerts([alert])
        for _ in range(10):
            if await feed.receive_alerts(wait_s=1):
                break
        assert [a["alert_id"] for a in state.alerts(_hq())] == ["oos-1"]
        inbox = read_alerts(sync_client("sqs", settings), resources.alerts_queue_url, wait_s=2)
        assert [a.alert_id for a in inbox] == ["oos-1"]

        # Windows, requests and deliveries: from the archives.
        window = {
            "store_id": "store-007",
            "window": "15m",
            "kind": "tumbling",
            "window_start": "2026-08-01T10:00:00.000Z",
            "window_end": "2026-08-01T10:15:00.000Z",
            "sales": 2,
            "refunds": 0,
            "anomalies": [],
        }
        await sinks.archive_windows([orjson.dumps(window)])
        request = RestockRequest(
            alert_id="res-1",
            store_id="store-007",
            ts="2026-08-01T10:02:00.000Z",
            product_id="apples",
            on_hand=0,
            threshold=5,
            requested_quantity=40,
        )
        await sinks.archive_alerts([encode(request)])
        delivery = _event(
            "delivery-res-1",
            "restock",
            "store-007",
            30,
            product_id="apples",
            quantity=40,
            delivery_id="dlv-1",
            truck_id="truck-03",
        )
        await sinks.archive([orjson.dumps(_sale("s9", "store-007", 20)), orjson.dumps(delivery)])
        await feed.poll_archives()
        assert [w["window_end"] for w in state.windows("store-007")] == ["2026-08-01T10:15:00.000Z"]
        assert {a["alert_id"] for a in state.alerts(_hq())} == {"oos-1", "res-1"}
        assert [(d["delivery_id"], d["truck_id"], d["quantity"]) for d in state.recent_deliveries(_hq())] == [
            ("dlv-1", "truck-03", 40)
        ]
        assert state.trucks[0]["truck_id"] == "truck-03"
        assert state.trucks[0]["store_id"] == "store-007"

        published = len(state.hub._backlog)
        await feed.poll_archives()  # nothing new: nothing repeated
        await feed.refresh_stock()  # checkpoint unchanged (same ETag): not re-read
        assert len(state.hub._backlog) == published


def _hq() -> Any:
    from shelfstream.api.auth import Principal

    return Principal("hq", None, "k")


def _lines(proc: subprocess.Popen[str]) -> queue.Queue[str]:
    """The process's stdout lines as they come (a thread: a pipe's buffering defeats select)."""
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
        lines.put("")

    threading.Thread(target=pump, daemon=True).start()
    return lines


def _next_line(lines: queue.Queue[str], log: Path, timeout: float) -> str:
    line = lines.get(timeout=timeout)
    assert line, f"serve ended early: {log.read_text()[-2000:]}"
    return line


@pytest.mark.daemon
def test_shelfstream_serve_runs_standalone_and_stops_cleanly_on_sigterm(
    provisioned: tuple[Settings, Resources], local_aws: EmbeddedAws, tmp_path: Path
) -> None:
    settings, _ = provisioned
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHELFSTREAM_")}
    env.update(to_env(settings))  # this test's resource names
    env["SHELFSTREAM_API__DASHBOARD_REFRESH_S"] = "0.5"
    log = tmp_path / "serve.log"
    with log.open("w") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "shelfstream.cli", "serve", "--port", "0"],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env=env,
        )
    token = ""
    try:
        lines = _lines(proc)
        url_line = _next_line(lines, log, 60)
        token_line = _next_line(lines, log, 10)
        url = url_line.rsplit(" ", 1)[-1].strip()
        token = token_line.rsplit(" ", 1)[-1].strip()
        assert url.startswith("http://127.0.0.1:")
        with httpx.Client(base_url=url, timeout=10) as client:
            assert client.get("/v1/stores").status_code == 401
            headers = {"Authorization": f"Bearer {token}"}
            posted = client.post(
                "/v1/events", content=orjson.dumps([_sale("srv-1", "store-009")]), headers=headers
            )
            assert posted.status_code == 202
            assert posted.json()["accepted"] == 1
            assert client.get("/v1/stores", headers=headers).json() == {"stores": []}  # no checkpoint yet
            assert "sign-in-form" in client.get("/").text
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise
    err = log.read_text()
    assert proc.returncode == 0, err[-2000:]
    assert "Traceback" not in err
    assert '"path":"/v1/events"' in err.replace(" ", "")  # one structured log line per request
    assert token not in err  # the token is printed once, to the person, never logged
