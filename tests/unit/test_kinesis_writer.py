"""KinesisWriter against a fake client: batching limits, retries, dead letters, backpressure. No sockets."""

from __future__ import annotations

import asyncio
import json
import random
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError
from hypothesis import given, settings
from hypothesis import strategies as st

from config import Settings
from config.settings import ProducerSettings
from producers.kinesis_writer import (
    MAX_BATCH_BYTES,
    MAX_RECORD_BYTES,
    DeadLetterFile,
    KinesisWriter,
    OutRecord,
    WriterClosedError,
)

STREAM = "events"
Sent = tuple[str, bytes]
Behaviour = Callable[[int, list[Sent]], Sequence[str | None]]


class FakeKinesis:
    """Stands in for the aiobotocore client: keeps what it accepted, fails what the test says."""

    def __init__(self, behaviour: Behaviour | None = None, pause: float = 0.0) -> None:
        self.behaviour = behaviour
        self.pause = pause
        self.gates: dict[int, asyncio.Event] = {}
        self.calls: list[list[Sent]] = []
        self.stored: list[Sent] = []
        self.active = 0
        self.max_active = 0

    async def put_records(self, *, StreamName: str, Records: list[dict[str, Any]]) -> dict[str, Any]:
        assert StreamName == STREAM
        batch = [(r["PartitionKey"], r["Data"]) for r in Records]
        number = len(self.calls)
        self.calls.append(batch)
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            await asyncio.sleep(self.pause)
            if number in self.gates:
                await self.gates[number].wait()
            codes = self.behaviour(number, batch) if self.behaviour else [None] * len(batch)
        finally:
            self.active -= 1
        results: list[dict[str, Any]] = []
        for (key, data), code in zip(batch, codes, strict=True):
            if code:
                results.append({"ErrorCode": code, "ErrorMessage": "injected"})
            else:
                self.stored.append((key, data))
                results.append({"SequenceNumber": str(len(self.stored)), "ShardId": "shardId-000000000000"})
        return {"FailedRecordCount": sum(1 for c in codes if c), "Records": results}


class UnsentLog:
    def __init__(self) -> None:
        self.records: list[OutRecord] = []
        self.reasons: list[str] = []

    def __call__(self, records: Sequence[OutRecord], reason: str) -> None:
        self.records.extend(records)
        self.reasons.append(reason)


def throttled(code: str = "ProvisionedThroughputExceededException", status: int = 400) -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": "Rate exceeded"}, "ResponseMetadata": {"HTTPStatusCode": status}},
        "PutRecords",
    )


def make_settings(**overrides: Any) -> Settings:
    producers = {"max_batches_in_flight": 4, "put_max_attempts": 5, "put_base_backoff_s": 0.001, **overrides}
    return Settings(producers=producers)


def writer_for(client: FakeKinesis, dead: UnsentLog | None = None, **kw: Any) -> KinesisWriter:
    overrides = {k: kw.pop(k) for k in list(kw) if k in ProducerSettings.model_fields}
    return KinesisWriter(
        client, STREAM, make_settings(**overrides), on_dead_letter=dead, rng=random.Random(0), **kw
    )


async def until(condition: Callable[[], bool]) -> None:
    """Yield to the loop until ``condition`` holds (a guard against hanging, not a timing assert)."""
    for _ in range(5000):
        if condition():
            return
        await asyncio.sleep(0.001)
    raise AssertionError("condition never became true")


def data(i: int, size: int = 0) -> bytes:
    body = json.dumps({"i": i}).encode()
    return body + b" " * max(0, size - len(body))


async def test_batches_hold_at_most_500_records_and_keep_put_order() -> None:
    fake = FakeKinesis()
    async with writer_for(fake) as writer:
        for i in range(1234):
            await writer.put(data(i), "store-1")
    assert [len(call) for call in fake.calls] == [500, 500, 234]
    assert [d for _, d in fake.stored] == [data(i) for i in range(1234)]
    assert writer.stats.records_sent == 1234
    assert writer.stats.batches == 3
    assert len(writer.stats.put_latencies) == 3


async def test_batches_stay_under_5_mib_counting_partition_keys() -> None:
    fake = FakeKinesis()
    key = "k" * 200
    record = 600_000
    async with writer_for(fake) as writer:
        for i in range(20):
            await writer.put(data(i, record), key)
    sizes = [sum(len(d) + len(k) for k, d in call) for call in fake.calls]
    assert all(size <= MAX_BATCH_BYTES for size in sizes)
    assert [len(call) for call in fake.calls] == [8, 8, 4]  # 9 x 600,200 bytes would exceed 5 MiB
    assert len(fake.stored) == 20


