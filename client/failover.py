"""A blocking gRPC channel over a list of servers that fails over by itself.

One channel per address, opened when first used; calls go to the current one. A call that
fails with UNAVAILABLE (or DEADLINE_EXCEEDED) goes to the next address when it may be sent
again (client/servers.py: reads, follows, cancels, creates with their request_id, and any call
that never reached a server); a follower's "not the scheduler" answer sends it to the address it
names. After a whole turn of the list fails, the next turn waits (backoff), up to `turns` turns.
The streams of client/servers.RESUMERS resume on the next server where they were.
"""
from __future__ import annotations

import threading
import time
from typing import Callable

import grpc

from . import servers

MAX_LEADER_HOPS = 3


def backoff(turn: int) -> float:
    return min(5.0, 0.2 * 2 ** turn)


class Addresses:
    """The list, the current position, and the channel of each address (made by `dial`)."""

    def __init__(self, addresses: list[str], dial: Callable[[str], object]):
        self.addresses = list(addresses)
        self.current = 0
        self._dial = dial
        self._channels: dict[str, object] = {}
        self._lock = threading.Lock()

    def channel(self, index: int):
        address = self.addresses[index]
        with self._lock:
            ch = self._channels.get(address)
            if ch is None:
                ch = self._channels[address] = self._dial(address)
            return ch

    def failed(self, index: int) -> None:
        """The address at `index` failed: the next call starts at the following one."""
        with self._lock:
            if self.current == index:
                self.current = (index + 1) % len(self.addresses)

    def lead_to(self, address: str) -> None:
        """A follower named the scheduler: it becomes the current address (added if new)."""
        with self._lock:
            if address not in self.addresses:
                self.addresses.append(address)
            self.current = self.addresses.index(address)

    def channels(self) -> list:
        with self._lock:
            return list(self._channels.values())


