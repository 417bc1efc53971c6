"""Incremental checkpoints on S3 (the embedded moto server, over the wire): runs written once, the head
names them, restore reads them back into an equal core, and runs no checkpoint names are deleted."""

from __future__ import annotations

from typing import Any

import boto3
import orjson
import pytest

from config import Settings
from foundation.aws.clients import AioClients
from foundation.aws.provision import Resources
from foundation.contract import format_ts
from processors.checkpoints import FORMAT, S3Checkpoints, ShardTakenOver, checkpoint_fields, load_all_sync
from processors.core import CoreConfig, ShardCore
from processors.core.partition import merge, split

T0 = 1_785_571_200_000
MIN = 60_000
SHARD = "shardId-000000000000"
CONFIG = CoreConfig(dedup_horizon_ms=60 * MIN, dedup_bucket_ms=5 * MIN)


def sale(i: int, t_ms: int, store: str = "store-001") -> bytes:
    return orjson.dumps(
        {
            "type": "sale",
            "event_id": f"e{i}",
            "store_id": store,
            "ts": format_ts(T0 + t_ms),
            "product_id": f"p{i % 7}",
            "quantity": 1,
            "unit_price": 1.5,
        }
    )


def feed(core: ShardCore, first: int, last: int) -> None:
    for i in range(first, last):
        core.apply(sale(i, i * 2_000, f"store-{i % 3:03d}"))  # one event every 2 s of event time
    core.drain()


def run_keys(s3: Any, bucket: str, settings: Settings, shard: str = SHARD) -> set[str]:
    prefix = f"{settings.prefixes.checkpoints}{settings.aws.stream_name}.runs/{shard}/"
    resp = s3.list_objects_v2(Bucket=bucket, Prefix=prefix)
    return {o["Key"][len(prefix) :] for o in resp.get("Contents", [])}


async def test_checkpoints_write_only_what_changed_and_clean_up(
    provisioned: tuple[Settings, Resources],
) -> None:
    settings, resources = provisioned
    s3 = boto3.client("s3")
    core = ShardCore(CONFIG)
    async with AioClients(settings, "s3") as clients:
        store = S3Checkpoints(clients["s3"], resources.bucket, settings, sweep_older_than_s=0)
        feed(core, 0, 300)
        first = await store.save(SHARD, "100", core)
        assert first.runs_written >= 1
        again = await store.save(SHARD, "100", core)
        assert again.runs_written == 0  # nothing new: only the head is written
        assert again.bytes_written == again.head_bytes
        feed(core, 300, 310)
        small = await store.save(SHARD, "110", core)
        assert small.runs_written == 1  # just the keys since the last checkpoint
        assert small.bytes_written < first.bytes_written

        # Hours of event time later: buckets were sealed (their runs merged into one) and expired.
        feed(core, 310, 4_000)
        later = await store.save(SHARD, "4000", core)
        assert later.runs_deleted > 0
        named = set(core.checkpoint_parts().names)
        assert run_keys(s3, resources.bucket, settings) == named  # nothing left that no head names
        head = s3.get_object(Bucket=resources.bucket, Key=store.key(SHARD))["Body"].read()
        assert head.startswith(f"shelfstream-checkpoint {FORMAT}\n".encode())
        assert set(checkpoint_fields(head)["runs"]) == named

        # Restore: an equal core, which treats every remembered event as a repeat and goes on alike.
        loaded = await S3Checkpoints(clients["s3"], resources.bucket, settings).load(SHARD)
        assert loaded is not None
        assert loaded.sequence_number == "4000"
        restored = loaded.core
        assert restored.inventory() == core.inventory()
        saved = core.inventory()
        assert len(restored.state.dedup) == len(core.state.dedup)
        tail = [sale(i, i * 2_000, f"store-{i % 3:03d}") for i in range(3_990, 4_100)]
        assert [restored.apply(r) for r in tail] == [core.apply(r) for r in tail]
        assert restored.drain().archive == core.drain().archive

        # A crash between writing runs and the head leaves an unnamed run: the next load removes it.
        s3.put_object(
            Bucket=resources.bucket,
            Key=f"{settings.prefixes.checkpoints}{settings.aws.stream_name}.runs/{SHARD}/r999999999999",
            Body=b"left behind",
        )
        assert await S3Checkpoints(clients["s3"], resources.bucket, settings, sweep_older_than_s=0).load(
            SHARD
        )
        assert run_keys(s3, resources.bucket, settings) == named

    # Readers of stock read the head only.
    (light,) = load_all_sync(s3, resources.bucket, settings)
    assert light.core.inventory() == saved
    assert len(light.core.state.dedup) == 0