async def test_a_record_over_1_mib_is_refused_and_dead_lettered_not_dropped() -> None:
    fake = FakeKinesis()
    dead = UnsentLog()
    async with writer_for(fake, dead) as writer:
        exact = data(1, MAX_RECORD_BYTES - len("store-1"))
        assert await writer.put(exact, "store-1")  # exactly 1 MiB with its key: allowed
        too_big = data(2, MAX_RECORD_BYTES - len("store-1") + 1)
        assert not await writer.put(too_big, "store-1")
    assert [r.data for r in dead.records] == [too_big]
    assert "1 MiB" in dead.reasons[0]
    assert [d for _, d in fake.stored] == [exact]
    assert writer.stats.refused == writer.stats.failed == 1


@pytest.mark.parametrize("key", ["", "x" * 257])
async def test_an_unusable_partition_key_is_refused(key: str) -> None:
    fake = FakeKinesis()
    dead = UnsentLog()
    async with writer_for(fake, dead) as writer:
        assert not await writer.put(b"{}", key)
    assert "partition key" in dead.reasons[0]
    assert fake.calls == []


async def test_only_the_failed_entries_are_sent_again() -> None:
    failed_first: list[Sent] = []

    def every_third_fails_once(number: int, batch: list[Sent]) -> list[str | None]:
        if number > 0:
            return [None] * len(batch)
        codes: list[str | None] = [
            "ProvisionedThroughputExceededException" if i % 3 == 0 else None for i in range(len(batch))
        ]
        codes[1] = "InternalFailure"
        failed_first.extend(entry for entry, code in zip(batch, codes, strict=True) if code)
        return codes

    fake = FakeKinesis(every_third_fails_once)
    async with writer_for(fake, max_batches_in_flight=1) as writer:
        for i in range(300):
            await writer.put(data(i), f"store-{i % 7}")
    assert len(fake.calls) == 2
    assert fake.calls[1] == failed_first  # the retry is exactly the failed set, in order
    assert Counter(fake.stored) == Counter((f"store-{i % 7}", data(i)) for i in range(300))
    assert max(Counter(fake.stored).values()) == 1
    assert writer.stats.retries == len(failed_first) == 101
    assert writer.stats.throttles == 100  # InternalFailure is retried but is not a throttle
    assert writer.stats.records_sent == 300


async def test_a_retried_entry_goes_out_before_newer_records_of_its_key() -> None:
    def second_fails_once(number: int, batch: list[Sent]) -> list[str | None]:
        return [
            "ProvisionedThroughputExceededException" if number == 0 and d == b"a2" else None for _, d in batch
        ]

    fake = FakeKinesis(second_fails_once)
    fake.gates[0] = asyncio.Event()
    writer = writer_for(fake, max_batches_in_flight=2, linger_s=0.0)
    other = next(f"c{i}" for i in range(100) if writer.lane_of(f"c{i}") != writer.lane_of("a"))
    for item in (b"a1", b"a2", b"a3"):
        await writer.put(item, "a")
    await until(lambda: len(fake.calls) == 1)
    await writer.put(b"a4", "a")  # its lane is busy: it must wait for a2's retry
    await writer.put(b"c1", other)  # another lane carries on meanwhile
    await until(lambda: len(fake.stored) == 1)
    assert fake.stored == [(other, b"c1")]
    fake.gates[0].set()
    await writer.close()
    assert [d for k, d in fake.stored if k == "a"] == [b"a1", b"a3", b"a2", b"a4"]
    retry = next(n for n, call in enumerate(fake.calls) if call == [("a", b"a2")])
    assert all(("a", b"a4") not in call for call in fake.calls[: retry + 1])


async def test_a_throttled_call_is_retried_whole() -> None:
    def throttle_twice(number: int, batch: list[Sent]) -> list[str | None]:
        if number < 2:
            raise throttled()
        return [None] * len(batch)

    fake = FakeKinesis(throttle_twice)
    async with writer_for(fake) as writer:
        for i in range(10):
            await writer.put(data(i), "s")
    assert [len(call) for call in fake.calls] == [10, 10, 10]
    assert [d for _, d in fake.stored] == [data(i) for i in range(10)]
    assert writer.stats.throttles == 2
    assert writer.stats.call_errors == 2
    assert writer.stats.retries == 20
    assert writer.stats.failed == 0


