"""Retention: finished records older than `--retain` are purged, a little at a time.

The purge runs every step registered in store.PURGE_STEPS (tasks with their logs, create
request ids; other parts of taskhub add theirs at import time), each in batches of
BATCH records through the single writer, with a pause between batches so it never
competes with the hot path for long. Reads that pick a batch run on a thread.
"""
from __future__ import annotations

import asyncio
import logging

from .model import now_ms
from .store import PURGE_STEPS, Store

log = logging.getLogger(__name__)

BATCH = 500
PAUSE = 0.05      # seconds between batches
INTERVAL = 30.0   # seconds between purge rounds
DEFAULT_RETAIN = "7d"

PURGE_STEPS.setdefault("tasks", lambda store, cutoff, limit: store.purge_finished_tasks(cutoff, limit))


class Retention:
    def __init__(self, store: Store, retain_seconds: float, request_window_seconds: float):
        self.store = store
        self.retain_seconds = retain_seconds
        self.request_window_seconds = request_window_seconds
        self.purged: dict[str, int] = {}
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _loop(self) -> None:
        while True:
            try:
                await self.purge_once()
            except Exception:  # a failed round is retried next time; nothing is half-deleted
                log.warning("retention purge failed", exc_info=True)
            # A short --retain (tests, small disks) is honoured within a quarter of itself.
            await asyncio.sleep(max(0.5, min(INTERVAL, self.retain_seconds / 4 or INTERVAL)))

    def _cutoff(self, name: str) -> int | None:
        seconds = self.request_window_seconds if name == "create_requests" else self.retain_seconds
        return None if seconds <= 0 else now_ms() - int(seconds * 1000)

    async def purge_once(self) -> int:
        """One round over every step until each has nothing old left; returns records deleted."""
        loop = asyncio.get_running_loop()
        total = 0
        steps = {"create_requests": lambda s, c, n: s.purge_create_requests(c, n), **PURGE_STEPS}
        for name, step in steps.items():
            cutoff = self._cutoff(name)
            if cutoff is None:
                continue
            while True:
                statements = await loop.run_in_executor(None, step, self.store, cutoff, BATCH)
                if not statements:
                    break
                await self.store.writer.execute(statements)
                n = len(statements[-1][1])
                self.purged[name] = self.purged.get(name, 0) + n
                total += n
                await asyncio.sleep(PAUSE)
        if total:
            log.info("retention: purged %d records (%s)", total, self.purged)
        return total
