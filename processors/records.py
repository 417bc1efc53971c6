"""Kinesis records into a shard's core, the same way in both shells (embedded reader and KCL).

A record may be a KPL aggregate (unpacked here; one that fails its checksum is rejected whole, with
the reason), and applying a record must never stop the shard: the core turns every bad input into a
rejection, and if applying still raises (a fault in our own code), the record is kept byte-exact as a
dead letter with the error, logged, counted, and the shard moves on instead of crash-looping on it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from processors.core import RejectedRecord, ShardCore
from processors.kpl import deaggregate, is_aggregated

log = logging.getLogger(__name__)


def apply_record(
    core: ShardCore,
    data: bytes,
    sequence_number: str,
    partition_key: str | None,
    owns: Callable[[str], bool] | None = None,
) -> int:
    """Apply one Kinesis record; returns how many user records it held (1 unless aggregated).

    Sub-records are applied in order with refs ``<sequence number>/<sub-sequence number>``; all of
    them are applied before the caller can checkpoint, so a checkpoint at a sequence number covers
    every sub-record of that record, as a KCL checkpoint without a sub-sequence number does.
    `owns` (when the shell knows its shard's hash-key range) refuses a sub-record whose partition key
    belongs to another shard: an aggregate packed across stores lands in one shard only.
    """
    if not is_aggregated(data):
        apply_guarded(core, data, sequence_number, partition_key)
        return 1
    result = deaggregate(data, partition_key or "")
    if result.error is not None:
        core.reject(data, sequence_number, result.error)
        return 1
    for sub in result.records:
        ref = f"{sequence_number}/{sub.index}"
        if owns is not None and not owns(sub.partition_key):
            reason = (
                f"KPL sub-record under partition key {sub.partition_key[:64]!r}, which another shard owns: "
                "aggregate only records of one shard (or put it again on its own)"
            )
            core.reject(sub.data, ref, reason)
            continue
        apply_guarded(core, sub.data, ref, sub.partition_key)
    return len(result.records)


def apply_guarded(core: ShardCore, data: bytes, ref: str, partition_key: str | None) -> None:
    try:
        core.apply(data, ref, partition_key)
    except Exception as exc:
        error = f"{type(exc).__name__}: {str(exc).strip()[:500]}"
        log.exception("record could not be applied; kept as a dead letter", extra={"ref": ref})
        core.out.failed.append(RejectedRecord(ref, error, data))
