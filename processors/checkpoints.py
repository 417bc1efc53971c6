"""Checkpoints: a shard's whole core state together with the sequence number it reflects, in one
S3 object per shard, so the pair is written atomically and a shard's state can move between workers."""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from typing import Any, Final

from botocore.exceptions import ClientError

from config import Settings
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