async def test_split_and_merged_shards_checkpoint_their_own_copies(
    provisioned: tuple[Settings, Resources],
) -> None:
    settings, resources = provisioned
    s3 = boto3.client("s3")
    parent = ShardCore(CONFIG)
    feed(parent, 0, 500)
    async with AioClients(settings, "s3") as clients:
        store = S3Checkpoints(clients["s3"], resources.bucket, settings)
        await store.save(SHARD, "500", parent, ended=True)
        loaded = await store.load(SHARD)
        assert loaded is not None
        children = {
            "shardId-000000000001": split(loaded.core, lambda s: s == "store-000"),
            "shardId-000000000002": split(loaded.core, lambda s: s != "store-000"),
        }
        for shard_id, child in children.items():
            await store.save(shard_id, None, child)
        merged = merge([c.core for c in [await store.load(s) for s in children] if c is not None])
        await store.save("shardId-000000000003", None, merged)
        back = await store.load("shardId-000000000003")
    assert back is not None
    assert back.core.inventory() == parent.inventory()
    assert not any(back.core.apply(sale(i, i * 2_000, f"store-{i % 3:03d}")) for i in range(400, 500))
    assert run_keys(s3, resources.bucket, settings, "shardId-000000000003") == set(
        back.core.checkpoint_parts().names
    )
    assert run_keys(s3, resources.bucket, settings, SHARD)  # the parent's own runs stay with its head


def head_of(s3: Any, bucket: str, store: S3Checkpoints, shard: str = SHARD) -> dict[str, Any]:
    loaded: dict[str, Any] = checkpoint_fields(
        s3.get_object(Bucket=bucket, Key=store.key(shard))["Body"].read()
    )
    return loaded


async def test_a_worker_that_lost_its_shard_cannot_overwrite_the_new_owners_checkpoint(
    provisioned: tuple[Settings, Resources],
) -> None:
    """A worker whose lease moved on while it was busy (a zombie) goes on from the checkpoint the new
    owner also started from. Its next save is refused: the new owner's head stays, every run that
    head names is still there with the new owner's keys, and the zombie deletes nothing."""
    settings, resources = provisioned
    s3 = boto3.client("s3")
    async with AioClients(settings, "s3") as clients:
        zombie = S3Checkpoints(clients["s3"], resources.bucket, settings)
        assert await zombie.load(SHARD) is None
        old = ShardCore(CONFIG)
        feed(old, 0, 300)
        await zombie.save(SHARD, "300", old)

        owner = S3Checkpoints(clients["s3"], resources.bucket, settings)
        taken = await owner.load(SHARD)
        assert taken is not None
        new = taken.core
        # Both go on from the same checkpoint, over different records: the same run numbers follow.
        feed(new, 300, 600)
        await owner.save(SHARD, "600", new)
        named = set(new.checkpoint_parts().names)
        feed(old, 1_000, 4_000)  # hours of event time later: the zombie's save would drop runs
        with pytest.raises(ShardTakenOver, match="another worker"):
            await zombie.save(SHARD, "4000", old)

        assert head_of(s3, resources.bucket, owner)["sequence_number"] == "600"
        assert named <= run_keys(s3, resources.bucket, settings)  # nothing the owner names was deleted
        back = await S3Checkpoints(clients["s3"], resources.bucket, settings).load(SHARD)
        assert back is not None
        assert back.sequence_number == "600"
        assert back.core.inventory() == new.inventory()
        assert len(back.core.state.dedup) == len(new.state.dedup)
        # The owner's dedup memory came back whole: its events are repeats, the zombie's are not.
        assert not back.core.apply(sale(450, 450 * 2_000, "store-000"))
        assert back.core.apply(sale(2_000, 2_000 * 2_000, "store-002"))

        feed(new, 600, 700)
        assert (await owner.save(SHARD, "700", new)).head_bytes > 0  # the owner goes on saving
        assert head_of(s3, resources.bucket, owner)["sequence_number"] == "700"

        # Two workers that both found no checkpoint for a new shard: the first head written stands.
        other = "shardId-000000000009"
        first = S3Checkpoints(clients["s3"], resources.bucket, settings)
        second = S3Checkpoints(clients["s3"], resources.bucket, settings)
        assert await first.load(other) is None
        assert await second.load(other) is None
        mine, theirs = ShardCore(CONFIG), ShardCore(CONFIG)
        feed(mine, 0, 300)
        feed(theirs, 5_000, 5_300)
        await first.save(other, "1", mine)
        with pytest.raises(ShardTakenOver):
            await second.save(other, "2", theirs)
        assert head_of(s3, resources.bucket, first, other)["sequence_number"] == "1"
        restored = await S3Checkpoints(clients["s3"], resources.bucket, settings).load(other)
        assert restored is not None
        assert len(restored.core.state.dedup) == len(mine.state.dedup)
        assert not restored.core.apply(sale(10, 10 * 2_000, "store-001"))  # first's keys, not second's


