"""Placement decisions: which waiting task runs next, and on which node.

Plain code, without an event loop or a store (tests/test_scheduler.py tests it alone). The engine
(server/engine.py) keeps the window filled from the store, runs a round when something changed,
and applies each decision the round yields before asking for the next one (a placement takes
slots of its node, which the next decision sees).

Order: higher priority first, then lower id (created first). A task that fits an online node but
not now ends the round: nothing behind it jumps the line. A task no online node could ever take
(labels, size, its group's node, a gate) is parked with the reason, and the line moves on.
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass
from typing import Callable, Iterator, Mapping

from .model import COLOCATE, DEDICATED_WORKER, ON_NODE, ON_NODE_NAMED, SCHEDULABLE, Task, TaskType
from .node.base import Node

Key = tuple[int, int]  # (-priority, id): the queue's order, smallest first


def queue_key(task: Task) -> Key:
    return -task.spec.priority, task.id


class Window:
    """The part of the queue held in memory: a heap of task keys, and where the store's queue goes on.

    The store holds the whole queue (every task waiting to be placed). The window holds its head:
    every waiting task that sorts at or before `cursor` is in the heap (or parked by the engine), so
    taking the heap's head is taking the queue's head, as long as that head does not sort after the
    cursor. The engine reads the next part of the queue from the store (`wanted`) when the heap runs
    below half of `size`, or when its head lies past the cursor (a task put back in line, a retry).
    """

    def __init__(self, size: int):
        self.size = max(2, size)
        self.heap: list[Key] = []
        self.cursor: Key | None = None  # the last task read from the store; None: nothing read yet
        self.complete = False           # the store's queue has nothing past the cursor that is not here

    def __len__(self) -> int:
        return len(self.heap)

    def push(self, task: Task) -> None:
        """A task in memory (back) in line: restored, retried, unparked, recovered."""
        heapq.heappush(self.heap, queue_key(task))

    def admit(self, task: Task) -> bool:
        """A task just created (committed): kept in the heap when it belongs in the window; False:
        it waits in the store only, where a later read finds it."""
        key = queue_key(task)
        if self.cursor is not None and key < self.cursor:
            heapq.heappush(self.heap, key)  # ahead of the window's end: in line now
            return True
        if self.complete and len(self.heap) < self.size:
            self.cursor = key if self.cursor is None else max(self.cursor, key)
            heapq.heappush(self.heap, key)  # the whole queue is here and there is room: it stays whole
            return True
        self.complete = False  # the store now holds a task past the cursor
        return False

    def head(self) -> int | None:
        """The id of the next task in line, or None: the heap is empty, or its head lies past the
        cursor while the store may hold tasks before it (read more first)."""
        if not self.heap:
            return None
        key = self.heap[0]
        if not self.complete and (self.cursor is None or key > self.cursor):
            return None
        return key[1]

    def pop(self) -> None:
        heapq.heappop(self.heap)

    def wanted(self) -> int:
        """How many tasks to read from the store now (0: none)."""
        if self.complete:
            return 0
        if len(self.heap) < self.size // 2 or self.cursor is None or self.heap[0] > self.cursor:
            return self.size - len(self.heap) if len(self.heap) < self.size else self.size // 2
        return 0

    def read(self, last: Key | None, count: int, asked: int) -> None:
        """The store answered `count` of the `asked` tasks after the cursor, the last of them `last`."""
        if last is not None:
            self.cursor = last
        self.complete = count < asked

    def rewind(self) -> None:
        """Tasks before the cursor left memory (parked ones beyond the bound): read from the top again."""
        self.cursor = None
        self.complete = False

    def overflow(self) -> list[int]:
        """Past twice its size (creates that sort early): the ids beyond `size`, dropped from the heap;
        the cursor moves back to the last one kept. The engine drops those tasks from memory."""
        if len(self.heap) <= 2 * self.size:
            return []
        self.heap.sort()
        dropped = [task_id for _, task_id in self.heap[self.size:]]
        del self.heap[self.size:]  # a sorted list is a heap
        self.cursor = self.heap[-1]
        self.complete = False
        return dropped


@dataclass
class Decision:
    """Place `task` on `node`, or (node None) park it, saying `reason`. `held`: placed beyond the
    node's slots, to wait inside it behind short tasks (Node.holds); it takes none of them."""
    task: Task
    node: Node | None
    reason: str = ""
    held: bool = False


