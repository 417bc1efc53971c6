"""The fleet's shape of a day as data: what a shard publishes, how shapes merge, what a stored one
must be before it is used, and how a shard's stores borrow it (processors/core/detectors/)."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from processors.core import CoreConfig, ShardCore
from processors.core.detectors import DetectorConfig, PeerDayShape, SeasonalDetector
from processors.core.detectors.fleet_shape import (
    MAX_DAYS_WEIGHT,
    FleetShape,
    FleetShapeError,
    KindShape,
    decode_shape,
    encode_shape,
    merge_shapes,
)
from processors.core.state_codec import Context
from processors.core.state_schema import CODEC

SLOTS = 96


def taught(days: int, kind: int = 0, peak: int = 40, slots: int = SLOTS) -> PeerDayShape:
    """A fleet that learned `days` store-days of one kind, all of them busy in one slot."""
    fleet = PeerDayShape(slots)
    day = [0.0] * slots
    day[peak] = 30.0
    day[peak + 1] = 10.0
    for _ in range(days):
        fleet.learn(kind, day, 100.0)
    return fleet


def test_a_shape_round_trips_as_json_data() -> None:
    shape = taught(5, kind=2).shape(stores=3)
    blob = encode_shape(shape)
    assert blob.startswith(b"{")
    back = decode_shape(blob, SLOTS)
    assert back == shape
    assert back.kinds[2].days == 5
    assert back.kinds[2].share[40] == pytest.approx(0.3)
    assert back.stores == 3
    assert PeerDayShape(SLOTS).shape().empty()


def test_a_crafted_pickle_is_refused_and_runs_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return os.system, (f"touch {marker}",)

    with pytest.raises(FleetShapeError, match="not a fleet shape"):
        decode_shape(pickle.dumps(Payload()))
    assert not marker.exists()


@pytest.mark.parametrize(
    ("blob", "reason"),
    [
        (b'{"version": 1, "slots_per_day": 96, "kinds": [', "not a fleet shape"),  # truncated
        (b"\xff\xfe", "not a fleet shape"),
        (b'{"version": 9, "slots_per_day": 2, "kinds": []}', "version 9"),
        (b'{"version": 1, "slots_per_day": 2, "kinds": []}', "kinds of day"),
        (b'{"version": 1, "slots_per_day": 0, "kinds": []}', "slots a day"),
        (b'{"version": 1, "slots_per_day": 2, "kinds": [], "extra": 1}', "not a fleet shape"),
    ],
)
def test_what_is_not_a_shape_is_refused_with_the_reason(blob: bytes, reason: str) -> None:
    with pytest.raises(FleetShapeError, match=reason):
        decode_shape(blob)


def test_negative_or_misshapen_shares_are_refused() -> None:
    good = taught(3).shape()
    bad_kind = KindShape(3, [-0.1] * SLOTS, [0.0] * SLOTS)
    negative = FleetShape(1, SLOTS, [bad_kind, *good.kinds[1:]])
    with pytest.raises(FleetShapeError, match="finite and >= 0"):
        decode_shape(encode_shape(negative))
    short = FleetShape(1, SLOTS, [KindShape(3, [0.0], [0.0]), *good.kinds[1:]])
    with pytest.raises(FleetShapeError, match="wrong length"):
        decode_shape(encode_shape(short))
    with pytest.raises(FleetShapeError, match="this detector 48"):
        decode_shape(encode_shape(good), slots_per_day=48)


def test_shapes_merge_by_store_days_each_capped() -> None:
    a = taught(10, peak=10).shape()
    b = taught(30, peak=50).shape()
    merged = merge_shapes([a, b], SLOTS)
    assert merged is not None
    weekday = merged.kinds[0]
    assert weekday.days == 40
    assert weekday.share[10] == pytest.approx(0.3 * 10 / 40)
    assert weekday.share[50] == pytest.approx(0.3 * 30 / 40)
    # A shard with a year of history counts as MAX_DAYS_WEIGHT store-days, not 365.
    old = taught(365, peak=10).shape()
    merged = merge_shapes([old, b], SLOTS)
    assert merged is not None
    assert merged.kinds[0].share[10] == pytest.approx(0.3 * MAX_DAYS_WEIGHT / (MAX_DAYS_WEIGHT + 30))
    assert merge_shapes([PeerDayShape(SLOTS).shape()], SLOTS) is None
    assert merge_shapes([taught(3, slots=48, peak=5).shape()], SLOTS) is None


@given(st.lists(st.integers(min_value=0, max_value=200), min_size=1, max_size=6))
def test_a_merged_share_lies_between_its_parts(days: list[int]) -> None:
    shapes = [taught(d, peak=10 + i).shape() for i, d in enumerate(days)]
    merged = merge_shapes(shapes, SLOTS)
    if sum(days) == 0:
        assert merged is None
        return
    assert merged is not None
    for slot in range(SLOTS):
        parts = [s.kinds[0].share[slot] for s, d in zip(shapes, days, strict=True) if d]
        assert min(parts) - 1e-12 <= merged.kinds[0].share[slot] <= max(parts) + 1e-12


def test_a_kind_of_day_the_shard_has_not_seen_comes_from_the_prior() -> None:
    fleet = PeerDayShape(SLOTS)
    assert fleet.share(2, 40) is None  # no Sunday anywhere: nothing to judge a first Sunday by
    fleet.set_prior(taught(8, kind=2).shape())
    found = fleet.share(2, 40)
    assert found is not None
    assert found[0] == pytest.approx(0.3)
    assert fleet.known(2)
    assert not fleet.known(1)
    # Once the shard's own stores have had Sundays, theirs is the shape.
    day = [0.0] * SLOTS
    day[60] = 20.0
    for _ in range(PeerDayShape.MIN_DAYS):
        fleet.learn(2, day, 100.0)
    own = fleet.share(2, 60)
    assert own is not None
    assert own[0] == pytest.approx(0.2)
    assert fleet.share(2, 40) == (0.0, 0.0)


def test_a_prior_of_another_slot_length_or_empty_is_ignored() -> None:
    fleet = PeerDayShape(SLOTS)
    fleet.set_prior(taught(8, slots=48, peak=5).shape())
    assert fleet.prior is None
    assert fleet.revision == 0
    fleet.set_prior(PeerDayShape(SLOTS).shape())
    assert fleet.prior is None
    fleet.set_prior(taught(8).shape())
    assert fleet.prior is not None
    assert fleet.revision == 1
    fleet.set_prior(taught(8).shape())  # the same shape again: nothing changed
    assert fleet.revision == 1


def test_a_fleet_and_its_prior_survive_the_checkpoint_format() -> None:
    fleet = taught(4)
    fleet.set_prior(taught(5, kind=1).shape())
    back = CODEC.decode(CODEC.encode(fleet, PeerDayShape), PeerDayShape, Context(), "fleet", CODEC.versions())
    assert back.share(0, 40) == fleet.share(0, 40)
    assert back.prior == fleet.prior
    assert back.share(1, 40) == fleet.share(1, 40)


def test_a_store_alone_in_its_shard_borrows_the_fleets_shape_through_the_core() -> None:
    core = ShardCore(CoreConfig(archive=False))
    assert core.state.monitor is not None
    detector = SeasonalDetector(DetectorConfig(), 15 * 60_000, 4)
    detector.totals_seen = 1
    detector.weekday_total.update(400.0)
    fleet = core.state.monitor.fleet
    assert detector._fleet(fleet, 2, 40) is None  # no peer has had a Sunday
    core.set_fleet_prior(taught(6, kind=2).shape())
    found = detector._fleet(fleet, 2, 40)
    assert found is not None
    (mean, _), _ = found
    assert mean == pytest.approx(0.3 * 400.0)  # the fleet's share, scaled to this store's level
    shape = core.fleet_shape()
    assert shape is not None
    assert shape.empty()
