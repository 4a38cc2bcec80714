"""What the engine needs from a node, local or remote."""
from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import ClassVar

from .executor import Run


USAGE_SAMPLES = 150  # 5 minutes of the local node's 2-second samples


@dataclass
class Node:
    """A machine that runs tasks. Subclasses deliver runs to an Executor somewhere."""

    name: str
    address: str
    slots: int
    labels: dict[str, str] = field(default_factory=dict)
    cpu_count: int = 1
    memory_mb: int = 0
    online: bool = True
    draining: bool = False
    cpu_percent: float = 0.0
    memory_percent: float = 0.0
    last_heartbeat_ms: int = field(default_factory=lambda: int(time.time() * 1000))
    # Recent (time ms, cpu %, memory %) samples, oldest first: the dashboard's usage charts.
    usage: deque = field(default_factory=lambda: deque(maxlen=USAGE_SAMPLES))
    # Engine bookkeeping: task id -> slots it holds on this node (0: held beyond them, see `holds`).
    # Changed through take/give_back only, which keep `used` (their sum) with it.
    assigned: dict[int, int] = field(default_factory=dict)
    used: int = 0
    # True for nodes whose runs go on when the server stops (agents): a clean shutdown leaves them be.
    outlives_server: ClassVar[bool] = False

    def record_usage(self, cpu_percent: float, memory_percent: float) -> None:
        self.cpu_percent, self.memory_percent = cpu_percent, memory_percent
        self.usage.append((int(time.time() * 1000), cpu_percent, memory_percent))

    @property
    def free_slots(self) -> int:
        return self.slots - self.used

    def take(self, task_id: int, slots: int) -> None:
        """`task_id` is placed here, holding `slots` of the node's slots."""
        self.used += slots - self.assigned.get(task_id, 0)
        self.assigned[task_id] = slots

    def give_back(self, task_id: int) -> bool:
        """`task_id` left this node; False if it was not placed here."""
        slots = self.assigned.pop(task_id, None)
        if slots is None:
            return False
        self.used -= slots
        return True

    # Beyond its slots, a node may take Python tasks that wait inside it, behind short ones, without
    # running alongside them: the local node's pool does (LocalNode). `may_hold` is a cheap hint that
    # it might now; `holds` answers for a task of one callable (the scheduler says which tasks ask).
    may_hold: ClassVar[bool] = False

    def holds(self, callable_name: str) -> bool:
        return False

    def fits(self, run_slots: int, selector: dict[str, str], memory_mb: int = 0) -> str:
        """'' when a task with these needs could ever run here, else why not."""
        for k, v in selector.items():
            if self.labels.get(k) != v:
                return f"label {k}={v}"
        if run_slots > self.slots:
            return f"{run_slots} slots (node has {self.slots})"
        if memory_mb and self.memory_mb and memory_mb > self.memory_mb:
            return f"{memory_mb} MiB memory (node has {self.memory_mb})"
        return ""

    def start(self, run: Run) -> None:
        raise NotImplementedError

    def cancel(self, task_id: int, grace: float | None = None) -> None:
        raise NotImplementedError
