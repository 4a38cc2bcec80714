"""ExampleTask: a small task whose check_state steps record into the task's response object."""
from __future__ import annotations

import time

from client.context import current


class ExampleTask:
    """Counts over `range` (start, stop; strings are fine, as aaas passes query values).

    check_state() runs before and after the work; each call records
    {"from": "ExampleTask.check_state", "step": n, "time": <float>} under response["hi"][str(n)].
    """

    def __init__(self, range: dict | None = None, **extra):
        bounds = range or {}
        self.start = int(bounds.get("start", 0))
        self.stop = int(bounds.get("stop", self.start + 3))
        self.extra = extra
        self.step = 0

    def check_state(self) -> None:
        self.step += 1
        ctx = current()
        hi = ctx.response().setdefault("hi", {})
        hi[str(self.step)] = {"from": "ExampleTask.check_state", "step": self.step, "time": time.time()}
        ctx.respond("hi", hi)

    def run(self) -> int:
        ctx = current()
        self.check_state()
        total = 0
        for i in range(self.start, self.stop):
            ctx.check_cancelled()
            ctx.log(f"ExampleTask: counting {i}")
            total += i
        self.check_state()
        return total
