"""The gateway's asyncio channel over a list of servers (`taskhub gateway --grpc h1:50051,h2:50051`).

The asyncio twin of client/failover.py, with the same rules (client/servers.py): unary calls
go to the next server on UNAVAILABLE when they may be sent again (or never reached a server);
a follower's "not the scheduler" answer sends them to the address it names; server streams
resume where they were. Client-streaming calls (uploads) cannot be replayed: they go to the
current server, and one that fails moves the next call on.
"""
from __future__ import annotations

import asyncio
from typing import Callable

import grpc

from client import servers
from client.failover import Addresses, Attempts


class AioFailoverChannel:
    def __init__(self, addresses: list[str], dial: Callable[[str], grpc.aio.Channel], turns: int = 5):
        self.pool = Addresses(addresses, dial)
        self.turns = turns

    def unary_unary(self, method, request_serializer=None, response_deserializer=None, **_):
        return _Callable(self, method, request_serializer, response_deserializer, "unary_unary", _Unary)

    def unary_stream(self, method, request_serializer=None, response_deserializer=None, **_):
        return _Callable(self, method, request_serializer, response_deserializer, "unary_stream", _Stream)

    def stream_unary(self, method, request_serializer=None, response_deserializer=None, **_):
        return _Callable(self, method, request_serializer, response_deserializer, "stream_unary", None)

    def stream_stream(self, method, request_serializer=None, response_deserializer=None, **_):
        return _Callable(self, method, request_serializer, response_deserializer, "stream_stream", None)

    async def close(self, grace: float | None = None) -> None:
        await asyncio.gather(*(ch.close(grace) for ch in self.pool.channels()))


class _Callable:
    def __init__(self, owner: AioFailoverChannel, method: str, serializer, deserializer, kind: str, wrapper):
        self.owner, self.method, self.kind, self.wrapper = owner, method, kind, wrapper
        self._args = (method, serializer, deserializer)

    def on(self, index: int):
        return getattr(self.owner.pool.channel(index), self.kind)(*self._args)

    def __call__(self, request=None, **kw):
        if self.wrapper is not None:
            return self.wrapper(self, request, kw)
        index = self.owner.pool.current  # request streams: no replay; a failure moves the next call on
        call = self.on(index)(request, **kw) if request is not None else self.on(index)(**kw)

        def failed(done) -> None:
            if not done.cancelled() and done.code() == grpc.StatusCode.UNAVAILABLE:
                self.owner.pool.failed(index)
        call.add_done_callback(failed)
        return call


class _Unary:
    """An awaitable unary call that fails over; cancel() cancels the try under way."""

    def __init__(self, c: _Callable, request, kw: dict):
        self._c, self._request, self._kw = c, request, kw
        self._call = None
        self._cancelled = False

    def __await__(self):
        return self._run().__await__()

    async def _run(self):
        pool = self._c.owner.pool
        attempts = Attempts(pool, self._c.owner.turns)
        while True:
            index = pool.current
            self._call = self._c.on(index)(self._request, **self._kw)
            try:
                return await self._call
            except grpc.aio.AioRpcError as e:
                wait = None if self._cancelled else attempts.again(
                    index, e, servers.moves_on(e, self._c.method, self._request, False))
                if wait is None:
                    raise
                await asyncio.sleep(wait)

    def cancel(self) -> bool:
        self._cancelled = True
        return self._call.cancel() if self._call is not None else False


class _Stream:
    """A server stream read with read() or async for, resumed on the next server (client/servers.py)."""

    def __init__(self, c: _Callable, request, kw: dict):
        self._c, self._kw = c, kw
        self._resumer = servers.resumer(c.method, request)
        self._attempts = Attempts(c.owner.pool, c.owner.turns)
        self._index = 0
        self._call = None
        self._received = False
        self._cancelled = False
        self._open()

    def _open(self) -> None:
        self._index = self._c.owner.pool.current
        self._call = self._c.on(self._index)(self._resumer.request, **self._kw)

    async def read(self):
        while True:
            if self._resumer.pending is not None:
                pending, self._resumer.pending = self._resumer.pending, None
                return pending
            try:
                message = await self._call.read()
            except grpc.aio.AioRpcError as e:
                if self._cancelled:
                    raise
                may = servers.moves_on(e, self._c.method, self._resumer.request, self._received)
                wait = self._attempts.again(self._index, e, may)
                if wait is None:
                    raise
                if self._resumer.resume(not servers.never_sent(e)) is None:
                    return grpc.aio.EOF  # nothing left to follow
                await asyncio.sleep(wait)
                self._open()
                continue
            if message is grpc.aio.EOF:
                return message
            self._attempts.progressed()
            self._received = True
            message = self._resumer.seen(message)
            if message is not None:
                return message

    async def __aiter__(self):
        while (message := await self.read()) is not grpc.aio.EOF:
            yield message

    def cancel(self) -> bool:
        self._cancelled = True
        return self._call.cancel()

    def done(self) -> bool:
        return self._call.done()

    def __getattr__(self, name):  # code(), details(), initial_metadata() ... of the current try
        return getattr(self._call, name)
