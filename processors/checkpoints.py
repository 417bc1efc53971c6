"""Checkpoints: a shard's whole core state together with the sequence number it reflects, in one
S3 object per shard, so the pair is written atomically and a shard's state can move between workers."""

from __future__ import annotations

import pickle
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from botocore.exceptions import ClientError

from config import Settings
from foundation.aws.lineage import ShardInfo
from processors.core import ShardCore

FORMAT: Final = 1


@dataclass(frozen=True)
class Checkpoint:
    shard_id: str
    sequence_number: str | None
    core: ShardCore
    shard_ended: bool = False


def encode_checkpoint(
    shard_id: str, sequence_number: str | None, core: ShardCore, shard_ended: bool
) -> bytes:
    return pickle.dumps(
        {
            "format": FORMAT,
            "shard_id": shard_id,
            "sequence_number": sequence_number,
            "shard_ended": shard_ended,
            "core": core.snapshot(),
        },
        protocol=pickle.HIGHEST_PROTOCOL,
    )


def decode_checkpoint(blob: bytes) -> Checkpoint:
    data = pickle.loads(blob)
    if data.get("format") != FORMAT:
        raise ValueError(f"checkpoint format {data.get('format')} is not {FORMAT}")
    return Checkpoint(
        shard_id=data["shard_id"],
        sequence_number=data["sequence_number"],
        core=ShardCore.restore(data["core"]),
        shard_ended=bool(data.get("shard_ended", False)),
    )


class S3Checkpoints:
    """Async checkpoint store on S3 (the processor's own bucket, under `checkpoint_prefix`)."""

    def __init__(self, s3: Any, bucket: str, settings: Settings) -> None:
        self._s3 = s3
        self._bucket = bucket
        self._prefix = f"{settings.checkpoint_prefix}{settings.stream_name}/"

    def key(self, shard_id: str) -> str:
        return f"{self._prefix}{shard_id}.ckpt"

    async def save(
        self, shard_id: str, sequence_number: str | None, core: ShardCore, ended: bool = False
    ) -> None:
        body = encode_checkpoint(shard_id, sequence_number, core, ended)
        await self._s3.put_object(Bucket=self._bucket, Key=self.key(shard_id), Body=body)

    async def load(self, shard_id: str) -> Checkpoint | None:
        try:
            resp = await self._s3.get_object(Bucket=self._bucket, Key=self.key(shard_id))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in {"NoSuchKey", "404"}:
                return None
            raise
        async with resp["Body"] as body:
            return decode_checkpoint(await body.read())


def load_all_sync(s3: Any, bucket: str, settings: Settings, include_ended: bool = False) -> list[Checkpoint]:
    """Every shard's checkpoint, for `shelfstream inventory` (a boto3 client). A closed shard's
    checkpoint is left out unless asked for: its stores live on in its children's checkpoints."""
    prefix = f"{settings.checkpoint_prefix}{settings.stream_name}/"
    result = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            blob = s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
            checkpoint = decode_checkpoint(blob)
            if include_ended or not checkpoint.shard_ended:
                result.append(checkpoint)
    return result


@dataclass(frozen=True)
class MergedInventory:
    """On-hand stock of every store across shards, and the stores more than one shard held."""

    stock: dict[str, dict[str, int]]
    # store -> (the shard whose view was taken, every shard that held one, whether that shard is the
    # one the store's partition key maps to): never merged silently.
    conflicts: dict[str, tuple[str, tuple[str, ...], bool]]

    def warnings(self) -> list[str]:
        return [
            f"store {store} has stock in {len(held)} shards ({', '.join(held)}); showing {taken}'s, "
            + (
                "the shard its partition key maps to (records under another store's key are rejected)"
                if owner
                else "the largest: the shard its partition key maps to is not known"
            )
            for store, (taken, held, owner) in sorted(self.conflicts.items())
        ]


def merge_inventories(
    views: Sequence[tuple[str, Mapping[str, Mapping[str, int]]]], shards: Sequence[ShardInfo] | None = None
) -> MergedInventory:
    """Join each shard's stock (shard id, store -> product -> on hand). A store's events all go to one
    shard (partition key = store_id, checked by the core), so a store held by two shards is a fault
    (an older checkpoint, a record put under another store's key before that was checked): the view
    of the shard that owns the store's hash key is taken, and the conflict reported, never a silent
    last-writer-wins merge."""
    holders: dict[str, list[tuple[str, Mapping[str, int]]]] = {}
    for shard_id, stock in views:
        for store, products in stock.items():
            holders.setdefault(store, []).append((shard_id, products))
    merged: dict[str, dict[str, int]] = {}
    conflicts: dict[str, tuple[str, tuple[str, ...], bool]] = {}
    owners = {s.shard_id: s for s in shards or ()}
    for store, held in sorted(holders.items()):
        chosen = held[0]
        if len(held) > 1:
            owning = [h for h in held if h[0] in owners and owners[h[0]].owns(store)]
            chosen = owning[0] if owning else max(held, key=lambda h: sum(1 for _ in h[1]))
            conflicts[store] = (chosen[0], tuple(h[0] for h in held), bool(owning))
        merged[store] = dict(sorted(chosen[1].items()))
    return MergedInventory(merged, conflicts)
