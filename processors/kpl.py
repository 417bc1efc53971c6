"""KPL de-aggregation: one Kinesis record that packs many user records (the Kinesis Producer Library,
or ``aws-kinesis-agg``), unpacked into its records as the KCL does for ``kcl-processor``.

The format: the magic bytes ``F3 89 9A C2``, a protobuf ``AggregatedRecord``, then the MD5 of the
protobuf bytes (16 bytes)::

    message AggregatedRecord {
      repeated string partition_key_table     = 1;
      repeated string explicit_hash_key_table = 2;
      repeated Record records                 = 3;
    }
    message Record {
      required uint64 partition_key_index     = 1;
      optional uint64 explicit_hash_key_index = 2;
      required bytes  data                    = 3;
      repeated Tag    tags                    = 4;
    }

A record with the magic that fails anything here (its checksum, its protobuf, an index out of its
table) is refused whole with the reason: unlike the KCL, which would hand such a record on as if it
were one plain record, so its bytes would be rejected anyway as "not valid UTF-8", without saying why.
Pure: no I/O, so the core's fuzz target covers it too.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Final

MAGIC: Final = b"\xf3\x89\x9a\xc2"
_DIGEST_BYTES: Final = 16
_VARINT: Final = 0
_I64: Final = 1
_LEN: Final = 2
_I32: Final = 5


@dataclass(frozen=True, slots=True)
class SubRecord:
    """One user record of an aggregate; `index` is its sub-sequence number."""

    index: int
    partition_key: str
    data: bytes


@dataclass(frozen=True, slots=True)
class Deaggregated:
    records: list[SubRecord] = field(default_factory=list)
    error: str | None = None  # set: the whole record is refused, with this reason


class _Corrupt(Exception):
    pass


def is_aggregated(data: bytes) -> bool:
    return data[:4] == MAGIC


def deaggregate(data: bytes, outer_partition_key: str = "") -> Deaggregated:
    """The user records of an aggregated record, or the reason it cannot be read.

    A record without the magic is not an aggregate: it comes back as its only record (index 0).
    """
    if not is_aggregated(data):
        return Deaggregated([SubRecord(0, outer_partition_key, data)])
    if len(data) < len(MAGIC) + _DIGEST_BYTES:
        return Deaggregated(error=f"KPL aggregate of {len(data)} bytes is too short for its checksum")
    body = data[len(MAGIC) : -_DIGEST_BYTES]
    if hashlib.md5(body, usedforsecurity=False).digest() != data[-_DIGEST_BYTES:]:
        return Deaggregated(error="KPL aggregate fails its MD5 checksum (damaged in transit?)")
    try:
        keys, packed = _aggregated(body)
        records = []
        for index, (key_index, payload) in enumerate(packed):
            if key_index >= len(keys):
                raise _Corrupt(f"record {index} names partition key {key_index} of {len(keys)}")
            records.append(SubRecord(index, keys[key_index], payload))
    except _Corrupt as exc:
        return Deaggregated(error=f"KPL aggregate is not a valid AggregatedRecord: {exc}")
    if not records:
        return Deaggregated(error="KPL aggregate holds no records")
    return Deaggregated(records)


def _aggregated(body: bytes) -> tuple[list[str], list[tuple[int, bytes]]]:
    keys: list[str] = []
    records: list[tuple[int, bytes]] = []
    for number, wire, value in _fields(body):
        if number == 1:
            keys.append(_text(_bytes(wire, value), "partition key"))
        elif number == 2:
            _text(_bytes(wire, value), "explicit hash key")
        elif number == 3:
            records.append(_record(_bytes(wire, value)))
    return keys, records


def _record(body: bytes) -> tuple[int, bytes]:
    key_index: int | None = None
    payload: bytes | None = None
    for number, wire, value in _fields(body):
        if number == 1:
            if wire != _VARINT or not isinstance(value, int):
                raise _Corrupt("partition_key_index is not a varint")
            key_index = value
        elif number == 3:
            payload = _bytes(wire, value)
    if key_index is None or payload is None:
        raise _Corrupt("a record misses its partition_key_index or data")
    return key_index, payload


def _bytes(wire: int, value: int | bytes) -> bytes:
    if wire != _LEN or not isinstance(value, bytes):
        raise _Corrupt("a length-delimited field has another wire type")
    return value


def _text(value: bytes, what: str) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise _Corrupt(f"a {what} is not UTF-8") from None


def _fields(buf: bytes) -> list[tuple[int, int, int | bytes]]:
    """(field number, wire type, value) of every field of one protobuf message."""
    out: list[tuple[int, int, int | bytes]] = []
    pos, end = 0, len(buf)
    while pos < end:
        tag, pos = _varint(buf, pos)
        number, wire = tag >> 3, tag & 7
        if number == 0:
            raise _Corrupt("field number 0")
        if wire == _VARINT:
            value, pos = _varint(buf, pos)
            out.append((number, wire, value))
        elif wire == _LEN:
            size, pos = _varint(buf, pos)
            if size > end - pos:
                raise _Corrupt("a field runs past the end of the message")
            out.append((number, wire, buf[pos : pos + size]))
            pos += size
        elif wire in (_I64, _I32):
            size = 8 if wire == _I64 else 4
            if size > end - pos:
                raise _Corrupt("a field runs past the end of the message")
            pos += size
        else:
            raise _Corrupt(f"wire type {wire} of field {number} is not supported")
    return out


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(buf):
            raise _Corrupt("a varint runs past the end of the message")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift >= 64:
            raise _Corrupt("a varint is longer than 10 bytes")
