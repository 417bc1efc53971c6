"""Archive lines are packed into few Firehose records (billed per 5 KB record), losing none."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from processors.sinks.firehose import (
    FIREHOSE_BATCH,
    FIREHOSE_BATCH_BYTES,
    FIREHOSE_RECORD_BYTES,
    firehose_chunks,
    pack_lines,
)


@given(st.lists(st.integers(min_value=1, max_value=300_000), max_size=60))
def test_packing_keeps_every_line_in_order_within_the_limits(sizes: list[int]) -> None:
    lines = [(b"%d:" % i) + b"x" * size for i, size in enumerate(sizes)]
    packed = pack_lines(lines)
    assert b"".join(data for data, _ in packed) == b"".join(line + b"\n" for line in lines)
    assert sum(count for _, count in packed) == len(lines)
    assert all(len(data) <= FIREHOSE_RECORD_BYTES or count == 1 for data, count in packed)
    chunks = firehose_chunks(packed)
    assert [r for chunk in chunks for r in chunk] == packed
    for chunk in chunks:
        assert len(chunk) <= FIREHOSE_BATCH
        assert sum(len(d) for d, _ in chunk) <= FIREHOSE_BATCH_BYTES or len(chunk) == 1


def test_small_events_share_one_record() -> None:
    packed = pack_lines([b'{"event_id":"e%d"}' % i for i in range(1000)])
    assert len(packed) == 1
    assert packed[0][1] == 1000


def test_archive_counts_every_line_when_shards_send_at_once() -> None:
    """Shards send to the archive concurrently: each call's count is added, none overwrites another's."""
    import asyncio
    import random
    from types import SimpleNamespace

    from processors.sinks.base import SinkDeadLetters, SinkStats
    from processors.sinks.firehose import FirehoseArchive

    class SlowFirehose:
        async def put_record_batch(
            self, DeliveryStreamName: str, Records: list[dict[str, bytes]]
        ) -> dict[str, object]:
            await asyncio.sleep(random.random() / 100)  # the answers come back in another order
            return {"FailedPutCount": 0, "RequestResponses": [{} for _ in Records]}

    stats = SinkStats()
    archive = FirehoseArchive(
        SlowFirehose(),
        SimpleNamespace(archive_firehose="events"),
        stats,
        SinkDeadLetters(None, stats),  # type: ignore[arg-type]  # nothing fails, nothing is kept
        0.01,
    )

    async def shards() -> None:
        await asyncio.gather(*(archive.archive([b'{"n":%d}' % i] * 5) for i in range(40)))

    asyncio.run(shards())
    assert stats.archived == 200
