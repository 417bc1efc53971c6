"""The event and alert contract (docs/contract.md sections 1 and 2) as typed, strictly validated models.

Decoding is the processor's hot path, so events are msgspec structs decoded straight from bytes
(about 1.5 M events/s/core here, against ~0.2 M for the json module plus hand validation).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import zoneinfo
from typing import Annotated, Final, Literal, TypeAlias

import msgspec

from foundation.timeunits import DAY_MS

MAX_RECORD_BYTES: Final = 64 * 1024
# Bounds that keep every archived number inside the archive's column types (BIGINT, DOUBLE): a
# quantity of 10**20 would decode here but make every later query of the archive fail.
MAX_QUANTITY: Final = 1_000_000_000
MAX_MONEY: Final = 1e12

# Free text a person or a till writes (a product's `name` and `category`, a store's `name`, a refund's
# `reason`) is at most MAX_TEXT_CHARS characters, and a reference to another system's record
# (`transaction_id`, `delivery_id`, `truck_id`) at most MAX_REF_CHARS, as an event id is: unbounded,
# one record could carry 64 KiB of "name" into every catalog, checkpoint, alert and report that shows it.
MAX_TEXT_CHARS: Final = 200
MAX_REF_CHARS: Final = 128
Text = Annotated[str, msgspec.Meta(max_length=MAX_TEXT_CHARS)]
Ref = Annotated[str, msgspec.Meta(max_length=MAX_REF_CHARS)]

EventId = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
STORE_ID_PATTERN: Final = r"^[A-Za-z0-9._-]+$"  # JSON Schema's `$`: the end of the text, nothing after
# Python's `$` also matches before a final newline ("store-002\n"): ids are checked with fullmatch.
_STORE_ID_CHARS: Final = r"[A-Za-z0-9._-]+"
# The pattern is checked in _Event.__post_init__ against a memo of ids already seen valid: msgspec
# runs a `pattern` through Python's re on every record (~0.8 us, half the cost of a decode), while a
# shard only ever sees a few stores.
StoreId = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
ProductId = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
Timestamp = Annotated[dt.datetime, msgspec.Meta(tz=True)]
PositiveInt = Annotated[int, msgspec.Meta(ge=1, le=MAX_QUANTITY)]
NonNegativeInt = Annotated[int, msgspec.Meta(ge=0, le=MAX_QUANTITY)]
Money = Annotated[float, msgspec.Meta(ge=0, le=MAX_MONEY)]

_UTC: Final = dt.UTC
_UTC_ZERO: Final = dt.timedelta(0)
_EPOCH: Final = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MS: Final = dt.timedelta(milliseconds=1)
_STORE_ID_RE: Final = re.compile(_STORE_ID_CHARS)
_ID_RE: Final = re.compile(r"[A-Za-z0-9._-]{1,64}")
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
            if _STORE_ID_RE.fullmatch(store_id) is None:
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
    transaction_id: Ref | None = None


class Refund(_Event, tag="refund", frozen=True, kw_only=True):
    product_id: ProductId
    quantity: PositiveInt
    unit_price: Money
    transaction_id: Ref | None = None
    reason: Text | None = None


class Restock(_Event, tag="restock", frozen=True, kw_only=True):
    product_id: ProductId
    quantity: PositiveInt
    delivery_id: Ref | None = None
    truck_id: Ref | None = None


class Count(_Event, tag="count", frozen=True, kw_only=True):
    product_id: ProductId
    count: NonNegativeInt


class Product(_Event, tag="product", frozen=True, kw_only=True):
    product_id: ProductId
    name: Text | None = None
    category: Text | None = None
    price: Money | None = None
    restock_threshold: NonNegativeInt | None = None
    target_stock: PositiveInt | None = None


_valid_zones: set[str] = {"UTC"}


def check_timezone(name: str) -> str:
    """The IANA zone name if the zone database knows it; ValueError with a one-line reason if not."""
    if name in _valid_zones:
        return name
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(
            f"unknown time zone {name!r} (expected an IANA name such as Europe/Berlin)"
        ) from None
    _valid_zones.add(name)
    return name


class Store(_Event, tag="store", frozen=True, kw_only=True):
    """A store's own settings; changes no stock. Its zone is used for its local time of week."""

    timezone: Annotated[str, msgspec.Meta(min_length=1, max_length=64)] = "UTC"
    name: Text | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        check_timezone(self.timezone)


