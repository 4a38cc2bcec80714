"""The node inside the server process: an Executor called directly."""
from __future__ import annotations

import os
import socket

import psutil

from .base import Node
from .executor import Executor, Run


class LocalNode(Node):
    def __init__(self, executor: Executor, slots: int, name: str = "", labels: dict[str, str] | None = None):
        super().__init__(
            name=name or f"local-{socket.gethostname()}",
            address="127.0.0.1",
            slots=slots,
            labels=dict(labels or {}),
            cpu_count=os.cpu_count() or 1,
            memory_mb=psutil.virtual_memory().total // (1 << 20),
        )
        self.executor = executor
        psutil.cpu_percent(None)  # prime: the next call measures since now

    @property
    def may_hold(self) -> bool:
        return bool(self.executor.pool.runtime)  # some callable's runtime is known

    def holds(self, callable_name: str) -> bool:
        return self.executor.pool.spare(callable_name) > 0

    def start(self, run: Run) -> None:
        self.executor.start_run(run)

    def cancel(self, task_id: int, grace: float | None = None) -> None:
        self.executor.cancel(task_id, grace)

    def sample_usage(self) -> None:
        self.record_usage(psutil.cpu_percent(None), psutil.virtual_memory().percent)
