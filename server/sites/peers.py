"""The other parties' servers: one channel each (mutual TLS, or plaintext on loopback), who is
calling (the party its certificate names), and the outbox that delivers each call in order,
resending until the receiver acknowledges it.

A call that cannot get through (the party's server down, or not reachable) is retried with a
backoff; while it fails `on_waiting(job_id, party, reason)` is told the reason (and "" once it gets
through); after `party_timeout` seconds the call is given up and `on_unreachable(job_id, party,
reason)` is told.
"""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Callable

import grpc
from taskhub.v1 import site_service_pb2_grpc as site_grpc

from .. import errors
from ..background import spawn
from .routes import Route, RouteTable, is_loopback, party_name

log = logging.getLogger("taskhub.sites")
PARTY_HEADER = "x-taskhub-party"   # plaintext on loopback only: the calling party says who it is
RETRIED = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.NOT_FOUND,
           grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.CANCELLED)
CALL_TIMEOUT = 60.0
MAX_BACKOFF = 2.0
_OPTIONS = [("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", 64 << 20)]


def server_credentials(route: Route) -> grpc.ServerCredentials:
    """This server's site listener: its certificate, and client certificates of the parties' CA required."""
    cert, key, ca = route.tls.read()
    return grpc.ssl_server_credentials([(key, cert)], root_certificates=ca, require_client_auth=True)


def calling_party(context, table: RouteTable) -> int:
    """The party of the server making this call, from its verified client certificate (or, on a
    plaintext loopback route, from its header); PermissionDenied if it is not one the table knows."""
    auth = context.auth_context() or {}
    names = [v.decode() for k in ("x509_common_name", "x509_subject_alternative_name") for v in auth.get(k, ())]
    if names:
        for party, route in table.routes.items():
            if party_name(party) in names:
                return party
        raise errors.PermissionDenied(f"certificate {names} names no party of this server's route table")
    claimed = dict(context.invocation_metadata() or ()).get(PARTY_HEADER, "")
    peer = context.peer() or ""
    host = peer.split(":", 1)[1].rsplit(":", 1)[0].strip("[]") if peer.startswith(("ipv4:", "ipv6:")) else ""
    route = table.routes.get(int(claimed)) if claimed.isdigit() else None
    if route is None or route.tls is not None or table.listen is None or table.listen.tls is not None \
            or not is_loopback(host):
        raise errors.PermissionDenied("a site call needs a client certificate naming a party of the route table")
    return route.party_id


@dataclass
class _Call:
    job_id: str
    method: str
    request: object
    give_up: Callable[[], bool]       # True: no longer needed (its job ended)
    done: asyncio.Future | None = None


class Peers:
    def __init__(self, table: RouteTable, party_timeout: float,
                 on_unreachable: Callable[[str, int, str], None] | None = None,
                 on_waiting: Callable[[str, int, str], None] | None = None):
        self.table = table
        self.party_timeout = party_timeout
        self.on_unreachable = on_unreachable or (lambda job_id, party, reason: None)
        self.on_waiting = on_waiting or (lambda job_id, party, reason: None)
        self.unreachable: dict[int, str] = {}      # party -> why its calls fail now
        self._channels: dict[int, grpc.aio.Channel] = {}
        self._queues: dict[int, asyncio.Queue] = {}
        self._calling: set[int] = set()            # parties whose queue has a call under way
        self._workers: list[asyncio.Task] = []

    def stub(self, party: int) -> site_grpc.SiteServiceStub:
        ch = self._channels.get(party)
        if ch is None:
            route = self.table.route(party)
            if route.tls is None:
                ch = grpc.aio.insecure_channel(route.target, options=_OPTIONS)
            else:
                cert, key, ca = route.tls.read()
                creds = grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)
                # The peer's certificate must name that party, whatever address it is reached at.
                ch = grpc.aio.secure_channel(route.target, creds, options=_OPTIONS + [
                    ("grpc.ssl_target_name_override", party_name(party))])
            self._channels[party] = ch
        return site_grpc.SiteServiceStub(ch)

    def _metadata(self, party: int) -> list[tuple[str, str]]:
        return [(PARTY_HEADER, str(self.table.own_party))] if self.table.route(party).tls is None else []

    async def call(self, party: int, method: str, request, give_up: Callable[[], bool] = lambda: False,
                   job_id: str = "") -> bool:
        """Make the call until the party acknowledges it (True), or it is no longer needed (False).
        Refusals other than unreachability raise (as a TaskhubError: the party said no)."""
        first_failure = 0.0
        backoff = 0.05
        while True:
            if give_up():
                return False
            try:
                await getattr(self.stub(party), method)(request, timeout=CALL_TIMEOUT, metadata=self._metadata(party),
                                                        wait_for_ready=False)
                self.unreachable.pop(party, None)
                if first_failure:
                    self.on_waiting(job_id, party, "")
                return True
            except grpc.aio.AioRpcError as e:
                if e.code() not in RETRIED:
                    raise errors.FailedPrecondition(f"party {party} refused {method}: {e.details()}") from None
                now = time.monotonic()
                first_failure = first_failure or now
                route = self.table.route(party)
                why = f"party {party} ({route.target}) does not answer: {e.details()}" \
                    if e.code() != grpc.StatusCode.NOT_FOUND else f"party {party}: {e.details()}"
                if self.unreachable.get(party) != why or now == first_failure:
                    self.on_waiting(job_id, party, f"waiting for party {party}: {why}")
                self.unreachable[party] = why
                if now - first_failure > self.party_timeout:
                    self.on_unreachable(job_id, party, f"{why} (for {self.party_timeout:g}s)")
                    return False
            await asyncio.sleep(backoff)
            backoff = min(MAX_BACKOFF, backoff * 2)

    def post(self, party: int, method: str, request, job_id: str, give_up: Callable[[], bool] = lambda: False) -> None:
        """Queue a call to a party; calls to one party are made in the order posted."""
        q = self._queues.get(party)
        if q is None:
            q = self._queues[party] = asyncio.Queue()
            self._workers.append(spawn(self._drain(party, q), f"calls to party {party}"))
        q.put_nowait(_Call(job_id, method, request, give_up))

    def idle(self, party: int) -> bool:
        """Nothing posted to the party is waiting or under way."""
        q = self._queues.get(party)
        return party not in self._calling and (q is None or q.empty())

    async def _drain(self, party: int, q: asyncio.Queue) -> None:
        while True:
            c: _Call = await q.get()
            self._calling.add(party)
            try:
                await self.call(party, c.method, c.request, c.give_up, c.job_id)
            except errors.TaskhubError as e:
                log.warning("%s", e)
                self.on_unreachable(c.job_id, party, str(e))
            except Exception:  # noqa: BLE001 - one bad call must not stop the party's queue
                log.exception("call %s to party %s", c.method, party)
            finally:
                self._calling.discard(party)

    async def close(self) -> None:
        for w in self._workers:
            w.cancel()
        for ch in self._channels.values():
            await ch.close()