MAX_FEEDBACK_SPAN_MS: Final = DAY_MS  # a `missed` period: at most a day
MAX_NOTE_CHARS: Final = 1000
FeedbackVerdict: TypeAlias = Literal["not_anomaly", "missed"]
FEEDBACK_VERDICTS: Final = ("not_anomaly", "missed")


class Feedback(_Event, tag="feedback", frozen=True, kw_only=True):
    """An operator's word on the store's anomaly detection; changes no stock.

    `not_anomaly` names the anomaly alert it is about (`alert_id`); `missed` names the period of an
    incident no alert caught (`window_start` to `window_end`, at most a day: a mark of a week would
    teach the detector nothing about which hours). What one mark changes: docs/detection.md.
    """

    verdict: FeedbackVerdict
    alert_id: Annotated[str, msgspec.Meta(min_length=1, max_length=128)] | None = None
    window_start: Timestamp | None = None
    window_end: Timestamp | None = None
    note: Annotated[str, msgspec.Meta(max_length=MAX_NOTE_CHARS)] | None = None
    by: Annotated[str, msgspec.Meta(min_length=1, max_length=128)] | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.verdict == "not_anomaly":
            if self.alert_id is None:
                raise ValueError("a `not_anomaly` feedback needs the `alert_id` of the anomaly alert")
            return
        start, end = self.window_start, self.window_end
        if start is None or end is None:
            raise ValueError("a `missed` feedback needs `window_start` and `window_end`")
        for name, when in (("window_start", start), ("window_end", end)):
            if when.tzinfo is not _UTC and when.utcoffset() != _UTC_ZERO:
                raise ValueError(f"`{name}` must be in UTC (end it with Z)")
        if end <= start:
            raise ValueError("`window_end` must be after `window_start`")
        if end - start > dt.timedelta(milliseconds=MAX_FEEDBACK_SPAN_MS):
            raise ValueError("a `missed` period is at most 24 hours (`window_start` to `window_end`)")

    @property
    def span_ms(self) -> tuple[int, int] | None:
        """(start, end) of a `missed` period in epoch milliseconds; None for `not_anomaly`."""
        if self.window_start is None or self.window_end is None:
            return None
        return (self.window_start - _EPOCH) // _MS, (self.window_end - _EPOCH) // _MS


Event: TypeAlias = Sale | Refund | Restock | Count | Product | Store | Feedback
EVENT_TYPES: Final = ("sale", "refund", "restock", "count", "product", "store", "feedback")

_decoder: Final[msgspec.json.Decoder[Event]] = msgspec.json.Decoder(Event)
_encoder: Final = msgspec.json.Encoder()


class Rejection(msgspec.Struct, frozen=True):
    """Why a record was refused; the raw text travels with it so nothing is lost."""

    reason: str
    record: bytes


# The hot path's decoder: raises on any bad input (msgspec.ValidationError / DecodeError, but also
# UnicodeDecodeError for invalid UTF-8 inside a string, RecursionError for deep nesting); callers
# catch every exception and call decode_event on the (rare) failure for the rejection and its reason.
# It checks neither the 64 KiB limit nor that bytes it skips (unknown fields) are UTF-8: see
# decode_event and is_utf8.
decode_strict: Final = _decoder.decode


def compact(raw: bytes) -> bytes:
    """A valid record as one compact JSON line, fields and values as they were (unknown ones too):
    what the archive keeps, whatever the producer's formatting (pretty-printed over lines, say)."""
    if b" " in raw or b"\n" in raw or b"\r" in raw or b"\t" in raw:
        return msgspec.json.format(raw, indent=-1)
    return raw


