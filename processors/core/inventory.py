"""The stock state as checkpoints written before the restock policy had a class of its own hold it.

Those checkpoints pickled one `Inventory` object (this module and name) that held the stock ledger's
data, the demand forecast and the forecast policy's reorder points together. Pickle finds a class by
module and name, so this class stays here to receive that data; `split` hands each part to its owner.
Nothing else builds one.
"""

from __future__ import annotations

from typing import Any

from processors.core.demand import DemandForecast, RestockConfig
from processors.core.restock_policy import ForecastPolicy, RestockPolicy, ThresholdPolicy
from processors.core.stock_ledger import CatalogEntry, StockLedger

# The catalog's entries were pickled under this module too.
__all__ = ["CatalogEntry", "Inventory"]


class Inventory:
    """Receives an old checkpoint's attributes, by name, as pickle sets them (older ones lack some)."""

    def __setstate__(self, state: tuple[Any, dict[str, Any]]) -> None:
        _, slots = state
        self.__dict__.update(slots)

    def split(self, restock: RestockConfig) -> tuple[StockLedger, DemandForecast | None, RestockPolicy]:
        """The ledger, the forecast and the policy this state was, under `restock` when the checkpoint
        says nothing of restocking (one written before the forecast policy)."""
        data = self.__dict__
        ledger = StockLedger(
            data["default_threshold"],
            data["default_target"],
            stock=data["stock"],
            catalog=data["catalog"],
            open_requests=data["open_requests"],
            out_of_stock=data["out_of_stock"],
            limits=data.get("limits", {}),
            requested_at=data.get("requested_at", {}),
        )
        config: RestockConfig = data.get("restock_config", restock)
        if config.policy != "forecast":
            return ledger, None, ThresholdPolicy()
        forecast = data.get("demand") or DemandForecast(config)
        return ledger, forecast, ForecastPolicy(data.get("reorder_points", {}))
