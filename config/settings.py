"""One frozen settings object per process, built in the entry point and passed down.

Settings come in groups, one per thing they configure (the AWS resources, the windows, the detector,
the trucks ...). Each is read from ``SHELFSTREAM_<GROUP>__<NAME>`` (e.g. ``SHELFSTREAM_DETECTOR__THRESHOLD``);
a group is set member by member. Every name carries its unit where it has one (``_s``, ``_bytes``,
``_days``); durations are seconds here and become the core's milliseconds in one place
(config/core.py). The settings that configure the processor core take their defaults from the core's
own configs (``CoreConfig``, ``RestockConfig``, ``DetectorConfig``), so each default is written once.

Endpoints, region and credentials deliberately do not come from here: they follow the AWS SDK's own
settings (``AWS_ENDPOINT_URL``, ``AWS_ENDPOINT_URL_KINESIS``, ``AWS_REGION``, profiles), so the same code
runs against the embedded AWS, LocalStack or a real account.

The reference of every setting is docs/settings.md, written from these models by
``python -m config.reference``. The flat names of earlier releases (``SHELFSTREAM_STREAM_NAME``) still
work, with one deprecation line in the log (config/legacy.py).
"""

from __future__ import annotations

import difflib
import json
import logging
import os
from collections.abc import Mapping
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from config.legacy import FLAT_NAMES
from foundation.errors import UsageError
from foundation.timeunits import SECOND_MS
from processors.core.demand import RestockConfig
from processors.core.detectors import DetectorConfig
from processors.core.state import CoreConfig

PREFIX: Final = "SHELFSTREAM_"
DELIMITER: Final = "__"

log = logging.getLogger(__name__)

# The core's own defaults: the settings below that configure the core start from these.
_CORE: Final = CoreConfig()
_RESTOCK: Final = RestockConfig()
_DET: Final = DetectorConfig()

DetectorKind = Literal["seasonal", "naive", "threshold", "hst", "off"]


def _seconds(ms: int) -> int:
    """A core default in milliseconds as whole seconds (the core's durations are whole seconds)."""
    if ms % SECOND_MS:
        raise ValueError(f"{ms} ms is not a whole number of seconds")
    return ms // SECOND_MS