def is_utf8(raw: bytes) -> bool:
    """JSON text is UTF-8 (RFC 8259), including fields nobody reads: they are archived as they are."""
    if raw.isascii():
        return True
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def decode_event(raw: bytes) -> Event | Rejection:
    """Decode and validate one record; never raises, whatever the bytes: every failure is a reason."""
    try:
        if len(raw) > MAX_RECORD_BYTES:
            return Rejection(f"record is {len(raw)} bytes, over the 64 KiB limit", raw)
        if not raw.isascii():
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                return Rejection(f"not valid UTF-8: {exc.reason} at byte {exc.start}", raw)
        event = _decoder.decode(raw)
        if b"\\u" in raw:
            # msgspec skips unknown fields without reading their escapes; a lone surrogate there
            # ("\\ud800") would be archived as JSON no reader takes. Reading the text whole checks them.
            msgspec.json.format(raw, indent=-1)
        return event
    except msgspec.ValidationError as exc:
        return Rejection(f"invalid event: {exc}", raw)
    except msgspec.DecodeError as exc:
        return Rejection(f"not valid JSON: {exc}", raw)
    except RecursionError:
        return Rejection("not valid JSON: nested too deeply", raw)
    except Exception as exc:  # anything msgspec or a validator may raise: a reason, never a crash
        return Rejection(f"cannot decode: {type(exc).__name__}: {_first_line(str(exc))}", raw)


def _first_line(text: str) -> str:
    return text.strip().split("\n", 1)[0][:200]


def is_store_id(text: object) -> bool:
    """A store id as the contract has it: 1-64 of [A-Za-z0-9._-], nothing before or after."""
    return isinstance(text, str) and _ID_RE.fullmatch(text) is not None


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


# --- alerts and requests (docs/contract.md section 2) ------------------------------------------------

AlertKind: TypeAlias = Literal[
    "restock_request", "out_of_stock", "anomaly", "product_change", "anomaly_withdrawn"
]


def feedback_event_id(verdict: str, *about: str) -> str:
    """The `event_id` of a feedback event: the same mark (verdict and alert, or store and period)
    gives the same id, so pressing the button twice makes one event, which the dedup drops."""
    digest = hashlib.blake2b("\x1f".join((verdict, *about)).encode(), digest_size=12).hexdigest()
    return f"fb-{verdict}-{digest}"


def alert_id(kind: str, *cause: str) -> str:
    """Deterministic id from the alert's cause, so a replay repeats ids instead of making new alerts."""
    digest = hashlib.blake2b("\x1f".join((kind, *cause)).encode(), digest_size=16).hexdigest()
    return f"{kind[:3]}-{digest}"


RestockReason: TypeAlias = Literal["threshold", "forecast"]


class RestockRequest(
    msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, tag_field="kind", tag="restock_request"
):
    alert_id: str
    store_id: str
    ts: str
    product_id: str
    on_hand: int
    threshold: int
    requested_quantity: int
    # Optional (docs/contract.md section 2): why it was asked for, and what the forecast said.
    reason: RestockReason | None = None
    expected_stockout_at: str | None = None  # RFC 3339 UTC; absent when no stock-out is in sight
    daily_demand: float | None = None  # units expected over the next 24 hours
    lead_time_s: float | None = None  # the learned time from a request to its delivery


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


class Contributor(msgspec.Struct, frozen=True, omit_defaults=True):
    """A product behind an anomaly: its share of the deviation (0-1) and the counts behind it."""

    product_id: str
    share: float
    category: str | None = None
    observed: int = 0
    expected: float = 0.0


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
    contributors: tuple[Contributor, ...] = ()


class AnomalyWithdrawn(msgspec.Struct, frozen=True, kw_only=True, tag_field="kind", tag="anomaly_withdrawn"):
    """An `anomaly` alert that sales uploaded late by the tills disprove: the span it was raised on,
    with the late sales counted, is no longer anomalous by the detector's own bars."""

    alert_id: str
    store_id: str
    ts: str
    withdrawn_alert_id: str
    reason: str
    observed: float
    metric: str
    window_start: str
    window_end: str


Alert: TypeAlias = RestockRequest | OutOfStock | ProductChange | Anomaly | AnomalyWithdrawn
ALERT_KINDS: Final = ("restock_request", "out_of_stock", "anomaly", "product_change", "anomaly_withdrawn")

_alert_decoder: Final[msgspec.json.Decoder[Alert]] = msgspec.json.Decoder(Alert)


def decode_alert(raw: bytes | str) -> Alert:
    """Decode an alert or restock request (raises msgspec.ValidationError on a foreign message)."""
    return _alert_decoder.decode(raw)


def alert_kind(alert: Alert) -> str:
    return alert.__struct_config__.tag  # type: ignore[return-value]
