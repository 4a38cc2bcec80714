"""The exchange of one Delta task's coordinator and clients: keyed byte messages held in memory.

A message waits in its run's box until read; a reader waits for it, or until the run is closed
(its coordinator ended, or a client failed), when it is told why. Messages are opaque to the
server (pickles made and read only in the workers).
"""
from __future__ import annotations

import asyncio

from .. import errors
from ..broadcast import Broadcaster

MAX_PAYLOAD = 64 << 20
CLOSED_MEMORY = 600.0  # seconds a closed run's reason is kept


class DeltaChannel:
    def __init__(self):
        self._boxes: dict[int, dict[str, bytes]] = {}
        self._arrivals = Broadcaster()  # (run, key) -> readers waiting for that message
        self._closed: dict[int, str] = {}

    def send(self, run: int, key: str, payload: bytes) -> None:
        if run in self._closed:
            raise errors.FailedPrecondition(self._closed[run])
        if not key or len(payload) > MAX_PAYLOAD:
            raise errors.InvalidArgument(f"a Delta message needs a key and at most {MAX_PAYLOAD} bytes")
        self._boxes.setdefault(run, {})[key] = payload
        self._arrivals.publish_last((run, key))

    async def receive(self, run: int, key: str, timeout: float) -> bytes | None:
        """The message (taken out of the box), or None when none came within `timeout`."""
        box = self._boxes.get(run, {})
        if key not in box:
            if run in self._closed:
                raise errors.FailedPrecondition(self._closed[run])
            with self._arrivals.subscribe((run, key), limit=1) as arrived:
                if not await arrived.wait(timeout):
                    return None
            if run in self._closed and key not in self._boxes.get(run, {}):
                raise errors.FailedPrecondition(self._closed[run])
        return self._boxes[run].pop(key)

    def close(self, run: int, reason: str) -> None:
        if run not in self._closed:  # remembered a while, for the clients still finishing
            self._closed[run] = reason
            asyncio.get_running_loop().call_later(CLOSED_MEMORY, self._closed.pop, run, None)
        self._boxes.pop(run, None)
        for key in self._arrivals.matching(lambda k: k[0] == run):
            self._arrivals.publish_last(key)
