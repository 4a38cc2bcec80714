"""Node agents against a real server: registration, heartbeats, placement, drain, failures.

Every test runs a real `taskhub serve --no-local-node` and real `taskhub node` processes
on 127.0.0.1, with a short heartbeat timeout so failures are noticed in about 2 s.
"""
from __future__ import annotations

import time

import grpc
import pytest
from taskhub.v1 import node_service_pb2 as npb
from taskhub.v1 import task_pb2 as pb

from client import make_spec
from conftest import wait_for
from node_agents import agents_fixture_factory, free_port, list_nodes, node_stub, wait_online

SERVE = ("--no-local-node", "--http-port", "-1", "--node-timeout", "2")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """One server and three agents shared by the read-mostly tests of this module."""
    from conftest import ServerProcess
    tmp = tmp_path_factory.mktemp("cluster")
    server = ServerProcess(tmp, list(SERVE)).start()
    make, close_all = agents_fixture_factory(tmp)
    try:
        agents = {
            "small": make(server.grpc_target, "small", "--slots", "1", "--label", "zone=a", wait=False),
            "big": make(server.grpc_target, "big", "--slots", "3", "--label", "zone=b", wait=False),
        }
        for a in agents.values():
            a.wait_registered()
        channel, stub = node_stub(server.grpc_target)
        yield server, agents, stub
        channel.close()
    finally:
        close_all()
        server.close()


@pytest.fixture
def agents(tmp_path):
    make, close_all = agents_fixture_factory(tmp_path)
    yield make
    close_all()


def _wait_status(client, task_id: int, *statuses: int, timeout: float = 60) -> pb.Task:
    return wait_for(lambda: (t := client.get_task(task_id)).status in statuses and t, timeout,
                    what=f"task {task_id} to reach {statuses}")


# ------------------------------------------------------------------ registration
def test_agents_register_and_heartbeat(cluster):
    server, agents, stub = cluster
    wait_online(stub, "small", "big")
    nodes = list_nodes(stub)
    small = nodes["small"]
    assert small.address == "127.0.0.1" and small.slots == 1 and dict(small.labels) == {"zone": "a"}
    assert not small.local and small.cpu_count >= 1 and small.memory_mb > 0
    first = small.last_heartbeat_ms
    # Heartbeats (every 0.5 s for a 2 s timeout) move last_heartbeat_ms and carry live usage.
    wait_for(lambda: list_nodes(stub)["small"].last_heartbeat_ms > first, 10, what="a heartbeat")
    assert list_nodes(stub)["small"].memory_percent > 0
    got = stub.GetNode(npb.GetNodeRequest(name="big"), timeout=10)
    assert got.name == "big" and got.slots == 3

    with pytest.raises(grpc.RpcError) as e:
        stub.GetNode(npb.GetNodeRequest(name="nope"), timeout=10)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as e:
        stub.GetNode(npb.GetNodeRequest(name=""), timeout=10)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as e:
        stub.DrainNode(npb.DrainNodeRequest(name="nope"), timeout=10)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND


def test_same_name_from_another_agent_is_refused(cluster, tmp_path):
    server, agents, stub = cluster
    make, close_all = agents_fixture_factory(tmp_path)
    try:
        twin = make(server.grpc_target, "small", wait=False)
        wait_for(lambda: any("refused" in line and "another agent" in line for line in twin.output), 30,
                 what="the duplicate agent to be refused")
        assert list_nodes(stub)["small"].state == npb.NODE_STATE_ONLINE
    finally:
        close_all()


