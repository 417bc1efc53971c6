"""Each shard's event time, shared between processes, so a silent shard can follow the others.

The embedded reader holds every shard in one process and asks them directly. Under the KCL each
shard has a process of its own (on any task), so each record processor publishes how far its
shard's event time has come to a DynamoDB table (one item per stream and shard), and a record
processor whose shard has gone quiet reads the others' from there. The table is advisory: if it
cannot be read or written, a silent shard waits for its next event, as it did without it.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final, Protocol

from foundation.timeunits import DAY_S

EXPIRE_AFTER_S: Final = 7 * DAY_S


def middle(times: list[int]) -> int | None:
    """The event time a quiet shard follows: the middle of the others' (the lower middle of an even
    count), so one shard whose till clock jumped a year ahead does not drag the quiet ones with it
    (with three shards or more)."""
    if not times:
        return None
    ordered = sorted(times)
    return ordered[(len(ordered) - 1) // 2]


def follow(others: list[tuple[int, bool]]) -> int | None:
    """The event time a quiet shard follows, from the other shards' (event time, still trading):
    the middle of those still trading, or of all of them when none is (a replay read to its end, a
    fleet closed for the night). A quiet shard's time is where its trade stopped: with two of three
    shards gone quiet, the middle of all would be the other quiet one, and neither would move."""
    trading = [t for t, live in others if live]
    return middle(trading) if trading else middle([t for t, _ in others])


class OwnTime:
    """A shard's own event time, kept apart from the time it moved to with the other shards.

    Once a quiet shard has followed the others, a late batch of its own leaves its windows at the
    followed time, which is not how far its own trade has come: the other shards must follow (and a
    KCL record processor publish) its own time. The shard's lifecycle keeps its time with this,
    under either shell."""

    __slots__ = ("_followed_ms", "_log", "following", "own_ms")

    def __init__(self, log: logging.Logger, own_ms: int | None = None) -> None:
        self._log = log  # the shell's, so its logs say which reader moved
        self.own_ms = own_ms
        self._followed_ms: int | None = None
        self.following = False  # moved with the other shards since it last read records

    def read(self, newest_ms: int | None) -> None:
        """Records were read and applied; `newest_ms` is the shard's windows' event time now."""
        self.following = False
        if newest_ms is not None and newest_ms != self._followed_ms:
            self.own_ms = newest_ms if self.own_ms is None else max(self.own_ms, newest_ms)

    def followed(self, shard_id: str, from_ms: int, to_ms: int) -> None:
        """The shard's windows moved from `from_ms` to `to_ms` with the others (said once a quiet
        spell: what an operator should see in the logs)."""
        if not self.following:
            self.following = True
            self._log.info(
                "quiet shard follows the other shards' event time",
                extra={"shard_id": shard_id, "own_event_ms": from_ms, "to_event_ms": to_ms},
            )
        self._followed_ms = to_ms


class ShardClocks(Protocol):
    """Where record processors publish and read their shards' event time."""

    async def publish(self, shard_id: str, event_ms: int) -> None: ...

    async def others(self, shard_id: str, within_s: float) -> list[tuple[int, bool]]:
        """The stream's other shards' event times, each with whether it was published within the
        last `within_s` seconds (a shard publishes while its own events move it: still trading)."""
        ...

    async def forget(self, shard_id: str) -> None:
        """A shard that ended: its time stops, and must not hold the others' middle back."""
        ...


class PacedClocks:
    """A shard's view of `ShardClocks` shared across processes, as its lifecycle reads it: its own
    time published when it moved and at most every `every_s`, the others' read at most that often
    (kept in between: a quiet shard asks at every empty batch), those published within `within_s`
    counting as still trading. Advisory: a failure is logged (once a run of them) and the shard goes
    on, a silent one waiting for its next event."""

    def __init__(
        self,
        clocks: ShardClocks,
        every_s: float,
        within_s: float,
        log: logging.Logger,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clocks = clocks
        self._every_s = every_s
        self._within_s = within_s
        self._log = log  # the shell's
        self._clock = clock
        self._published = (-1, -math.inf)  # (event time, when) last published
        self._others: list[tuple[int, bool]] = []
        self._others_at = -math.inf
        self._failures = 0

    async def publish(self, shard_id: str, event_ms: int) -> None:
        published_ms, published_at = self._published
        now = self._clock()
        if (
            event_ms > published_ms
            and now - published_at >= self._every_s
            and await self._call(shard_id, self._clocks.publish(shard_id, event_ms))
        ):
            self._published = (event_ms, now)

    async def others(self, shard_id: str) -> list[tuple[int, bool]]:
        now = self._clock()
        if now - self._others_at >= self._every_s:
            self._others_at = now  # a failed read waits its turn too, not hammering the table
            found: list[list[tuple[int, bool]]] = []

            async def read() -> None:
                found.append(await self._clocks.others(shard_id, self._within_s))

            if await self._call(shard_id, read()):
                self._others = found[0]
        return self._others

    async def forget(self, shard_id: str) -> None:
        await self._call(shard_id, self._clocks.forget(shard_id))

    async def _call(self, shard_id: str, call: Awaitable[object]) -> bool:
        try:
            await call
        except Exception as exc:
            if not self._failures:
                self._log.warning(
                    "shard clocks unavailable; a silent shard waits for its next event",
                    extra={"shard_id": shard_id, "error": repr(exc)[:300]},
                )
            self._failures += 1
            return False
        if self._failures:
            self._log.info("shard clocks back", extra={"shard_id": shard_id, "failures": self._failures})
            self._failures = 0
        return True


class DynamoShardClocks:
    """The table's items: `stream` (hash key), `shard_id` (range key), `event_ms`, `updated_at` (epoch
    seconds; hosts' clocks are NTP-synced far better than the seconds this compares), `expires_at`
    (the table's TTL attribute)."""

    def __init__(self, dynamodb: Any, table: str, stream: str) -> None:
        self._dynamodb = dynamodb  # an aiobotocore DynamoDB client
        self._table = table
        self._stream = stream

    async def publish(self, shard_id: str, event_ms: int) -> None:
        now = time.time()
        await self._dynamodb.put_item(
            TableName=self._table,
            Item={
                "stream": {"S": self._stream},
                "shard_id": {"S": shard_id},
                "event_ms": {"N": str(event_ms)},
                "updated_at": {"N": f"{now:.3f}"},  # wall clock: read by other hosts
                # DynamoDB deletes an item a week after its shard last moved (a deleted stream's).
                "expires_at": {"N": str(int(now) + EXPIRE_AFTER_S)},
            },
        )

    async def others(self, shard_id: str, within_s: float) -> list[tuple[int, bool]]:
        since = time.time() - within_s
        times: list[tuple[int, bool]] = []
        args: dict[str, Any] = {
            "TableName": self._table,
            "KeyConditionExpression": "#s = :s",
            "ExpressionAttributeNames": {"#s": "stream"},
            "ExpressionAttributeValues": {":s": {"S": self._stream}},
            "ProjectionExpression": "shard_id, event_ms, updated_at",
        }
        while True:
            page = await self._dynamodb.query(**args)
            times += [
                (int(item["event_ms"]["N"]), float(item.get("updated_at", {}).get("N", "0")) >= since)
                for item in page.get("Items", [])
                if item["shard_id"]["S"] != shard_id
            ]
            if "LastEvaluatedKey" not in page:
                return times
            args["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    async def forget(self, shard_id: str) -> None:
        await self._dynamodb.delete_item(
            TableName=self._table, Key={"stream": {"S": self._stream}, "shard_id": {"S": shard_id}}
        )
