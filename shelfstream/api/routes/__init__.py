"""The API's routes by area, each an APIRouter that create_app includes (shelfstream/api/app.py)."""

from shelfstream.api.routes import alerts, dashboard, events, feedback, health, kpis, stock

ROUTERS = (
    dashboard.router,
    health.router,
    events.router,
    feedback.router,
    stock.router,
    alerts.router,
    kpis.router,
)

__all__ = ["ROUTERS"]
