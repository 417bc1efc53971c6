"""The embedded AWS's constant-time shard bookkeeping answers exactly as moto's own scan does."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from moto.kinesis.models import Shard

from foundation.aws import moto_kinesis


def shard_with(puts: int, trimmed: int) -> Shard:
    shard = Shard(0, 0, 2**128 - 1)
    for i in range(puts):
        shard.put_record(f"k{i}", f"d{i}", None)  # type: ignore[arg-type]
    for key in list(shard.records)[:trimmed]:
        del shard.records[key]  # retention trims the oldest records
    return shard


@settings(max_examples=300)
@given(
    st.integers(min_value=0, max_value=60),
    st.integers(min_value=0, max_value=60),
    st.integers(min_value=0, max_value=70),
    st.one_of(st.none(), st.integers(min_value=1, max_value=20)),
)
def test_get_records_matches_moto(puts: int, trimmed: int, after: int, limit: int | None) -> None:
    moto_kinesis.install()
    shard = shard_with(puts, min(trimmed, puts))
    fast = moto_kinesis.get_records(shard, str(after), limit)
    slow = moto_kinesis._original_get_records(shard, str(after), limit)
    assert [r.sequence_number for r in fast[0]] == [r.sequence_number for r in slow[0]]
    assert fast[1] == slow[1]
    assert fast[2] == slow[2]
    assert shard.get_max_sequence_number() == (list(shard.records)[-1] if shard.records else 0)
    assert shard.get_min_sequence_number() == next(iter(shard.records), 0)


def test_sequence_numbers_stay_consecutive_after_the_patch() -> None:
    moto_kinesis.install()
    shard = shard_with(5, 2)
    assert shard.put_record("k", "d", None) == "6"  # type: ignore[arg-type]
    assert list(shard.records) == [3, 4, 5, 6]
