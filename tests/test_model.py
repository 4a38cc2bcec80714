"""The status machine: exactly the transitions of the table are allowed; a spec as stored."""
import itertools
import json
from dataclasses import fields

import pytest

from server.model import (COLOCATE, DEDICATED_WORKER, HINTS, OBSERVER, ON_DISCONNECT, ON_NODE_NAMED, TERMINAL,
                          TRANSITIONS, IllegalTransition, Resources, Status, Task, TaskSpec, TaskType, check_transition)
from taskhub.v1 import task_pb2 as pb


def test_twelve_statuses_match_the_proto():
    assert len(Status) == 12
    for s in Status:
        assert pb.TaskStatus.Value(f"TASK_STATUS_{s.name}") == s.value


def test_every_status_has_a_row():
    assert set(TRANSITIONS) == set(Status)


@pytest.mark.parametrize("old,new", list(itertools.product(Status, Status)))
def test_transition_allowed_only_if_in_table(old, new):
    task = Task(1, TaskSpec(type=TaskType.COMMAND, argv=["true"]))
    task.status = old
    if new in TRANSITIONS[old]:
        task.move(new)
        assert task.status == new
    else:
        with pytest.raises(IllegalTransition):
            task.move(new)
        assert task.status == old  # refused, not applied


def test_terminal_statuses_are_final_and_reachable():
    for s in TERMINAL:
        assert TRANSITIONS[s] == frozenset()
    reachable = {Status.NEW}
    frontier = [Status.NEW]
    while frontier:
        for nxt in TRANSITIONS[frontier.pop()]:
            if nxt not in reachable:
                reachable.add(nxt)
                frontier.append(nxt)
    assert TERMINAL <= reachable


def test_done_time_set_on_terminal():
    task = Task(1, TaskSpec(type=TaskType.COMMAND, argv=["true"]))
    for s in (Status.SCHEDULING, Status.SCHEDULED, Status.QUEUED, Status.RUNNING, Status.SUCCESS):
        check_transition(task.status, s)
        task.move(s)
    assert task.done_time_ms >= task.create_time_ms


def test_a_spec_is_stored_without_its_defaults_and_reads_back_whole():
    bare = TaskSpec(type=TaskType.PYTHON, callable="m:f")
    assert json.loads(bare.to_json()) == {"type": 2, "namespace": "default", "callable": "m:f"}
    assert TaskSpec.from_json(bare.to_json()) == bare
    full = TaskSpec(type=TaskType.COMMAND, namespace="ns", name="n", argv=["sh", "-c", "true"], env={"A": "1"},
                    cwd="/tmp", priority=-3, timeout_seconds=1.5, max_retries=2, retry_backoff_seconds=0.25,
                    node_selector={"gpu": "1"}, resources=Resources(slots=2, cpu=0.5, memory_mb=64),
                    annotations={"k": "v"})
    assert TaskSpec.from_json(full.to_json()) == full
    assert set(json.loads(full.to_json())) == {f.name for f in fields(TaskSpec)} - {"callable", "input_json"}
    # One non-default part of resources writes all of it.
    assert json.loads(TaskSpec(type=TaskType.PYTHON, resources=Resources(memory_mb=8)).to_json())["resources"] == {
        "slots": 1, "cpu": 0.0, "memory_mb": 8}


def test_hints_hold_only_the_annotations_the_server_acts_on():
    # The creator's stamp (with --auth every spec has one) and a user's own annotations are no hints:
    # the scheduler and the engine skip such a spec with one test, as one without annotations.
    stamped = TaskSpec(type=TaskType.PYTHON, callable="m:f", annotations={"taskhub.token": "ci (ab12)", "team": "x"})
    assert stamped.hints is None and TaskSpec(type=TaskType.PYTHON).hints is None
    acted_on = {OBSERVER: "flow", DEDICATED_WORKER: "1", COLOCATE: "g/1", ON_NODE_NAMED: "n1", ON_DISCONNECT: "keep"}
    full = TaskSpec(type=TaskType.COMMAND, argv=["true"], annotations={**acted_on, "taskhub.token": "ci (ab12)"})
    assert full.hints == acted_on and set(HINTS) == set(acted_on)
    # Derived, never stored: a spec read back has the same hints, and its JSON holds only its annotations.
    assert "hints" not in json.loads(full.to_json())
    assert TaskSpec.from_json(full.to_json()).hints == acted_on
    assert TaskSpec.from_json(stamped.to_json()).hints is None
