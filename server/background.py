"""spawn(): start a coroutine in the background, keep it until it ends, log its failure.

A task made with `create_task`/`ensure_future` and dropped can be garbage-collected while it
runs, and its exception is only reported, if ever, when it is collected. Every fire-and-forget
coroutine in the server goes through spawn() instead.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Coroutine

log = logging.getLogger("taskhub.background")
_running: set[asyncio.Task] = set()


def spawn(coro: Coroutine, name: str | None = None) -> asyncio.Task:
    task = asyncio.get_running_loop().create_task(coro, name=name)
    _running.add(task)
    task.add_done_callback(_ended)
    return task


def running() -> int:
    """How many spawned tasks have not ended (for tests and shutdown checks)."""
    return len(_running)


def _ended(task: asyncio.Task) -> None:
    _running.discard(task)
    if not task.cancelled() and task.exception() is not None:
        log.error("background task %s failed", task.get_name(), exc_info=task.exception())
