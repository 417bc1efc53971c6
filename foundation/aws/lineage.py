"""Shard lineage on resharding: which shards may be read now, and which stores a child inherits.

Kinesis keeps a store in one shard at a time (partition key = store). When a shard is split or two
are merged, the parent closes and its stores continue in the child that owns their hash key. Reading
a child before its parent is finished would apply a store's newer events before its older ones, so
children wait for their parents, and start from the parents' state cut along their hash-key range.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ShardInfo:
    shard_id: str
    parents: tuple[str, ...]
    start_hash: int
    end_hash: int

    @classmethod
    def from_api(cls, shard: Mapping[str, Any]) -> ShardInfo:
        parents = tuple(p for p in (shard.get("ParentShardId"), shard.get("AdjacentParentShardId")) if p)
        hashes = shard["HashKeyRange"]
        return cls(shard["ShardId"], parents, int(hashes["StartingHashKey"]), int(hashes["EndingHashKey"]))

    def owns(self, partition_key: str) -> bool:
        return self.start_hash <= hash_key(partition_key) <= self.end_hash


def hash_key(partition_key: str) -> int:
    """Kinesis maps a partition key to a shard by the MD5 of its UTF-8 bytes, as a 128-bit integer."""
    return int.from_bytes(hashlib.md5(partition_key.encode("utf-8")).digest(), "big")


def ready(shards: Iterable[ShardInfo], ended: set[str], running: set[str]) -> list[ShardInfo]:
    """Shards to start now: not finished, not running, and every parent still listed has ended.

    A parent no longer listed has aged out of the stream's retention: nothing of it is left to read.
    """
    listed = {s.shard_id for s in shards}
    return [
        s
        for s in shards
        if s.shard_id not in ended
        and s.shard_id not in running
        and all(p in ended or p not in listed for p in s.parents)
    ]


async def list_shards(kinesis: Any, stream: str) -> list[ShardInfo]:
    """Every shard the stream lists (open and closed within its retention), with its lineage; both
    shells read the stream's shards with this (an aiobotocore Kinesis client)."""
    shards: list[ShardInfo] = []
    args: dict[str, Any] = {"StreamName": stream}
    while True:
        resp = await kinesis.list_shards(**args)
        shards.extend(ShardInfo.from_api(s) for s in resp["Shards"])
        token = resp.get("NextToken")
        if not token:
            return shards
        args = {"NextToken": token}
