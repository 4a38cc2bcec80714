"""Hello-world aaas entries: run them with /auto/run?module=starter.helloworld.auto&name=<entry>."""
from __future__ import annotations

from .example_task import ExampleTask


def hook_task(example_task: dict | None = None, ctx=None):
    """Runs an ExampleTask configured by `example_task` (e.g. bind_arg.example_task.range.start=5)."""
    ctx.log(f"hook_task: starting ExampleTask with {example_task or {}}")
    total = ExampleTask(**(example_task or {})).run()
    ctx.log(f"hook_task: done, total {total}")
    return {"total": total}


def sleep_task(seconds: float = 10, ctx=None):
    """Sleeps `seconds`, logging one line per second; stops early when cancelled."""
    seconds = float(seconds)
    elapsed = 0
    while elapsed < seconds:
        if ctx.wait_cancelled(min(1.0, seconds - elapsed)):
            ctx.log(f"sleep_task: cancelled after {elapsed} s")
            ctx.check_cancelled()
        elapsed += 1
        ctx.log(f"sleep_task: {min(elapsed, seconds):g} s of {seconds:g}")
    return seconds