class Group(BaseModel):
    """A group of settings: frozen like the whole, and strict about its members' names, so a typo in
    ``SHELFSTREAM_DETECTOR__TRESHOLD`` is an error instead of a setting silently not taken."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class AwsSettings(Group):
    """The AWS resources the app uses (what `provision` creates), and the embedded AWS."""

    stream_name: str = Field(
        default="shelfstream-events", description="Kinesis data stream of the stores' events."
    )
    shard_count: int = Field(default=4, ge=1, le=500, description="Shards `provision` gives the stream.")
    bucket: str = Field(
        default="shelfstream-archive", description="S3 bucket of the archive, checkpoints and reports."
    )
    archive_firehose: str = Field(
        default="shelfstream-archive", description="Firehose stream archiving the events."
    )
    windows_firehose: str = Field(
        default="shelfstream-windows", description="Firehose stream archiving window results."
    )
    alerts_firehose: str = Field(
        default="shelfstream-alerts-archive",
        description="Firehose stream archiving alerts and restock requests.",
    )
    alerts_topic: str = Field(default="shelfstream-alerts", description="SNS topic of the alerts.")
    restock_queue: str = Field(
        default="shelfstream-restock", description="SQS queue of restock requests (the trucks')."
    )
    restock_dlq: str = Field(
        default="shelfstream-restock-dlq", description="Dead-letter queue of the restock queue."
    )
    alerts_queue: str = Field(
        default="shelfstream-alerts-inbox", description="SQS queue subscribed to the alerts topic."
    )
    incoming_queue: str = Field(
        default="shelfstream-incoming",
        description="SQS queue of S3 notifications of uploads under the incoming prefix.",
    )
    deliveries_table: str = Field(
        default="shelfstream-deliveries", description="DynamoDB table of deliveries, the trucks' claim log."
    )
    shard_clocks_table: str = Field(
        default="shelfstream-shard-clocks",
        description="DynamoDB table of each shard's event time, so a silent shard can follow the others.",
    )
    max_receive_count: int = Field(
        default=5,
        ge=1,
        le=1000,
        description="Receives of a queued message before it goes to its dead-letter queue.",
    )
    region: str = Field(
        default="us-east-1", description="Region when neither AWS_REGION nor AWS_DEFAULT_REGION is set."
    )
    embedded_kinesis_limits: bool = Field(
        default=True,
        description="The embedded Kinesis enforces a shard's limits (1,000 records/s and 1 MiB/s written, "
        "5 GetRecords/s and 2 MiB/s read).",
    )


class PrefixSettings(Group):
    """Where things go in the bucket."""

    events: str = Field(default="events/", description="Archived events.")
    windows: str = Field(default="windows/", description="Archived window results.")
    alerts: str = Field(default="alerts/", description="Archived alerts and restock requests.")
    rejected: str = Field(default="rejected/", description="Rejected records, kept with their reason.")
    checkpoints: str = Field(default="checkpoints/", description="The processor's checkpoints.")
    reports: str = Field(default="reports/", description="Weekly reports.")
    incoming: str = Field(default="incoming/", description="Inventory files uploaded for `ingest --watch`.")


class HistorySettings(Group):
    """The history: the archive as read by `query` and `report`, the Iceberg tables, file ingest."""

    archive_mirror: str = Field(
        default=".shelfstream/archive", description="The demo's copy of the archive, queried with no AWS."
    )
    archive_cache: str = Field(
        default=".shelfstream/cache", description="Objects downloaded from S3 by query and report."
    )
    tables_catalog: str = Field(
        default=".shelfstream/tables/catalog.db",
        description='The tables\' catalog: a SQLite file (a pyiceberg SQL catalog), or "glue" (AWS Glue).',
    )
    tables_namespace: str = Field(
        default="shelfstream", description="Namespace (Glue: database) of the tables."
    )
    tables_warehouse: str = Field(
        default=".shelfstream/tables/warehouse",
        description="Where the tables' files go: a folder or s3://bucket/prefix.",
    )
    retention_days: int = Field(default=30, ge=1, description="Partitions older than this are dropped.")
    ingest_max_line_bytes: int = Field(
        default=64 * 1024, ge=256, description="Longest line `ingest` accepts."
    )
    ingest_wait_s: int = Field(default=20, ge=0, le=20, description="SQS long poll of `ingest --watch`.")


class RestockSettings(Group):
    """How restock requests are raised (processors/core/demand.py)."""

    default_threshold_units: int = Field(
        default=_CORE.default_restock_threshold,
        ge=0,
        description="Restock threshold of a product the catalog gives none.",
    )
    default_target_units: int = Field(
        default=_CORE.default_target_stock,
        ge=1,
        description="Target stock of a product the catalog gives none.",
    )
    policy: Literal["threshold", "forecast"] = Field(
        default=_RESTOCK.policy,
        description="`forecast`: demand over the lead time plus safety stock, the threshold as a floor; "
        "`threshold`: the catalog's fixed threshold only.",
    )
    service_level: float = Field(
        default=_RESTOCK.service_level,
        ge=0.5,
        lt=1.0,
        description="Chance of no stock-out per delivery cycle.",
    )
    service_level_fast: float = Field(
        default=_RESTOCK.service_level_fast,
        ge=0.5,
        lt=1.0,
        description="Service level of a fast or valuable product (fast_daily_units, valuable_daily_sales).",
    )
    service_level_slow: float = Field(
        default=_RESTOCK.service_level_slow,
        ge=0.5,
        lt=1.0,
        description="Service level of a slow product (under slow_daily_units a day).",
    )
    fast_daily_units: float = Field(
        default=_RESTOCK.fast_daily_units, gt=0, description="A product selling at least this a day is fast."
    )
    slow_daily_units: float = Field(
        default=_RESTOCK.slow_daily_units, ge=0, description="A product selling under this a day is slow."
    )
    valuable_daily_sales: float = Field(
        default=_RESTOCK.valuable_daily_sales,
        gt=0,
        description="A product selling at least this much money a day (catalog price) counts as fast.",
    )
    lead_time_prior_s: float = Field(
        default=_RESTOCK.lead_time_prior_ms / SECOND_MS,
        gt=0,
        description="Lead time assumed until deliveries teach the real one.",
    )
    cycle_s: float = Field(
        default=_RESTOCK.cycle_ms / SECOND_MS, gt=0, description="Planned time between a store's deliveries."
    )
    min_history_s: float = Field(
        default=_RESTOCK.min_history_ms / SECOND_MS,
        ge=0,
        description="A store's history of sales before its forecasts are used.",
    )
    min_item_exposure_units: float = Field(
        default=_RESTOCK.min_item_exposure,
        ge=0,
        description="Store units seen while a product was on the shelf before its share of them is used.",
    )
    share_half_life_s: float = Field(
        default=_RESTOCK.share_half_life_ms / SECOND_MS,
        gt=0,
        description="Half-life of a product's share of its store's sales.",
    )
    hour_alpha: float = Field(
        default=_RESTOCK.hour_alpha,
        gt=0,
        le=1,
        description="Weight of the newest week in an hour-of-week average.",
    )
    lead_alpha: float = Field(
        default=_RESTOCK.lead_alpha, gt=0, le=1, description="Weight of the newest lead time."
    )
    forecast_error: float = Field(
        default=_RESTOCK.forecast_error,
        ge=0,
        description="Relative error of a rate, on top of the randomness of sales.",
    )
    stockout_horizon_s: float = Field(
        default=_RESTOCK.stockout_horizon_ms / SECOND_MS,
        gt=0,
        description="How far ahead an expected stock-out is looked for.",
    )
    min_join_share: float = Field(
        default=_RESTOCK.min_join_share,
        ge=0,
        le=1,
        description="A product joins another's trip when it needs at least this share of its order.",
    )
    max_lead_s: float = Field(
        default=_RESTOCK.max_lead_ms / SECOND_MS,
        gt=0,
        description="A delivery later than this after its request teaches no lead time.",
    )


class DedupSettings(Group):
    """The memory of (store_id, event_id) that makes a repeated record change nothing (docs/durability.md)."""

    horizon_s: int = Field(
        default=_seconds(_CORE.dedup_horizon_ms),
        ge=60,
        description="A repeat within this much event time of the shard's newest events is always ignored; "
        "at least the stream's retention.",
    )
    bucket_s: int = Field(
        default=_seconds(_CORE.dedup_bucket_ms),
        ge=1,
        description="The memory expires in slices of this much event time.",
    )
    max_ahead_s: int = Field(
        default=_seconds(_CORE.dedup_max_ahead_ms),
        ge=0,
        description="Events further ahead than this move neither the dedup nor the windows' clock alone.",
    )


class WindowSettings(Group):
    """Event-time windows per store (processors/core/windows.py)."""

    tumbling_s: int = Field(
        default=_seconds(_CORE.window_ms),
        ge=0,
        description="Tumbling window; 0 turns windows and detection off.",
    )
    hopping_s: int = Field(
        default=_seconds(_CORE.hopping_window_ms), ge=0, description="Hopping window; 0: none."
    )
    hop_s: int = Field(default=_seconds(_CORE.hopping_hop_ms), ge=1, description="Hop of the hopping window.")
    allowed_lateness_s: int = Field(
        default=_seconds(_CORE.allowed_lateness_ms),
        ge=0,
        description="How long a window waits for late events.",
    )
    store_idle_s: int = Field(
        default=_seconds(_CORE.store_idle_ms),
        ge=0,
        description="A silent store's windows close once the shard's clock is this far past them, "
        "so an outage is judged while it lasts.",
    )
    late_bound_s: int = Field(
        default=_seconds(_CORE.late_bound_ms),
        ge=0,
        description="A late sale or refund up to this far behind its store's closing point revises its "
        "closed windows; 0: late events are only counted.",
    )
    max_gap_s: int = Field(
        default=_seconds(_CORE.max_window_gap_ms),
        ge=1,
        description="A jump in a store's event time longer than this is not filled with empty windows.",
    )


class ProcessorSettings(Group):
    """The stream processor's shell: reading shards, following silent ones, forgetting stores."""

    poll_interval_s: float = Field(
        default=0.2,
        gt=0,
        description="First wait before reading a caught-up shard again (doubling while it stays quiet).",
    )
    max_poll_interval_s: float = Field(
        default=1.0, gt=0, description="Longest wait between reads of a quiet shard."
    )
    get_records_limit: int = Field(default=1000, ge=1, le=10000, description="Records per GetRecords call.")
    store_retention_s: int = Field(
        default=_seconds(_CORE.store_retention_ms),
        ge=0,
        description="A store silent this long (event time) is forgotten: stock, catalog, requests, windows, "
        "detector. 0 keeps every store.",
    )
    idle_shard_lag_s: int = Field(
        default=600,
        ge=0,
        description="A shard that has read everything follows the others' event time this far behind, so a "
        "silent store's windows still close; 0: only a shard's own events move it.",
    )
    idle_shard_patience_s: float = Field(
        default=10.0,
        ge=0,
        description="... and only once it has read nothing for this many wall-clock seconds (a replay runs "
        "event time far ahead of wall time).",
    )
    shard_clock_every_s: float = Field(
        default=5.0, gt=0, description="How often a KCL record processor publishes its shard's event time."
    )
    fleet_shape_every_s: float = Field(
        default=300.0,
        ge=0,
        description="How often a shard publishes its stores' shape of a day and reads the others'; "
        "0 keeps each shard to its own stores.",
    )
    stream_quiet_after_s: float = Field(
        default=300.0,
        ge=0,
        description="The whole stream quiet this long, while stream_quiet_min_sales were expected: "
        "the feed's outage, said once.",
    )
    stream_quiet_min_sales: float = Field(
        default=20.0,
        ge=0,
        description="Sales the stores' histories must expect over the quiet spell for it to count.",
    )


