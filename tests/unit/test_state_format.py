"""The checkpoint format: documented data that outlives the code, and refuses what is not it.

Pure: no sockets. The S3 side (a refused checkpoint left in place) is in
tests/integration/test_checkpoints.py.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from processors.checkpoints import MAGIC, decode_checkpoint, encode_checkpoint
from processors.core import CoreConfig, ShardCore
from processors.core.detectors import DetectorConfig
from processors.core.restock_policy import ThresholdPolicy
from processors.core.state_codec import Codec, Context, Part, StateFormatError
from processors.core.state_format import HEAD_MAGIC, PIECE_MAGIC, split_whole
from processors.core.state_schema import CODEC, reference
from tests.golden.checkpoints import make as golden

GOLDEN = Path(golden.__file__).parent
KINDS = list(golden.KINDS)


def _run(kind: str, share: float = 1.0) -> tuple[ShardCore, list[bytes]]:
    lines = golden.lines_for(kind)
    core = golden.core_for(kind)
    for i, raw in enumerate(lines[: int(len(lines) * share)]):
        core.apply(raw, i)
        core.drain()
    return core, lines


def _attributes(obj: object) -> set[str]:
    names = set(vars(obj)) if hasattr(obj, "__dict__") else set()
    for cls in type(obj).__mro__:
        slots = cls.__dict__.get("__slots__", ())
        names.update(s for s in ([slots] if isinstance(slots, str) else slots) if hasattr(obj, s))
    if dataclasses.is_dataclass(obj):
        names.update(f.name for f in dataclasses.fields(obj))
    if isinstance(obj, msgspec.Struct):
        names.update(obj.__struct_fields__)
    return {n for n in names if n != "__weakref__"}


def _instances(obj: object, found: dict[type, object], depth: int = 0) -> None:
    """One instance of every declared class reachable from obj."""
    if depth > 12:
        return
    if isinstance(obj, dict):
        for k, v in list(obj.items())[:3]:
            _instances(k, found, depth + 1)
            _instances(v, found, depth + 1)
        return
    if isinstance(obj, list | tuple | set | frozenset) or type(obj).__name__ == "deque":
        for v in list(obj)[:3]:  # type: ignore[call-overload]
            _instances(v, found, depth + 1)
        return
    part = CODEC.parts.get(type(obj))
    if part is None or type(obj) in found:
        return
    found[type(obj)] = obj
    for name in part.fields:
        _instances(getattr(obj, name), found, depth + 1)


@pytest.fixture(scope="module")
def every_part() -> dict[type, object]:
    found: dict[type, object] = {}
    for kind in KINDS:
        core, _ = _run(kind)
        core.state.monitor.fleet.set_prior(core.fleet_shape())  # type: ignore[union-attr]
        parts = core.checkpoint_parts()  # also cuts the dedup memory into runs: the manifest
        _instances(core.config, found)
        _instances(core.state.stats, found)
        _instances(core.state.inventory, found)
        _instances(core.state.forecast, found)
        _instances(core.state.policy, found)
        _instances(ThresholdPolicy(), found)
        _instances(core.state.windows, found)
        _instances(core.state.monitor, found)
        _instances(core.state.dedup.manifest(), found)
        for det in core.state.monitor.detectors.values():  # type: ignore[union-attr]
            _instances(det, found)
        assert parts.pieces
    return found


def test_every_class_of_the_state_has_a_part_and_every_part_an_instance(
    every_part: dict[type, object],
) -> None:
    assert set(every_part) == set(CODEC.parts), "a part no state reaches, or a class of the state with none"


@pytest.mark.parametrize("name", sorted(CODEC.by_name))
def test_a_parts_fields_are_exactly_its_classs_attributes(name: str, every_part: dict[type, object]) -> None:
    """A field renamed or added in code fails here, instead of changing the stored format."""
    part = CODEC.by_name[name]
    obj = every_part[part.cls]
    transient = {"excused", "keen", "hits"}  # the seasonal detector's per-window class defaults
    assert _attributes(obj) - transient == set(part.fields) | set(part.derived)
    assert not set(part.fields) & set(part.derived)


def test_the_documented_format_is_the_generated_one() -> None:
    text = (Path(__file__).parents[2] / "docs" / "checkpoints.md").read_text()
    begin, end = "<!-- parts:begin -->\n", "<!-- parts:end -->"
    assert text[text.index(begin) + len(begin) : text.index(end)] == reference(), (
        "docs/checkpoints.md is stale: python -m processors.checkpoint_docs"
    )


# --- golden checkpoints: every kept format restores ----------------------------------------------


def _goldens() -> list[Path]:
    return sorted(GOLDEN.glob("format-*.ckpt"))


def test_every_kind_of_detector_has_a_golden_of_the_current_format() -> None:
    names = {p.stem for p in _goldens()}
    from processors.checkpoints import FORMAT

    assert {f"format-{FORMAT}-{kind}" for kind in KINDS} <= names


@pytest.mark.parametrize("path", _goldens(), ids=lambda p: p.stem)
def test_a_golden_checkpoint_restores_stock_dedup_demand_and_detectors(path: Path) -> None:
    expect = json.loads(path.with_suffix(".json").read_text())
    checkpoint = decode_checkpoint(path.read_bytes())
    core = checkpoint.core
    assert checkpoint.sequence_number == expect["sequence_number"]
    assert core.inventory() == expect["stock"]
    assert len(core.state.dedup) == expect["dedup_keys"]
    demand = core.state.forecast
    assert sorted(demand.stores if demand else []) == expect["demand_stores"]
    assert sorted(core.state.monitor.detectors) == expect["detectors"]  # type: ignore[union-attr]
    assert core.stats.events_valid == expect["events_valid"]
    # Nothing lost on the way in: stored again, the state is what the golden holds, part for part
    head, runs, pieces = split_whole(decode_checkpoint_whole(path.read_bytes()))
    again = core.checkpoint_parts()
    assert set(again.pieces.values()) == set(pieces.values())
    assert {r.to_bytes() for r in again.runs.values()} == {r.to_bytes() for r in runs.values()}
    assert msgspec.msgpack.decode(again.head[len(HEAD_MAGIC) :]) == msgspec.msgpack.decode(
        head[len(HEAD_MAGIC) :]
    )


def decode_checkpoint_whole(blob: bytes) -> bytes:
    core: bytes = msgspec.msgpack.decode(blob[len(MAGIC) :])["core"]
    return core


@pytest.mark.parametrize("kind", KINDS)
def test_a_golden_goes_on_as_the_run_that_never_stopped(kind: str) -> None:
    """The golden's events again are all repeats (the dedup memory came back), and the rest of the
    input gives what a run that never stopped gives, alerts and windows included."""
    lines = golden.lines_for(kind)
    cut = golden.cut(lines)
    restored = decode_checkpoint((GOLDEN / f"format-3-{kind}.ckpt").read_bytes()).core
    whole, _ = _run(kind, cut / len(lines))
    recent = lines[cut - 200 : cut]
    assert not any(restored.apply(raw) for raw in recent)
    restored.drain()
    for core in (restored, whole):
        for i, raw in enumerate(lines[cut:]):
            core.apply(raw, cut + i)
        core.finish()
    a, b = restored.drain(), whole.drain()
    assert [x.alert_id for x in a.alerts] == [x.alert_id for x in b.alerts]
    assert a.windows == b.windows
    assert a.requests == b.requests
    assert restored.inventory() == whole.inventory()


# --- refused: nothing stored that is not the format is trusted, and nothing in it runs -------------


class _Payload:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.mkdir, (self.marker,))


@pytest.mark.parametrize("where", ["checkpoint", "head", "piece", "snapshot"])
def test_a_crafted_pickle_runs_nothing_and_is_refused_loudly(where: str, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    crafted = pickle.dumps({"format": 2, "core": _Payload(str(marker))})
    core, _ = _run("threshold", 0.3)
    parts = core.checkpoint_parts()
    loaders = {
        "checkpoint": lambda: decode_checkpoint(crafted),
        "head": lambda: ShardCore.from_parts(crafted, parts.runs, parts.pieces),
        "piece": lambda: ShardCore.from_parts(parts.head, parts.runs, dict.fromkeys(parts.pieces, crafted)),
        "snapshot": lambda: ShardCore.restore(crafted),
    }
    with pytest.raises(StateFormatError, match="pickle"):
        loaders[where]()
    assert not marker.exists()


def test_a_truncated_or_foreign_object_is_refused() -> None:
    core, _ = _run("threshold", 0.3)
    blob = encode_checkpoint("shardId-000000000000", "9", core, False)
    for bad, reason in (
        (blob[: len(blob) // 2], "unreadable"),
        (b'{"shard_id": "shardId-000000000000"}', "not a shelfstream checkpoint"),
        (b"", "not a shelfstream checkpoint"),
        (b"shelfstream-checkpoint 9\n", "this release reads 3"),
        (MAGIC + msgspec.msgpack.encode({"shard_id": 1}), "not a checkpoint's fields"),
    ):
        with pytest.raises(StateFormatError, match=reason):
            decode_checkpoint(bad)


def test_a_field_of_the_wrong_type_is_refused_with_where_it_is() -> None:
    core, _ = _run("threshold", 0.3)
    parts = core.checkpoint_parts()
    head = msgspec.msgpack.decode(parts.head[len(HEAD_MAGIC) :])
    store, product = head["inventory"]["stock"][0][0]
    head["inventory"]["stock"][0][1] = "seven"
    with pytest.raises(StateFormatError, match=r"head\.inventory\.stock.*'seven' is not a int"):
        ShardCore.from_parts(HEAD_MAGIC + msgspec.msgpack.encode(head), parts.runs, parts.pieces)
    assert store
    assert product


def test_a_part_from_a_newer_release_is_refused_and_a_missing_piece_too() -> None:
    core, _ = _run("threshold", 0.3)
    parts = core.checkpoint_parts()
    head = msgspec.msgpack.decode(parts.head[len(HEAD_MAGIC) :])
    head["parts"]["stock_ledger"] = 99
    with pytest.raises(StateFormatError, match="newer release"):
        ShardCore.from_parts(HEAD_MAGIC + msgspec.msgpack.encode(head), parts.runs, parts.pieces)
    with pytest.raises(StateFormatError, match=r"piece of store .* is missing"):
        ShardCore.from_parts(parts.head, parts.runs, {})
    piece = msgspec.msgpack.decode(next(iter(parts.pieces.values()))[len(PIECE_MAGIC) :])
    piece["detector"]["unknown_field"] = 1
    with pytest.raises(StateFormatError, match="unknown unknown_field"):
        ShardCore.from_parts(
            parts.head, parts.runs, dict.fromkeys(parts.pieces, PIECE_MAGIC + msgspec.msgpack.encode(piece))
        )


# --- upgrades -------------------------------------------------------------------------------------


@dataclasses.dataclass
class _Shelf:
    units: int
    facings: int


def test_an_older_version_is_upgraded_step_by_step() -> None:
    """The rule a format change follows: a new version, and the step from the one before."""
    part = Part(
        _Shelf,
        "shelf",
        3,
        {"units": (int, "on the shelf"), "facings": (int, "product faces")},
        build=_Shelf,
        upgrades={
            1: lambda old: {"units": old["qty"]},  # version 2 renamed qty
            2: lambda old: {**old, "facings": 1},  # version 3 added facings
        },
    )
    codec = Codec([part])
    assert codec.decode({"qty": 7}, _Shelf, Context(), "shelf", {"shelf": 1}) == _Shelf(7, 1)
    assert codec.decode({"units": 7}, _Shelf, Context(), "shelf", {"shelf": 2}) == _Shelf(7, 1)
    with pytest.raises(StateFormatError, match="newer release"):
        codec.decode({"units": 7, "facings": 2}, _Shelf, Context(), "shelf", {"shelf": 4})


def test_settings_a_release_added_take_their_default_and_dropped_ones_go() -> None:
    stored = CODEC.encode(CoreConfig(window_ms=30 * 60_000), CoreConfig)
    del stored["late_bound_ms"]
    stored["a_setting_since_dropped"] = 3
    config = CODEC.decode(stored, CoreConfig, Context(), "config", CODEC.versions())
    assert config.window_ms == 30 * 60_000
    assert config.late_bound_ms == CoreConfig().late_bound_ms


# --- properties -------------------------------------------------------------------------------------


@settings(max_examples=15, deadline=None)
@given(share=st.floats(min_value=0.05, max_value=0.95), kind=st.sampled_from(["seasonal", "naive", "hst"]))
def test_a_checkpoint_anywhere_gives_what_never_stopping_gives(share: float, kind: str) -> None:
    lines = golden.lines_for(kind)[:4000]
    cut = int(len(lines) * share)
    a = ShardCore(CoreConfig(detection=DetectorConfig(kind=kind)))
    b = ShardCore(CoreConfig(detection=DetectorConfig(kind=kind)))
    for i, raw in enumerate(lines[:cut]):
        a.apply(raw, i)
        b.apply(raw, i)
    head_a = a.drain()
    b.drain()
    parts = b.checkpoint_parts()
    c = ShardCore.from_parts(parts.head, parts.runs, parts.pieces)
    for i, raw in enumerate(lines[cut:]):
        a.apply(raw, cut + i)
        c.apply(raw, cut + i)
    a.finish()
    c.finish()
    x, y = a.drain(), c.drain()
    assert head_a is not None
    assert x.windows == y.windows
    assert [r.alert_id for r in x.requests] == [r.alert_id for r in y.requests]
    assert [getattr(r, "alert_id", None) for r in x.alerts] == [
        getattr(r, "alert_id", None) for r in y.alerts
    ]


@settings(max_examples=200, deadline=None)
@given(
    fading=st.sampled_from([0.01, 0.1, 0.25, 0.35, 0.5]),
    values=st.lists(st.floats(min_value=0, max_value=1e4, allow_nan=False), min_size=1, max_size=40),
)
def test_the_seasonal_baselines_mean_is_rivers_ewmean_float_for_float(
    fading: float, values: list[float]
) -> None:
    """The week baseline left river's EWMean (its state is in a compiled object) for plain fields: the
    detector's numbers must not move by a bit."""
    from river import stats

    from processors.core.detectors.base import FadingMean

    ours, rivers = FadingMean(fading), stats.EWMean(fading)
    for x in values:
        ours.update(x)
        rivers.update(x)
        assert ours.get() == rivers.get()
