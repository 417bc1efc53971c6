"""Memory of (store_id, event_id) pairs, so a repeated record changes nothing, in bounded memory.

The guarantee (docs/durability.md): a repeat of (`store_id`, `event_id`) carrying the same event time
`ts` is always ignored while `ts` is within the horizon H of the shard's dedup clock (the newest event
time seen, guarded against clocks far ahead, below). Beyond H the pair may be forgotten, and then a
repeat counts again. A real event is never taken for a duplicate, except through a collision of the
96-bit key below, whose odds are given in docs/durability.md (about 3e-14 per shard-month at 1,000
events/s).

How it stays small:
- A pair is kept as a 96-bit key: the BLAKE2b digest of ``store_id \\x1f event_id`` (12 bytes; a store
  id cannot hold \\x1f, so two different pairs never give the same input), split into a 64-bit `hi` and
  a 32-bit `lo`.
- Keys live in *buckets* of event time (`bucket_ms`, 15 minutes by default), chosen by the event's own
  `ts`: a repeat of a record has the same `ts`, so it is looked for in one bucket only. A bucket
  expires whole once all of its event time is older than H behind the clock.
- A bucket's keys are stored as immutable sorted *runs* (two numpy arrays: 12 bytes per key), each
  with a name, so a checkpoint writes a run once and names it afterwards (processors/checkpoints.py).
  Keys added since the last cut wait in `fresh` (a dict hi -> lo) until the next cut.
- While a bucket is *hot* (its event time is still current), a Python set of its whole keys (one
  96-bit int each) answers "new?" in one lookup. When the clock passes the bucket's end by one more
  bucket, the bucket is sealed: its runs are merged into one and the set is dropped (a late repeat
  then costs a binary search in the run).

The clock: an event more than `max_ahead_ms` ahead of the clock does not move it (a till with a
wrong clock must not expire everyone's memory); its key is kept all the same. Once
`ahead_quorum` such events are held, the clock believes them and jumps (time really moved on,
e.g. after a long outage). An event already older than H behind the clock is applied and not
remembered (`beyond_horizon` counts them).
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final

import numpy as np
import numpy.typing as npt

from foundation.timeunits import DAY_MS, HOUR_MS, MINUTE_MS

DEFAULT_HORIZON_MS: Final = DAY_MS
DEFAULT_BUCKET_MS: Final = 15 * MINUTE_MS
DEFAULT_MAX_AHEAD_MS: Final = HOUR_MS
DEFAULT_AHEAD_QUORUM: Final = 1_000
FRESH_MAX: Final = 65_536  # keys waiting for a cut, per bucket, before one is made anyway
HOT_RUNS_MAX: Final = 256  # runs of a hot bucket before they are merged (short checkpoint periods)
SEALED_RUNS_MAX: Final = 8  # runs of a sealed bucket (late keys) before they are merged
_NEVER: Final = -(2**62)
_RUN_MAGIC: Final = b"SSDR1\x00\x00\x00"
_blake2b = hashlib.blake2b
# A fresh 12-byte BLAKE2b state, copied for each key: a copy and an update cost about half of a new
# hasher with its keyword arguments parsed (the same digest).
_HASHER: Final = hashlib.blake2b(digest_size=12)

U64 = npt.NDArray[np.uint64]
U32 = npt.NDArray[np.uint32]


def key_of(store_id: str, event_id: str) -> tuple[int, int]:
    """The 96-bit key of a pair, as (hi: 64 bits, lo: 32 bits)."""
    digest = _blake2b(f"{store_id}\x1f{event_id}".encode("utf-8", "surrogatepass"), digest_size=12).digest()
    whole = int.from_bytes(digest, "big")
    return whole >> 32, whole & 0xFFFFFFFF


class Run:
    """An immutable set of keys, sorted by `hi` (ties are possible and handled)."""

    __slots__ = ("hi", "lo", "name")

    def __init__(self, name: str, hi: U64, lo: U32) -> None:
        self.name = name
        self.hi = hi
        self.lo = lo

    def __len__(self) -> int:
        return int(self.hi.shape[0])

    @property
    def nbytes(self) -> int:
        return int(self.hi.nbytes + self.lo.nbytes)

    @classmethod
    def build(cls, name: str, hi: U64, lo: U32) -> Run:
        order = np.argsort(hi, kind="stable")  # cheap when the caller hands keys over sorted
        return cls(name, np.ascontiguousarray(hi[order]), np.ascontiguousarray(lo[order]))

    def contains(self, hi: int, lo: int) -> bool:
        keys = self.hi
        i = int(keys.searchsorted(np.uint64(hi)))
        n = keys.shape[0]
        while i < n and int(keys[i]) == hi:
            if int(self.lo[i]) == lo:
                return True
            i += 1
        return False

    def member(self, hi: U64, lo: U32) -> npt.NDArray[np.bool_]:
        """Which of many keys are in the run (vectorised)."""
        keys = self.hi
        n = keys.shape[0]
        if n == 0 or hi.shape[0] == 0:
            return np.zeros(hi.shape[0], dtype=bool)
        i = keys.searchsorted(hi)
        j = np.minimum(i, n - 1)
        hit = (keys[j] == hi) & (i < n)
        found = hit & (self.lo[j] == lo)
        # Equal `hi` with another `lo` (two keys sharing 64 bits: rare): look along the tie.
        for k in np.flatnonzero(hit & ~found):
            found[k] = self.contains(int(hi[k]), int(lo[k]))
        result: npt.NDArray[np.bool_] = found
        return result

    def to_bytes(self) -> bytes:
        n = len(self)
        return (
            _RUN_MAGIC
            + struct.pack("<Q", n)
            + self.hi.astype("<u8").tobytes()
            + self.lo.astype("<u4").tobytes()
        )

    @classmethod
    def from_bytes(cls, name: str, blob: bytes) -> Run:
        if blob[:8] != _RUN_MAGIC:
            raise ValueError(f"dedup run {name}: not a run object")
        (n,) = struct.unpack_from("<Q", blob, 8)
        if len(blob) != 16 + 12 * n:
            raise ValueError(f"dedup run {name}: {len(blob)} bytes, expected {16 + 12 * n}")
        # Views on the object's bytes (read-only, which runs are), no copy.
        hi: U64 = np.frombuffer(blob, dtype="<u8", count=n, offset=16).astype(np.uint64, copy=False)
        lo: U32 = np.frombuffer(blob, dtype="<u4", count=n, offset=16 + 8 * n).astype(np.uint32, copy=False)
        return cls(name, hi, lo)

    def __reduce__(self) -> tuple[object, ...]:
        return Run.from_bytes, (self.name, self.to_bytes())


def _whole(run: Run) -> list[int]:
    return [(h << 32) | w for h, w in zip(run.hi.tolist(), run.lo.tolist(), strict=True)]


def _merged(name: str, runs: list[Run], fresh: Mapping[int, int]) -> Run:
    his: list[U64] = [r.hi for r in runs]
    los: list[U32] = [r.lo for r in runs]
    if fresh:
        his.append(np.fromiter(fresh.keys(), dtype=np.uint64, count=len(fresh)))
        los.append(np.fromiter(fresh.values(), dtype=np.uint32, count=len(fresh)))
    return Run.build(name, np.concatenate(his), np.concatenate(los))


@dataclass(slots=True)
class Bucket:
    runs: list[Run] = field(default_factory=list)
    fresh: dict[int, int] = field(default_factory=dict)
    # Every key of the bucket as one 96-bit int, so that "is this new?" is one set lookup while the
    # bucket is current; None when sealed, or when fed in bulk (then the exact runs answer).
    hot: set[int] | None = field(default_factory=set)
    sealed: bool = False

    def __len__(self) -> int:
        return sum(len(r) for r in self.runs) + len(self.fresh)

    def holds(self, hi: int, lo: int) -> bool:
        if self.fresh.get(hi) == lo:
            return True
        return any(run.contains(hi, lo) for run in self.runs)


@dataclass(frozen=True, slots=True)
class Manifest:
    """Everything of a Dedup but its runs' keys: what a checkpoint's head holds."""

    horizon_ms: int
    bucket_ms: int
    max_ahead_ms: int
    ahead_quorum: int
    clock_ms: int
    next_run: int
    beyond_horizon: int
    buckets: tuple[tuple[int, tuple[str, ...], bool], ...]  # (index, run names, not sealed yet)


class Dedup:
    __slots__ = (
        "_ahead",
        "_buckets",
        "_next_run",
        "_run_tag",
        "ahead_quorum",
        "beyond_horizon",
        "bucket_ms",
        "clock_ms",
        "horizon_ms",
        "max_ahead_ms",
    )

    def __init__(
        self,
        horizon_ms: int,
        bucket_ms: int = DEFAULT_BUCKET_MS,
        max_ahead_ms: int = DEFAULT_MAX_AHEAD_MS,
        ahead_quorum: int = DEFAULT_AHEAD_QUORUM,
    ) -> None:
        if horizon_ms <= 0 or bucket_ms <= 0:
            raise ValueError("the dedup horizon and bucket must be positive")
        self.horizon_ms = horizon_ms
        self.bucket_ms = bucket_ms
        self.max_ahead_ms = max_ahead_ms
        self.ahead_quorum = ahead_quorum
        self.clock_ms = _NEVER
        self.beyond_horizon = 0
        self._buckets: dict[int, Bucket] = {}
        self._ahead: dict[int, int] = {}  # bucket -> keys held there ahead of the clock
        self._next_run = 0
        self._run_tag = ""  # set by the checkpoint store: one per owner of the shard (tag_runs)

    # --- sizes ----------------------------------------------------------------------------------

    def __len__(self) -> int:
        return sum(len(b) for b in self._buckets.values())

    @property
    def nbytes(self) -> int:
        """Bytes of the exact keys (runs), the pending keys and the hot pre-check sets."""
        total = 0
        for bucket in self._buckets.values():
            total += sum(r.nbytes for r in bucket.runs)
            total += 120 * len(bucket.fresh)  # dict slot + two small ints
            if bucket.hot is not None:
                total += 70 * len(bucket.hot)  # set slot + one 96-bit int
        return total

    def buckets(self) -> dict[int, Bucket]:
        return self._buckets

    # --- the hot path ---------------------------------------------------------------------------

    def first_time(self, store_id: str, event_id: str, ts_ms: int) -> bool:
        """True (and remembered) the first time a pair is seen; False for a repeat."""
        hasher = _HASHER.copy()
        hasher.update(f"{store_id}\x1f{event_id}".encode("utf-8", "surrogatepass"))
        key = int.from_bytes(hasher.digest(), "big")
        # The common case inlined (a bucket still taking keys, room in its fresh keys, the clock in
        # the same bucket); everything else in _first_time.
        bucket_ms = self.bucket_ms
        bucket = self._buckets.get(ts_ms // bucket_ms)
        if bucket is not None:
            hot = bucket.hot
            if hot is not None:
                if key in hot:
                    return False
                hi = key >> 32
                fresh = bucket.fresh
                clock = self.clock_ms
                if (
                    hi not in fresh
                    and len(fresh) < FRESH_MAX
                    and (
                        ts_ms <= clock
                        or (ts_ms // bucket_ms == clock // bucket_ms and ts_ms - clock <= self.max_ahead_ms)
                    )
                ):
                    hot.add(key)
                    fresh[hi] = key & 0xFFFFFFFF
                    if ts_ms > clock:
                        self.clock_ms = ts_ms  # what _advance does within the clock's bucket
                    return True
        return self._first_time(key, key >> 32, key & 0xFFFFFFFF, ts_ms)

    def first_time_key(self, hi: int, lo: int, ts_ms: int) -> bool:
        """`first_time` for a key already made (`key_of`)."""
        return self._first_time((hi << 32) | lo, hi, lo, ts_ms)

    def _first_time(self, key: int, hi: int, lo: int, ts_ms: int) -> bool:
        idx = ts_ms // self.bucket_ms
        bucket = self._buckets.get(idx)
        if bucket is None:
            if (idx + 1) * self.bucket_ms <= self.clock_ms - self.horizon_ms:
                self.beyond_horizon += 1  # older than the horizon: applied, not remembered
                return True
            bucket = self._buckets[idx] = Bucket()
        else:
            hot = bucket.hot
            if hot is not None:
                if key in hot:  # the whole 96-bit key: exact
                    return False
            elif bucket.holds(hi, lo):
                return False
        if bucket.hot is not None:
            bucket.hot.add(key)
        fresh = bucket.fresh
        if hi in fresh or len(fresh) >= FRESH_MAX:
            self._cut(bucket)  # a second key with the same hi (or many keys): make a run first
        bucket.fresh[hi] = lo
        if ts_ms > self.clock_ms:
            self._tick(ts_ms, idx, 1)
        return True

    def _tick(self, ts_ms: int, idx: int, count: int) -> None:
        """Move the clock to `ts_ms` unless it is too far ahead; seal and expire buckets."""
        clock = self.clock_ms
        if clock != _NEVER and ts_ms - clock > self.max_ahead_ms:
            ahead = self._ahead
            ahead[idx] = ahead.get(idx, 0) + count
            if sum(ahead.values()) >= self.ahead_quorum:
                self._jump()
            return
        self._advance(ts_ms)

    def _jump(self) -> None:
        """Enough events say that time moved on: the clock goes to the earliest of them."""
        first = min(self._ahead)
        self._ahead.clear()
        self._advance(first * self.bucket_ms)

    def _advance(self, ts_ms: int) -> None:
        old = self.clock_ms
        self.clock_ms = ts_ms
        bucket_ms = self.bucket_ms
        if old != _NEVER and ts_ms // bucket_ms == old // bucket_ms:
            return
        expire_before = ts_ms - self.horizon_ms  # buckets that end at or before this go
        seal_before = ts_ms - bucket_ms  # hot buckets that end at or before this are sealed
        for idx in list(self._buckets):
            end = (idx + 1) * bucket_ms
            if end <= expire_before:
                del self._buckets[idx]
            elif end <= seal_before:
                bucket = self._buckets[idx]
                if not bucket.sealed:
                    self._seal(bucket)
        limit = ts_ms + self.max_ahead_ms
        for idx in [i for i in self._ahead if i * bucket_ms <= limit]:
            del self._ahead[idx]

    def _name(self) -> str:
        self._next_run += 1
        return f"r{self._next_run:012d}{self._run_tag}"

    @property
    def run_tag(self) -> str:
        return self._run_tag

    def tag_runs(self, tag: str, rename: bool = False) -> None:
        """Name the runs made from now on with `tag` too (and, with `rename`, the runs held now).

        Two owners of a shard continuing from the same checkpoint (one that lost its lease and has
        not heard yet) count run numbers alike; a tag of each owner's own keeps one from writing a
        different run under a name the other's checkpoint names."""
        self._run_tag = tag
        if rename:
            for bucket in self._buckets.values():
                bucket.runs = [Run(self._name(), r.hi, r.lo) for r in bucket.runs]

    def _cut(self, bucket: Bucket) -> None:
        fresh = bucket.fresh
        if not fresh:
            return
        n = len(fresh)
        hi = np.fromiter(fresh.keys(), dtype=np.uint64, count=n)
        lo = np.fromiter(fresh.values(), dtype=np.uint32, count=n)
        bucket.runs.append(Run.build(self._name(), hi, lo))
        bucket.fresh = {}
        limit = SEALED_RUNS_MAX if bucket.sealed else HOT_RUNS_MAX
        if len(bucket.runs) > limit:
            bucket.runs = [_merged(self._name(), bucket.runs, {})]

    def _seal(self, bucket: Bucket) -> None:
        bucket.sealed = True
        bucket.hot = None
        if len(bucket.runs) + (1 if bucket.fresh else 0) > 1:
            bucket.runs = [_merged(self._name(), bucket.runs, bucket.fresh)]
            bucket.fresh = {}

    # --- many keys at once (the soak benchmark's feed; same structure, same rules) ------------------

    def add_many(self, hi: U64, lo: U32, ts_ms: int) -> npt.NDArray[np.bool_]:
        """Keys of events that all have event time `ts_ms` (one bucket): True where new.

        The same rules as `first_time_key` for each key in order (the first copy of a key is the new
        one); the new keys become one run at once, as a cut would make it.
        """
        n = int(hi.shape[0])
        idx = ts_ms // self.bucket_ms
        if (idx + 1) * self.bucket_ms <= self.clock_ms - self.horizon_ms:
            self.beyond_horizon += n
            return np.ones(n, dtype=bool)
        bucket = self._buckets.get(idx)
        if bucket is None:
            bucket = self._buckets[idx] = Bucket()
        self._cut(bucket)
        order = np.argsort(hi, kind="stable")  # cheap when the caller hands keys over sorted
        sh, sl = hi[order], lo[order]
        fresh = np.ones(n, dtype=bool)
        if n > 1:
            # Equal `hi` next to each other: a repeat inside the batch, or (rarely) two keys sharing
            # 64 bits. Look along each tie for an equal `lo` before it.
            for k in (np.flatnonzero(sh[1:] == sh[:-1]) + 1).tolist():
                j = k - 1
                while j >= 0 and sh[j] == sh[k]:
                    if sl[j] == sl[k]:
                        fresh[k] = False
                        break
                    j -= 1
        for run in bucket.runs:
            fresh &= ~run.member(sh, sl)
        if fresh.all():
            nhi, nlo = sh, sl
        else:
            nhi, nlo = sh[fresh], sl[fresh]
        bucket.hot = None  # bulk: lookups go to the exact runs (building the pre-check costs more)
        if nhi.shape[0]:
            bucket.runs.append(Run(self._name(), np.ascontiguousarray(nhi), np.ascontiguousarray(nlo)))
            limit = SEALED_RUNS_MAX if bucket.sealed else HOT_RUNS_MAX
            if len(bucket.runs) > limit:
                bucket.runs = [_merged(self._name(), bucket.runs, {})]
        new = np.empty(n, dtype=bool)
        new[order] = fresh
        if ts_ms > self.clock_ms:
            self._tick(ts_ms, idx, int(nhi.shape[0]))
        return new

    # --- checkpoints, resharding ----------------------------------------------------------------

    def cut(self) -> None:
        """Move every pending key into a run, so every key is in a named, immutable run."""
        for bucket in self._buckets.values():
            self._cut(bucket)

    def runs(self) -> dict[str, Run]:
        return {run.name: run for bucket in self._buckets.values() for run in bucket.runs}

    def manifest(self) -> Manifest:
        """The state without its keys. Call `cut()` first: pending keys are not in it."""
        if any(b.fresh for b in self._buckets.values()):
            raise RuntimeError("cut() before manifest(): pending keys would be lost")
        return Manifest(
            horizon_ms=self.horizon_ms,
            bucket_ms=self.bucket_ms,
            max_ahead_ms=self.max_ahead_ms,
            ahead_quorum=self.ahead_quorum,
            clock_ms=self.clock_ms,
            next_run=self._next_run,
            beyond_horizon=self.beyond_horizon,
            buckets=tuple(
                (idx, tuple(r.name for r in b.runs), not b.sealed) for idx, b in sorted(self._buckets.items())
            ),
        )

    @classmethod
    def from_manifest(cls, manifest: Manifest, runs: Mapping[str, Run]) -> Dedup:
        dedup = cls(manifest.horizon_ms, manifest.bucket_ms, manifest.max_ahead_ms, manifest.ahead_quorum)
        dedup.clock_ms = manifest.clock_ms
        dedup._next_run = manifest.next_run
        dedup.beyond_horizon = manifest.beyond_horizon
        for idx, names, current in manifest.buckets:
            bucket = Bucket(runs=[runs[name] for name in names], hot=None, sealed=not current)
            if current:
                hot: set[int] = set()
                for run in bucket.runs:
                    hot.update(_whole(run))
                bucket.hot = hot
            dedup._buckets[idx] = bucket
        for idx in dedup._buckets:
            if idx * dedup.bucket_ms > dedup.clock_ms + dedup.max_ahead_ms and dedup.clock_ms != _NEVER:
                dedup._ahead[idx] = len(dedup._buckets[idx])
        return dedup

    def renamed(self) -> Dedup:
        """A copy whose runs have fresh names of its own (the runs' keys are shared, immutable)."""
        self.cut()
        copy = Dedup(self.horizon_ms, self.bucket_ms, self.max_ahead_ms, self.ahead_quorum)
        copy.clock_ms = self.clock_ms
        copy.beyond_horizon = self.beyond_horizon
        copy._next_run = self._next_run
        copy._run_tag = self._run_tag
        copy._ahead = dict(self._ahead)
        for idx, bucket in self._buckets.items():
            runs = [Run(copy._name(), r.hi, r.lo) for r in bucket.runs]
            hot = None if bucket.hot is None else set(bucket.hot)
            copy._buckets[idx] = Bucket(runs=runs, hot=hot, sealed=bucket.sealed)
        return copy

    def merge(self, other: Dedup) -> None:
        """Take in another shard's memory (two shards merged into one): the union of their keys."""
        other.cut()
        self.cut()
        for idx, theirs in other._buckets.items():
            mine = self._buckets.get(idx)
            runs = [Run(self._name(), r.hi, r.lo) for r in theirs.runs]
            if mine is None:
                hot = None if theirs.hot is None else set(theirs.hot)
                self._buckets[idx] = Bucket(runs=runs, hot=hot, sealed=theirs.sealed)
                continue
            mine.runs.extend(runs)
            if mine.hot is not None:
                if theirs.hot is None:
                    mine.hot = None  # their keys have no pre-check: ask the runs
                else:
                    mine.hot |= theirs.hot
        for idx, count in other._ahead.items():
            self._ahead[idx] = self._ahead.get(idx, 0) + count
        if other.clock_ms > self.clock_ms:
            if self.clock_ms == _NEVER:
                self.clock_ms = other.clock_ms
            else:
                self._advance(other.clock_ms)


def total_keys(buckets: Iterable[Bucket]) -> int:
    return sum(len(b) for b in buckets)
