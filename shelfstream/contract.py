"""The event and alert contract (CONTRACT.md sections 1 and 2) as typed, strictly validated models.

Decoding is the processor's hot path, so events are msgspec structs decoded straight from bytes
(about 1.5 M events/s/core here, against ~0.2 M for the json module plus hand validation).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from typing import Annotated, Final, Literal, TypeAlias

import msgspec

MAX_RECORD_BYTES: Final = 64 * 1024

EventId = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
STORE_ID_PATTERN: Final = r"^[A-Za-z0-9._-]+$"
# The pattern is checked in _Event.__post_init__ against a memo of ids already seen valid: msgspec
# runs a `pattern` through Python's re on every record (~0.8 us, half the cost of a decode), while a
# shard only ever sees a few stores.
StoreId = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
ProductId = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
Timestamp = Annotated[dt.datetime, msgspec.Meta(tz=True)]
PositiveInt = Annotated[int, msgspec.Meta(ge=1)]
NonNegativeInt = Annotated[int, msgspec.Meta(ge=0)]
Money = Annotated[float, msgspec.Meta(ge=0)]

_UTC: Final = dt.UTC
_UTC_ZERO: Final = dt.timedelta(0)
_EPOCH: Final = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MS: Final = dt.timedelta(milliseconds=1)
_STORE_ID_RE: Final = re.compile(STORE_ID_PATTERN)
_STORE_ID_ERROR: Final = f"Expected `str` matching regex {STORE_ID_PATTERN!r} - at `$.store_id`"
_valid_store_ids: set[str] = set()
_MAX_REMEMBERED_STORE_IDS: Final = 100_000
_last_ts: tuple[dt.datetime, int] = (_EPOCH, 0)


class _Event(msgspec.Struct, tag_field="type", frozen=True, kw_only=True):
    event_id: EventId
    store_id: StoreId
    ts: Timestamp

    def __post_init__(self) -> None:
        store_id = self.store_id
        if store_id not in _valid_store_ids:
            if _STORE_ID_RE.search(store_id) is None:
                raise ValueError(_STORE_ID_ERROR)
            if len(_valid_store_ids) >= _MAX_REMEMBERED_STORE_IDS:
                _valid_store_ids.clear()
            _valid_store_ids.add(store_id)
        ts = self.ts
        if ts.tzinfo is not _UTC and ts.utcoffset() != _UTC_ZERO:
            raise ValueError("`ts` must be in UTC (end it with Z)")

    @property
    def ts_ms(self) -> int:
        """Event time in epoch milliseconds: the core's only notion of time.

        Several parts of the core ask for it in turn for the same event, so the last answer is kept
        (keyed by the datetime object itself, which the memo keeps alive: an id cannot be reused).
        """
        global _last_ts
        ts = self.ts
        last = _last_ts
        if last[0] is ts:
            return last[1]
        ms = (ts - _EPOCH) // _MS  # floor division of timedeltas: exact, and one C call
        _last_ts = (ts, ms)
        return ms


class Sale(_Event, tag="sale", frozen=True, kw_only=True):
    product_id: ProductId
    quantity: PositiveInt
    unit_price: Money
    transaction_id: str | None = None


class Refund(_Event, tag="refund", frozen=True, kw_only=True):
    product_id: ProductId
    quantity: PositiveInt
    unit_price: Money
    transaction_id: str | None = None
    reason: str | None = None


class Restock(_Event, tag="restock", frozen=True, kw_only=True):
    product_id: ProductId
    quantity: PositiveInt
    delivery_id: str | None = None
    truck_id: str | None = None


class Count(_Event, tag="count", frozen=True, kw_only=True):
    product_id: ProductId
    count: NonNegativeInt


class Product(_Event, tag="product", frozen=True, kw_only=True):
    product_id: ProductId
    name: str | None = None
    category: str | None = None
    price: Money | None = None
    restock_threshold: NonNegativeInt | None = None
    target_stock: PositiveInt | None = None


Event: TypeAlias = Sale | Refund | Restock | Count | Product
EVENT_TYPES: Final = ("sale", "refund", "restock", "count", "product")

_decoder: Final[msgspec.json.Decoder[Event]] = msgspec.json.Decoder(Event)
_encoder: Final = msgspec.json.Encoder()


class Rejection(msgspec.Struct, frozen=True):
    """Why a record was refused; the raw text travels with it so nothing is lost."""

    reason: str
    record: bytes


# The hot path's decoder: raises msgspec.ValidationError / DecodeError; callers that need the
# reason call decode_event on the (rare) failure. It does not check the 64 KiB limit.
decode_strict: Final = _decoder.decode


def decode_event(raw: bytes) -> Event | Rejection:
    """Decode and validate one record; never raises for bad input."""
    if len(raw) > MAX_RECORD_BYTES:
        return Rejection(f"record is {len(raw)} bytes, over the 64 KiB limit", raw)
    try:
        return _decoder.decode(raw)
    except msgspec.ValidationError as exc:
        return Rejection(f"invalid event: {exc}", raw)
    except msgspec.DecodeError as exc:
        return Rejection(f"not valid JSON: {exc}", raw)


def encode(obj: object) -> bytes:
    """Compact JSON for events, alerts and archive records."""
    return _encoder.encode(obj)


def format_ts(ts_ms: int) -> str:
    """Epoch milliseconds to the contract's RFC 3339 UTC form, e.g. ``2026-08-01T10:15:30.123Z``."""
    return (_EPOCH + dt.timedelta(milliseconds=ts_ms)).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def to_datetime(ts_ms: int) -> dt.datetime:
    """Epoch milliseconds to an aware UTC datetime, for building events in the shell."""
    return _EPOCH + dt.timedelta(milliseconds=ts_ms)


