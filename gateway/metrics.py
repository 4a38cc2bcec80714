"""GET /metrics: the process's Prometheus metrics in the text format.

In `taskhub serve` the gateway runs inside the server process, so these are the server's
metrics (server/metrics.py) plus the Python process collectors; a standalone gateway has
only the latter.
"""
from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest


def add_routes(app: web.Application) -> None:
    async def metrics(request: web.Request) -> web.Response:
        """Prometheus metrics (text exposition format)."""
        # Collected on the event loop on purpose: the engine's collector reads live state.
        return web.Response(body=generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST})
    app.router.add_get("/metrics", metrics)
