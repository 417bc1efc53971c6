"""A shard core's checkpoint objects: the head, each store's detector (a piece), and the whole.

Each object is a magic line then one MessagePack map (docs/checkpoints.md):

* head, `shelfstream-core-head 1`: `parts` (the version of every part it was written with),
  `config`, `stats`, `inventory` (the stock ledger), `forecast` (None under the threshold policy),
  `policy` (`kind` and its fields), `windows`, `monitor` (None when detection is off), `last_seen`,
  `next_sweep_ms`, `manifest` (the dedup memory but its keys) and `detectors` (store -> the piece
  holding its detector);
* piece, `shelfstream-detector 1`: `parts`, `kind` (the detector's part) and `detector`;
* whole, `shelfstream-core 1`: `head`, `runs` (name -> run bytes) and `pieces` (name -> piece).

Decoding reads only these maps and builds only declared parts (state_schema.py): a pickle, a
truncated object, another program's object or a field of the wrong type is refused with a
`StateFormatError` naming what is wrong, and nothing in it runs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final, Protocol, TypeVar

import msgspec

from processors.core.dedup import Dedup, Manifest, Run
from processors.core.demand import DemandForecast
from processors.core.monitor import AnomalyMonitor
from processors.core.state import CoreConfig, CoreState, CoreStats
from processors.core.state_codec import Context, StateFormatError
from processors.core.state_schema import CODEC
from processors.core.stock_ledger import StockLedger
from processors.core.windows import WindowEngine

HEAD_MAGIC: Final = b"shelfstream-core-head 1\n"
PIECE_MAGIC: Final = b"shelfstream-detector 1\n"
WHOLE_MAGIC: Final = b"shelfstream-core 1\n"

_encoder: Final = msgspec.msgpack.Encoder()
_HEAD_KEYS: Final = frozenset(
    {
        "parts",
        "config",
        "stats",
        "inventory",
        "forecast",
        "policy",
        "windows",
        "monitor",
        "last_seen",
        "next_sweep_ms",
        "manifest",
        "detectors",
    }
)


class _Core(Protocol):
    state: CoreState


Core = TypeVar("Core", bound=_Core)


def _open(blob: bytes, magic: bytes, what: str) -> dict[str, Any]:
    """The map inside an object, or a StateFormatError saying why there is none."""
    if not isinstance(blob, bytes | bytearray | memoryview):
        raise StateFormatError(f"{what}: not bytes")
    blob = bytes(blob)
    if not blob.startswith(magic):
        if blob[:1] == b"\x80":
            raise StateFormatError(
                f"{what}: a Python pickle (the checkpoint format of earlier builds), refused: loading a "
                "pickle runs code. Rebuild the shard's state with `shelfstream warm-start --force`"
            )
        raise StateFormatError(f"{what}: not a shelfstream object (it starts {blob[:24]!r})")
    try:
        data = msgspec.msgpack.decode(blob[len(magic) :])
    except (msgspec.DecodeError, ValueError, RecursionError) as exc:
        raise StateFormatError(f"{what}: unreadable ({exc})") from None
    if type(data) is not dict:
        raise StateFormatError(f"{what}: not a map")
    return data


def _versions(data: Mapping[str, Any], what: str) -> dict[str, int]:
    parts = data.get("parts")
    if type(parts) is not dict or any(type(k) is not str or type(v) is not int for k, v in parts.items()):
        raise StateFormatError(f"{what}: no valid `parts` (the version of each part)")
    return parts


def encode_piece(detector: object) -> bytes:
    part = CODEC.parts.get(type(detector))
    if part is None:
        raise TypeError(f"{type(detector).__name__} is not a declared detector")
    body = {"parts": CODEC.versions(), "kind": part.name, "detector": CODEC.encode_part(detector)}
    return PIECE_MAGIC + _encoder.encode(body)


def encode_head(
    config: CoreConfig, state: CoreState, manifest: Manifest, detectors: Mapping[str, str]
) -> bytes:
    body = {
        "parts": CODEC.versions(),
        "config": CODEC.encode(config, CoreConfig),
        "stats": CODEC.encode(state.stats, CoreStats),
        "inventory": CODEC.encode(state.inventory, StockLedger),
        "forecast": None if state.forecast is None else CODEC.encode(state.forecast, DemandForecast),
        "policy": {"kind": CODEC.parts[type(state.policy)].name, "policy": CODEC.encode_part(state.policy)},
        "windows": None if state.windows is None else CODEC.encode(state.windows, WindowEngine),
        "monitor": None if state.monitor is None else CODEC.encode(state.monitor, AnomalyMonitor),
        "last_seen": dict(state.last_seen),
        "next_sweep_ms": state.next_sweep_ms,
        "manifest": CODEC.encode(manifest, Manifest),
        "detectors": dict(sorted(detectors.items())),
    }
    return HEAD_MAGIC + _encoder.encode(body)


def _head(blob: bytes) -> tuple[dict[str, Any], dict[str, int]]:
    data = _open(blob, HEAD_MAGIC, "checkpoint head")
    if data.keys() != _HEAD_KEYS:
        missing = sorted(_HEAD_KEYS - data.keys())
        extra = sorted(map(str, data.keys() - _HEAD_KEYS))
        raise StateFormatError(f"checkpoint head: missing {missing}, unknown {extra}")
    return data, _versions(data, "checkpoint head")


def head_names(blob: bytes) -> list[str]:
    """The runs and pieces a head names."""
    data, versions = _head(blob)
    manifest = CODEC.decode(data["manifest"], Manifest, Context(), "head.manifest", versions)
    detectors = CODEC.decode(data["detectors"], dict[str, str], Context(), "head.detectors", versions)
    runs = [name for _, names, _ in manifest.buckets for name in names]
    return sorted({*runs, *detectors.values()})


def restore(
    make: Callable[[CoreConfig], Core],
    blob: bytes,
    runs: Mapping[str, Run],
    pieces: Mapping[str, bytes],
    keys: bool = True,
) -> Core:
    """A core from its head, runs and pieces (ShardCore.from_parts)."""
    data, versions = _head(blob)
    config = CODEC.decode(data["config"], CoreConfig, Context(), "head.config", versions)
    core = make(config)  # a fresh core: what the stored fields are restored onto
    state = core.state
    ctx = Context({"config": config, "detection": config.detection, "late_bound_ms": config.late_bound_ms})
    ctx.values["inventory"] = state.inventory
    state.stats = CODEC.decode(data["stats"], CoreStats, ctx, "head.stats", versions)
    state.inventory = CODEC.decode(data["inventory"], StockLedger, ctx, "head.inventory", versions)
    if (data["forecast"] is None) != (state.forecast is None):
        raise StateFormatError("head.forecast: stored against its own restock settings")
    if state.forecast is not None:
        state.forecast = CODEC.decode(data["forecast"], DemandForecast, ctx, "head.forecast", versions)
    policy = data["policy"]
    policy_kind = CODEC.parts[type(state.policy)].name
    if type(policy) is not dict or policy.keys() != {"kind", "policy"} or policy["kind"] != policy_kind:
        raise StateFormatError(f"head.policy: not the {policy_kind} its settings name")
    state.policy = CODEC.decode_part(policy_kind, policy["policy"], ctx, "head.policy", versions)
    for name, kind in (("windows", WindowEngine), ("monitor", AnomalyMonitor)):
        current = getattr(state, name)
        if (data[name] is None) != (current is None):
            raise StateFormatError(
                f"head.{name}: stored {'without' if data[name] is None else 'with'} them, "
                "against its own settings"
            )
        if current is not None:
            ctx.values[name] = current
            if name == "monitor":
                ctx.values["slot_ms"], ctx.values["long_slots"] = current.slot_ms, current.long_slots
            setattr(state, name, CODEC.decode(data[name], kind, ctx, f"head.{name}", versions))
    state.last_seen = CODEC.decode(data["last_seen"], dict[str, int], ctx, "head.last_seen", versions)
    state.next_sweep_ms = CODEC.decode(data["next_sweep_ms"], int, ctx, "head.next_sweep_ms", versions)
    manifest = CODEC.decode(data["manifest"], Manifest, ctx, "head.manifest", versions)
    if not keys:
        manifest = Manifest(
            **{**{f: getattr(manifest, f) for f in manifest.__dataclass_fields__}, "buckets": ()}
        )
    named = {name for _, names, _ in manifest.buckets for name in names}
    if named - runs.keys():
        raise StateFormatError(f"checkpoint: {len(named - runs.keys())} dedup runs it names are missing")
    state.dedup = Dedup.from_manifest(manifest, runs)
    detectors = CODEC.decode(data["detectors"], dict[str, str], ctx, "head.detectors", versions)
    monitor = state.monitor
    if monitor is not None:
        restored = {}
        for store_id, name in detectors.items():
            if name not in pieces:
                if keys:
                    raise StateFormatError(f"checkpoint: the detector piece of store {store_id} is missing")
                continue
            restored[store_id] = decode_piece(pieces[name], ctx, f"detector of {store_id}")
        monitor.detectors = restored
    return core


def decode_piece(blob: bytes, ctx: Context, what: str) -> Any:
    data = _open(blob, PIECE_MAGIC, what)
    if data.keys() != {"parts", "kind", "detector"} or type(data["kind"]) is not str:
        raise StateFormatError(f"{what}: not a detector piece")
    versions = _versions(data, what)
    return CODEC.decode_part(data["kind"], data["detector"], ctx, what, versions)


def whole(parts: Any) -> bytes:
    """A core in one object (ShardCore.snapshot)."""
    body = {
        "head": parts.head,
        "runs": {name: run.to_bytes() for name, run in parts.runs.items()},
        "pieces": dict(parts.pieces),
    }
    return WHOLE_MAGIC + _encoder.encode(body)


def split_whole(blob: bytes) -> tuple[bytes, dict[str, Run], dict[str, bytes]]:
    data = _open(blob, WHOLE_MAGIC, "core snapshot")
    if data.keys() != {"head", "runs", "pieces"}:
        raise StateFormatError("core snapshot: not a head with its runs and pieces")
    head, runs, pieces = data["head"], data["runs"], data["pieces"]
    if type(head) is not bytes or type(runs) is not dict or type(pieces) is not dict:
        raise StateFormatError("core snapshot: head, runs or pieces of the wrong type")
    if any(type(v) is not bytes for v in (*runs.values(), *pieces.values())):
        raise StateFormatError("core snapshot: a run or piece is not bytes")
    try:
        decoded = {name: Run.from_bytes(name, body) for name, body in runs.items()}
    except ValueError as exc:
        raise StateFormatError(f"core snapshot: {exc}") from None
    return head, decoded, pieces