class CheckpointSettings(Group):
    """How often the processor checkpoints a shard (docs/durability.md)."""

    every_s: float = Field(default=5.0, gt=0, description="At most this long between a shard's checkpoints.")
    every_records: int = Field(
        default=5000, ge=1, description="... or this many records, whichever comes first."
    )


class DetectorSettings(Group):
    """The anomaly detector of each store (processors/core/detectors/, docs/detection.md). The defaults
    are the ones measured in docs/detection.md."""

    kind: DetectorKind = Field(
        default=_DET.kind,  # type: ignore[arg-type]  # the core keeps the kind a plain string
        description='"seasonal" (ours), a baseline ("naive", "threshold", "hst"), or "off" (windows only).',
    )
    warmup_days: int = Field(
        default=_DET.warmup_days, ge=1, description="No alert before a store has this much history."
    )
    threshold: float = Field(
        default=_DET.threshold, ge=0, description="-log10 p a window must reach (4.5: one chance in 30,000)."
    )
    drop_threshold: float = Field(
        default=_DET.drop_threshold, ge=0, description="... for a drop of sales (0: the same as a jump's)."
    )
    refund_threshold: float = Field(default=_DET.refund_threshold, ge=0, description="... for refunds.")
    season_fading: float = Field(
        default=_DET.season_fading, gt=0, le=1, description="Weight of the newest week in a slot's baseline."
    )
    profile_fading: float = Field(
        default=_DET.profile_fading,
        gt=0,
        le=1,
        description="Weight of the newest day in a slot of the day's profile.",
    )
    full_weeks: int = Field(
        default=_DET.full_weeks,
        ge=1,
        description="Weeks a slot of the week must have seen before it alone is the baseline.",
    )
    own_days: int = Field(
        default=_DET.own_days,
        ge=0,
        description="Days of a kind (weekday, Saturday, Sunday) before the fleet's shape is dropped.",
    )
    fleet_spread: float = Field(
        default=_DET.fleet_spread, ge=0, description="Relative error of the fleet's shape for one store."
    )
    level_fading: float = Field(
        default=_DET.level_fading, gt=0, le=1, description="Weight of the newest window in today's level."
    )
    level_clip: float = Field(
        default=_DET.level_clip, gt=0, description="Standard deviations a window may pull today's level by."
    )
    level_hold: float = Field(
        default=_DET.level_hold,
        ge=0,
        description="While a drop's evidence is at least this, windows do not teach today's level (0: off).",
    )
    learn_clip: float = Field(
        default=_DET.learn_clip,
        gt=0,
        description="Standard deviations a window may pull its slot's baseline by.",
    )
    day_fading: float = Field(
        default=_DET.day_fading,
        gt=0,
        le=1,
        description="Weight of the newest day in the learned day-to-day variation.",
    )
    spread_fading: float = Field(
        default=_DET.spread_fading,
        gt=0,
        le=1,
        description="Weight of the newest window in the learned spread.",
    )
    sales_spread_prior: float = Field(
        default=_DET.sales_spread_prior, gt=0, description="Spread (phi) of sales before a store has its own."
    )
    refund_spread_prior: float = Field(
        default=_DET.refund_spread_prior,
        gt=0,
        description="Spread (phi) of refunds before a store has its own.",
    )
    refund_fading: float = Field(
        default=_DET.refund_fading, gt=0, le=1, description="Weight of the newest window in the refund rate."
    )
    min_spread_windows: int = Field(
        default=_DET.min_spread_windows,
        ge=0,
        description="Windows the spread must have learned from before alerts.",
    )
    bound_weight: float = Field(
        default=_DET.bound_weight,
        ge=0,
        le=1,
        description="How far towards the most extreme estimate a drop is judged (1: the extreme, 0: centre).",
    )
    jump_bound_weight: float = Field(default=_DET.jump_bound_weight, ge=0, le=1, description="... a jump.")
    cusum_threshold: float = Field(
        default=_DET.cusum_threshold,
        ge=0,
        description="Evidence over consecutive windows (natural log) that raises an alert; 0 turns it off.",
    )
    cusum_drop: float = Field(
        default=_DET.cusum_drop,
        gt=0,
        lt=1,
        description="The drop the evidence looks for: this times the expected.",
    )
    cusum_jump: float = Field(
        default=_DET.cusum_jump, gt=1, description="The jump the evidence looks for: this times the expected."
    )
    cusum_windows: int = Field(
        default=_DET.cusum_windows, ge=1, description="Windows the evidence spans at most."
    )
    cusum_max_dispersion: float = Field(
        default=_DET.cusum_max_dispersion,
        ge=1,
        description="Largest dispersion (variance over mean) the evidence is divided by.",
    )
    guess_ratio: float = Field(
        default=_DET.guess_ratio,
        ge=0,
        description="A weekend day neither the store nor enough peers have traded: its own weekday profile "
        "times this (0: off).",
    )
    guess_spread: float = Field(
        default=_DET.guess_spread, ge=0, description="... give or take this share of it."
    )
    guess_prior: float = Field(
        default=_DET.guess_prior,
        ge=0,
        description="Expected sales after which the store's own day weighs against guess_ratio (0: never).",
    )
    peer_drops: bool = Field(
        default=_DET.peer_drops,
        description="Judge drops by the peers' shape alone where the store has no history.",
    )
    own_learning: bool = Field(
        default=_DET.own_learning,
        description="Only windows the store's own history covers teach spread and level.",
    )
    min_expected_sales: float = Field(
        default=_DET.min_expected_sales,
        ge=0,
        description="Fewer expected sales than this are never an anomaly.",
    )
    min_extra_sales: float = Field(
        default=_DET.min_extra_sales,
        ge=0,
        description="A jump must be at least this many sales above the range.",
    )
    drop_ratio: float = Field(
        default=_DET.drop_ratio, gt=0, lt=1, description="A drop must be below this times the expected."
    )
    jump_ratio: float = Field(
        default=_DET.jump_ratio, gt=1, description="A jump must be above this times the expected."
    )
    min_refunds: int = Field(
        default=_DET.min_refunds, ge=0, description="Fewer refunds than this are never an anomaly."
    )
    cooldown_s: int = Field(
        default=_seconds(_DET.cooldown_ms),
        ge=0,
        description="One alert per incident: repeats within this are the same one.",
    )
    feedback_weeks: int = Field(
        default=_DET.feedback_weeks,
        ge=1,
        description="Weeks an operator's mark holds over the same local hours of the week.",
    )
    feedback_slack_slots: int = Field(
        default=_DET.feedback_slack_slots, ge=0, description="Slots a mark is widened by on each side."
    )
    feedback_margin: float = Field(
        default=_DET.feedback_margin,
        ge=0,
        description="A `not_anomaly` mark excuses the same deviation up to this much bigger "
        "(observed over expected).",
    )
    feedback_alerts_kept: int = Field(
        default=_DET.feedback_alerts_kept,
        ge=1,
        description="Anomaly alerts remembered per store for feedback.",
    )
    missed_relief: float = Field(
        default=_DET.missed_relief,
        ge=0,
        description="A `missed` mark lowers the thresholds there by this (-log10 p).",
    )
    missed_ease: float = Field(
        default=_DET.missed_ease,
        ge=0,
        lt=0.5,
        description="... and the size gates by this share of the expected.",
    )
    static_refunds: int = Field(
        default=_DET.static_refunds, ge=0, description="Baseline `threshold`: refunds in a window that alert."
    )
    static_sales_high: float = Field(
        default=_DET.static_sales_high,
        gt=0,
        description="Baseline `threshold`: sales above this times the store's average.",
    )
    static_sales_low: float = Field(
        default=_DET.static_sales_low, ge=0, description="... or below this share of it, in business hours."
    )
    static_hours: tuple[int, int] = Field(
        default=_DET.static_hours,
        description="Baseline `threshold`: business hours, local time (JSON, e.g. [10, 18]).",
    )
    naive_threshold: float = Field(
        default=_DET.naive_threshold, ge=0, description="Baseline `naive`: -log10 p to alert."
    )
    hst_threshold: float = Field(
        default=_DET.hst_threshold, ge=0, le=1, description="Baseline `hst`: anomaly score to alert."
    )
    seed: int = Field(default=_DET.seed, description="Random seed of the detectors that draw (`hst`).")


