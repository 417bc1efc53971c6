"""Constant-time shard bookkeeping for moto's Kinesis, so the embedded AWS keeps up with the app.

moto keeps a shard's records in an ordered dict and, on every PutRecord, copies all its keys to find
the last sequence number; every GetRecords scans the shard from its first record. Both grow with the
shard, so a shard of 20,000 records took ~0.7 ms per put and ~80 ms per GetRecords here. A shard's
sequence numbers are consecutive integers (each put is the last plus one; trimming only removes from
the front), so the same answers come from direct lookups. The replacements keep moto's semantics,
falling back to moto's own scan whenever the numbers are not consecutive; a property test checks
them against moto's implementation.
"""

from __future__ import annotations

from typing import Any

_PATCHED = False


def _last_key(records: dict[int, Any]) -> int:
    return next(reversed(records)) if records else 0


def _first_key(records: dict[int, Any]) -> int:
    return next(iter(records)) if records else 0


def get_records(self: Any, last_sequence_id: str, limit: int | None) -> tuple[list[Any], int, int]:
    records: dict[int, Any] = self.records
    last_sequence_int = int(last_sequence_id)
    if not records:
        return [], last_sequence_int, 0
    first, last = _first_key(records), _last_key(records)
    if last - first + 1 != len(records):  # not consecutive: moto's own scan
        original: tuple[list[Any], int, int] = _original_get_records(self, last_sequence_id, limit)
        return original
    start = max(last_sequence_int + 1, first)
    stop = last + 1 if limit is None else min(last + 1, start + limit)
    results = [records[n] for n in range(start, stop)]
    if not results:
        return [], last_sequence_int, 0
    behind_s = records[last].created_at - results[-1].created_at
    return results, results[-1].sequence_number, int(behind_s * 1000)


def get_max_sequence_number(self: Any) -> int:
    return _last_key(self.records)


def get_min_sequence_number(self: Any) -> int:
    return _first_key(self.records)


_original_get_records: Any = None


def install() -> None:
    """Patch moto's Shard class once per process (the embedded AWS calls this before it serves)."""
    global _PATCHED, _original_get_records
    if _PATCHED:
        return
    from moto.kinesis.models import Shard

    _original_get_records = Shard.get_records
    for name, replacement in (
        ("get_records", get_records),
        ("get_max_sequence_number", get_max_sequence_number),
        ("get_min_sequence_number", get_min_sequence_number),
    ):
        setattr(Shard, name, replacement)
    _PATCHED = True
