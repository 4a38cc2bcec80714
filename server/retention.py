"""Retention: finished records older than `--retain` are purged, a little at a time.

A purge round runs every step (tasks with their logs, create request ids, and those the app adds,
e.g. FATE jobs), each in batches of BATCH records through the single writer, with a pause between
batches so it never competes with the hot path for long. Reads that pick a batch run on a thread.
"""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Callable

from .model import now_ms
from .storage import Batch, Store

log = logging.getLogger(__name__)

BATCH = 500
PAUSE = 0.05      # seconds between batches
INTERVAL = 30.0   # seconds between purge rounds
DEFAULT_RETAIN = "7d"



@dataclass(frozen=True)
class PurgeStep:
    name: str
    find: Callable[[int, int], list]          # (cutoff_ms, limit) -> keys of old records, at most limit
    delete: Callable[[Batch, list], None]     # adds their deletion to a batch
    window: bool = False                      # cut off by the request window instead of --retain


def core_steps(store: Store) -> list[PurgeStep]:
    return [PurgeStep("create_requests", store.old_create_request_keys, Batch.delete_create_requests, window=True),
            PurgeStep("tasks", store.finished_task_ids, Batch.delete_tasks),
            PurgeStep("auth_audit", store.old_audit_seqs, Batch.delete_audit)]


class Retention:
    def __init__(self, store: Store, retain_seconds: float, request_window_seconds: float):
        self.store = store
        self.steps = core_steps(store)
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

    def _cutoff(self, step: PurgeStep) -> int | None:
        seconds = self.request_window_seconds if step.window else self.retain_seconds
        return None if seconds <= 0 else now_ms() - int(seconds * 1000)

    async def purge_once(self) -> int:
        """One round over every step until each has nothing old left; returns records deleted."""
        loop = asyncio.get_running_loop()
        total = 0
        for step in self.steps:
            cutoff = self._cutoff(step)
            if cutoff is None:
                continue
            while True:
                keys = await loop.run_in_executor(None, step.find, cutoff, BATCH)
                if not keys:
                    break
                async with self.store.batch() as b:
                    step.delete(b, keys)
                n = len(keys)
                self.purged[step.name] = self.purged.get(step.name, 0) + n
                total += n
                await asyncio.sleep(PAUSE)
        if total:
            log.info("retention: purged %d records (%s)", total, self.purged)
        return total