# ------------------------------------------------------------------ running tasks
def test_command_and_python_tasks_run_on_agents_with_logs(cluster):
    server, agents, stub = cluster
    c = server.client()
    t1 = c.create_task(argv=["sh", "-c", "for i in $(seq 1 3000); do echo line $i; done; echo err >&2"])
    t2 = c.create_task(callable="starter.examples:count", input={"n": 3, "delay": 0.01})
    done = {t.id: t for t in c.wait_tasks([t1.id, t2.id])}
    assert done[t1.id].status == pb.TASK_STATUS_SUCCESS, done[t1.id]
    assert done[t2.id].status == pb.TASK_STATUS_SUCCESS, done[t2.id]
    assert done[t1.id].node in ("small", "big") and done[t1.id].pid > 0
    texts = [l.text for l in c.trace(t1.id) if l.stream != pb.LOG_STREAM_SYSTEM]
    assert texts[:3000] == [f"line {i}" for i in range(1, 3001)] and texts[-1] == "err"
    seqs = [l.seq for l in c.trace(t1.id)]
    assert seqs == list(range(len(seqs)))
    assert done[t1.id].result == "line 3000"


def test_cancel_a_task_running_on_an_agent(cluster):
    server, agents, stub = cluster
    c = server.client()
    t = c.create_task(argv=["sleep", "30"])
    _wait_status(c, t.id, pb.TASK_STATUS_RUNNING)
    c.cancel_task(t.id, "test")
    final = c.wait(t.id)
    assert final.status == pb.TASK_STATUS_CANCELLED


# ------------------------------------------------------------------ placement
def test_placement_by_labels_and_slots(cluster):
    server, agents, stub = cluster
    c = server.client()
    on_a = c.create_task(make_spec(argv=["true"], node_selector={"zone": "a"}))
    three = c.create_task(make_spec(argv=["true"], slots=3))
    assert c.wait(on_a.id).node == "small"
    assert c.wait(three.id).node == "big"

    too_big = c.create_task(make_spec(argv=["true"], slots=5))
    gpu = c.create_task(make_spec(argv=["true"], node_selector={"gpu": "1"}))
    huge = c.create_task(pb.TaskSpec(type=pb.TASK_TYPE_COMMAND, argv=["true"],
                                     resources=pb.Resources(slots=1, memory_mb=1 << 40)))
    for t, needle in ((too_big, "5 slots"), (gpu, "label gpu=1"), (huge, "MiB memory")):
        _wait_status(c, t.id, pb.TASK_STATUS_PENDING)
        wait_for(lambda: needle in c.get_task(t.id).queue_reason, 10, what=f"queue_reason with {needle!r}")
        assert "no online node fits" in c.get_task(t.id).queue_reason
        c.cancel_task(t.id)


def test_slots_are_respected(cluster):
    """`small` has one slot: two tasks pinned to it run one after the other."""
    server, agents, stub = cluster
    c = server.client()
    spec = lambda: make_spec(argv=["sleep", "0.5"], node_selector={"zone": "a"})  # noqa: E731
    a, b = c.create_task(spec()), c.create_task(spec())
    ta, tb = c.wait(a.id), c.wait(b.id)
    first, second = sorted((ta, tb), key=lambda t: t.start_time_ms)
    assert second.start_time_ms >= first.done_time_ms - 50


def test_drain_keeps_running_tasks_and_places_no_new_ones(cluster):
    server, agents, stub = cluster
    c = server.client()
    running = c.create_task(make_spec(argv=["sleep", "1"], node_selector={"zone": "a"}))
    _wait_status(c, running.id, pb.TASK_STATUS_RUNNING)
    info = stub.DrainNode(npb.DrainNodeRequest(name="small"), timeout=10)
    assert info.draining
    try:
        later = c.create_task(make_spec(argv=["true"], node_selector={"zone": "a"}))
        anywhere = c.create_task(make_spec(argv=["true"]))
        assert c.wait(anywhere.id).node == "big"
        assert c.wait(running.id).status == pb.TASK_STATUS_SUCCESS  # the running one finished
        assert c.get_task(later.id).status == pb.TASK_STATUS_PENDING
    finally:
        info = stub.DrainNode(npb.DrainNodeRequest(name="small", resume=True), timeout=10)
    assert not info.draining
    assert c.wait(later.id).node == "small"


