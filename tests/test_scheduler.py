"""The scheduler alone (server/scheduler.py): no event loop, no store, no server.

Tasks and nodes are the real model objects; each test applies the decisions a round yields the way
the engine does (a placement takes the node's slots, a parked task leaves the line).
"""
from __future__ import annotations

from server.model import Resources, Status, Task, TaskSpec, TaskType
from server.node.base import Node
from server.scheduler import COLOCATE, DEDICATED_WORKER, ON_NODE_NAMED, Scheduler, Window


def task(task_id: int, priority: int = 0, slots: int = 1, selector: dict | None = None, **annotations) -> Task:
    return Task(task_id, TaskSpec(type=TaskType.COMMAND, argv=["true"], priority=priority,
                                  resources=Resources(slots=slots), node_selector=selector or {},
                                  annotations=dict(annotations)))


def python_task(task_id: int, target: str, slots: int = 1, **annotations) -> Task:
    return Task(task_id, TaskSpec(type=TaskType.PYTHON, callable=target, resources=Resources(slots=slots),
                                  annotations=dict(annotations)))


def empty(node: Node) -> None:
    for task_id in list(node.assigned):
        node.give_back(task_id)


def scheduler_with(tasks: list[Task], size: int = 100) -> Scheduler:
    s = Scheduler(size)
    s.window.read(None, 0, 1)  # the store holds nothing more: the window is the whole queue
    for t in tasks:
        assert s.window.admit(t)
        s.joined(t)
    return s


def run_round(s: Scheduler, tasks: list[Task], nodes: list[Node]) -> list[tuple[int, str]]:
    """(task id, node name or 'parked: reason') in the order decided, applied as the engine does."""
    by_id = {t.id: t for t in tasks}
    out = []
    for d in s.round(by_id, nodes):
        if d.node is not None:
            d.task.move(Status.SCHEDULING), d.task.move(Status.SCHEDULED), d.task.move(Status.QUEUED)
            d.task.node = d.node.name
            d.node.take(d.task.id, 0 if d.held else d.task.spec.resources.slots)
            out.append((d.task.id, d.node.name + (" held" if d.held else "")))
        else:
            d.task.move(Status.SCHEDULING), d.task.move(Status.PENDING)
            out.append((d.task.id, "parked: " + d.reason))
    return out


def test_higher_priority_first_then_lower_id_and_nothing_jumps_the_line():
    tasks = [task(1), task(2, priority=5), task(3), task(4, priority=5, slots=3), task(5)]
    s = scheduler_with(tasks)
    a = Node("a", "", slots=3)
    assert run_round(s, tasks, [a]) == [(2, "a")]  # 4 fits a, but not now: 1, 3 and 5 wait behind it
    empty(a)
    assert run_round(s, tasks, [a]) == [(4, "a")]
    empty(a)
    assert run_round(s, tasks, [a]) == [(1, "a"), (3, "a"), (5, "a")]


def test_a_task_no_node_could_take_is_parked_with_the_reason_and_the_line_moves_on():
    tasks = [task(1, selector={"gpu": "yes"}), task(2, slots=9), task(3)]
    s = scheduler_with(tasks)
    nodes = [Node("a", "", slots=2, labels={"zone": "x"})]
    assert run_round(s, tasks, nodes) == [
        (1, "parked: no online node fits: a lacks label gpu=yes"),
        (2, "parked: no online node fits: a lacks 9 slots (node has 2)"),
        (3, "a")]


def test_a_group_runs_on_its_first_placed_members_node_and_a_named_node_is_kept():
    tasks = [task(1, **{COLOCATE: "g"}), task(2, **{COLOCATE: "g"}), task(3, **{ON_NODE_NAMED: "b"}),
             task(4, **{COLOCATE: "g"})]
    s = scheduler_with(tasks)
    a, b = Node("a", "", slots=1), Node("b", "", slots=4)
    # 1 goes to b (most free slots); 2 follows it there; 3 is pinned to b; 4 follows its group to b, now full.
    assert run_round(s, tasks, [a, b]) == [(1, "b"), (2, "b"), (3, "b"), (4, "b")]
    assert a.assigned == {}
    lone = task(5, **{COLOCATE: "h", ON_NODE_NAMED: "c"})
    s.window.admit(lone)
    assert run_round(s, [lone], [a, b]) == [(5, "parked: no online node fits: a lacks the name c; b lacks the name c")]


