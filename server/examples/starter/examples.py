"""Small tasks for the quickstart and the tests."""
from __future__ import annotations

import time


def noop():
    """Does nothing: measures taskhub's own overhead."""
    return None


def echo(ctx, **kwargs):
    """Returns its input."""
    return kwargs


def count(n: int = 3, delay: float = 0.0, ctx=None):
    """Logs n steps, reporting progress; stops early when cancelled."""
    for i in range(n):
        if ctx.wait_cancelled(delay) if delay else ctx.cancelled:
            ctx.log(f"cancelled at step {i}")
            ctx.check_cancelled()
        ctx.log(f"step {i + 1} of {n}")
        ctx.progress(100 * (i + 1) // n)
        ctx.respond("steps", i + 1)
    return n


def fail(message: str = "boom"):
    """Raises, to show failures and retries."""
    raise RuntimeError(message)


def stubborn(seconds: float = 60.0):
    """Ignores cancellation: taskhub has to kill it after the grace period."""
    deadline = time.time() + seconds
    while time.time() < deadline:
        time.sleep(0.05)
    return "finished anyway"


def chatty(lines: int = 1000):
    """Prints many lines fast (for trace throughput)."""
    import sys
    write = sys.stdout.write
    for i in range(lines):
        write(f"line {i}\n")
    return lines
