"""GET /metrics: the process's Prometheus metrics in the text format.

In `taskhub serve` the gateway runs inside the server process, so these are the server's
metrics (server/metrics.py) plus the Python process collectors; a standalone gateway has
only the latter. Under `--auth` they name every namespace, so they need a token (any role;
Prometheus sends one with `authorization: {credentials: ...}`) unless `--open-metrics`.
"""
from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from .credentials import REALM, refusal
from .errors import json_response


def add_routes(app: web.Application, open_metrics: bool = True) -> None:
    async def metrics(request: web.Request) -> web.Response:
        """Prometheus metrics (text exposition format)."""
        why = None if open_metrics else refusal(request)
        if why is not None:
            resp = json_response({"code": 16, "message": why}, 401)
            resp.headers["WWW-Authenticate"] = REALM
            return resp
        # Collected on the event loop on purpose: the engine's collector reads live state.
        return web.Response(body=generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST})
    app.router.add_get("/metrics", metrics)
