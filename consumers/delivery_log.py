"""A delivery log in DynamoDB shared by every dispatch worker: conditional writes make "claim this
request" atomic, so two workers (or one after a restart) never send two trucks for one request.

A claim carries a lease: a worker that dies mid-trip leaves a claim that expires, and the request,
back on the queue after its visibility timeout, can be claimed again.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

from botocore.exceptions import ClientError

from consumers.dispatcher import Claim


class DynamoDeliveryLog:
    def __init__(
        self,
        dynamodb: Any,
        table: str,
        lease_s: float = 300.0,
        owner: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._db = dynamodb
        self._table = table
        self._lease_s = lease_s
        self.owner = owner or uuid.uuid4().hex
        self._clock = clock  # the leases' clock (wall time; a test's own)

    async def claim(self, alert_id: str) -> Claim:
        now = self._clock()
        try:
            await self._db.put_item(
                TableName=self._table,
                Item={
                    "alert_id": {"S": alert_id},
                    "state": {"S": "claimed"},
                    "owner": {"S": self.owner},
                    "expires_at": {"N": f"{now + self._lease_s:.3f}"},
                },
                ConditionExpression="attribute_not_exists(alert_id) OR (#s = :claimed AND expires_at < :now)",
                ExpressionAttributeNames={"#s": "state"},
                ExpressionAttributeValues={":claimed": {"S": "claimed"}, ":now": {"N": f"{now:.3f}"}},
            )
            return "claimed"
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                raise
        item = (
            await self._db.get_item(
                TableName=self._table, Key={"alert_id": {"S": alert_id}}, ConsistentRead=True
            )
        ).get("Item", {})
        return "delivered" if item.get("state", {}).get("S") == "delivered" else "busy"

    async def delivered(self, alert_id: str) -> None:
        await self._db.update_item(
            TableName=self._table,
            Key={"alert_id": {"S": alert_id}},
            UpdateExpression="SET #s = :delivered, delivered_at = :now REMOVE expires_at",
            ExpressionAttributeNames={"#s": "state"},
            ExpressionAttributeValues={
                ":delivered": {"S": "delivered"},
                ":now": {"N": f"{self._clock():.3f}"},
            },
        )

    async def release(self, alert_id: str) -> None:
        try:
            await self._db.delete_item(
                TableName=self._table,
                Key={"alert_id": {"S": alert_id}},
                ConditionExpression="#s = :claimed AND #o = :me",
                ExpressionAttributeNames={"#s": "state", "#o": "owner"},
                ExpressionAttributeValues={":claimed": {"S": "claimed"}, ":me": {"S": self.owner}},
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                raise
