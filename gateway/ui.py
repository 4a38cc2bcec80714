"""The web dashboard: static files under gateway/ui/, served at /ui/.

The pages talk only to the gateway's own routes (transcoded JSON, SSE streams, the FATE
Flow routes); nothing is fetched from elsewhere, so it works offline.
"""
from __future__ import annotations

from pathlib import Path

from aiohttp import web

STATIC = Path(__file__).resolve().parent / "ui"


def add_routes(app: web.Application) -> None:
    def page(name: str):
        async def serve(request: web.Request) -> web.FileResponse:
            return web.FileResponse(STATIC / name, headers={"Cache-Control": "no-cache"})
        serve.__doc__ = f"The dashboard ({name})."
        return serve

    async def home(request: web.Request) -> web.Response:
        """Redirects to the dashboard."""
        raise web.HTTPFound("/ui/")

    async def bare(request: web.Request) -> web.Response:
        """Redirects to the dashboard."""
        raise web.HTTPFound("/ui/")

    app.router.add_get("/", home)
    app.router.add_get("/ui", bare)
    app.router.add_get("/ui/", page("index.html"))
    app.router.add_get("/ui/api", page("api.html"))
    app.router.add_static("/ui/static", STATIC, append_version=False)