class ProducerSettings(Group):
    """Writers to Kinesis: simulate, replay, ingest, the load test."""

    max_batches_in_flight: int = Field(default=4, ge=1, description="PutRecords calls in flight at once.")
    put_max_attempts: int = Field(
        default=8, ge=1, description="Attempts of a record before it counts as failed."
    )
    put_base_backoff_s: float = Field(
        default=0.05, gt=0, description="First wait before a retry (it doubles)."
    )


class TruckSettings(Group):
    """The truck dispatcher (consumers/)."""

    count: int = Field(default=4, ge=1, description="Trucks.")
    capacity_units: int = Field(default=400, ge=1, description="Units a truck carries per trip.")
    travel_s: float = Field(default=2.0, ge=0, description="Travel from the depot to any store (and back).")
    travel_pairs_s: dict[str, float] = Field(
        default_factory=dict,
        description='Travel between two stores, JSON: {"store-001|store-002": 1.0} (either order).',
    )
    travel_between_s: float = Field(
        default=1.5, ge=0, description="Travel between two stores travel_pairs_s does not list."
    )
    max_stops: int = Field(default=3, ge=1, le=20, description="Stores one trip serves at most.")
    visibility_s: int = Field(
        default=60,
        ge=1,
        le=43_200,
        description="How long a request stays hidden while a truck is on it, beyond the trip; also the lease "
        "of its claim, so a dead worker's request comes back.",
    )


