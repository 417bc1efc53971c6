"""One frozen settings object per process, built in the entry point and passed down.

Names of AWS resources, sizes and thresholds come from ``SHELFSTREAM_*`` variables; endpoints,
region and credentials deliberately do not: they follow the AWS SDK's own settings
(``AWS_ENDPOINT_URL``, ``AWS_ENDPOINT_URL_KINESIS``, ``AWS_REGION``, profiles), so the same code
runs against the embedded AWS, LocalStack or a real account.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SHELFSTREAM_", frozen=True, extra="ignore")

    # --- resources -------------------------------------------------------------------------------
    stream_name: str = "shelfstream-events"
    shard_count: int = Field(default=4, ge=1, le=500)
    bucket: str = "shelfstream-archive"
    archive_firehose: str = "shelfstream-archive"
    windows_firehose: str = "shelfstream-windows"
    alerts_firehose: str = "shelfstream-alerts-archive"
    alerts_topic: str = "shelfstream-alerts"
    restock_queue: str = "shelfstream-restock"
    restock_dlq: str = "shelfstream-restock-dlq"
    alerts_queue: str = "shelfstream-alerts-inbox"
    incoming_queue: str = "shelfstream-incoming"  # S3 notifications of uploads under incoming_prefix
    deliveries_table: str = "shelfstream-deliveries"
    # Each shard's event time, so a KCL record processor whose shard went silent can follow the others.
    shard_clocks_table: str = "shelfstream-shard-clocks"
    max_receive_count: int = Field(default=5, ge=1, le=1000)

    # --- S3 layout -------------------------------------------------------------------------------
    events_prefix: str = "events/"
    windows_prefix: str = "windows/"
    alerts_prefix: str = "alerts/"
    rejected_prefix: str = "rejected/"
    checkpoint_prefix: str = "checkpoints/"
    reports_prefix: str = "reports/"
    incoming_prefix: str = "incoming/"

    # --- history: query, report, file ingest -----------------------------------------------------
    archive_mirror: str = ".shelfstream/archive"  # the demo's copy of the archive, queried with no AWS
    archive_cache: str = ".shelfstream/cache"  # objects downloaded from S3 by query and report
    # The history tables (Apache Iceberg, history/tables.py): locally a pyiceberg SQL catalog on SQLite
    # and a warehouse on disk (or s3://bucket/prefix on the embedded or a real S3).
    tables_catalog: str = ".shelfstream/tables/catalog.db"  # or "glue" (AWS Glue Data Catalog)
    tables_namespace: str = "shelfstream"  # the namespace (Glue: the database) of the tables
    tables_warehouse: str = ".shelfstream/tables/warehouse"
    retention_days: int = Field(default=30, ge=1)  # partitions older than this are dropped
    ingest_max_line_bytes: int = Field(default=64 * 1024, ge=256)
    ingest_wait_s: int = Field(default=20, ge=0, le=20)  # SQS long poll of `ingest --watch`

    # --- stock rules -----------------------------------------------------------------------------
    default_restock_threshold: int = Field(default=5, ge=0)
    default_target_stock: int = Field(default=40, ge=1)
    # A repeat of (store_id, event_id) within this much event time of the shard's newest events is
    # always ignored (docs/durability.md); at least the stream's retention (24 h by default).
    dedup_horizon_s: int = Field(default=24 * 3600, ge=60)
    dedup_bucket_s: int = Field(default=900, ge=1)  # the memory expires in slices of this much event time
    # Events further ahead than this move neither the dedup clock nor the windows' clock alone.
    dedup_max_ahead_s: int = Field(default=3600, ge=0)
    # A store that sends nothing for this long (event time) is forgotten: stock, catalog, requests,
    # windows, detector. 0 keeps every store for ever.
    store_retention_s: int = Field(default=35 * 24 * 3600, ge=0)
    # `forecast`: demand over the lead time + safety stock (processors/core/demand.py), the threshold as
    # a floor; `threshold`: the catalog's fixed threshold only.
    restock_policy: Literal["threshold", "forecast"] = "forecast"
    service_level: float = Field(default=0.98, ge=0.5, lt=1.0)  # chance of no stock-out per delivery cycle
    lead_time_prior_s: float = Field(default=3600.0, gt=0)  # until deliveries teach the real lead time
    restock_cycle_s: float = Field(default=24 * 3600.0, gt=0)  # planned time between a store's deliveries
    forecast_min_history_s: float = Field(default=24 * 3600.0, ge=0)  # store history before forecasting

    # --- event-time windows and anomaly detection ------------------------------------------------
    window_s: int = Field(default=900, ge=0)  # tumbling window; 0 turns windows and detection off
    hopping_window_s: int = Field(default=3600, ge=0)  # 0: no hopping window
    hopping_hop_s: int = Field(default=900, ge=1)
    allowed_lateness_s: int = Field(default=120, ge=0)
    # A store's windows close by its own event time; a silent store's once the shard's clock is this far
    # past them (so an outage is judged while it lasts)
    store_idle_s: int = Field(default=300, ge=0)
    # A late sale or refund up to this far behind its store's closing point revises its closed windows
    # (and may withdraw an alert they raised); 0: every late event is only counted
    late_bound_s: int = Field(default=14400, ge=0)
    # A shard that has read everything while other shards' event time moves on follows them this far
    # behind, so the windows of a store that went silent (tills down) still close and are judged;
    # events of that shard arriving later than this are late. 0: only a shard's own events move it.
    idle_shard_lag_s: int = Field(default=600, ge=0)
    # ... and only once it has also read nothing for this many wall-clock seconds: in a replay or a
    # backfill event time runs far ahead of wall time, and a writer a moment behind on one shard (a
    # throttled lane retrying) must not make that shard's next events late.
    idle_shard_patience_s: float = Field(default=10.0, ge=0)
    # How often a KCL record processor publishes its shard's event time (when it moved) and, while
    # its shard is quiet, reads the others' (processors/shard_clocks.py).
    shard_clock_every_s: float = Field(default=5.0, gt=0)
    # How often a shard publishes the shape of a day its stores taught and reads the other shards'
    # (S3, beside the checkpoints: processors/fleet_shapes.py), so a store alone in its shard is
    # judged against the fleet's shape; 0 keeps each shard to its own stores.
    fleet_shape_every_s: float = Field(default=300.0, ge=0)
    # The whole stream quiet (every shard read nothing) for this long, while the stores' histories
    # expected at least stream_quiet_min_sales over the spell: the feed's outage, said once (a log
    # line and the StreamQuiet gauge), never one alert per store (processors/stream_silence.py).
    stream_quiet_after_s: float = Field(default=300.0, ge=0)
    stream_quiet_min_sales: float = Field(default=20.0, ge=0)
    # The anomaly detector: "seasonal" (ours), a baseline ("naive", "threshold", "hst"), or "off".
    detector: Literal["seasonal", "naive", "threshold", "hst", "off"] = "seasonal"

    # --- processor shell -------------------------------------------------------------------------
    poll_interval_s: float = Field(default=0.2, gt=0)
    max_poll_interval_s: float = Field(default=1.0, gt=0)
    get_records_limit: int = Field(default=1000, ge=1, le=10000)
    checkpoint_every_s: float = Field(default=5.0, gt=0)
    checkpoint_every_records: int = Field(default=5000, ge=1)

    # --- producers -------------------------------------------------------------------------------
    max_batches_in_flight: int = Field(default=4, ge=1)
    put_max_attempts: int = Field(default=8, ge=1)
    put_base_backoff_s: float = Field(default=0.05, gt=0)

    # --- trucks ----------------------------------------------------------------------------------
    trucks: int = Field(default=4, ge=1)
    truck_capacity: int = Field(default=400, ge=1)  # units per trip
    travel_seconds: float = Field(default=2.0, ge=0)  # depot to any store (and back)
    # Between two stores: "store-001|store-002" -> seconds (either order); pairs not listed take
    # travel_between_s. A trip goes on to another store only when that gets there sooner (consumers/trips.py).
    travel_pairs: dict[str, float] = Field(default_factory=dict)
    travel_between_s: float = Field(default=1.5, ge=0)
    max_stops: int = Field(default=3, ge=1, le=20)
    # How long a request stays hidden while a truck is on it, beyond the trip itself; also the lease
    # on its claim in the delivery log, so a dead worker's request comes back and can be claimed again.
    restock_visibility_s: int = Field(default=60, ge=1, le=43_200)

    health_file: str = "/tmp/shelfstream-health"

    # --- metrics (process, dispatch, demo) ------------------------------------------------------------
    metrics_every_s: float = Field(default=60.0, gt=0)  # EMF lines on stderr, one report per period
    metrics_port: int = Field(default=0, ge=0, le=65535)  # Prometheus /metrics on 127.0.0.1; 0 = off

    # --- HTTP API and dashboard (`shelfstream serve`) ----------------------------------------------
    api_max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    # Seconds a client has, from its request's headers, to send the whole body it declared (else 408).
    api_body_timeout_s: float = Field(default=10.0, gt=0)
    api_max_events: int = Field(default=500, ge=1, le=500)
    api_rate_per_s: float = Field(default=20.0, gt=0)  # requests per second per token, sustained
    api_burst: int = Field(default=60, ge=1)  # requests a token may make at once
    api_failed_auth_per_min: float = Field(default=30.0, gt=0)  # unknown tokens per client address
    # Addresses of reverse proxies whose X-Forwarded-For / -Proto the API believes (comma-separated,
    # "*" for any). Empty: none, so a client cannot pick its own address (e.g. to dodge the limit on
    # failed sign-ins); set it to the load balancer's address when there is one.
    api_trusted_proxies: str = ""
    sse_heartbeat_s: float = Field(default=15.0, gt=0)
    dashboard_refresh_s: float = Field(default=3.0, gt=0)  # standalone: checkpoints and archive polls
    dashboard_history_s: int = Field(default=3 * 3600, ge=0)  # standalone: archive read at startup
    dashboard_queue: str = ""  # standalone: its own alerts subscription; "" = <alerts_queue>-dashboard

    # --- embedded AWS ----------------------------------------------------------------------------
    region: str = "us-east-1"
    # Kinesis's per-shard limits in the embedded Kinesis (1,000 records/s and 1 MiB/s written,
    # 5 GetRecords/s and 2 MiB/s read, ProvisionedThroughputExceededException past them).
    embedded_kinesis_limits: bool = True


def load_settings(**overrides: Any) -> Settings:
    """Build the process's settings: environment first, explicit overrides (from flags) on top."""
    return Settings(**overrides)
