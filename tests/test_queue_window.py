"""The queue lives in the database: a server holds only a window of it (--queue-window) in memory.

A real server restarted on a queue much larger than its window must run every task once, in
scheduling order (priority, then id) across the window's refills, and answer for the tasks it
does not hold: get, list, cancel, delete, wait.
"""
from __future__ import annotations

import threading

import grpc
import pytest

from client import make_spec, status_name

from conftest import http, wait_for


def _in_memory(server) -> float:
    text = http("GET", server.http_url + "/metrics").body.decode()
    return float(next(ln.split()[1] for ln in text.splitlines() if ln.startswith("taskhub_tasks_in_memory ")))


def _ended(c, ids: list[int], timeout: float = 120) -> list:
    """WaitTasks on ids: each task once it ended; fails (instead of hanging) if some never end."""
    got: list = []
    waiter = threading.Thread(target=lambda: got.extend(c.wait_tasks(ids)), daemon=True)
    waiter.start()
    waiter.join(timeout)
    assert not waiter.is_alive(), f"only {len(got)} of {len(ids)} tasks ended within {timeout} s"
    return got


def _order_spec(tmp_path, name: str, priority: int = 0):
    return make_spec(argv=["sh", "-c", f"echo {name} >> {tmp_path / 'order'}"], name=name, priority=priority)


def test_a_queue_larger_than_the_window_runs_whole_once_and_in_order(server_factory, tmp_path, db_url):
    first = server_factory("--no-local-node", db=db_url)
    c = first.client()
    blocker = c.create_task(argv=["sh", "-c", f"while [ ! -e {tmp_path / 'go'} ]; do sleep 0.05; done;"
                                              f" echo blocker >> {tmp_path / 'order'}"], priority=10)
    queued = c.create_tasks([_order_spec(tmp_path, f"q{i}", priority=i % 3) for i in range(30)])
    ended_before = c.create_task(argv=["true"])
    assert c.cancel_task(ended_before.id, "ends in the first server's life").cancelled
    assert first.terminate() == 0

    # One slot, a window of 4: the blocker holds the slot while the rest waits, mostly in the store.
    second = server_factory("--slots", "1", "--queue-window", "4", db=db_url)
    c = second.client()
    wait_for(lambda: status_name(c.get_task(blocker.id).status) == "RUNNING", what="the blocker running")
    assert _in_memory(second) <= 1 + 4  # the blocker and the window, not the queue
    last, dropped = queued[27], queued[24]  # priority 0, late in line: outside the window
    assert status_name(c.get_task(last.id).status) == "NEW"
    # WaitTasks on tasks the server does not hold reads the store: an end comes at once, and the
    # namespace is checked there as in memory.
    assert [status_name(t.status) for t in c.wait_tasks([ended_before.id])] == ["CANCELLED"]
    for elsewhere in (ended_before.id, last.id):
        with pytest.raises(grpc.RpcError) as e:
            list(c.wait_tasks([elsewhere], namespace="team-b"))
        assert e.value.code() == grpc.StatusCode.NOT_FOUND
    assert len(c.list_tasks(statuses=["NEW"], limit=100).tasks) == 30
    assert c.cancel_task(last.id, "not needed").cancelled
    assert status_name(c.get_task(last.id).status) == "CANCELLED"
    with pytest.raises(grpc.RpcError) as e:
        c.delete_task(dropped.id)
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    c.delete_task(dropped.id, force=True)
    with pytest.raises(grpc.RpcError) as e:
        c.get_task(dropped.id)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    urgent = c.create_task(_order_spec(tmp_path, "urgent", priority=5))  # belongs ahead of the window's end
    late = c.create_task(_order_spec(tmp_path, "late"))  # belongs past it: waits in the store
    waited = {}
    waiter = threading.Thread(target=lambda: waited.update(late=c.wait(late.id)))
    waiter.start()  # WaitTask on a task the server does not hold
    (tmp_path / "go").touch()
    ids = [blocker.id, urgent.id, late.id] + [t.id for t in queued if t.id not in (last.id, dropped.id)]
    ended = {t.id: status_name(t.status) for t in _ended(c, ids)}
    waiter.join(60)
    assert set(ended.values()) == {"SUCCESS"} and len(ended) == len(ids)
    assert status_name(waited["late"].status) == "SUCCESS"
    rest = sorted((t for t in queued if t.id not in (last.id, dropped.id)), key=lambda t: (-t.spec.priority, t.id))
    expected = ["blocker", "urgent"] + [t.spec.name for t in rest] + ["late"]
    assert (tmp_path / "order").read_text().split() == expected  # each once, in order across the refills


def test_tasks_outside_the_window_are_watched_traced_and_cancelled_in_a_batch(server_factory, tmp_path):
    s = server_factory("--no-local-node", "--queue-window", "2")
    c = s.client()
    tasks = c.create_tasks([make_spec(argv=["true"], name=f"t{i}") for i in range(8)])
    outside = tasks[-1]
    assert [ln.text for ln in c.trace(outside.id, follow=False)] == []
    seen = []
    watcher = threading.Thread(target=lambda: seen.extend(status_name(t.status) for t in c.watch(outside.id)))
    watcher.start()
    wait_for(lambda: seen, what="the watch's first answer")
    for t in tasks:
        assert c.cancel_task(t.id).cancelled
    watcher.join(30)
    assert seen == ["NEW", "CANCELLED"]
    assert {status_name(t.status) for t in _ended(c, [t.id for t in tasks])} == {"CANCELLED"}
    lines = [ln.text for ln in c.trace(outside.id, follow=True)]
    assert lines and "cancel requested" in lines[0]


def test_creates_racing_the_window_refills_all_run_once(server_factory, tmp_path):
    """Two clients create while a window of 3 drains and refills: every task runs, none twice."""
    s = server_factory("--slots", "2", "--queue-window", "3")
    created: list = []

    def client(k: int) -> None:
        c = s.client()
        for b in range(6):
            created.extend(c.create_tasks([_order_spec(tmp_path, f"c{k}-{b}-{i}", priority=(k + b + i) % 3)
                                           for i in range(5)]))

    threads = [threading.Thread(target=client, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    ended = {t.id: status_name(t.status) for t in _ended(s.client(), [t.id for t in created])}
    assert len(created) == 60 and set(ended.values()) == {"SUCCESS"} and len(ended) == 60
    ran = (tmp_path / "order").read_text().split()
    assert sorted(ran) == sorted(t.spec.name for t in created)  # each once


def test_parked_tasks_beyond_the_window_come_back_when_a_node_that_fits_joins(server_factory, tmp_path):
    """Parked tasks beyond a window's worth leave memory; a node that fits brings all of them back."""
    from node_agents import agents_fixture_factory
    s = server_factory("--queue-window", "2")
    c = s.client()
    gpu = c.create_tasks([make_spec(argv=["true"], name=f"gpu{i}", node_selector={"gpu": "1"}) for i in range(6)])
    wait_for(lambda: all(status_name(c.get_task(t.id).status) == "PENDING" for t in gpu), what="all parked")
    assert "label gpu=1" in c.get_task(gpu[-1].id).queue_reason
    plain = c.create_task(argv=["true"])  # the line moves on past them
    assert status_name(c.wait(plain.id).status) == "SUCCESS"
    make, close_all = agents_fixture_factory(tmp_path)
    try:
        make(s.grpc_target, "gpu-node", "--label", "gpu=1")
        ended = _ended(c, [t.id for t in gpu])
        assert {status_name(t.status) for t in ended} == {"SUCCESS"} and len(ended) == 6
        assert {t.node for t in ended} == {"gpu-node"}
    finally:
        close_all()
