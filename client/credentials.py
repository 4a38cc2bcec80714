"""How clients present themselves: a bearer token (TASKHUB_TOKEN) on every call, and TLS
(TASKHUB_TLS_CA to trust the server's certificate; a client certificate for mutual TLS)."""
from __future__ import annotations

import collections
import os

import grpc

from .failover import FailoverChannel
from .servers import parse_servers

MESSAGE_OPTIONS = [("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", 64 << 20)]


def env_token() -> str:
    return os.environ.get("TASKHUB_TOKEN", "").strip()


def env_tls_ca() -> str:
    return os.environ.get("TASKHUB_TLS_CA", "").strip()


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def channel_credentials(tls_ca: str = "", cert: str = "", key: str = "") -> grpc.ChannelCredentials:
    """TLS trusting `tls_ca` (the system's roots if empty); `cert`/`key`: a client certificate."""
    return grpc.ssl_channel_credentials(root_certificates=_read(tls_ca) if tls_ca else None,
                                        private_key=_read(key) if key else None,
                                        certificate_chain=_read(cert) if cert else None)


def auth_metadata(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),) if token else ()


class _Details(collections.namedtuple("_Details", ("method", "timeout", "metadata", "credentials",
                                                   "wait_for_ready", "compression")), grpc.ClientCallDetails):
    pass


class BearerToken(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor,
                  grpc.StreamUnaryClientInterceptor, grpc.StreamStreamClientInterceptor):
    """Adds `authorization: Bearer <token>` to every call on a (blocking) channel."""

    def __init__(self, token: str):
        self.header = auth_metadata(token)

    def _details(self, d):
        return _Details(d.method, d.timeout, tuple(d.metadata or ()) + self.header, d.credentials,
                        getattr(d, "wait_for_ready", None), getattr(d, "compression", None))

    def intercept_unary_unary(self, continuation, details, request):
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation, details, request):
        return continuation(self._details(details), request)

    def intercept_stream_unary(self, continuation, details, request_iterator):
        return continuation(self._details(details), request_iterator)

    def intercept_stream_stream(self, continuation, details, request_iterator):
        return continuation(self._details(details), request_iterator)


def open_channel(target: str, *, token: str | None = None, tls_ca: str | None = None, tls_cert: str = "",
                 tls_key: str = "", options=MESSAGE_OPTIONS, turns: int = 5) -> grpc.Channel:
    """A blocking channel. token/tls_ca default to TASKHUB_TOKEN / TASKHUB_TLS_CA; a target
    starting with grpcs:// (or a CA) means TLS. A list of servers (h1:50051,h2:50051) gives a
    channel that fails over by itself (client/failover.py; `turns`: passes over the list)."""
    token = env_token() if token is None else token
    tls_ca = env_tls_ca() if tls_ca is None else tls_ca
    addresses = parse_servers(target)
    tls = any(a.startswith("grpcs://") for a in addresses) or bool(tls_ca) or bool(tls_cert)

    def dial(address: str) -> grpc.Channel:
        address = address.removeprefix("grpcs://").removeprefix("grpc://")
        if tls:
            return grpc.secure_channel(address, channel_credentials(tls_ca, tls_cert, tls_key), options=options)
        return grpc.insecure_channel(address, options=options)

    channel = dial(addresses[0]) if len(addresses) == 1 else FailoverChannel(addresses, dial, turns)
    return grpc.intercept_channel(channel, BearerToken(token)) if token else channel


def open_aio_channel(target: str, *, tls_ca: str = "", tls_cert: str = "", tls_key: str = "",
                     options=MESSAGE_OPTIONS) -> grpc.aio.Channel:
    """An asyncio channel (tokens go per call, as metadata)."""
    tls = target.startswith("grpcs://") or bool(tls_ca) or bool(tls_cert)
    target = target.removeprefix("grpcs://").removeprefix("grpc://")
    if tls:
        return grpc.aio.secure_channel(target, channel_credentials(tls_ca, tls_cert, tls_key), options=options)
    return grpc.aio.insecure_channel(target, options=options)