def parse_ts(text: str) -> int:
    """RFC 3339 to epoch milliseconds (naive times are refused: UTC must be explicit)."""
    when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    if when.tzinfo is None:
        raise ValueError(f"timestamp {text!r} has no time zone")
    return (when - _EPOCH) // _MS


# --- alerts and requests (CONTRACT.md section 2) ------------------------------------------------

AlertKind: TypeAlias = Literal["restock_request", "out_of_stock", "anomaly", "product_change"]


def alert_id(kind: str, *cause: str) -> str:
    """Deterministic id from the alert's cause, so a replay repeats ids instead of making new alerts."""
    digest = hashlib.blake2b("\x1f".join((kind, *cause)).encode(), digest_size=16).hexdigest()
    return f"{kind[:3]}-{digest}"


class RestockRequest(msgspec.Struct, frozen=True, kw_only=True, tag_field="kind", tag="restock_request"):
    alert_id: str
    store_id: str
    ts: str
    product_id: str
    on_hand: int
    threshold: int
    requested_quantity: int


class OutOfStock(msgspec.Struct, frozen=True, kw_only=True, tag_field="kind", tag="out_of_stock"):
    alert_id: str
    store_id: str
    ts: str
    product_id: str
    on_hand: int


class ProductChange(msgspec.Struct, frozen=True, kw_only=True, tag_field="kind", tag="product_change"):
    alert_id: str
    store_id: str
    ts: str
    product_id: str
    changes: dict[str, tuple[str | float | None, str | float | None]]


class Anomaly(msgspec.Struct, frozen=True, kw_only=True, tag_field="kind", tag="anomaly"):
    alert_id: str
    store_id: str
    ts: str
    window_start: str
    window_end: str
    severity: int
    score: float
    metric: str
    observed: float
    expected: tuple[float, float]
    explanation: str


Alert: TypeAlias = RestockRequest | OutOfStock | ProductChange | Anomaly
ALERT_KINDS: Final = ("restock_request", "out_of_stock", "anomaly", "product_change")

_alert_decoder: Final[msgspec.json.Decoder[Alert]] = msgspec.json.Decoder(Alert)


def decode_alert(raw: bytes | str) -> Alert:
    """Decode an alert or restock request (raises msgspec.ValidationError on a foreign message)."""
    return _alert_decoder.decode(raw)


def alert_kind(alert: Alert) -> str:
    return alert.__struct_config__.tag  # type: ignore[return-value]
