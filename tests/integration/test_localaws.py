"""The embedded AWS: serialized Kinesis under concurrency, concurrent everything else, clean lifecycle."""

from __future__ import annotations

import asyncio
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pytest

from config import Settings
from foundation.aws.clients import aio_client, aio_session, sync_client
from foundation.aws.embedded import EmbeddedAws, KinesisSerializer, banner, serve
from foundation.errors import ShelfstreamError

pytestmark = pytest.mark.integration

PRODUCERS = 8
RECORDS_PER_PRODUCER = 400
BATCH = 20


async def test_concurrent_producers_lose_nothing(
    local_aws: EmbeddedAws, make_settings: Any, read_stream: Any
) -> None:
    settings = make_settings(aws={"shard_count": 4})
    kinesis_sync = sync_client("kinesis", settings)
    kinesis_sync.create_stream(StreamName=settings.aws.stream_name, ShardCount=settings.aws.shard_count)
    kinesis_sync.get_waiter("stream_exists").wait(
        StreamName=settings.aws.stream_name, WaiterConfig={"Delay": 1, "MaxAttempts": 30}
    )
    before = local_aws.serializer.stats
    session = aio_session()

    async def producer(p: int) -> int:
        failed = 0
        async with aio_client("kinesis", settings, session) as kinesis:
            for start in range(0, RECORDS_PER_PRODUCER, BATCH):
                entries = [
                    {
                        "Data": json.dumps({"producer": p, "seq": i}).encode(),
                        "PartitionKey": f"store-{p}-{i % 5}",
                    }
                    for i in range(start, start + BATCH)
                ]
                answer = await kinesis.put_records(StreamName=settings.aws.stream_name, Records=entries)
                failed += answer["FailedRecordCount"]
        return failed

    failures = await asyncio.gather(*(producer(p) for p in range(PRODUCERS)))
    assert failures == [0] * PRODUCERS

    async with aio_client("kinesis", settings, session) as kinesis:
        by_shard = await read_stream(kinesis, settings.aws.stream_name)

    seen = Counter(
        (body["producer"], body["seq"])
        for records in by_shard.values()
        for body in (json.loads(record["Data"]) for record in records)
    )
    expected = {(p, i) for p in range(PRODUCERS) for i in range(RECORDS_PER_PRODUCER)}
    assert set(seen) == expected, f"missing {len(expected - set(seen))} records"
    assert all(count == 1 for count in seen.values()), "a record arrived more than once"
    assert sum(1 for records in by_shard.values() if records) > 1
    for records in by_shard.values():  # each shard's sequence numbers are distinct and ascending
        sequence = [int(record["SequenceNumber"]) for record in records]
        assert sequence == sorted(set(sequence))

    after = local_aws.serializer.stats
    assert after.kinesis_requests - before.kinesis_requests >= PRODUCERS * RECORDS_PER_PRODUCER // BATCH
    # The lock really was contended: requests arrived concurrently and were made to wait their turn.
    assert after.contended > before.contended


class _Probe:
    """A stand-in WSGI app that counts how many requests are inside it at once, body included."""

    def __init__(self, barrier: threading.Barrier | None = None) -> None:
        self.active = 0
        self.peak = 0
        self._lock = threading.Lock()
        self._barrier = barrier

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        self._enter()
        start_response("200 OK", [("Content-Type", "application/json")])
        return self._body()

    def _enter(self) -> None:
        with self._lock:
            self.active += 1
            self.peak = max(self.peak, self.active)

    def _body(self) -> Iterator[bytes]:
        try:
            if self._barrier is not None:
                self._barrier.wait(timeout=10)  # only passes if requests really run side by side
            time.sleep(0.02)  # widen the window in which an unserialized request would overlap
            yield b"{}"
        finally:
            with self._lock:
                self.active -= 1


def _hammer(app: KinesisSerializer, target: str, threads: int) -> None:
    def one() -> None:
        body = app({"HTTP_X_AMZ_TARGET": target}, lambda status, headers: None)
        assert b"".join(body) == b"{}"

    workers = [threading.Thread(target=one) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=15)
    assert not any(worker.is_alive() for worker in workers)


def test_serializer_runs_kinesis_one_at_a_time_including_the_body() -> None:
    probe = _Probe()
    app = KinesisSerializer(probe)
    _hammer(app, "Kinesis_20131202.PutRecords", threads=8)
    assert probe.peak == 1
    assert app.stats.kinesis_requests == 8
    assert app.stats.contended > 0


