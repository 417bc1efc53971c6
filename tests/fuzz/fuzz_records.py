"""Coverage-guided fuzzing (atheris, libFuzzer) of every parser a producer's bytes reach.

Targets, chosen by the input's first byte: the processor core (``ShardCore.apply``: it must return,
count the record once, and leave stock alone when it rejects), KPL de-aggregation, the HTTP API's
``parse_batch`` (it may refuse a request only with an IngestError, never anything else), and the
inventory-file parsers of ``shelfstream ingest`` (a file refused whole only with FileRefused).

    python tests/fuzz/fuzz_records.py CORPUS_DIR -max_total_time=60    # or: make fuzz

Any other exception or a failed check is a crash: libFuzzer stops and writes the input to crash-*.
"""

from __future__ import annotations

import sys
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import io

import shelfstream.api.auth  # noqa: F401  (its dependencies load uninstrumented: only ours are traced)

with atheris.instrument_imports(
    include=[
        "processors.core",
        "processors.kpl",
        "foundation.contract",
        "shelfstream.api.ingest",
        "producers.ingest",
    ]
):
    from processors.core import CoreConfig, ShardCore
    from processors.kpl import deaggregate
    from producers.ingest import FileContext, FileRefused, detect_format, parse_file
    from shelfstream.api.auth import Principal
    from shelfstream.api.ingest import IngestError, parse_batch

_HQ = Principal("hq", None, "hq")
_STORE = Principal("store", "s1", "s1")
_COUNT = (
    b'{"type":"count","event_id":"c","store_id":"s1","ts":"2026-08-01T08:00:00Z","product_id":"p1",'
    b'"count":20}'
)


def _core(raw: bytes) -> None:
    core = ShardCore(CoreConfig())
    core.apply(_COUNT, "0")
    core.drain()
    accepted = core.apply(raw, "1", partition_key="s1")
    effects = core.drain()
    assert core.stats.events_read == 2, "a record counted other than once"
    if effects.rejected:
        assert not accepted
        assert effects.rejected[0].record == raw, "a rejected record not kept byte-exact"
        assert core.inventory() == {"s1": {"p1": 20}}, "a rejected record changed stock"


def _kpl(raw: bytes) -> None:
    result = deaggregate(raw, "pk")
    if result.error is None:
        assert result.records, "an aggregate with no records accepted"
    for sub in result.records:
        _ = (sub.data, sub.partition_key)


def _api(raw: bytes) -> None:
    for who in (_HQ, _STORE):
        try:
            batch = parse_batch(raw, who, 500)
        except IngestError as exc:
            status = exc.status
            assert status in {400, 403, 413}, status
            continue
        for entry in batch.rejected:
            assert entry.reason


def _file(raw: bytes) -> None:
    """`shelfstream ingest`: a whole file may be refused (FileRefused), a row only rejected."""
    ctx = FileContext("f.csv", "0" * 16, 0, 0, max_line_bytes=256)
    for name in ("f.csv", "f.jsonl"):
        try:
            file_type = detect_format(name, raw[:4096])
            rows = list(parse_file(io.BytesIO(raw), file_type, ctx))
        except FileRefused as exc:
            reason = exc.reason
            assert reason, "a file refused without a reason"
            continue
        for row in rows:
            _ = row.line


def one_input(data: bytes) -> None:
    if not data:
        return
    target, raw = data[0] % 4, data[1:]
    if target == 0:
        _core(raw)
    elif target == 1:
        _kpl(raw)
    elif target == 2:
        _api(raw)
    else:
        _file(raw)


def main() -> None:
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
