"""server.background.spawn keeps each background task until it ends and logs its failure."""
from __future__ import annotations

import asyncio
import gc
import logging

from server import background


def test_spawned_tasks_are_kept_and_their_failures_logged(caplog):
    async def fails(release: asyncio.Event):
        await release.wait()
        raise RuntimeError("lost before spawn()")

    async def main():
        release = asyncio.Event()
        before = background.running()
        background.spawn(fails(release), "the failing one")
        gc.collect()                      # nothing else holds the task: spawn() must
        assert background.running() == before + 1
        release.set()
        while background.running() > before:
            await asyncio.sleep(0)
    with caplog.at_level(logging.ERROR, logger="taskhub.background"):
        asyncio.run(main())
    failure = [r for r in caplog.records if "the failing one" in r.getMessage()]
    assert failure and "lost before spawn()" in str(failure[0].exc_info[1])
