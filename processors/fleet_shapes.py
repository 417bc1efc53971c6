"""The fleet's shape of a day, shared between shards through S3 (beside the checkpoints).

Each shard's core learns the shape of a day from its own stores only (processors/core/detectors/
fleet_shape.py). So that a store alone in its shard, or a shard that has not had a Sunday yet, is
judged against the whole fleet's shape, every shard writes what it has learned to
`<checkpoint_prefix><stream>.fleet/<shard_id>.json` and reads the others' objects under that prefix,
merged, as its core's prior. One object per shard, of fixed size (about 6 KB with 15-minute slots):
for 10,000 stores at 250 a shard, 40 objects, whatever the number of stores.

The exchange is advisory: a shard that cannot reach S3 goes on with its own stores' shape (said
once a spell in the logs); an object that fails validation is refused loudly (an error log with its
key and the reason, once per version of it) and never used.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from config import Settings
from processors.core import ShardCore
from processors.core.detectors.fleet_shape import (
    FleetShape,
    FleetShapeError,
    decode_shape,
    encode_shape,
    merge_shapes,
)

log = logging.getLogger(__name__)


class S3FleetShapes:
    """The shards' published shapes on S3 (an aiobotocore client), read with an ETag cache so a
    shard fetches only the objects that changed since it last looked."""

    def __init__(self, s3: Any, bucket: str, settings: Settings) -> None:
        self._s3 = s3
        self._bucket = bucket
        self.prefix = f"{settings.prefixes.checkpoints}{settings.aws.stream_name}.fleet/"
        self._cache: dict[str, tuple[str, FleetShape | None]] = {}  # key -> (ETag, shape or refused)

    def key(self, shard_id: str) -> str:
        return f"{self.prefix}{shard_id}.json"

    async def publish(self, shard_id: str, shape: FleetShape) -> None:
        await self._s3.put_object(
            Bucket=self._bucket,
            Key=self.key(shard_id),
            Body=encode_shape(shape),
            ContentType="application/json",
        )

    async def others(self, shard_id: str, slots_per_day: int) -> list[FleetShape]:
        """The valid shapes of every other shard (refused ones are logged, once per version)."""
        own = self.key(shard_id)
        seen: dict[str, str] = {}
        paginator = self._s3.get_paginator("list_objects_v2")
        async for page in paginator.paginate(Bucket=self._bucket, Prefix=self.prefix):
            for obj in page.get("Contents", []):
                if obj["Key"] != own and obj["Key"].endswith(".json"):
                    seen[obj["Key"]] = str(obj.get("ETag", ""))
        for key in list(self._cache):
            if key not in seen:
                del self._cache[key]
        shapes: list[FleetShape] = []
        for key, etag in sorted(seen.items()):
            cached = self._cache.get(key)
            if cached is None or cached[0] != etag:
                cached = self._cache[key] = (etag, await self._fetch(key, slots_per_day))
            if cached[1] is not None:
                shapes.append(cached[1])
        return shapes

    async def _fetch(self, key: str, slots_per_day: int) -> FleetShape | None:
        resp = await self._s3.get_object(Bucket=self._bucket, Key=key)
        async with resp["Body"] as body:
            blob = bytes(await body.read())
        try:
            return decode_shape(blob, slots_per_day)
        except FleetShapeError as exc:
            log.error(
                "fleet shape refused: not used as the fleet's prior",
                extra={"key": key, "reason": str(exc), "bytes": len(blob)},
            )
            return None


class FleetExchange:
    """When a shard publishes its shape and reads the others' (at most every `every_s` seconds of
    wall clock, and once at the start), and what a failure does: nothing but a log line."""

    def __init__(
        self, store: S3FleetShapes, every_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._store = store
        self._every_s = every_s
        self._clock = clock
        self._last: float | None = None
        self._failing = False
        self.exchanges = 0

    @property
    def enabled(self) -> bool:
        return self._every_s > 0

    def due(self) -> bool:
        return self.enabled and (self._last is None or self._clock() - self._last >= self._every_s)

    async def exchange(self, shard_id: str, core: ShardCore) -> bool:
        """Publish this shard's shape (when it knows anything) and set the others' as its prior.
        True when it happened; False when not due or S3 failed (the shard keeps the prior it had)."""
        if not self.due():
            return False
        self._last = self._clock()
        shape = core.fleet_shape()
        if shape is None:
            return False  # detection off: nothing to share or read
        try:
            if not shape.empty():
                await self._store.publish(shard_id, shape)
            others = await self._store.others(shard_id, shape.slots_per_day)
        except Exception as exc:  # advisory: S3 down, access denied, a read cut short
            if not self._failing:
                log.warning(
                    "fleet shape exchange failed; the shard goes on with its own stores' shape",
                    extra={"shard_id": shard_id, "error": f"{type(exc).__name__}: {exc}"},
                )
            self._failing = True
            return False
        if self._failing:
            log.info("fleet shape exchange works again", extra={"shard_id": shard_id})
        self._failing = False
        prior = merge_shapes(others, shape.slots_per_day)
        core.set_fleet_prior(prior)
        self.exchanges += 1
        return True
