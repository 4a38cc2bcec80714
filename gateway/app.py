"""The HTTP gateway: an aiohttp server that is a client of taskhub's gRPC API (never of the database).

`taskhub serve` runs it in-process (started after gRPC, stopped before it); `taskhub gateway
--grpc HOST:PORT` (or a list of servers on one database, HOST:PORT,HOST:PORT) runs it alone. Routes: the legacy families (gateway/families/*), then
every annotated TaskService RPC (gateway/transcode.py); then /metrics, /openapi.json and the
dashboard under /ui/.
"""
from __future__ import annotations

import asyncio
import logging
import signal
import ssl

import grpc
from aiohttp import web

from client.cli_support import quiet_when_unread
from client.credentials import channel_credentials
from client.servers import parse_servers

from . import credentials, fate_auth, metrics, openapi, transcode, ui
from .uploads import MAX_UPLOAD, MAX_UPLOAD_KEY
from .fate_auth import FateVerifier
from .errors import last_resort
from .failover import AioFailoverChannel
from .families import aaas, delta, fate, fate_models, hugegraph, taskgroups
from .families.common import STUBS, Stubs

log = logging.getLogger("taskhub.gateway")

FAMILIES = (aaas, hugegraph, delta, taskgroups, fate, fate_models)
MAX_BODY = 64 << 20


def family_routes() -> list[tuple[str, str, object]]:
    """Every family's ROUTES, in the order they are installed (before the transcoded routes)."""
    return [route for family in FAMILIES for route in family.ROUTES]


def build_app(channel: grpc.aio.Channel, max_body: int = MAX_BODY, require_credentials: bool = False,
              fate_verifier: FateVerifier | None = None, authenticate=None, max_upload: int = MAX_UPLOAD,
              open_metrics: bool = True) -> web.Application:
    app = web.Application(middlewares=[last_resort, credentials.pass_credentials], client_max_size=max_body)
    app[credentials.REQUIRE_CREDENTIALS] = require_credentials
    app[STUBS] = Stubs.on(channel)
    app[MAX_UPLOAD_KEY] = max_upload
    if authenticate is not None:
        app[credentials.AUTHENTICATE] = authenticate
    if fate_verifier is not None:
        app[fate_auth.VERIFIER] = fate_verifier
    taken: set[tuple[str, str]] = set()
    for method, path, handler in family_routes():
        app.router.add_route(method, path, handler)
        taken.add((method, path))
    transcode.add_routes(app, channel, taken)
    metrics.add_routes(app, open_metrics)
    openapi.add_routes(app)
    ui.add_routes(app)
    return app


class Gateway:
    def __init__(self, grpc_target: str, host: str = "127.0.0.1", port: int = 8080, *, ssl_context=None,
                 max_body: int = MAX_BODY, require_credentials: bool = False, tls_ca: str = "",
                 fate_verifier: FateVerifier | None = None, authenticate=None, max_upload: int = MAX_UPLOAD,
                 open_metrics: bool = True, retries: int = 5):
        self.grpc_target = grpc_target
        self.retries = retries                  # turns over a list of servers a call may take
        self.host = host
        self.port = port
        self.ssl_context = ssl_context          # HTTPS when set
        self.max_body = max_body
        self.require_credentials = require_credentials
        self.tls_ca = tls_ca                    # standalone: TLS to the gRPC server
        self.fate_verifier = fate_verifier      # in `serve --auth`: FATE request signing
        self.authenticate = authenticate        # in `serve --auth`: credential -> None | why refused
        self.max_upload = max_upload
        self.open_metrics = open_metrics        # /metrics without a token
        self.channel: grpc.aio.Channel | None = None
        self.runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"{'https' if self.ssl_context else 'http'}://{self.host}:{self.port}"

    async def start(self) -> None:
        options = [("grpc.max_receive_message_length", self.max_body), ("grpc.max_send_message_length", self.max_body)]

        def dial(target: str) -> grpc.aio.Channel:
            # Interceptors pass each HTTP caller's credentials through (gateway/credentials.py).
            target = target.removeprefix("grpc://")
            if self.tls_ca:
                return grpc.aio.secure_channel(target, channel_credentials(self.tls_ca), options=options,
                                               interceptors=credentials.interceptors())
            return grpc.aio.insecure_channel(target, options=options, interceptors=credentials.interceptors())

        addresses = parse_servers(self.grpc_target)  # several: one database, failed over (gateway/failover.py)
        self.channel = dial(addresses[0]) if len(addresses) == 1 else AioFailoverChannel(addresses, dial, self.retries)
        # handler_cancellation: a client that goes away ends its log stream (and the gRPC call) at once.
        self.runner = web.AppRunner(build_app(self.channel, self.max_body, self.require_credentials,
                                              self.fate_verifier, self.authenticate, self.max_upload,
                                              self.open_metrics), handle_signals=False, access_log=None,
                                    shutdown_timeout=1.0, handler_cancellation=True)
        await self.runner.setup()
        site = web.TCPSite(self.runner, self.host, self.port, reuse_address=True, ssl_context=self.ssl_context)
        await site.start()
        if self.port == 0:
            self.port = site._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self.runner:
            transcode.end_streams(self.runner.app)  # else each open follow costs the whole shutdown timeout
            await self.runner.cleanup()
        if self.channel:
            await self.channel.close(grace=None)


def https_context(cert: str, key: str, client_ca: str = "") -> ssl.SSLContext:
    """The HTTPS side: this certificate; with client_ca, only clients with a certificate it signed."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    if client_ca:
        ctx.load_verify_locations(client_ca)
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def connect_host(host: str) -> str:
    """The address to dial for a server listening on `host` (a wildcard is dialled on loopback)."""
    return "127.0.0.1" if host in ("", "0.0.0.0", "::") else host


async def serve_alone(grpc_target: str, host: str, port: int, tls_ca: str = "",
                      ssl_context: ssl.SSLContext | None = None, retries: int = 5) -> int:
    gw = Gateway(grpc_target, host, port, tls_ca=tls_ca, ssl_context=ssl_context, retries=retries)
    await gw.start()
    print(f"taskhub: HTTP gateway listening on {gw.url} (gRPC server {grpc_target})", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await gw.stop()
    print("taskhub: gateway stopped", flush=True)
    return 0


def run_alone(grpc_target: str, host: str, port: int, tls_ca: str = "", ssl_context: ssl.SSLContext | None = None,
              retries: int = 5) -> int:
    quiet_when_unread()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return asyncio.run(serve_alone(grpc_target, host, port, tls_ca, ssl_context, retries))
