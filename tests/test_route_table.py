"""The gateway's whole route table, printed (`pytest -s tests/test_route_table.py`), and checked:
no route is shadowed by one registered before it (aiohttp answers with the first that matches),
and every family's ROUTES table is installed as written, with module-level handlers."""
from __future__ import annotations

import asyncio
import re

import grpc
from aiohttp import web

from gateway.app import FAMILIES, build_app

PLACEHOLDER = re.compile(r"\{(\w+)(?::([^{}]*(?:\{[^{}]*\}[^{}]*)*))?\}")


def gateway_app() -> web.Application:
    async def build():
        channel = grpc.aio.insecure_channel("127.0.0.1:9")  # never dialled: nothing is called
        try:
            return build_app(channel)
        finally:
            await channel.close()
    return asyncio.run(build())


def route_table(app: web.Application) -> list[tuple[str, str, str, re.Pattern]]:
    """[(method, path template, handler name, pattern)] in registration order."""
    table = []
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource else {}
        template = info.get("path") or info.get("formatter") or info.get("prefix", "")
        pattern = info.get("pattern") or re.compile(re.escape(template) + ("/.*" if "prefix" in info else ""))
        table.append((route.method, template, getattr(route.handler, "__qualname__", repr(route.handler)), pattern))
    return table


def sample(template: str) -> str:
    """A concrete path the template matches ('1' for each variable)."""
    return PLACEHOLDER.sub("1", template)


def shadowed(table) -> list[str]:
    found = []
    for j, (method, template, handler, _) in enumerate(table):
        path = sample(template)
        for earlier_method, earlier, earlier_handler, pattern in table[:j]:
            if earlier_method in (method, "*") and pattern.fullmatch(path) and earlier != template:
                found.append(f"{method} {template} ({handler}) is answered by {earlier} ({earlier_handler})")
                break
    return found


def test_print_the_route_table_and_no_route_shadows_another():
    table = route_table(gateway_app())
    print()
    for method, template, handler, _ in table:
        print(f"{method:<7} {template:<60} {handler}")
    assert len(table) > 100
    problems = shadowed(table)
    assert not problems, "\n".join(problems)


def test_the_check_finds_a_shadowed_route():
    async def handler(request):
        return web.Response()
    app = web.Application()
    app.router.add_get("/v1/things/{id}", handler, allow_head=False)
    app.router.add_get("/v1/things/{id}:wait", handler, allow_head=False)  # "1:wait" is an {id}: never reached
    app.router.add_get("/v1/things", handler, allow_head=False)
    assert shadowed(route_table(app)) == ["GET /v1/things/{id}:wait (test_the_check_finds_a_shadowed_route.<locals>."
                                          "handler) is answered by /v1/things/{id} (test_the_check_finds_a_shadowed_"
                                          "route.<locals>.handler)"]


def test_every_family_route_is_installed_with_a_module_level_handler():
    installed = {(m, t): h for m, t, h, _ in route_table(gateway_app())}
    for family in FAMILIES:
        for method, path, handler in family.ROUTES:
            path = PLACEHOLDER.sub(lambda m: "{" + m.group(1) + "}", path)  # aiohttp shows {tail}, not {tail:.*}
            assert "<locals>" not in handler.__qualname__, f"{family.__name__}: {handler.__qualname__} is a closure"
            assert (method, path) in installed, f"{family.__name__}: {method} {path} not installed"
