"""Checkpoints: a shard's core state with the sequence number it reflects, written incrementally.

A checkpoint is a small *head* object per shard, `<prefix><stream>/<shard>.ckpt` (stock, catalog,
open requests, windows, detectors, counters, the dedup's manifest and the sequence number), plus the
dedup memory's *runs*: immutable objects under `<prefix><stream>.runs/<shard>/<run>`, each written
once. A save writes the runs the head names that are not stored yet, then the head in one PUT (so the
state and its sequence number change together, atomically), then deletes the runs that the previous
head named and the new one does not. A crash between the two leaves unnamed runs behind; the next
owner of the shard removes them when it loads the checkpoint.

The head is fenced: an owner writes it only if it is still the head this owner last read or wrote
(S3's conditional PUT, `If-Match` its ETag, or `If-None-Match: *` for a shard with none yet). A worker
that lost the shard without hearing it yet (a KCL lease taken over while it was busy) would otherwise
put its older state over the new owner's and then delete runs the new owner's head names; instead
its write fails with `ShardTakenOver`, and it deletes nothing.

Restore reads the head and every run it names (in parallel). Readers that want the stock only
(`inventory`, the dashboard) read the head alone.
"""

from __future__ import annotations

import asyncio
import ctypes
import secrets
import sys
import time
from collections.abc import Awaitable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import msgspec
from botocore.exceptions import ClientError

from config import Settings
from foundation.aws.lineage import ShardInfo
from foundation.errors import ShelfstreamError
from processors.core import ShardCore
from processors.core.dedup import Run
from processors.core.processor import PIECE_PREFIX
from processors.core.state_codec import StateFormatError

FORMAT: Final = 3  # 1 and 2 were pickles, no longer read (docs/checkpoints.md)
PARALLEL: Final = 16  # run objects read or written at once
DELETE_BATCH: Final = 1000  # DeleteObjects takes up to 1,000 keys


class ShardTakenOver(ShelfstreamError):
    """The shard's head changed since this owner last read or wrote it: another worker owns it now."""

    def __init__(self, shard_id: str) -> None:
        super().__init__(
            f"shard {shard_id}: its checkpoint was written by another worker since this one read it; "
            "the shard has a new owner, and this worker's state for it is stale"
        )
        self.shard_id = shard_id


_M_MMAP_THRESHOLD: Final = -3


def return_large_buffers_to_the_system() -> bool:
    """Keep glibc from holding freed run buffers (~11 MB each) in its heap.

    glibc raises its mmap threshold to the size of the largest mmapped block freed (up to 32 MB), so
    after the first run written or merged, buffers of that size come from the heap and stay in the
    process's RSS when freed. Pinning the threshold (as MALLOC_MMAP_THRESHOLD_ would) keeps every such
    buffer mmapped and returned on free. False where this is not glibc.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, 128 * 1024))
    except (OSError, AttributeError):
        return False


@dataclass(frozen=True)
class Checkpoint:
    shard_id: str
    sequence_number: str | None
    core: ShardCore
    shard_ended: bool = False
    runs: tuple[str, ...] = ()


@dataclass(frozen=True)
class SaveReport:
    """What one save did: for metrics, logs and the soak benchmark."""

    head_bytes: int
    runs_written: int
    bytes_written: int  # head + new runs
    runs_deleted: int
    total_bytes: int  # head + every run it names: the checkpoint's size
    seconds: float


MAGIC: Final = f"shelfstream-checkpoint {FORMAT}\n".encode()
_encoder: Final = msgspec.msgpack.Encoder()


class CheckpointRefused(ShelfstreamError):
    """A stored checkpoint that fails validation: the shard does not start from it, nor from nothing."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(
            f"checkpoint {key} refused: {reason}. The shard is not started from it nor from an empty "
            "state; restore a good copy, or rebuild it from history (`shelfstream warm-start --force`)"
        )
        self.key = key