class OpsSettings(Group):
    """Health and metrics of the long-running commands (process, dispatch, simulate, demo)."""

    health_file: str = Field(
        default="/tmp/shelfstream-health", description="Heartbeat file the container's health check reads."
    )
    metrics_every_s: float = Field(
        default=60.0, gt=0, description="EMF metric lines on stderr, one report per period."
    )
    metrics_port: int = Field(
        default=0, ge=0, le=65535, description="Prometheus /metrics on 127.0.0.1; 0: off."
    )


class ApiSettings(Group):
    """The HTTP API and dashboard (`shelfstream serve`, docs/api.md)."""

    max_body_bytes: int = Field(default=1024 * 1024, ge=1024, description="Largest request body.")
    body_timeout_s: float = Field(
        default=10.0,
        gt=0,
        description="Time a client has, from its request's headers, to send the whole body (else 408).",
    )
    max_events: int = Field(default=500, ge=1, le=500, description="Events one POST /v1/events may carry.")
    rate_per_s: float = Field(default=20.0, gt=0, description="Requests per second per token, sustained.")
    burst: int = Field(default=60, ge=1, description="Requests a token may make at once.")
    failed_auth_per_min: float = Field(
        default=30.0, gt=0, description="Unknown tokens per minute per client address."
    )
    trusted_proxies: str = Field(
        default="",
        description='Reverse proxies whose X-Forwarded-For/-Proto are believed (comma-separated, "*" any); '
        "empty: none.",
    )
    sse_heartbeat_s: float = Field(
        default=15.0, gt=0, description="Keep-alive comment on an idle /v1/stream."
    )
    dashboard_refresh_s: float = Field(
        default=3.0, gt=0, description="Standalone: how often checkpoints and the archive are read."
    )
    dashboard_history_s: int = Field(
        default=3 * 3600, ge=0, description="Standalone: archive read at startup."
    )
    dashboard_queue: str = Field(
        default="", description='Standalone: its own alerts subscription; "": <aws.alerts_queue>-dashboard.'
    )