@pytest.mark.parametrize(
    "error",
    [
        EndpointConnectionError(endpoint_url="http://127.0.0.1:1"),
        throttled("InternalFailure", 500),
        throttled("SomethingNew", 503),
        ConnectionResetError("reset by peer"),
    ],
)
async def test_connection_errors_and_5xx_are_retried(error: Exception) -> None:
    def fail_once(number: int, batch: list[Sent]) -> list[str | None]:
        if number == 0:
            raise error
        return [None] * len(batch)

    fake = FakeKinesis(fail_once)
    async with writer_for(fake) as writer:
        await writer.put(b"x", "s")
    assert fake.stored == [("s", b"x")]
    assert writer.stats.call_errors == 1
    assert writer.stats.failed == 0


async def test_a_client_mistake_is_dead_lettered_at_once() -> None:
    def missing_stream(number: int, batch: list[Sent]) -> list[str | None]:
        raise throttled("ResourceNotFoundException")

    fake = FakeKinesis(missing_stream)
    dead = UnsentLog()
    async with writer_for(fake, dead) as writer:
        await writer.put(b"x", "s")
        await writer.put(b"y", "s")
    assert len(fake.calls) == 1
    assert [r.data for r in dead.records] == [b"x", b"y"]
    assert "ResourceNotFoundException" in dead.reasons[0]
    assert writer.stats.failed == 2


async def test_after_max_attempts_the_failed_records_are_dead_lettered() -> None:
    def first_always_fails(number: int, batch: list[Sent]) -> list[str | None]:
        return ["ProvisionedThroughputExceededException" if d == b"doomed" else None for _, d in batch]

    fake = FakeKinesis(first_always_fails)
    dead = UnsentLog()
    async with writer_for(fake, dead, put_max_attempts=4) as writer:
        await writer.put(b"doomed", "s")
        await writer.put(b"fine", "s")
    assert len(fake.calls) == 4
    assert fake.stored == [("s", b"fine")]
    assert dead.records == [OutRecord(b"doomed", "s")]
    assert "gave up after 4 attempts" in dead.reasons[0]
    assert writer.stats.failed == 1
    assert writer.stats.retries == 3


async def test_the_default_dead_letter_file_keeps_reason_key_and_data(tmp_path: Path) -> None:
    def always_fails(number: int, batch: list[Sent]) -> list[str | None]:
        raise throttled("AccessDeniedException")

    path = tmp_path / "dead" / "letters.jsonl"
    writer = KinesisWriter(FakeKinesis(always_fails), STREAM, make_settings(), dead_letter_path=path)
    async with writer:
        await writer.put(b'{"event_id": "e1"}', "store-9")
        await writer.put(b"\xff\xfe", "store-9")
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [line["partition_key"] for line in lines] == ["store-9", "store-9"]
    assert lines[0]["data"] == '{"event_id": "e1"}'
    assert lines[1]["data_base64"] == "//4="
    assert all("AccessDeniedException" in line["reason"] for line in lines)


async def test_calls_in_flight_never_exceed_the_bound_and_do_reach_it() -> None:
    fake = FakeKinesis(pause=0.002)
    async with writer_for(fake, max_batches_in_flight=3) as writer:
        for i in range(6000):
            await writer.put(data(i), f"store-{i % 100}")
    assert fake.max_active == 3
    assert len(fake.stored) == 6000
    assert len(set(fake.stored)) == 6000


async def test_put_waits_while_the_buffer_is_full() -> None:
    fake = FakeKinesis()
    writer = writer_for(fake, max_buffered_records=10, linger_s=3600.0)
    for i in range(10):
        await writer.put(data(i), "s")
    blocked = asyncio.create_task(writer.put(data(10), "s"))
    for _ in range(20):
        await asyncio.sleep(0)
    assert not blocked.done()
    assert writer.buffered == 10
    assert fake.calls == []
    await writer.flush()  # frees the buffer, which lets the waiting put in
    assert await blocked
    await writer.close()
    assert [d for _, d in fake.stored] == [data(i) for i in range(11)]


async def test_a_slow_trickle_is_sent_after_the_linger_without_a_flush() -> None:
    fake = FakeKinesis()
    writer = writer_for(fake, linger_s=0.01)
    await writer.put(b"lonely", "s")
    await until(lambda: fake.stored == [("s", b"lonely")])
    await writer.close()


