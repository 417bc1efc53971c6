"""The fleet's shape of a day as data: what one shard has learned of it, and what the fleet has.

A shard's stores borrow their peers' shape of a day until their own history outweighs it
(`PeerDayShape` in base.py). A store alone in its shard, or a shard that has not had a Sunday yet, has no
peers to borrow from, so every shard publishes what it has learned (a `FleetShape`) and reads the
others': per kind of day (weekday, Saturday, Sunday) and slot of the local day, the mean share of a
weekday's sales in that slot and the mean of its square, and how many store-days taught it.

The shape is normalised (shares of a store's weekday total), so stores of any size add up, and its
size does not grow with the fleet: 3 x slots-per-day x 2 numbers per shard (96 slots: about 6 KB of
JSON), whatever the number of stores. It is data with a version, never code: `decode_shape` refuses
anything that is not a shape of this version with finite, non-negative numbers of the right length.
"""

from __future__ import annotations

import math
from typing import Final

import msgspec

from foundation.errors import ShelfstreamError

SHAPE_VERSION: Final = 1
KINDS: Final = 3  # weekday, Saturday, Sunday
# Store-days one shard's shape weighs at most when shapes are merged: a faded mean (PeerDayShape's
# fading 0.05) remembers about 20 days, so a shard with a year of history is not worth 365 days.
MAX_DAYS_WEIGHT: Final = 40
_MAX_SLOTS: Final = 24 * 60  # one-minute slots at the finest
_MAX_BYTES: Final = 1 << 20


class FleetShapeError(ShelfstreamError):
    """A stored fleet shape that is not one (wrong version, length or numbers): refused, never used."""


class KindShape(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One kind of day: store-days learned, and per slot the mean share of a weekday's sales and
    the mean of its square (their difference is how much stores disagree about the slot)."""

    days: int
    share: list[float]
    square: list[float]


class FleetShape(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What a shard (or the merged fleet) knows of the shape of a store's day, by local time."""

    version: int
    slots_per_day: int
    kinds: list[KindShape]
    stores: int = 0  # stores behind it (information: weights are store-days)

    def empty(self) -> bool:
        return all(k.days == 0 for k in self.kinds)


_decoder: Final = msgspec.json.Decoder(FleetShape)
_encoder: Final = msgspec.json.Encoder()


def encode_shape(shape: FleetShape) -> bytes:
    return _encoder.encode(shape)


def decode_shape(blob: bytes, slots_per_day: int | None = None) -> FleetShape:
    """A stored shape, validated; raises FleetShapeError with the reason for anything else."""
    if len(blob) > _MAX_BYTES:
        raise FleetShapeError(f"fleet shape is {len(blob)} bytes, more than {_MAX_BYTES}")
    try:
        shape = _decoder.decode(blob)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise FleetShapeError(f"not a fleet shape: {exc}") from None
    check_shape(shape, slots_per_day)
    return shape


def check_shape(shape: FleetShape, slots_per_day: int | None = None) -> None:
    """Raise FleetShapeError unless `shape` is a well-formed shape of this version."""
    if shape.version != SHAPE_VERSION:
        raise FleetShapeError(f"fleet shape version {shape.version} is not {SHAPE_VERSION}")
    n = shape.slots_per_day
    if not 1 <= n <= _MAX_SLOTS:
        raise FleetShapeError(f"fleet shape has {n} slots a day (1 to {_MAX_SLOTS})")
    if slots_per_day is not None and n != slots_per_day:
        raise FleetShapeError(f"fleet shape has {n} slots a day, this detector {slots_per_day}")
    if len(shape.kinds) != KINDS:
        raise FleetShapeError(f"fleet shape has {len(shape.kinds)} kinds of day, not {KINDS}")
    for kind in shape.kinds:
        if kind.days < 0 or len(kind.share) != n or len(kind.square) != n:
            raise FleetShapeError("fleet shape: a kind of day has a negative count or the wrong length")
        for value in (*kind.share, *kind.square):
            if not (math.isfinite(value) and value >= 0.0):
                raise FleetShapeError(f"fleet shape holds {value!r}: shares are finite and >= 0")


def empty_shape(slots_per_day: int) -> FleetShape:
    zeros = [0.0] * slots_per_day
    return FleetShape(SHAPE_VERSION, slots_per_day, [KindShape(0, zeros, zeros) for _ in range(KINDS)])


def merge_shapes(shapes: list[FleetShape], slots_per_day: int) -> FleetShape | None:
    """The fleet's shape from its shards': per kind and slot, the means weighted by store-days
    (each shard's at most MAX_DAYS_WEIGHT). None when no shape of that many slots knows anything."""
    usable = [s for s in shapes if s.slots_per_day == slots_per_day and not s.empty()]
    if not usable:
        return None
    kinds = []
    for k in range(KINDS):
        weights = [min(s.kinds[k].days, MAX_DAYS_WEIGHT) for s in usable]
        total = sum(weights)
        if total == 0:
            kinds.append(KindShape(0, [0.0] * slots_per_day, [0.0] * slots_per_day))
            continue
        share = [0.0] * slots_per_day
        square = [0.0] * slots_per_day
        for s, w in zip(usable, weights, strict=True):
            if w == 0:
                continue
            part = s.kinds[k]
            for i in range(slots_per_day):
                share[i] += w * part.share[i]
                square[i] += w * part.square[i]
        kinds.append(
            KindShape(
                sum(s.kinds[k].days for s in usable),
                [v / total for v in share],
                [v / total for v in square],
            )
        )
    return FleetShape(SHAPE_VERSION, slots_per_day, kinds, sum(s.stores for s in usable))