async def test_a_save_whose_answer_was_lost_is_not_taken_for_another_owner(
    provisioned: tuple[Settings, Resources],
) -> None:
    """The SDK retries a PUT whose answer was lost; the retry's condition then fails on the head it
    wrote itself. The head is ours, byte for byte, so the save stands; a head that is not ours is
    another owner's."""
    settings, resources = provisioned
    core = ShardCore(CONFIG)
    feed(core, 0, 100)
    async with AioClients(settings, "s3") as clients:
        store = S3Checkpoints(clients["s3"], resources.bucket, settings)
        assert await store.load(SHARD) is None
        await store.save(SHARD, "1", core)
        before = store._heads[SHARD]
        ours = b"a head written by this owner"
        await store._put_head(SHARD, ours)
        after = store._heads[SHARD]
        assert after != before
        store._heads[SHARD] = before  # as if the answer to the PUT was lost and it was sent again
        await store._put_head(SHARD, ours)
        assert store._heads[SHARD] == after
        store._heads[SHARD] = before
        with pytest.raises(ShardTakenOver):
            await store._put_head(SHARD, b"another head")


class _Payload:
    """What an attacker with write access to the prefix would store: a pickle that runs a command."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        import os

        return (os.mkdir, (self.marker,))


async def test_a_crafted_or_foreign_checkpoint_runs_nothing_is_refused_and_stays(
    provisioned: tuple[Settings, Resources], tmp_path: Any
) -> None:
    import pickle

    from processors.checkpoints import CheckpointRefused

    settings, resources = provisioned
    s3 = boto3.client("s3")
    core = ShardCore(CONFIG)
    feed(core, 0, 50)
    marker = tmp_path / "ran"
    async with AioClients(settings, "s3") as clients:
        store = S3Checkpoints(clients["s3"], resources.bucket, settings, sweep_older_than_s=0)
        await store.save(SHARD, "50", core)
        runs_before = run_keys(s3, resources.bucket, settings)
        good = s3.get_object(Bucket=resources.bucket, Key=store.key(SHARD))["Body"].read()
        for bad in (
            pickle.dumps({"format": 2, "core": _Payload(str(marker))}),
            good[: len(good) // 2],
            b"{}",
        ):
            s3.put_object(Bucket=resources.bucket, Key=store.key(SHARD), Body=bad)
            with pytest.raises(CheckpointRefused, match="refused") as refused:
                await S3Checkpoints(clients["s3"], resources.bucket, settings, sweep_older_than_s=0).load(
                    SHARD
                )
            assert "\n" not in str(refused.value)  # one line for the operator
            assert not marker.exists()
            # Nothing swept, nothing overwritten: the runs and the refused head stay for inspection
            assert run_keys(s3, resources.bucket, settings) == runs_before
            assert s3.get_object(Bucket=resources.bucket, Key=store.key(SHARD))["Body"].read() == bad
        # Another shard's checkpoint copied under this key is refused too
        s3.put_object(Bucket=resources.bucket, Key=store.key("shardId-000000000009"), Body=good)
        with pytest.raises(CheckpointRefused, match="shard 'shardId-000000000000'"):
            await S3Checkpoints(clients["s3"], resources.bucket, settings).load("shardId-000000000009")
        with pytest.raises(CheckpointRefused):
            load_all_sync(s3, resources.bucket, settings)