# ------------------------------------------------------------------ failures
def test_agent_killed_mid_task_reruns_elsewhere(server_factory, agents):
    server = server_factory(*SERVE)
    a, b = agents(server.grpc_target, "a1"), agents(server.grpc_target, "b1")
    channel, stub = node_stub(server.grpc_target)
    wait_online(stub, "a1", "b1")
    c = server.client()
    t = c.create_task(make_spec(argv=["sh", "-c", "echo on $TASKHUB_TASK_ID; sleep 60"], max_retries=1))
    first = _wait_status(c, t.id, pb.TASK_STATUS_RUNNING)
    victim, survivor = (a, "b1") if first.node == "a1" else (b, "a1")

    died = time.monotonic()
    victim.kill()
    moved = wait_for(lambda: (x := c.get_task(t.id)).status == pb.TASK_STATUS_RUNNING and x.node == survivor and x,
                     30, interval=0.01, what="the task to run on the other agent")
    took = time.monotonic() - died
    print(f"\nagent death -> task RUNNING on {survivor}: {took:.2f}s (node timeout 2s)")
    assert moved.retries == 1
    assert list_nodes(stub)[victim.name].state == npb.NODE_STATE_OFFLINE
    assert list_nodes(stub)[victim.name].task_ids == []
    assert any(f"node {victim.name} lost" in l.text for l in c.trace(t.id, follow=False))
    c.cancel_task(t.id)
    assert c.wait(t.id).status == pb.TASK_STATUS_CANCELLED
    channel.close()


def test_agent_killed_with_no_retries_left_fails_the_task(server_factory, agents):
    server = server_factory(*SERVE)
    a = agents(server.grpc_target, "solo")
    c = server.client()
    t = c.create_task(make_spec(argv=["sleep", "60"], max_retries=0))
    _wait_status(c, t.id, pb.TASK_STATUS_RUNNING)
    a.kill()
    final = c.wait(t.id)
    assert final.status == pb.TASK_STATUS_FAILED and "lost" in final.error


@pytest.mark.parametrize("how", ["SIGKILL", "SIGTERM"])
def test_server_stopped_and_restarted_while_agents_run(server_factory, agents, tmp_path, how):
    """No task is lost or run twice: each task appends to its own file when it starts and ends."""
    port = free_port()
    # The agents' lease (node timeout) must outlast the restart, or they stop their runs (README, Reliability).
    args = (*SERVE, "--node-timeout", "15", "--grpc-port", str(port))
    server = server_factory(*args)
    db = server.db
    agents(server.grpc_target, "r1", "--slots", "3")
    agents(server.grpc_target, "r2", "--slots", "3")
    marks = tmp_path / "marks"
    marks.mkdir()
    c = server.client()
    script = f'echo start >> {marks}/$TASKHUB_TASK_ID; echo begun; sleep "$0"; echo end >> {marks}/$TASKHUB_TASK_ID; echo finished'
    # Short ones end while the server is down (their outcome and logs wait in the agent);
    # long ones are still running when it is back.
    ids = [c.create_task(make_spec(argv=["sh", "-c", script, d], max_retries=0)).id
           for d in ("0.3", "0.3", "6", "6")]
    for i in ids:
        _wait_status(c, i, pb.TASK_STATUS_RUNNING, pb.TASK_STATUS_SUCCESS)
    c.close()
    server.kill() if how == "SIGKILL" else server.terminate()
    killed = time.monotonic()
    # The short tasks finish while no server is there.
    wait_for(lambda: all((marks / str(i)).exists() and "end" in (marks / str(i)).read_text() for i in ids[:2]), 30,
             what="the short tasks to end while the server is down")
    server2 = server_factory(*args, db=db)
    c2 = server2.client()
    finals = {t.id: t for t in c2.wait_tasks(ids)}
    print(f"\nserver {how} down-and-up; all tasks ended {time.monotonic() - killed:.2f}s after the kill")
    for i in ids:
        t = finals[i]
        assert t.status == pb.TASK_STATUS_SUCCESS, (t, server2.output)
        assert t.retries == 0
        assert (marks / str(i)).read_text() == "start\nend\n", f"task {i} ran more than once"
        texts = [l.text for l in c2.trace(i, follow=False)]
        assert "begun" in texts and "finished" in texts, texts  # logs written while the server was down arrived