class Settings(BaseSettings):
    """Every setting of a shelfstream process, in groups (see the module's docstring)."""

    model_config = SettingsConfigDict(
        env_prefix=PREFIX, env_nested_delimiter=DELIMITER, frozen=True, extra="forbid"
    )

    aws: AwsSettings = Field(default=AwsSettings(), description=AwsSettings.__doc__)
    prefixes: PrefixSettings = Field(default=PrefixSettings(), description=PrefixSettings.__doc__)
    history: HistorySettings = Field(default=HistorySettings(), description=HistorySettings.__doc__)
    restock: RestockSettings = Field(default=RestockSettings(), description=RestockSettings.__doc__)
    dedup: DedupSettings = Field(default=DedupSettings(), description=DedupSettings.__doc__)
    windows: WindowSettings = Field(default=WindowSettings(), description=WindowSettings.__doc__)
    processor: ProcessorSettings = Field(default=ProcessorSettings(), description=ProcessorSettings.__doc__)
    checkpoints: CheckpointSettings = Field(
        default=CheckpointSettings(), description=CheckpointSettings.__doc__
    )
    detector: DetectorSettings = Field(default=DetectorSettings(), description=DetectorSettings.__doc__)
    producers: ProducerSettings = Field(default=ProducerSettings(), description=ProducerSettings.__doc__)
    trucks: TruckSettings = Field(default=TruckSettings(), description=TruckSettings.__doc__)
    ops: OpsSettings = Field(default=OpsSettings(), description=OpsSettings.__doc__)
    api: ApiSettings = Field(default=ApiSettings(), description=ApiSettings.__doc__)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Earlier sources win: flags over the grouped names over the flat names of earlier releases.
        return init_settings, _GroupedEnv(settings_cls), _FlatEnv(settings_cls)

    def replaced(self, **groups: Mapping[str, Any]) -> Settings:
        """A copy with some members of some groups changed, validated like the environment's values:
        ``settings.replaced(aws={"shard_count": 2})``."""
        data = self.model_dump()
        for group, changes in groups.items():
            if group not in data:
                raise ValueError(f"no settings group {group!r}")
            data[group] = {**data[group], **changes}
        return Settings.model_validate(data)


