"""The dispatchers' shared delivery log: atomic claims in DynamoDB, leases that expire."""

from __future__ import annotations

import asyncio

import pytest

from config import Settings
from consumers.delivery_log import DynamoDeliveryLog
from foundation.aws.clients import AioClients
from foundation.aws.provision import Resources

pytestmark = pytest.mark.integration


async def test_one_claim_wins_and_a_delivered_request_stays_delivered(
    provisioned: tuple[Settings, Resources],
) -> None:
    settings, resources = provisioned
    async with AioClients(settings, "dynamodb") as clients:
        logs = [DynamoDeliveryLog(clients["dynamodb"], resources.deliveries_table) for _ in range(8)]
        claims = await asyncio.gather(*(log.claim("req-1") for log in logs))
        assert sorted(claims) == ["busy"] * 7 + ["claimed"]
        winner = logs[claims.index("claimed")]
        await winner.delivered("req-1")
        assert {await log.claim("req-1") for log in logs} == {"delivered"}
        await logs[0].release("req-1")  # releasing a delivered request does nothing
        assert await logs[1].claim("req-1") == "delivered"


async def test_a_dead_workers_claim_expires_and_a_release_frees_it(
    provisioned: tuple[Settings, Resources],
) -> None:
    settings, resources = provisioned
    async with AioClients(settings, "dynamodb") as clients:
        now = [1_000_000.0]  # the leases' clock, moved by hand: no race with a busy machine
        dying = DynamoDeliveryLog(
            clients["dynamodb"], resources.deliveries_table, lease_s=60, clock=lambda: now[0]
        )
        other = DynamoDeliveryLog(clients["dynamodb"], resources.deliveries_table, clock=lambda: now[0])
        assert await dying.claim("req-2") == "claimed"
        now[0] += 59
        assert await other.claim("req-2") == "busy"
        now[0] += 2
        assert await other.claim("req-2") == "claimed"  # the lease ran out
        await dying.release("req-2")  # not the owner any more: no effect
        assert await dying.claim("req-2") == "busy"
        await other.release("req-2")
        assert await dying.claim("req-2") == "claimed"
