"""Objects of the state through the checkpoint format, as a restart would give them back."""

from __future__ import annotations

from typing import Any, TypeVar

from processors.core.monitor import AnomalyMonitor
from processors.core.state_codec import Context
from processors.core.state_format import decode_piece, encode_piece
from processors.core.state_schema import CODEC
from processors.core.windows import WindowSpec

T = TypeVar("T")


def detector(det: T) -> T:
    """A store's detector encoded as a checkpoint piece and decoded again."""
    d: Any = det
    ctx = Context({"detection": d.config, "slot_ms": d.slot_ms, "long_slots": getattr(d, "long_slots", 4)})
    restored: T = decode_piece(encode_piece(det), ctx, "detector")
    return restored


def monitor(mon: AnomalyMonitor) -> AnomalyMonitor:
    """A monitor and its detectors through the checkpoint format."""
    specs = [WindowSpec(mon.slot_ms, mon.slot_ms)]
    if mon.long_slots > 1:
        specs.append(WindowSpec(mon.slot_ms * mon.long_slots, mon.slot_ms))
    fresh = AnomalyMonitor(mon.config, tuple(specs), mon.late_bound_ms)
    values = {
        "monitor": fresh,
        "detection": mon.config,
        "slot_ms": mon.slot_ms,
        "long_slots": mon.long_slots,
        "late_bound_ms": mon.late_bound_ms,
    }
    ctx = Context(values)
    versions = CODEC.versions()
    restored: AnomalyMonitor = CODEC.decode(
        CODEC.encode(mon, AnomalyMonitor), AnomalyMonitor, ctx, "monitor", versions
    )
    restored.detectors = {store: detector(det) for store, det in mon.detectors.items()}
    return restored


def encoded(value: Any, tp: Any) -> bytes:
    """A value's stored form as bytes (for comparing two states)."""
    import msgspec

    return msgspec.msgpack.encode(CODEC.encode(value, tp))