def env_name(group: str, member: str) -> str:
    """The environment variable of one setting: ``SHELFSTREAM_DETECTOR__THRESHOLD``."""
    return f"{PREFIX}{group.upper()}{DELIMITER}{member.upper()}"


def to_env(settings: Settings) -> dict[str, str]:
    """The ``SHELFSTREAM_*`` variables that give another process exactly these settings."""
    env = {}
    for group, values in settings.model_dump().items():
        for member, value in values.items():
            if isinstance(value, bool):
                text = "true" if value else "false"
            elif isinstance(value, str | int | float):
                text = str(value)
            else:
                text = json.dumps(value)
            env[env_name(group, member)] = text
    return env


def members() -> dict[str, dict[str, FieldInfo]]:
    """Every group's members, in the order the reference lists them."""
    groups: dict[str, dict[str, FieldInfo]] = {}
    for group, info in Settings.model_fields.items():
        model = info.annotation
        assert isinstance(model, type)
        assert issubclass(model, Group)
        groups[group] = dict(model.model_fields)
    return groups


def _environ() -> dict[str, str]:
    """The process's ``SHELFSTREAM_`` variables, upper-cased (names are matched regardless of case)."""
    return {k.upper(): v for k, v in os.environ.items() if k.upper().startswith(PREFIX)}


class _GroupedEnv(EnvSettingsSource):
    """``SHELFSTREAM_<GROUP>__<NAME>`` variables. A group is set member by member, never as one JSON
    value: ``SHELFSTREAM_DETECTOR`` and ``SHELFSTREAM_TRUCKS`` were single settings in earlier releases
    (the kind, the number of trucks) and are still read as those (_FlatEnv)."""

    def _load_env_vars(self) -> Mapping[str, str | None]:
        groups = {f"{PREFIX}{g}".lower() for g in Settings.model_fields}
        return {k: v for k, v in super()._load_env_vars().items() if k not in groups}


_warned: set[str] = set()


