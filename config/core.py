"""The processor core's configs, derived from the settings: the one place seconds become the core's
milliseconds and group members become `CoreConfig`, `RestockConfig` and `DetectorConfig` fields."""

from __future__ import annotations

from config.settings import Settings
from foundation.timeunits import SECOND_MS
from processors.core.demand import RestockConfig
from processors.core.detectors import DetectorConfig
from processors.core.state import CoreConfig


def _ms(seconds: float) -> int:
    return round(seconds * SECOND_MS)


def core_config(settings: Settings, archive: bool = True) -> CoreConfig:
    """The core's config for these settings (`archive`: whether the core emits events to archive)."""
    restock, det, win, dedup = settings.restock, settings.detector, settings.windows, settings.dedup
    detector = {k: v for k, v in det.model_dump().items() if k != "cooldown_s"}
    return CoreConfig(
        default_restock_threshold=restock.default_threshold_units,
        default_target_stock=restock.default_target_units,
        dedup_horizon_ms=_ms(dedup.horizon_s),
        dedup_bucket_ms=_ms(dedup.bucket_s),
        dedup_max_ahead_ms=_ms(dedup.max_ahead_s),
        store_retention_ms=_ms(settings.processor.store_retention_s),
        archive=archive,
        window_ms=_ms(win.tumbling_s),
        hopping_window_ms=_ms(win.hopping_s),
        hopping_hop_ms=_ms(win.hop_s),
        allowed_lateness_ms=_ms(win.allowed_lateness_s),
        max_window_gap_ms=_ms(win.max_gap_s),
        detection=DetectorConfig(**detector, cooldown_ms=_ms(det.cooldown_s)),
        restock=RestockConfig(
            policy=restock.policy,
            service_level=restock.service_level,
            service_level_fast=restock.service_level_fast,
            service_level_slow=restock.service_level_slow,
            fast_daily_units=restock.fast_daily_units,
            slow_daily_units=restock.slow_daily_units,
            valuable_daily_sales=restock.valuable_daily_sales,
            lead_time_prior_ms=_ms(restock.lead_time_prior_s),
            cycle_ms=_ms(restock.cycle_s),
            min_history_ms=_ms(restock.min_history_s),
            min_item_exposure=restock.min_item_exposure_units,
            share_half_life_ms=_ms(restock.share_half_life_s),
            hour_alpha=restock.hour_alpha,
            lead_alpha=restock.lead_alpha,
            forecast_error=restock.forecast_error,
            stockout_horizon_ms=_ms(restock.stockout_horizon_s),
            min_join_share=restock.min_join_share,
            max_lead_ms=_ms(restock.max_lead_s),
        ),
        store_idle_ms=_ms(win.store_idle_s),
        late_bound_ms=_ms(win.late_bound_s),
    )
