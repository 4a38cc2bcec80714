"""One broadcaster for every fan-out of the server: whoever subscribed to a key hears what is
published under it, without polling.

A Broadcaster is one family of topics (a task's changes, a task's end, a job's changes, a run's
mailbox keys...). `publish(key, event)` hands the event to each subscription of that key; a
subscription keeps what it heard until it is read (`await sub.get()`), or calls a function
instead (an observer). Publishing to a key nobody listens to costs one dict lookup, and hot paths
check `key in b.topics` before they build an event at all.

Events are delivered in the order they are published. What is published is shared by every
subscriber: publish snapshots, never objects that change afterwards.

On a follower server (server/cluster.py) the same broadcasters are fed from the database's
notifications instead of the engine, so a stream reads them the same way on every server.
"""
from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Any, Callable, Hashable, Iterable

log = logging.getLogger(__name__)


class Subscription:
    """One reader's subscription to one or more keys of a Broadcaster.

    `limit`: at most this many events are kept unread; beyond, new ones are dropped and
    `overflowed` is set (the reader has missed some and should say so, or read afresh). With
    limit=1 a subscription is a wake-up signal: events coalesce, `get()` returns when anything
    happened since the last `clear()`.
    Use it as a context manager (or call close()) so that it leaves the broadcaster.
    """

    __slots__ = ("_bus", "keys", "_items", "_waiter", "_limit", "overflowed", "_call")

    def __init__(self, bus: "Broadcaster", limit: int = 0, call: Callable[[Any], None] | None = None):
        self._bus = bus
        self.keys: set = set()
        self._items: deque = deque()
        self._waiter: asyncio.Future | None = None
        self._limit = limit
        self.overflowed = False
        self._call = call

    # ---------------------------------------------------------------- the broadcaster's side
    def _put(self, event: Any) -> None:
        if self._call is not None:
            try:
                self._call(event)
            except Exception:  # one subscriber's bug must not stop the others, nor the publisher
                log.exception("a subscriber of %s failed", self.keys)
            return
        if self._limit and len(self._items) >= self._limit:
            self.overflowed = True
            return
        self._items.append(event)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # ---------------------------------------------------------------- the reader's side
    def __len__(self) -> int:
        return len(self._items)

    def empty(self) -> bool:
        return not self._items

    def get_nowait(self) -> Any:
        """The oldest unread event; IndexError when there is none."""
        return self._items.popleft()

    def drain(self) -> list:
        """Every unread event, oldest first."""
        items = list(self._items)
        self._items.clear()
        return items

    def clear(self) -> None:
        """Forget what was heard so far (before checking the state a signal announces)."""
        self._items.clear()

    async def wait(self, timeout: float | None = None) -> bool:
        """Until an event is unread (not taking it); False when `timeout` seconds passed first."""
        if self._items:
            return True
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            if timeout is None:
                await self._waiter
            else:
                await asyncio.wait_for(self._waiter, max(0.0, timeout))
        except asyncio.TimeoutError:
            return bool(self._items)
        finally:
            self._waiter = None
        return True

    async def get(self, timeout: float | None = None) -> Any:
        """The next event; asyncio.TimeoutError when none came within `timeout` seconds."""
        if not self._items and not await self.wait(timeout):
            raise asyncio.TimeoutError
        return self._items.popleft()

    def listen(self, *keys: Hashable) -> None:
        """Hear these keys too."""
        topics = self._bus.topics
        for key in keys:
            topics.setdefault(key, set()).add(self)
        self.keys.update(keys)

    def ignore(self, *keys: Hashable) -> None:
        """Stop hearing these keys (the rest stay)."""
        topics = self._bus.topics
        for key in keys:
            subs = topics.get(key)
            if subs is not None:
                subs.discard(self)
                if not subs:
                    del topics[key]
        self.keys.difference_update(keys)

    def close(self) -> None:
        self.ignore(*list(self.keys))

    def __enter__(self) -> "Subscription":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Broadcaster:
    """Keys (topics) and who subscribed to each. Runs on one event loop (no locks)."""

    __slots__ = ("topics",)

    def __init__(self):
        # key -> its subscriptions. Read-only outside this module: `key in b.topics` is the
        # cheapest "does anyone listen?" there is, for hot paths.
        self.topics: dict[Hashable, set[Subscription]] = {}

    def subscribe(self, *keys: Hashable, limit: int = 0, call: Callable[[Any], None] | None = None) -> Subscription:
        """A subscription to `keys` (more can be added with listen()); with `call`, each event
        is handed to it at once instead of being kept."""
        sub = Subscription(self, limit, call)
        sub.listen(*keys)
        return sub

    def publish(self, key: Hashable, event: Any = None) -> None:
        subs = self.topics.get(key)
        if subs:
            for sub in tuple(subs):  # a subscriber may leave (or another join) as it hears
                sub._put(event)

    def publish_last(self, key: Hashable, event: Any = None) -> None:
        """Publish the key's last event: its subscriptions hear it and leave the key."""
        subs = self.topics.pop(key, None)
        if subs:
            for sub in subs:
                sub.keys.discard(key)
                sub._put(event)

    def keys(self) -> set:
        """The keys someone listens to now."""
        return set(self.topics)

    def matching(self, pred: Callable[[Hashable], bool]) -> Iterable[Hashable]:
        return [k for k in self.topics if pred(k)]

    def __bool__(self) -> bool:
        return bool(self.topics)

    def __contains__(self, key: Hashable) -> bool:
        return key in self.topics