class PoolNode(Node):
    """A node whose Python pool would hold up to `room` jobs of the callables in `short` beyond its
    slots, as the local node's does (LocalNode.holds, PythonPool.spare)."""
    may_hold = True

    def __init__(self, name: str, slots: int, short: set[str], room: int):
        super().__init__(name, "", slots=slots)
        self.short, self.room = short, room

    def holds(self, callable_name: str) -> bool:
        held = sum(1 for slots in self.assigned.values() if slots == 0)
        return callable_name in self.short and held < self.room


def test_short_python_tasks_wait_inside_a_full_node_that_holds_them_and_take_no_slot():
    tasks = [python_task(1, "m:quick"), python_task(2, "m:quick"), python_task(3, "m:quick"),
             python_task(4, "m:quick", **{DEDICATED_WORKER: "1"}), python_task(5, "m:quick")]
    s = scheduler_with(tasks)
    a, b = PoolNode("a", 1, {"m:quick"}, room=2), Node("b", "", slots=1)
    # Free slots first (b's too); then a holds 3 beyond its slot; a dedicated task is never held, and
    # nothing jumps the line behind it.
    assert run_round(s, tasks, [a, b]) == [(1, "a"), (2, "b"), (3, "a held")]
    assert a.free_slots == 0 and a.assigned == {1: 1, 3: 0}
    a.give_back(1)
    assert run_round(s, tasks, [a, b]) == [(4, "a"), (5, "a held")]
    assert run_round(s, tasks, [a, b]) == []
    more = [python_task(6, "m:slow"), python_task(7, "m:quick", slots=2), python_task(8, "m:quick")]
    for t in more:
        s.window.admit(t)
    c = PoolNode("c", 2, {"m:quick"}, room=4)
    c.take(9, 2)
    assert run_round(s, more, [c]) == [], "a callable not seen short is not held, and 7 and 8 wait behind it"
    s.window.pop()
    assert run_round(s, more, [c]) == [], "nor a task that needs more than one slot"
    c.give_back(9)
    assert run_round(s, more, [c]) == [(7, "c"), (8, "c held")]


def test_a_gate_parks_a_task_until_it_lets_it_through():
    tasks = [task(1), task(2)]
    s = scheduler_with(tasks)
    s.gates.append(lambda t: "waiting for data holders" if t.id == 1 else "")
    assert run_round(s, tasks, [Node("a", "", slots=4)]) == [(1, "parked: waiting for data holders"), (2, "a")]


def test_a_task_that_left_the_line_is_skipped():
    tasks = [task(1), task(2)]
    s = scheduler_with(tasks)
    tasks[0].move(Status.CANCELLED)
    assert run_round(s, tasks, [Node("a", "", slots=4)]) == [(2, "a")]
    assert run_round(s, tasks, [Node("b", "", slots=4)]) == []


def test_the_window_reads_the_store_in_parts_and_never_runs_past_what_it_read():
    w = Window(4)
    assert w.wanted() == 4 and w.head() is None  # nothing read yet
    first = [task(i) for i in (1, 2, 3, 4)]
    for t in first:
        w.push(t)
    w.read((0, 4), 4, 4)  # the store answered all 4 asked: there may be more
    assert w.wanted() == 0 and w.head() == 1
    assert not w.admit(task(9))  # sorts after the cursor: it waits in the store
    assert w.admit(task(10, priority=1))  # sorts before the cursor: in line now, first
    assert w.head() == 10
    for _ in range(4):
        w.pop()
    assert len(w) == 1 and w.wanted() == 3  # below half: read the next part
    retried = task(7)
    w.pop(), w.push(retried)  # back in line, but past the cursor (0, 4): the store may hold 5 and 6 before it
    assert w.head() is None and w.wanted() == 3
    w.read((0, 9), 3, 3)
    assert w.head() == 7
    w.read(None, 0, 3)  # the store had nothing more: the window is the whole queue
    assert w.wanted() == 0 and w.admit(task(11)) and w.cursor == (0, 11)


def test_the_window_stays_bounded_when_early_creates_pile_up():
    w = Window(3)
    w.read(None, 0, 3)
    for i in range(1, 4):
        assert w.admit(task(i))
    assert not w.admit(task(4))  # full: the store keeps it, and the window no longer holds the whole queue
    assert not w.complete
    for i in range(5, 8):
        assert w.admit(task(i, priority=1))  # each sorts before the cursor: in line
    assert w.overflow() == []  # 6: at most twice its size
    assert w.admit(task(8, priority=1))
    assert sorted(w.overflow()) == [1, 2, 3, 8]  # back to its size: the first 3 in line are kept
    assert w.cursor == (-1, 7) and not w.complete
    assert not w.admit(task(9, priority=1))  # past the new cursor: the store keeps it
    assert [w.head()] == [5]