class _FlatEnv(PydanticBaseSettingsSource):
    """The flat ``SHELFSTREAM_*`` names of earlier releases (config/legacy.py), read into their
    groups; a grouped name set too wins. Their use is said once per process in one log line."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # unused: __call__ reads every flat name at once

    def __call__(self) -> dict[str, Any]:
        env = _environ()
        found: dict[str, Any] = {}
        used: list[str] = []
        groups = members()
        for flat, (group, member) in FLAT_NAMES.items():
            value = env.get(PREFIX + flat.upper())
            if value is None:
                continue
            used.append(f"{PREFIX}{flat.upper()} -> {env_name(group, member)}")
            if _is_json(groups[group][member]):
                try:
                    value = json.loads(value)
                except ValueError:
                    name = PREFIX + flat.upper()
                    raise SettingsFault(f"bad setting {name}={value}: not valid JSON") from None
            found.setdefault(group, {})[member] = value
        fresh = [u for u in used if u not in _warned]
        if fresh:
            _warned.update(fresh)
            log.warning("deprecated setting names, renamed in docs/settings.md: %s", ", ".join(fresh))
        return found


def _is_json(info: FieldInfo) -> bool:
    origin = getattr(info.annotation, "__origin__", None)
    return origin in (dict, tuple, list)


class SettingsFault(UsageError):
    """A setting the user gave is wrong: one line naming its environment variable (exit status 2)."""


def _describe(exc: ValidationError) -> str:
    """The first problem of a validation error as one line naming the variable to fix: the flat name
    of earlier releases when that is what the user set."""
    first = exc.errors()[0]
    loc = [str(p) for p in first.get("loc", ())]
    env = _environ()
    if len(loc) >= 2 and loc[0] in Settings.model_fields:
        group, member = loc[0], loc[1]
        name = env_name(group, member)
        if name not in env:
            flat = next(
                (PREFIX + f.upper() for f, path in FLAT_NAMES.items() if path == (group, member)), None
            )
            if flat is not None and flat in env:
                name = flat
        if first["type"] == "extra_forbidden":
            known = list(members()[group])
            close = difflib.get_close_matches(member, known, n=1)
            hint = f" (did you mean {env_name(group, close[0])}?)" if close else ""
            return f"unknown setting {name}: the {group} group has no member {member!r}{hint}"
        value = env.get(name)
        shown = f"={value}" if value is not None else ""
        return f"bad setting {name}{shown}: {first['msg']}"
    if len(loc) == 1 and first["type"] == "extra_forbidden":
        return f"unknown settings group {loc[0]!r}"
    where = ".".join(loc) or "settings"
    return f"bad setting {where}: {first['msg']}"


def _misnamed() -> str | None:
    """What is wrong with the names of the ``SHELFSTREAM_`` variables set, if anything: a group that
    does not exist, or a whole group given as one value. (Unknown members are the models' to find.)"""
    groups = {g.upper() for g in Settings.model_fields}
    flat = {PREFIX + f.upper() for f in FLAT_NAMES}
    for name in sorted(_environ()):
        rest = name[len(PREFIX) :]
        if DELIMITER in rest and rest.split(DELIMITER, 1)[0] not in groups:
            return f"unknown setting {name}: the groups are {', '.join(sorted(groups))}"
        if rest in groups and name not in flat:
            first = next(iter(members()[rest.lower()]))
            return f"{name} sets a whole group: set its members, e.g. {env_name(rest.lower(), first)}"
    return None


def _bad_json() -> str | None:
    """The first variable of a JSON-valued setting that does not hold JSON."""
    env = _environ()
    for group, fields in members().items():
        for member, info in fields.items():
            name = env_name(group, member)
            if _is_json(info) and name in env:
                try:
                    json.loads(env[name])
                except ValueError:
                    return f"bad setting {name}={env[name]}: not valid JSON ({info.description})"
    return None


def load_settings(**overrides: Mapping[str, Any]) -> Settings:
    """Build the process's settings: environment first, explicit overrides (from flags, by group:
    ``detector={"kind": "off"}``) on top. A user's mistake raises `SettingsFault`: one line that
    names the variable."""
    wrong = _misnamed()
    if wrong:
        raise SettingsFault(wrong)
    try:
        return Settings(**overrides)  # type: ignore[arg-type]  # validated into the groups' models
    except ValidationError as exc:
        raise SettingsFault(_describe(exc)) from None
    except SettingsError as exc:
        raise SettingsFault(_bad_json() or f"bad setting: {exc}") from None
