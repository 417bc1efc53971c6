"""A short load test on the embedded AWS: nothing lost, the per-shard limit held yet nearly reached."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import orjson
import pytest

from config import Settings
from foundation.aws import kinesis_limits
from foundation.aws.clients import aio_client
from foundation.aws.kinesis_limits import Limits
from producers import loadtest
from producers.rate_limit import WINDOW_S, ShardLimiter, ShardSend
from shelfstream import cli

pytestmark = pytest.mark.integration

LIMIT = 200


@pytest.mark.slow
async def test_saturating_loadtest_loses_nothing_and_keeps_each_shard_under_its_limit(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings(aws={"shard_count": 2})
    admitted: list[tuple[float, str, int]] = []
    real = ShardLimiter.try_acquire

    def spy(self: ShardLimiter, per_shard: Mapping[str, ShardSend], now: float) -> float:
        wait = real(self, per_shard, now)
        if wait == 0.0:
            admitted.extend((now, shard, need.records) for shard, need in per_shard.items())
        return wait

    monkeypatch.setattr(ShardLimiter, "try_acquire", spy)
    async with aio_client("kinesis", settings) as kinesis:
        await loadtest.ensure_stream(kinesis, settings.aws.stream_name, 2)
        result = await loadtest.run_loadtest(
            kinesis,
            settings,
            settings.aws.stream_name,
            stores=6,
            rate=None,
            duration_s=3.0,
            shard_records_per_s=LIMIT,
        )

    assert result.failed == 0
    assert result.records_sent == result.records_put > 0
    assert result.verified
    assert result.read_back_unique == result.records_sent
    assert result.lost == 0
    assert result.read_back_duplicates == 0
    # Held under the limit in every one-second window of the limiter's clock, per shard ...
    assert {shard for _, shard, _ in admitted} == {f"shardId-00000000000{i}" for i in range(2)}
    for start, shard, _ in admitted:
        inside = sum(n for at, s, n in admitted if s == shard and start <= at <= start + WINDOW_S)
        assert inside <= LIMIT
    # ... and still reaching at least 90% of it: the ratio within this one run, not a wall-clock figure.
    assert result.quota_fraction >= 0.9
    assert result.limiter_waits > 0


def test_describe_reports_lost_records_and_the_quota() -> None:
    result = loadtest.LoadtestResult(
        stream="s", shards=1, stores=1, target_rate=None, duration_s=1.0, seconds=1.0, records_put=10,
        records_sent=10, achieved_rps=10.0, shard_limit_rps=1000, shard_limit_bytes=1 << 20,
        quota_fraction=0.01, put_latency_p50_ms=1.0, put_latency_p95_ms=2.0, put_latency_p99_ms=3.0,
        put_calls=1, retries=0, throttles=0, failed=0, limiter_waits=0, limiter=True, backoffs=0,
        backoff_s=0.0, most_attempts=1, cpu_s_per_10k=0.1, verified=True,
        read_back_unique=9, read_back_duplicates=0, lost=1,
    )  # fmt: skip
    text = "\n".join(loadtest.describe(result))
    assert "1 lost" in text
    assert "(1.0% of the shards' quota)" in text


def test_loadtest_command_writes_its_result_and_exits_0(
    make_settings: Callable[..., Settings], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stream = make_settings().aws.stream_name
    out = tmp_path / "lt.json"
    code = cli.main(
        ["loadtest", "--stream", stream, "--shards", "1", "--stores", "3", "--rate", "300", "--duration", "1",
         "--json", str(out)]
    )  # fmt: skip
    assert code == 0
    result = orjson.loads(out.read_bytes())
    assert result["failed"] == 0
    assert result["lost"] == 0
    assert result["read_back_unique"] == result["records_sent"] > 0
    assert "0 lost" in capsys.readouterr().out


@pytest.fixture
def tight_kinesis() -> Iterator[Limits]:
    """The embedded Kinesis at a fifth of its per-shard write quota, so a short test saturates it."""
    tight = Limits(write_records_per_s=200, write_bytes_per_s=200 * 1024)
    kinesis_limits.enable(True, tight)
    yield tight
    kinesis_limits.enable(True, Limits())


async def test_without_the_limiter_kinesis_throttles_and_the_writer_backs_off_losing_nothing(
    make_settings: Callable[..., Settings], tight_kinesis: Limits
) -> None:
    settings = make_settings(aws={"shard_count": 1})
    throttled_before = kinesis_limits.QUOTAS.write_throttles
    async with aio_client("kinesis", settings) as kinesis:
        await loadtest.ensure_stream(kinesis, settings.aws.stream_name, 1)
        result = await loadtest.run_loadtest(
            kinesis,
            settings,
            settings.aws.stream_name,
            stores=4,
            rate=None,
            duration_s=2.0,
            shard_records_per_s=int(tight_kinesis.write_records_per_s),
            limiter=False,
            max_attempts=30,
        )
    assert not result.limiter
    assert result.throttles > 0
    assert result.retries >= result.throttles  # every throttled entry was sent again
    assert result.backoffs > 0
    assert result.backoff_s > 0
    assert result.most_attempts >= 2
    # What the embedded Kinesis refused is what the writer saw refused.
    assert kinesis_limits.QUOTAS.write_throttles - throttled_before == result.throttles
    assert result.failed == 0
    assert result.lost == 0
    assert result.read_back_unique == result.records_sent == result.records_put > 0
    assert result.read_back_duplicates == 0