def encode_head(
    shard_id: str, sequence_number: str | None, head: bytes, runs: Iterable[str], ended: bool
) -> bytes:
    body = {
        "shard_id": shard_id,
        "sequence_number": sequence_number,
        "shard_ended": ended,
        "core_head": head,
        "runs": sorted(runs),
    }
    return MAGIC + _encoder.encode(body)


def encode_checkpoint(
    shard_id: str, sequence_number: str | None, core: ShardCore, shard_ended: bool
) -> bytes:
    """A whole checkpoint in one object (the core's runs and pieces inside): for tests and tools."""
    body = {
        "shard_id": shard_id,
        "sequence_number": sequence_number,
        "shard_ended": shard_ended,
        "core": core.snapshot(),
    }
    return MAGIC + _encoder.encode(body)


_HEAD_FIELDS: Final = {"shard_id", "sequence_number", "shard_ended", "core_head", "runs"}
_WHOLE_FIELDS: Final = {"shard_id", "sequence_number", "shard_ended", "core"}


def checkpoint_fields(blob: bytes) -> dict[str, Any]:
    """The checkpoint object's fields, checked; StateFormatError when it is not one of ours."""
    if not blob.startswith(MAGIC):
        if blob[:1] == b"\x80":
            raise StateFormatError(
                "a Python pickle (the checkpoint format before this release): loading a pickle runs code"
            )
        if blob.startswith(b"shelfstream-checkpoint "):
            raise StateFormatError(
                f"checkpoint format {blob.split(b' ', 1)[1][:8]!r}, this release reads {FORMAT}"
            )
        raise StateFormatError(f"not a shelfstream checkpoint (it starts {blob[:24]!r})")
    try:
        data = msgspec.msgpack.decode(blob[len(MAGIC) :])
    except (msgspec.DecodeError, ValueError, RecursionError) as exc:
        raise StateFormatError(f"unreadable ({exc})") from None
    if type(data) is not dict or data.keys() not in (_HEAD_FIELDS, _WHOLE_FIELDS):
        raise StateFormatError("not a checkpoint's fields")
    if type(data["shard_id"]) is not str or type(data["shard_ended"]) is not bool:
        raise StateFormatError("shard_id or shard_ended of the wrong type")
    if data["sequence_number"] is not None and type(data["sequence_number"]) is not str:
        raise StateFormatError("sequence_number of the wrong type")
    if "runs" in data and (
        type(data["runs"]) is not list or any(type(n) is not str or "/" in n or not n for n in data["runs"])
    ):
        raise StateFormatError("runs are not a list of names")
    return data


def head_runs(blob: bytes) -> list[str]:
    return list(checkpoint_fields(blob).get("runs", []))


def decode_checkpoint(
    blob: bytes, runs: dict[str, Run] | None = None, pieces: dict[str, bytes] | None = None
) -> Checkpoint:
    """A checkpoint from its head (and its runs and pieces). Without them, the dedup memory and the
    detectors are left empty: enough for readers of stock, never for a core that goes on processing.
    StateFormatError when any of it fails validation."""
    data = checkpoint_fields(blob)
    if "core" in data:
        if type(data["core"]) is not bytes:
            raise StateFormatError("core is not bytes")
        core = ShardCore.restore(data["core"])
        names: tuple[str, ...] = ()
    else:
        if type(data["core_head"]) is not bytes:
            raise StateFormatError("core_head is not bytes")
        names = tuple(data["runs"])
        core = ShardCore.from_parts(data["core_head"], runs or {}, pieces or {}, keys=runs is not None)
    return Checkpoint(
        shard_id=data["shard_id"],
        sequence_number=data["sequence_number"],
        core=core,
        shard_ended=data["shard_ended"],
        runs=names,
    )


def _precondition_failed(exc: ClientError) -> bool:
    """A conditional write refused: 412, or 409 when another conditional write raced it."""
    code = exc.response.get("Error", {}).get("Code")
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return code in {"PreconditionFailed", "ConditionalRequestConflict"} or status == 412


