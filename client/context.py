"""What a running Python task sees of taskhub.

A task function receives this as its `ctx` argument when it declares one, and can
always reach it with `current()`:

    def count(n, ctx):
        for i in range(n):
            if ctx.cancelled:
                return "stopped"
            ctx.progress(100 * i // n)
            ctx.log(f"step {i}")
        ctx.respond("done", True)
        return n
"""
from __future__ import annotations

import json
import threading
from typing import Any, Callable


class Cancelled(Exception):
    """Raised by `ctx.check_cancelled()`; a task may let it propagate to end as CANCELLED."""


class TaskContext:
    def __init__(self, task_id: int, uid: str, namespace: str, name: str, emit: Callable[[tuple], None]):
        self.task_id = task_id
        self.uid = uid
        self.namespace = namespace
        self.name = name
        self._emit = emit
        self._cancel = threading.Event()
        self._response: dict[str, Any] = {}

    # -- telling taskhub ---------------------------------------------------
    def log(self, message: str) -> None:
        """One line (or several, split on newlines) to the task's log, stdout stream."""
        print(message, flush=False)

    def progress(self, percent: int) -> None:
        """0-100; shown as task_progress."""
        self._emit(("progress", self.task_id, max(0, min(100, int(percent)))))

    def set_result(self, result: Any) -> None:
        """The task's result before it returns (a return value replaces it)."""
        self._emit(("result", self.task_id, result if isinstance(result, str) else _json(result)))

    def respond(self, key: str, value: Any) -> None:
        """Set one key of the task's response object (aaas `task_resp`)."""
        self._response[key] = value
        self._emit(("response", self.task_id, _json(self._response)))

    def response(self, values: dict[str, Any] | None = None) -> dict[str, Any]:
        """Merge `values` into the response object and return it."""
        if values:
            self._response.update(values)
            self._emit(("response", self.task_id, _json(self._response)))
        return self._response

    # -- hearing from taskhub ---------------------------------------------
    @property
    def cancelled(self) -> bool:
        """True once someone asked to cancel this task. Stop soon; you will be killed after the grace period."""
        return self._cancel.is_set()

    def check_cancelled(self) -> None:
        if self._cancel.is_set():
            raise Cancelled(f"task {self.task_id} was cancelled")

    def wait_cancelled(self, timeout: float | None = None) -> bool:
        """Sleep up to `timeout` seconds, waking early on cancellation; returns ctx.cancelled."""
        return self._cancel.wait(timeout)


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), default=str)


_local = threading.local()


def current() -> TaskContext:
    """The context of the task running in this worker."""
    ctx = getattr(_local, "ctx", None)
    if ctx is None:
        raise RuntimeError("not inside a taskhub task")
    return ctx


def set_current(ctx: TaskContext | None) -> None:
    """For the runner that executes tasks (a worker): make `ctx` what `current()` returns in this
    thread, or clear it with None. Task code never calls this."""
    _local.ctx = ctx
