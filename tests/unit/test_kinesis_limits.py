"""Kinesis's per-shard quotas as the embedded Kinesis keeps them (pure: the time is passed in)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from foundation.aws.kinesis_limits import Limits, ShardQuota, _size


def test_write_quota_is_a_thousand_records_a_second() -> None:
    quota = ShardQuota(Limits(), now=0.0)
    taken = sum(quota.try_write(100, 0.0) for _ in range(1500))
    assert taken == 1000
    assert quota.write_throttles == 500
    # Half a second later, half a second's worth is back, and no more.
    assert sum(quota.try_write(100, 0.5) for _ in range(1000)) == 500


def test_write_quota_counts_bytes_too() -> None:
    quota = ShardQuota(Limits(), now=0.0)
    big = 300 * 1024
    assert [quota.try_write(big, 0.0) for _ in range(4)] == [True, True, True, False]
    assert quota.try_write(1024, 0.0)  # a small record still fits in the last 124 KiB


def test_read_limit_is_five_calls_a_second() -> None:
    quota = ShardQuota(Limits(), now=0.0)
    assert [quota.try_read(0.0) for _ in range(6)] == [True] * 5 + [False]
    assert quota.try_read(0.2)  # a fifth of a second gives one call back
    assert not quota.try_read(0.2)


def test_a_large_read_puts_the_shard_in_debt() -> None:
    quota = ShardQuota(Limits(), now=0.0)
    assert quota.try_read(0.0)
    quota.charge_read(6 * 1024 * 1024)  # one call may return up to 10 MiB
    assert not quota.try_read(1.0)  # 2 MiB paid back of 4 MiB of debt
    assert quota.try_read(2.01)  # the debt is paid after two seconds


@given(st.lists(st.tuples(st.floats(0, 0.05), st.integers(1, 2048)), min_size=1, max_size=2000))
def test_no_second_takes_more_than_the_quota(steps: list[tuple[float, int]]) -> None:
    """Over any run of puts, records taken within [t, t + 1 s) never exceed one second's quota plus
    what refills during it: at most 2x the per-second limit in any one-second span, and over the whole
    run at most quota x (1 + seconds)."""
    limits = Limits(write_records_per_s=50, write_bytes_per_s=64 * 1024)
    quota = ShardQuota(limits, now=0.0)
    now = 0.0
    taken_records = taken_bytes = 0
    for gap, size in steps:
        now += gap
        if quota.try_write(size, now):
            taken_records += 1
            taken_bytes += size
    assert taken_records <= limits.write_records_per_s * (1 + now) + 1e-6
    assert taken_bytes <= limits.write_bytes_per_s * (1 + now) + 1e-6
    assert quota.write_throttles == len(steps) - taken_records


def test_size_counts_the_decoded_blob_and_the_key() -> None:
    assert _size("aGVsbG8=", "store-1") == 5 + 7  # base64 of b"hello"
    assert _size(b"hello", "s") == 6