def test_serializer_leaves_other_services_concurrent() -> None:
    probe = _Probe(barrier=threading.Barrier(4))
    app = KinesisSerializer(probe)
    _hammer(app, "AmazonSQS.ReceiveMessage", threads=4)
    assert probe.peak == 4
    assert app.stats.kinesis_requests == 0


def test_long_poll_does_not_block_other_requests(local_aws: EmbeddedAws, settings: Settings) -> None:
    sqs = sync_client("sqs", settings)
    url = sqs.create_queue(QueueName=settings.aws.restock_queue)["QueueUrl"]
    received: list[dict[str, Any]] = []

    def poll() -> None:
        answer = sync_client("sqs", settings).receive_message(QueueUrl=url, WaitTimeSeconds=5)
        received.extend(answer.get("Messages", []))

    poller = threading.Thread(target=poll)
    poller.start()
    time.sleep(0.3)  # let the poll reach the server first
    # Other services and the same queue are served while the poll is parked.
    sync_client("kinesis", settings).list_streams()
    sqs.send_message(QueueUrl=url, MessageBody="wake up")
    poller.join(timeout=10)
    assert [message["Body"] for message in received] == ["wake up"]


def _port_is_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_start_stop_and_endpoint() -> None:
    aws = EmbeddedAws()
    with pytest.raises(ShelfstreamError):
        _ = aws.endpoint
    with aws:
        assert aws.endpoint == f"http://127.0.0.1:{aws.port}"
        assert _port_is_open(aws.port)
        port = aws.port
    assert not aws.running
    assert not _port_is_open(port)


def test_port_in_use_is_one_clear_error(local_aws: EmbeddedAws) -> None:
    with pytest.raises(ShelfstreamError, match=f"127.0.0.1:{local_aws.port}"):
        EmbeddedAws(local_aws.port).start()


def test_serve_until_stop_event(settings: Settings) -> None:
    stop = threading.Event()
    announced: list[str] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            serve(None, settings, announced.append, stop=stop)
        except BaseException as exc:
            errors.append(exc)

    server = threading.Thread(target=run)
    server.start()
    deadline = time.monotonic() + 10
    while not announced and time.monotonic() < deadline and server.is_alive():
        time.sleep(0.05)
    assert announced, errors
    endpoint = announced[0].split()[4]
    assert endpoint.startswith("http://127.0.0.1:")
    assert announced[0] == banner(endpoint, settings)
    assert f"export AWS_ENDPOINT_URL={endpoint}" in announced[0]
    assert "export AWS_DEFAULT_REGION=us-east-1" in announced[0]
    port = int(endpoint.rsplit(":", 1)[1])
    assert _port_is_open(port)
    stop.set()
    server.join(timeout=10)
    assert not server.is_alive()
    assert errors == []
    assert not _port_is_open(port)


def test_serve_off_main_thread_without_stop_event_is_refused(settings: Settings) -> None:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            serve(None, settings, lambda text: None)
        except ShelfstreamError as exc:
            errors.append(exc)

    worker = threading.Thread(target=run)
    worker.start()
    worker.join(timeout=10)
    assert len(errors) == 1
    assert "stop event" in str(errors[0])


@pytest.mark.daemon
def test_local_aws_process_serves_other_processes_and_stops_on_sigterm() -> None:
    """What `shelfstream local-aws` does: serve until SIGTERM, usable from another process."""
    code = (
        "import sys\n"
        "from config import Settings\n"
        "from foundation.aws.embedded import serve\n"
        "serve(None, Settings(), lambda text: print(text, flush=True))\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        first = b""
        deadline = time.monotonic() + 20
        while b"\n" not in first and time.monotonic() < deadline:
            ready, _, _ = select.select([proc.stdout], [], [], 0.2)
            if ready:
                chunk = os.read(proc.stdout.fileno(), 4096)
                if not chunk:
                    break
                first += chunk
        line = first.decode().splitlines()[0]
        endpoint = line.split()[4]
        assert endpoint.startswith("http://127.0.0.1:")

        with pytest.MonkeyPatch.context() as mp:
            for key, value in {
                "AWS_ENDPOINT_URL": endpoint,
                "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing",
                "AWS_DEFAULT_REGION": "us-east-1",
            }.items():
                mp.setenv(key, value)
            sqs = sync_client("sqs", Settings())
            url = sqs.create_queue(QueueName="from-another-process")["QueueUrl"]
            sqs.send_message(QueueUrl=url, MessageBody="hello")
            got = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=1)["Messages"]
            assert [message["Body"] for message in got] == ["hello"]

        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=15)
        assert proc.returncode == 0, stderr.decode()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