class Scheduler:
    """The window, the gates, the task groups' whereabouts, and the rounds that decide."""

    def __init__(self, window_size: int):
        self.window = Window(window_size)
        # Gates keep a task PENDING while one answers a reason ('' lets it through): a layer that waits
        # on more than one node's labels (Delta's data holders).
        self.gates: list[Callable[[Task], str]] = []
        self._groups: dict[str, set[int]] = {}  # COLOCATE value -> its tasks in memory

    # -- task groups
    def joined(self, task: Task) -> None:
        """The task is in memory now (created, read from the store, recovered)."""
        hints = task.spec.hints
        key = hints.get(COLOCATE) if hints else None
        if key:
            self._groups.setdefault(key, set()).add(task.id)

    def left(self, task: Task) -> None:
        """The task ended, or left memory."""
        hints = task.spec.hints
        key = hints.get(COLOCATE) if hints else None
        group = self._groups.get(key) if key else None
        if group is not None:
            group.discard(task.id)
            if not group:
                del self._groups[key]

    def group_node(self, task: Task, tasks: Mapping[int, Task]) -> str:
        """The node a placed sibling of this task (same COLOCATE value) is on, or ''. Placed tasks are
        always in memory, so the siblings in memory are enough."""
        hints = task.spec.hints
        key = hints.get(COLOCATE) if hints else None
        for sibling_id in self._groups.get(key, ()) if key else ():
            sibling = tasks.get(sibling_id)
            if sibling is not None and sibling.status in ON_NODE and sibling.node:
                return sibling.node
        return ""

    # -- deciding
    def decide(self, task: Task, nodes: list[Node], tasks: Mapping[int, Task]) -> Decision | None:
        """Where `task` goes among the online `nodes`; None: it fits one, but none has room now."""
        gated = next((why for why in (gate(task) for gate in self.gates) if why), "")
        if gated:
            return Decision(task, None, gated)
        a = task.spec.hints
        grouped = self.group_node(task, tasks) if a else ""
        pinned = grouped or (a.get(ON_NODE_NAMED, "") if a else "")
        need = task.spec.resources.slots
        reasons, candidates = [], []
        for n in nodes:
            if pinned and n.name != pinned:
                why = f"this task's group, which runs on {pinned}" if grouped else f"the name {pinned}"
            else:
                why = n.fits(need, task.spec.node_selector, task.spec.resources.memory_mb)
            if why:
                reasons.append(f"{n.name} lacks {why}")
            else:
                candidates.append(n)
        if not candidates:
            return Decision(task, None, "no online node fits: " + ("; ".join(reasons) or "no node is online"))
        free = [n for n in candidates if n.free_slots >= need]
        if free:
            return Decision(task, max(free, key=lambda n: n.free_slots))
        if need == 1 and task.spec.type == TaskType.PYTHON and not (a and a.get(DEDICATED_WORKER) == "1"):
            holder = next((n for n in candidates if n.may_hold and n.holds(task.spec.callable)), None)
            if holder is not None:
                return Decision(task, holder, held=True)
        return None

    def round(self, tasks: Mapping[int, Task], nodes: list[Node]) -> Iterator[Decision]:
        """Decisions in queue order while some node has room. The caller applies each one (placing
        takes the node's slots; parking moves the task out of line) before the next."""
        window = self.window
        while any(n.free_slots > 0 or n.may_hold for n in nodes):
            task_id = window.head()
            if task_id is None:
                return  # the window is empty, or must be read further first
            task = tasks.get(task_id)
            if task is None or task.status not in SCHEDULABLE:
                window.pop()  # cancelled, deleted or dropped from memory while it waited
                continue
            decision = self.decide(task, nodes, tasks)
            if decision is None:
                return  # it fits somewhere, just not now: it keeps its place, the round ends
            window.pop()
            yield decision