async def _bounded(tasks: Iterable[Awaitable[Any]], limit: int = PARALLEL) -> list[Any]:
    gate = asyncio.Semaphore(limit)

    async def one(task: Awaitable[Any]) -> Any:
        async with gate:
            return await task

    return list(await asyncio.gather(*(one(t) for t in tasks)))


class S3Checkpoints:
    """Async checkpoint store on S3 (the processor's own bucket, under `checkpoint_prefix`)."""

    def __init__(self, s3: Any, bucket: str, settings: Settings, sweep_older_than_s: float = 600.0) -> None:
        self._s3 = s3
        self._bucket = bucket
        self._prefix = f"{settings.prefixes.checkpoints}{settings.aws.stream_name}/"
        self._runs_prefix = f"{settings.prefixes.checkpoints}{settings.aws.stream_name}.runs/"
        # Unnamed runs younger than this are left alone at load: a previous owner that has not yet
        # heard that it lost the shard may be about to name them.
        self._sweep_older_than_s = sweep_older_than_s
        self._stored: dict[str, set[str]] = {}  # per shard: runs known to be in S3
        # Per shard loaded or saved here: the ETag of its head as this owner last saw it (None: none).
        self._heads: dict[str, str | None] = {}
        # This owner's mark on the runs it names (Dedup.tag_runs): unique per store, so per process.
        self._run_tag = f"-{secrets.token_hex(4)}"
        self.last_save: SaveReport | None = None

    def key(self, shard_id: str) -> str:
        return f"{self._prefix}{shard_id}.ckpt"

    def run_key(self, shard_id: str, name: str) -> str:
        return f"{self._runs_prefix}{shard_id}/{name}"

    async def save(
        self, shard_id: str, sequence_number: str | None, core: ShardCore, ended: bool = False
    ) -> SaveReport:
        started = time.perf_counter()
        # A core this store did not load (a new shard's, a split's or merge's): every run it holds is
        # this owner's to write, under this owner's names.
        core.tag_runs(self._run_tag, rename=True)
        parts = core.checkpoint_parts()
        stored = self._stored.setdefault(shard_id, set())
        new_runs = [run for name, run in parts.runs.items() if name not in stored]
        new_pieces = [(name, blob) for name, blob in parts.pieces.items() if name not in stored]

        async def put(name: str, item: Run | bytes) -> int:
            # A run is encoded when its turn comes: a few in memory at a time.
            blob = item.to_bytes() if isinstance(item, Run) else item
            await self._s3.put_object(Bucket=self._bucket, Key=self.run_key(shard_id, name), Body=blob)
            stored.add(name)
            return len(blob)

        sizes: list[int] = await _bounded(
            [put(run.name, run) for run in new_runs] + [put(name, blob) for name, blob in new_pieces]
        )
        new = [*new_runs, *new_pieces]
        named = set(parts.names)
        head = encode_head(shard_id, sequence_number, parts.head, named, ended)
        await self._put_head(shard_id, head)
        stale = sorted(stored - named)
        await self._delete(shard_id, stale)
        stored.difference_update(stale)
        report = SaveReport(
            head_bytes=len(head),
            runs_written=len(new),
            bytes_written=len(head) + sum(sizes),
            runs_deleted=len(stale),
            total_bytes=len(head)
            + sum(16 + run.nbytes for run in parts.runs.values())
            + sum(len(blob) for blob in parts.pieces.values()),
            seconds=time.perf_counter() - started,
        )
        self.last_save = report
        return report

    async def _put_head(self, shard_id: str, head: bytes) -> None:
        """PUT the head, on the condition that it is the one this owner last saw (see the module)."""
        args: dict[str, Any] = {"Bucket": self._bucket, "Key": self.key(shard_id), "Body": head}
        if shard_id in self._heads:  # a shard never loaded here (a tool's one-off save) is not fenced
            seen = self._heads[shard_id]
            if seen is None:
                args["IfNoneMatch"] = "*"
            else:
                args["IfMatch"] = seen
        try:
            resp = await self._s3.put_object(**args)
        except ClientError as exc:
            if not _precondition_failed(exc):
                raise
            # Our own PUT, retried by the SDK after its answer was lost, fails its condition too:
            # the head is then exactly what we wrote.
            current, etag = await self._get_tagged(self.key(shard_id))
            if current == head:
                self._heads[shard_id] = etag
                return
            self._heads.pop(shard_id, None)
            raise ShardTakenOver(shard_id) from exc
        self._heads[shard_id] = resp.get("ETag")

    async def _delete(self, shard_id: str, names: list[str]) -> None:
        for i in range(0, len(names), DELETE_BATCH):
            chunk = names[i : i + DELETE_BATCH]
            await self._s3.delete_objects(
                Bucket=self._bucket,
                Delete={"Objects": [{"Key": self.run_key(shard_id, n)} for n in chunk], "Quiet": True},
            )

    async def _get(self, key: str) -> bytes:
        return (await self._get_tagged(key))[0]

    async def _get_tagged(self, key: str) -> tuple[bytes, str | None]:
        resp = await self._s3.get_object(Bucket=self._bucket, Key=key)
        async with resp["Body"] as body:
            return bytes(await body.read()), resp.get("ETag")

    async def load(self, shard_id: str) -> Checkpoint | None:
        try:
            blob, etag = await self._get_tagged(self.key(shard_id))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in {"NoSuchKey", "404"}:
                self._heads[shard_id] = None
                return None
            raise
        self._heads[shard_id] = etag
        key = self.key(shard_id)
        try:
            fields = checkpoint_fields(blob)
            if fields["shard_id"] != shard_id:
                raise StateFormatError(f"it is shard {fields['shard_id'][:64]!r}'s checkpoint")
            names = list(fields.get("runs", []))
            bodies = await _bounded(self._get(self.run_key(shard_id, name)) for name in names)
            runs: dict[str, Run] = {}
            pieces: dict[str, bytes] = {}
            for name, body in zip(names, bodies, strict=True):
                if name.startswith(PIECE_PREFIX):
                    pieces[name] = body
                else:
                    runs[name] = Run.from_bytes(name, body)
            checkpoint = decode_checkpoint(blob, runs, pieces)
        except (StateFormatError, ValueError) as exc:
            # Nothing is swept or overwritten: the objects stay for whoever looks into them.
            raise CheckpointRefused(key, str(exc)) from None
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in {"NoSuchKey", "404"}:
                raise
            raise CheckpointRefused(key, "an object it names is missing") from None
        checkpoint.core.tag_runs(self._run_tag, rename=False)  # its runs are stored; new ones are ours
        self._stored[shard_id] = set(names)
        await self.sweep(shard_id, set(names))
        return checkpoint

    async def sweep(self, shard_id: str, named: set[str]) -> int:
        """Delete this shard's runs that no checkpoint names (left by a crash between a save's
        steps), if older than the sweep age. Returns how many went."""
        cutoff = time.time() - self._sweep_older_than_s
        prefix = f"{self._runs_prefix}{shard_id}/"
        stale: list[str] = []
        paginator = self._s3.get_paginator("list_objects_v2")
        async for page in paginator.paginate(Bucket=self._bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                name = obj["Key"][len(prefix) :]
                if name not in named and obj["LastModified"].timestamp() <= cutoff:
                    stale.append(name)
        await self._delete(shard_id, stale)
        return len(stale)


def load_all_sync(s3: Any, bucket: str, settings: Settings, include_ended: bool = False) -> list[Checkpoint]:
    """Every shard's checkpoint head, for `shelfstream inventory` (a boto3 client): stock and
    requests, without the dedup memory. A closed shard's checkpoint is left out unless asked for:
    its stores live on in its children's checkpoints."""
    prefix = f"{settings.prefixes.checkpoints}{settings.aws.stream_name}/"
    result = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            if not obj["Key"].endswith(".ckpt"):
                continue
            blob = s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
            try:
                checkpoint = decode_checkpoint(blob)
            except StateFormatError as exc:
                raise CheckpointRefused(obj["Key"], str(exc)) from None
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