async def test_close_flushes_and_a_closed_writer_refuses_puts() -> None:
    fake = FakeKinesis()
    writer = writer_for(fake, linger_s=3600.0)
    for i in range(7):
        await writer.put(data(i), f"s{i}")
    await asyncio.sleep(0)
    assert fake.calls == []
    await writer.close()
    assert len(fake.stored) == 7
    with pytest.raises(WriterClosedError):
        await writer.put(b"late", "s")


async def test_a_writer_torn_down_mid_call_dead_letters_what_it_holds() -> None:
    fake = FakeKinesis()
    fake.gates[0] = asyncio.Event()  # the first call never answers
    dead = UnsentLog()
    writer = writer_for(fake, dead, max_batches_in_flight=1, linger_s=0.0)
    for i in range(5):
        await writer.put(data(i), "s")
    await until(lambda: len(fake.calls) == 1)
    for i in range(5, 8):
        await writer.put(data(i), "s")
    closing = asyncio.create_task(writer.close())
    await asyncio.sleep(0.01)
    closing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await closing
    assert sorted(r.data for r in dead.records) == sorted(data(i) for i in range(8))
    assert any("may or may not" in reason for reason in dead.reasons)
    assert any("closed before" in reason for reason in dead.reasons)


async def test_before_send_sees_every_call_including_retries() -> None:
    seen: list[int] = []

    async def limiter(batch: Sequence[OutRecord]) -> None:
        seen.append(len(batch))

    def one_fails(number: int, batch: list[Sent]) -> list[str | None]:
        return [
            "ProvisionedThroughputExceededException" if number == 0 and i == 0 else None
            for i in range(len(batch))
        ]

    fake = FakeKinesis(one_fails)
    async with writer_for(fake, before_send=limiter) as writer:
        for i in range(5):
            await writer.put(data(i), "s")
    assert seen == [5, 1]


def test_dead_letter_file_and_callback_are_exclusive(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not both"):
        KinesisWriter(
            FakeKinesis(), STREAM, make_settings(), dead_letter_path=tmp_path, on_dead_letter=UnsentLog()
        )


def test_dead_letter_file_appends(tmp_path: Path) -> None:
    sink = DeadLetterFile(tmp_path / "dl.jsonl")
    sink([OutRecord(b"a", "k")], "one")
    sink([OutRecord(b"b", "k")], "two")
    assert [json.loads(line)["reason"] for line in (tmp_path / "dl.jsonl").read_text().splitlines()] == [
        "one",
        "two",
    ]


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(min_value=0, max_value=2**32),
    failure_rate=st.floats(min_value=0.0, max_value=0.6),
    records=st.integers(min_value=1, max_value=1500),
    lanes=st.integers(min_value=1, max_value=4),
)
def test_every_record_ends_up_sent_once_or_dead_lettered(
    seed: int, failure_rate: float, records: int, lanes: int
) -> None:
    """Whatever fails, nothing is lost and nothing is sent twice; first-try successes keep key order."""
    rng = random.Random(seed)

    def flaky(number: int, batch: list[Sent]) -> list[str | None]:
        if rng.random() < failure_rate / 4:
            raise throttled()
        return [
            "ProvisionedThroughputExceededException" if rng.random() < failure_rate else None for _ in batch
        ]

    async def scenario() -> tuple[FakeKinesis, UnsentLog, KinesisWriter]:
        fake = FakeKinesis(flaky)
        dead = UnsentLog()
        async with writer_for(fake, dead, max_batches_in_flight=lanes, put_max_attempts=3) as writer:
            for i in range(records):
                await writer.put(data(i), f"store-{i % 5}")
        return fake, dead, writer

    fake, dead, writer = asyncio.run(scenario())
    delivered = [d for _, d in fake.stored]
    lost = [r.data for r in dead.records]
    assert sorted(delivered + lost) == sorted(data(i) for i in range(records))
    assert len(set(delivered)) == len(delivered)
    assert writer.stats.records_sent == len(delivered)
    assert writer.stats.failed == len(lost)
    assert writer.stats.retries == sum(len(call) for call in fake.calls) - records
    attempts = Counter(d for call in fake.calls for _, d in call)
    for key in {f"store-{i % 5}" for i in range(records)}:
        first_try = [d for k, d in fake.stored if k == key and attempts[d] == 1]
        assert first_try == sorted(first_try, key=lambda d: json.loads(d)["i"])