class Attempts:
    """Counts one call's failures: a turn is one failure per address; after `turns` turns it gives up."""

    def __init__(self, addresses: Addresses, turns: int):
        self.addresses, self.turns = addresses, turns
        self.failures = 0
        self.hops = 0

    def again(self, index: int, error: grpc.RpcError, may_move_on: bool, may_follow: bool = True) -> float | None:
        """Seconds to wait before the next try (moved to the next or the named address), or None: raise.
        `may_follow`: the call can be sent again to the scheduler a follower names (its request is
        not a stream the first try consumed)."""
        leader = servers.leader_hint(error) if may_follow else ""
        if leader and self.hops < MAX_LEADER_HOPS:
            self.hops += 1
            self.addresses.lead_to(leader)
            return 0.0
        if not may_move_on:
            return None
        self.failures += 1
        n = len(self.addresses.addresses)
        if self.failures >= n * (self.turns + 1):
            return None
        self.addresses.failed(index)
        return backoff(self.failures // n - 1) if self.failures % n == 0 else 0.0

    def progressed(self) -> None:
        """A server answered: the count starts again."""
        self.failures = 0


class FailoverChannel(grpc.Channel):
    def __init__(self, addresses: list[str], dial: Callable[[str], grpc.Channel], turns: int = 5):
        self.pool = Addresses(addresses, dial)
        self.turns = turns

    @property
    def addresses(self) -> list[str]:
        return self.pool.addresses

    def unary_unary(self, method, request_serializer=None, response_deserializer=None, _registered_method=False):
        return _Unary(self, method, request_serializer, response_deserializer, "unary_unary")

    def stream_unary(self, method, request_serializer=None, response_deserializer=None, _registered_method=False):
        return _Unary(self, method, request_serializer, response_deserializer, "stream_unary")

    def unary_stream(self, method, request_serializer=None, response_deserializer=None, _registered_method=False):
        return _Streaming(self, method, request_serializer, response_deserializer, "unary_stream")

    def stream_stream(self, method, request_serializer=None, response_deserializer=None, _registered_method=False):
        return _Streaming(self, method, request_serializer, response_deserializer, "stream_stream")

    def subscribe(self, callback, try_to_connect=False):
        self.pool.channel(self.pool.current).subscribe(callback, try_to_connect)

    def unsubscribe(self, callback):
        for ch in self.pool.channels():
            ch.unsubscribe(callback)

    def close(self):
        for ch in self.pool.channels():
            ch.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


class _Callable:
    def __init__(self, owner: FailoverChannel, method: str, serializer, deserializer, kind: str):
        self.owner, self.method, self.kind = owner, method, kind
        self._args = (method, serializer, deserializer)

    def _on(self, index: int):
        return getattr(self.owner.pool.channel(index), self.kind)(*self._args)


class _Unary(_Callable):
    """A unary (or client-streaming) call. A request stream is consumed by the first try, so such
    a call moves on only while it never reached a server."""

    def with_call(self, request, timeout=None, metadata=None, credentials=None, wait_for_ready=None,
                  compression=None):
        pool = self.owner.pool
        streamed = self.kind == "stream_unary"
        attempts = Attempts(pool, self.owner.turns)
        while True:
            index = pool.current
            try:
                return self._on(index).with_call(request, timeout=timeout, metadata=metadata,
                                                 credentials=credentials, wait_for_ready=wait_for_ready,
                                                 compression=compression)
            except grpc.RpcError as e:
                may = servers.never_sent(e) if streamed else servers.moves_on(e, self.method, request, False)
                wait = attempts.again(index, e, may, may_follow=not streamed)
                if wait is None:
                    raise
                time.sleep(wait)

    def __call__(self, request, timeout=None, metadata=None, credentials=None, wait_for_ready=None,
                 compression=None):
        return self.with_call(request, timeout, metadata, credentials, wait_for_ready, compression)[0]

    def future(self, request, timeout=None, metadata=None, credentials=None, wait_for_ready=None, compression=None):
        # Futures are left to gRPC: sent to the current server, no failover.
        return self._on(self.owner.pool.current).future(request, timeout=timeout, metadata=metadata,
                                                        credentials=credentials, wait_for_ready=wait_for_ready,
                                                        compression=compression)


class _Streaming(_Callable):
    def __call__(self, request, timeout=None, metadata=None, credentials=None, wait_for_ready=None,
                 compression=None):
        kw = dict(timeout=timeout, metadata=metadata, credentials=credentials, wait_for_ready=wait_for_ready,
                  compression=compression)
        return ResumingStream(self, request, kw)


class ResumingStream:
    """The responses of a server stream, resumed on the next server when its server goes away
    (client/servers.py says how each stream resumes; others are sent again only while they gave
    nothing). Also a grpc.Call: cancel(), code(), details(), ... are the current call's."""

    def __init__(self, callable_: _Streaming, request, kw: dict):
        self._c = callable_
        self._request = request
        self._kw = kw
        self._resumer = servers.resumer(callable_.method, request) if callable_.kind == "unary_stream" else None
        self._attempts = Attempts(callable_.owner.pool, callable_.owner.turns)
        self._call = None
        self._index = 0
        self._received = False
        self._cancelled = False
        self._open()

    def _open(self) -> None:
        pool = self._c.owner.pool
        self._index = pool.current
        request = self._resumer.request if self._resumer else self._request
        self._call = self._c._on(self._index)(request, **self._kw)

    def __iter__(self):
        return self

    def __next__(self):
        while True:
            if self._resumer is not None and self._resumer.pending is not None:
                pending, self._resumer.pending = self._resumer.pending, None
                return pending
            try:
                message = next(self._call)
            except grpc.RpcError as e:
                if self._cancelled or not self._move_on(e):
                    raise
                continue
            self._attempts.progressed()
            self._received = True
            if self._resumer is None:
                return message
            message = self._resumer.seen(message)
            if message is not None:
                return message

    def _move_on(self, error: grpc.RpcError) -> bool:
        """Resume elsewhere after this failure? (Opens the next call when so.)"""
        if self._resumer is None:  # a request stream is consumed by the first try
            may = servers.never_sent(error)
        else:
            may = servers.moves_on(error, self._c.method, self._resumer.request, self._received)
        wait = self._attempts.again(self._index, error, may, may_follow=self._resumer is not None)
        if wait is None:
            return False
        if self._resumer is not None and self._resumer.resume(not servers.never_sent(error)) is None:
            raise StopIteration  # nothing left to follow (WaitTasks: every id ended)
        time.sleep(wait)
        self._open()
        return True

    def cancel(self):
        self._cancelled = True
        return self._call.cancel()

    def __getattr__(self, name):  # code(), details(), is_active(), add_callback(), metadata ...
        return getattr(self._call, name)
