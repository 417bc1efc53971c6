"""The fleet's shape of a day shared between shards through S3 (the embedded AWS, over the wire):
published, read and merged as each shard's prior; a missing, corrupt or unreachable object leaves a
shard with its own stores' shape, and says so."""

from __future__ import annotations

import logging
import pickle

import boto3
import pytest

from config import Settings
from foundation.aws.clients import AioClients
from foundation.aws.provision import Resources
from processors.core import CoreConfig, ShardCore
from processors.core.detectors import PeerDayShape
from processors.fleet_shapes import FleetExchange, S3FleetShapes

pytestmark = pytest.mark.integration

SLOTS = 96


def core_with(days: int, peak: int) -> ShardCore:
    """A shard's core whose stores taught `days` weekdays busy at one slot."""
    core = ShardCore(CoreConfig(archive=False))
    assert core.state.monitor is not None
    day = [0.0] * SLOTS
    day[peak] = 25.0
    for _ in range(days):
        core.state.monitor.fleet.learn(0, day, 100.0)
    return core


async def test_each_shard_reads_the_others_shapes_merged_and_never_its_own(
    provisioned: tuple[Settings, Resources],
) -> None:
    settings, resources = provisioned
    a, b, c = core_with(6, peak=30), core_with(6, peak=60), ShardCore(CoreConfig(archive=False))
    async with AioClients(settings, "s3") as clients:
        shapes = S3FleetShapes(clients["s3"], resources.bucket, settings)
        ex = {s: FleetExchange(shapes, every_s=300.0) for s in ("A", "B", "C")}
        assert await ex["A"].exchange("A", a)
        assert a.state.monitor is not None
        assert a.state.monitor.fleet.prior is None
        assert await ex["B"].exchange("B", b)
        assert await ex["C"].exchange("C", c)  # C knows nothing yet: it publishes nothing, reads
        assert not await ex["C"].exchange("C", c)  # not due again within every_s
    listed = boto3.client("s3").list_objects_v2(Bucket=resources.bucket, Prefix=shapes.prefix)
    assert sorted(o["Key"].rsplit("/", 1)[1] for o in listed["Contents"]) == ["A.json", "B.json"]
    assert c.state.monitor is not None
    prior = c.state.monitor.fleet.prior
    assert prior is not None
    assert prior.kinds[0].days == 12
    assert prior.kinds[0].share[30] == pytest.approx(0.125)  # half of A's 0.25, half of B's 0
    assert prior.kinds[0].share[60] == pytest.approx(0.125)
    # B read A's shape only: its own is not its prior.
    assert b.state.monitor is not None
    assert b.state.monitor.fleet.prior is not None
    assert b.state.monitor.fleet.prior.kinds[0].share[60] == 0.0


async def test_a_corrupt_or_foreign_object_is_refused_loudly_and_the_rest_used(
    provisioned: tuple[Settings, Resources], caplog: pytest.LogCaptureFixture
) -> None:
    settings, resources = provisioned
    s3 = boto3.client("s3")
    async with AioClients(settings, "s3") as clients:
        shapes = S3FleetShapes(clients["s3"], resources.bucket, settings)
        await shapes.publish("A", core_with(5, peak=20).state.monitor.fleet.shape())  # type: ignore[union-attr]
        s3.put_object(Bucket=resources.bucket, Key=shapes.key("X"), Body=pickle.dumps(PeerDayShape(SLOTS)))
        s3.put_object(Bucket=resources.bucket, Key=shapes.key("Y"), Body=b'{"version": 1, "slots_')
        core = ShardCore(CoreConfig(archive=False))
        with caplog.at_level(logging.ERROR, logger="processors.fleet_shapes"):
            assert await FleetExchange(shapes, 300.0).exchange("C", core)
            assert await FleetExchange(shapes, 300.0).exchange("D", ShardCore(CoreConfig(archive=False)))
    refused = [r for r in caplog.records if r.getMessage().startswith("fleet shape refused")]
    # Once per version of an object: the second exchange reads through the same cache.
    assert sorted(getattr(r, "key", "").rsplit("/", 1)[1] for r in refused) == ["X.json", "Y.json"]
    assert core.state.monitor is not None
    prior = core.state.monitor.fleet.prior
    assert prior is not None
    assert prior.kinds[0].days == 5
    assert prior.kinds[0].share[20] == 0.25


async def test_no_shapes_yet_and_an_unreachable_store_leave_the_shard_as_it_was(
    provisioned: tuple[Settings, Resources], caplog: pytest.LogCaptureFixture
) -> None:
    settings, resources = provisioned
    core = core_with(4, peak=10)
    async with AioClients(settings, "s3") as clients:
        shapes = S3FleetShapes(clients["s3"], resources.bucket, settings)
        assert await FleetExchange(shapes, 300.0).exchange("A", core)  # nobody else yet: no prior
        assert core.state.monitor is not None
        assert core.state.monitor.fleet.prior is None
        core.set_fleet_prior(core_with(5, peak=70).state.monitor.fleet.shape())  # type: ignore[union-attr]
        gone = S3FleetShapes(clients["s3"], "no-such-bucket-for-fleet-shapes", settings)
        exchange = FleetExchange(gone, every_s=0.001)
        with caplog.at_level(logging.WARNING, logger="processors.fleet_shapes"):
            assert not await exchange.exchange("A", core)
            exchange._last = None
            assert not await exchange.exchange("A", core)
    warned = [r for r in caplog.records if "fleet shape exchange failed" in r.getMessage()]
    assert len(warned) == 1  # said once a spell, not every time
    prior = core.state.monitor.fleet.prior
    assert prior is not None
    assert prior.kinds[0].share[70] == 0.25
