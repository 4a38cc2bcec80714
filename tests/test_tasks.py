"""TaskService against a real server: create, list, get, cancel, delete, trace, wait, retries, timeouts."""
from __future__ import annotations

import threading
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from client import make_spec, status_name
from taskhub.v1 import task_pb2 as pb
from taskhub.v1 import task_service_pb2 as svc

from conftest import wait_for
from test_observability import scrape, value


def status_of(client, task_id, **kw):
    return status_name(client.get_task(task_id, **kw).status)


def test_command_task_runs_and_logs(client):
    t = client.create_task(argv=["sh", "-c", "echo one; echo two >&2; echo three"])
    assert t.id > 0 and len(t.uid) == 32 and t.status == pb.TASK_STATUS_NEW
    done = client.wait(t.id)
    assert done.status == pb.TASK_STATUS_SUCCESS
    assert done.result == "three" and done.exit_code == 0 and done.progress == 100
    assert done.pid > 0 and done.start_time_ms >= done.create_time_ms and done.done_time_ms >= done.start_time_ms
    lines = list(client.trace(t.id))
    assert [ln.seq for ln in lines] == list(range(len(lines)))
    by_stream = {(ln.stream, ln.text) for ln in lines}
    assert (pb.LOG_STREAM_STDOUT, "one") in by_stream and (pb.LOG_STREAM_STDERR, "two") in by_stream


def test_command_env_cwd_and_path_lookup(client, tmp_path):
    t = client.create_task(argv=["sh", "-c", "echo $GREETING; pwd"], env={"GREETING": "hello"}, cwd=str(tmp_path))
    done = client.wait(t.id)
    assert status_name(done.status) == "SUCCESS" and done.result == str(tmp_path)
    assert [ln.text for ln in client.trace(t.id)] == ["hello", str(tmp_path)]
    assert status_name(client.wait(client.create_task(argv=["no-such-program-anywhere"]).id).status) == "FAILED"


def test_unstartable_command_fails_clearly(client):
    done = client.wait(client.create_task(argv=["/no/such/program"]).id)
    assert status_name(done.status) == "FAILED" and done.exit_code == 127
    assert "cannot start" in done.error and "No such file" in done.error
    statuses = [status_name(s.status) for s in client.watch(done.id)]
    assert statuses == ["FAILED"]  # an ended task's watch is one message


def test_python_task_context(client):
    t = client.create_task(callable="starter.examples:count", input={"n": 4})
    done = client.wait(t.id)
    assert status_name(done.status) == "SUCCESS"
    assert done.result == "4" and done.progress == 100 and done.response_json == '{"steps":4}'
    assert [ln.text for ln in client.trace(t.id)] == [f"step {i} of 4" for i in range(1, 5)]


def test_python_exception_fails_with_traceback(client):
    done = client.wait(client.create_task(callable="starter.examples:fail", input={"message": "kaput"}).id)
    assert status_name(done.status) == "FAILED"
    assert done.error == "RuntimeError: kaput"
    text = "\n".join(ln.text for ln in client.trace(done.id))
    assert "Traceback" in text and "kaput" in text


def test_batch_create_and_wait_tasks(client):
    specs = [make_spec(callable="starter.examples:echo", input={"i": i}) for i in range(50)]
    tasks = client.create_tasks(specs)
    assert [t.spec.input_json for t in tasks] == [s.input_json for s in specs]
    ended = list(client.wait_tasks([t.id for t in tasks]))
    assert sorted(t.id for t in ended) == sorted(t.id for t in tasks)
    assert all(t.status == pb.TASK_STATUS_SUCCESS for t in ended)
    assert {t.result for t in ended} == {f'{{"i":{i}}}' for i in range(50)}


def test_a_batch_that_repeats_a_spec_keeps_each_tasks_own_spec(client):
    """Runs of equal specs share one converted spec on the server (task_service._stamped); the
    tasks around and between them keep theirs, in the answer, the stored rows and the results."""
    one = make_spec(callable="starter.examples:echo", input={"i": 1}, namespace="fanout")
    two = make_spec(callable="starter.examples:echo", input={"i": 2}, namespace="fanout", name="two")
    command = make_spec(argv=["sh", "-c", "echo cmd"], namespace="fanout")
    specs = [one] * 3 + [two] + [one] * 2 + [command] + [two]
    tasks = client.create_tasks(specs)
    assert [t.spec.input_json for t in tasks] == [s.input_json for s in specs]
    assert [(t.spec.name, t.spec.type) for t in tasks] == [(s.name, s.type) for s in specs]
    ended = {t.id: t for t in client.wait_tasks([t.id for t in tasks], namespace="fanout")}
    assert [ended[t.id].result for t in tasks] == ['{"i":1}'] * 3 + ['{"i":2}'] + ['{"i":1}'] * 2 + ["cmd", '{"i":2}']
    stored = {t.id: t for t in client.list_tasks(namespace="fanout").tasks}
    assert [(stored[t.id].spec.input_json, stored[t.id].spec.argv) for t in tasks] == \
        [(s.input_json, s.argv) for s in specs]


def test_list_filters_pages_and_namespaces(client):
    a = client.create_task(argv=["true"], namespace="list-ns")
    b = client.create_task(argv=["false"], namespace="list-ns")
    c = client.create_task(argv=["true"], namespace="other-ns")
    for t in (a, b, c):
        client.wait(t.id, namespace="*")
    listed = client.list_tasks(namespace="list-ns").tasks
    assert [t.id for t in listed] == [b.id, a.id]  # newest first, other namespace absent
    failed = client.list_tasks(["failed"], namespace="list-ns").tasks
    assert [t.id for t in failed] == [b.id]
    page1 = client.list_tasks(limit=1, namespace="list-ns")
    page2 = client.list_tasks(limit=1, page_token=page1.next_page_token, namespace="list-ns")
    assert [t.id for t in [*page1.tasks, *page2.tasks]] == [b.id, a.id]
    assert {c.id} <= {t.id for t in client.list_tasks(namespace="*", limit=1000).tasks}


def test_namespace_scopes_get_cancel_delete(client):
    t = client.create_task(argv=["sleep", "30"], namespace="team-a")
    for call in (lambda: client.get_task(t.id, namespace="team-b"),
                 lambda: client.cancel_task(t.id, namespace="team-b"),
                 lambda: client.delete_task(t.id, force=True, namespace="team-b"),
                 lambda: client.get_task(t.id)):  # "default"
        with pytest.raises(grpc.RpcError) as e:
            call()
        assert e.value.code() == grpc.StatusCode.NOT_FOUND
    assert client.cancel_task(t.id, namespace="team-a").cancelled


def test_cancel_queued_task_is_immediate(server_factory):
    srv = server_factory("--slots", "1")
    c = srv.client()
    blocker = c.create_task(argv=["sleep", "30"])
    queued = c.create_task(argv=["echo", "never"])
    wait_for(lambda: status_of(c, blocker.id) == "RUNNING", what="blocker running")
    assert status_of(c, queued.id) in ("NEW", "PENDING")
    resp = c.cancel_task(queued.id, reason="not needed")
    assert resp.cancelled and status_name(resp.task.status) == "CANCELLED"
    assert resp.task.cancelled_from == pb.TASK_STATUS_NEW
    again = c.cancel_task(queued.id)
    assert not again.cancelled  # already ended
    c.cancel_task(blocker.id)
    assert status_name(c.wait(blocker.id).status) == "CANCELLED"
    assert [ln.text for ln in c.trace(queued.id)] == ["cancel requested: not needed"]


def test_cancel_cooperative_python_task(client):
    t = client.create_task(callable="starter.examples:count", input={"n": 1000, "delay": 0.05})
    wait_for(lambda: client.get_task(t.id).progress > 0, what="progress")
    assert client.cancel_task(t.id).cancelled
    done = client.wait(t.id)
    assert status_name(done.status) == "CANCELLED" and done.cancel_requested
    assert any("cancelled at step" in ln.text for ln in client.trace(t.id))


def test_cancel_stubborn_python_task_is_killed_after_grace(client):
    t = client.create_task(callable="starter.examples:stubborn", input={"seconds": 60})
    wait_for(lambda: status_of(client, t.id) == "RUNNING", what="running")
    began = time.monotonic()
    client.cancel_task(t.id)
    assert status_of(client, t.id) == "CANCELLING"
    done = client.wait(t.id)
    assert status_name(done.status) == "CANCELLED"
    assert time.monotonic() - began < 30  # grace is 1 s; the task would have run 60 s
    # The pool replaced the killed worker: Python tasks still run.
    assert status_name(client.wait(client.create_task(callable="starter.examples:noop").id).status) == "SUCCESS"


def test_cancel_command_ignoring_sigterm_is_killed(client):
    t = client.create_task(argv=["sh", "-c", "trap '' TERM; echo ready; while true; do sleep 0.1; done"])
    wait_for(lambda: any(ln.text == "ready" for ln in client.trace(t.id, follow=False)), what="ready")
    client.cancel_task(t.id)
    done = client.wait(t.id)
    assert status_name(done.status) == "CANCELLED"
    assert done.exit_code == -9


def test_timeout_fails_task(client):
    t = client.create_task(argv=["sleep", "30"], timeout=0.5)
    done = client.wait(t.id)
    assert status_name(done.status) == "FAILED" and done.error == "timed out after 0.5s"
    p = client.create_task(callable="starter.examples:stubborn", input={"seconds": 30}, timeout=0.5)
    done = client.wait(p.id)
    assert status_name(done.status) == "FAILED" and done.error == "timed out after 0.5s"


def test_retries_with_backoff_then_fail(client):
    t = client.create_task(argv=["sh", "-c", "echo attempt; exit 3"], max_retries=2, retry_backoff=0.05)
    seen = [status_name(s.status) for s in client.watch(t.id)]
    assert seen[-1] == "FAILED" and "PENDING" in seen
    done = client.get_task(t.id)
    assert done.retries == 2 and done.exit_code == 3 and done.error == "exited with status 3"
    texts = [ln.text for ln in client.trace(t.id)]
    assert texts.count("attempt") == 3
    assert "exited with status 3; retry 1 of 2 in 0.05s" in texts


def test_retry_then_succeed(client, tmp_path):
    marker = tmp_path / "flaky"
    t = client.create_task(argv=["sh", "-c", f"test -e {marker} || {{ touch {marker}; exit 1; }}"],
                           max_retries=3, retry_backoff=0.05)
    done = client.wait(t.id)
    assert status_name(done.status) == "SUCCESS" and done.retries == 1


def test_trace_from_offset_and_slow_reader(client):
    n = 5000
    t = client.create_task(argv=["sh", "-c", f"seq 0 {n - 1}"])
    slow = []

    def read_slowly():
        for batch in client.trace_batches(t.id):
            slow.extend(batch.lines)
            time.sleep(0.01)

    reader = threading.Thread(target=read_slowly)
    reader.start()
    fast = [ln.text for ln in client.trace(t.id)]
    reader.join(60)
    assert fast == [str(i) for i in range(n)]
    assert [ln.text for ln in slow] == fast and [ln.seq for ln in slow] == list(range(n))
    tail = list(client.trace(t.id, offset=n - 3))
    assert [(ln.seq, ln.text) for ln in tail] == [(n - 3, str(n - 3)), (n - 2, str(n - 2)), (n - 1, str(n - 1))]
    assert list(client.trace(t.id, offset=n + 10)) == []


def test_trace_live_sees_lines_before_end(client):
    t = client.create_task(callable="starter.examples:count", input={"n": 200, "delay": 0.01})
    first = next(iter(client.trace(t.id)))
    assert first.text == "step 1 of 200"
    assert status_name(client.get_task(t.id).status) in ("RUNNING", "SUCCESS")
    batches = list(client.trace_batches(t.id))
    assert batches[-1].end and batches[-1].status == pb.TASK_STATUS_SUCCESS
    assert sum(len(b.lines) for b in batches) == 200


def test_wait_streams_status_changes(client):
    t = client.create_task(argv=["sleep", "0.2"])
    seen = [status_name(s.status) for s in client.watch(t.id)]
    assert seen[-1] == "SUCCESS" and "RUNNING" in seen


def test_run_task_is_create_and_wait_in_one_call(client):
    done = client.run_task(callable="starter.examples:count", input={"n": 3}, name="run-once")
    assert done.status == pb.TASK_STATUS_SUCCESS and done.spec.name == "run-once" and done.done_time_ms
    assert [line.text for line in client.trace(done.id)] == ["step 1 of 3", "step 2 of 3", "step 3 of 3"]
    failed = client.run_task(argv=["false"])
    assert failed.status == pb.TASK_STATUS_FAILED and failed.id != done.id
    # The stream: the task as it is once committed, then its changes, the last one terminal; no
    # status twice (test_run_task_is_one_message_and_run_task_stream_two: with a free node).
    stream = list(client.run_task_stream(argv=["true"], request_id="run-1"))
    statuses = [s.status for s in stream]
    assert statuses[-1] == pb.TASK_STATUS_SUCCESS and len(statuses) == len(set(statuses))
    assert len({s.id for s in stream}) == 1
    # Idempotent like CreateTask: the repeat follows the task made the first time.
    again = client.run_task(make_spec(argv=["true"]), request_id="run-1")
    assert again.id == stream[0].id and again.status == pb.TASK_STATUS_SUCCESS
    with pytest.raises(grpc.RpcError) as e:
        client.run_task(pb.TaskSpec(type=pb.TASK_TYPE_COMMAND))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "argv" in e.value.details()


def test_run_task_is_one_message_and_run_task_stream_two(server_factory):
    """On a free node, RunTask streams two messages: the task running (a node took it in the
    create: no NEW is sent), then its end. run_task makes one ExecuteTask call instead, answered
    once the task ended; a deadline ends the call, not the task, and the repeat (same request_id)
    waits for the task made the first time."""
    server = server_factory()
    client = server.client()
    stream = list(client.run_task_stream(callable="starter.examples:noop"))
    assert [s.status for s in stream] == [pb.TASK_STATUS_RUNNING, pb.TASK_STATUS_SUCCESS]
    assert stream[0].node and stream[0].start_time_ms and stream[0].spec.callable == "starter.examples:noop"
    before = scrape(server)
    ended = [client.run_task(callable="starter.examples:noop", namespace="run-ends") for _ in range(20)]
    assert {t.status for t in ended} == {pb.TASK_STATUS_SUCCESS} and len({t.id for t in ended}) == 20
    assert all(t.done_time_ms and t.spec.namespace == "run-ends" for t in ended)

    def counted(method: str, kind: str, code: str) -> float:
        rpc = dict(grpc_type=kind, grpc_service="taskhub.v1.TaskService", grpc_method=method, grpc_code=code)
        return value(scrape(server), "grpc_server_handled_total", **rpc) - value(before, "grpc_server_handled_total", **rpc)
    assert counted("ExecuteTask", "unary", "OK") == 20 and counted("RunTask", "server_stream", "OK") == 0

    request = svc.CreateTaskRequest(spec=make_spec(argv=["sleep", "1"]), request_id="execute-late")
    with pytest.raises(grpc.RpcError) as e:
        client._stub.ExecuteTask(request, timeout=0.2)
    assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    done = client._stub.ExecuteTask(request)
    assert done.status == pb.TASK_STATUS_SUCCESS and done.spec.argv == ["sleep", "1"]
    assert [t.id for t in client.list_tasks(namespace="*").tasks if list(t.spec.argv) == ["sleep", "1"]] == [done.id]


def test_delete_semantics(client):
    t = client.create_task(argv=["sleep", "30"])
    with pytest.raises(grpc.RpcError) as e:
        client.delete_task(t.id)
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "cancel it first" in e.value.details()
    client.delete_task(t.id, force=True)
    with pytest.raises(grpc.RpcError) as e:
        client.get_task(t.id)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    done = client.wait(client.create_task(argv=["true"]).id)
    assert [t.status for t in client.wait_tasks([done.id])] == [pb.TASK_STATUS_SUCCESS]  # (from memory: just ended)
    client.delete_task(done.id)
    with pytest.raises(grpc.RpcError) as e:
        list(client.trace(done.id))
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as e:  # what was deleted is gone from WaitTasks too
        list(client.wait_tasks([done.id]))
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as e:  # and not seen from another namespace
        list(client.wait_tasks([client.wait(client.create_task(argv=["true"]).id).id], namespace="team-b"))
    assert e.value.code() == grpc.StatusCode.NOT_FOUND


BAD_SPECS = [
    (pb.TaskSpec(), grpc.StatusCode.INVALID_ARGUMENT, "type"),
    (pb.TaskSpec(type=pb.TASK_TYPE_COMMAND), grpc.StatusCode.INVALID_ARGUMENT, "argv"),
    (pb.TaskSpec(type=pb.TASK_TYPE_PYTHON, callable="no colon"), grpc.StatusCode.INVALID_ARGUMENT, "callable"),
    (pb.TaskSpec(type=pb.TASK_TYPE_PYTHON, callable="os:system"), grpc.StatusCode.PERMISSION_DENIED, "not allowed"),
    (pb.TaskSpec(type=pb.TASK_TYPE_PYTHON, callable="starter.examples:echo", input_json="{nope"),
     grpc.StatusCode.INVALID_ARGUMENT, "not valid JSON"),
    (pb.TaskSpec(type=pb.TASK_TYPE_COMMAND, argv=["true"], namespace="has space"), grpc.StatusCode.INVALID_ARGUMENT,
     "namespace"),
    (pb.TaskSpec(type=pb.TASK_TYPE_COMMAND, argv=["true"], timeout_seconds=-1), grpc.StatusCode.INVALID_ARGUMENT,
     "negative"),
    (pb.TaskSpec(type=pb.TASK_TYPE_COMMAND, argv=["true"], max_retries=1000), grpc.StatusCode.INVALID_ARGUMENT,
     "max_retries"),
]


@pytest.mark.parametrize("spec,code,words", BAD_SPECS)
def test_bad_input_is_refused_clearly(client, spec, code, words):
    with pytest.raises(grpc.RpcError) as e:
        client.create_task(spec)
    assert e.value.code() == code and words in e.value.details()


def test_bad_requests_never_hurt_the_server(server, client):
    stub = client.stub
    calls = [
        lambda: stub.GetTask(svc.GetTaskRequest(id=987654)),
        lambda: stub.GetTask(svc.GetTaskRequest()),
        lambda: stub.CancelTask(svc.CancelTaskRequest(id=-5)),
        lambda: stub.DeleteTask(svc.DeleteTaskRequest(id=987654, force=True)),
        lambda: list(stub.TraceTask(svc.TraceTaskRequest(id=987654))),
        lambda: list(stub.TraceTask(svc.TraceTaskRequest(id=1, namespace="*", offset=-1))),
        lambda: list(stub.WaitTask(svc.WaitTaskRequest(id=987654))),
        lambda: stub.ListTasks(svc.ListTasksRequest(limit=-3)),
        lambda: stub.ListTasks(svc.ListTasksRequest(page_token="garbage")),
        lambda: stub.CreateTasks(svc.CreateTasksRequest()),
        lambda: stub.CreateTasks(svc.CreateTasksRequest(specs=[make_spec(argv=["true"]), pb.TaskSpec()])),
    ]
    for call in calls:
        with pytest.raises(grpc.RpcError) as e:
            call()
        assert e.value.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT), e.value.details()
        assert e.value.details()
    # garbage bytes on the wire: the server answers with an error and keeps serving
    raw = server.client().channel.unary_unary("/taskhub.v1.TaskService/CreateTask")
    with pytest.raises(grpc.RpcError) as e:
        raw(b"\xff\xff\xff\xff")
    assert e.value.code() in (grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL, grpc.StatusCode.INVALID_ARGUMENT)
    assert "corrupt" in e.value.details()  # grpcio reports undecodable requests itself
    health = health_pb2_grpc.HealthStub(client.channel)
    assert health.Check(health_pb2.HealthCheckRequest(service="taskhub.v1.TaskService")).status == \
        health_pb2.HealthCheckResponse.SERVING
    assert status_name(client.wait(client.create_task(argv=["true"]).id).status) == "SUCCESS"


HELD_CALLS = """
import os, time

def quick(tag=""):
    return tag

def gate(path):
    while not os.path.exists(path):
        time.sleep(0.005)
"""


def test_short_python_tasks_wait_in_a_busy_worker_beyond_the_slots_and_run_once_in_order(server_factory, tmp_path):
    """A full node still takes tasks of a callable seen to be short, to wait in its Python pool
    behind a short one (prefetch: many jobs per pipe write); they take no slot and start one after
    another. A command is never taken beyond the slots."""
    (tmp_path / "heldcalls.py").write_text(HELD_CALLS)
    srv = server_factory("--slots", "1", "--python-workers", "1", "--task-path", str(tmp_path),
                         "--allow-module", "heldcalls")
    c = srv.client()
    opened = tmp_path / "open"
    opened.write_text("")
    for attempt in range(50):  # until the pool has seen both callables run short (a loaded host may need more)
        closed = tmp_path / f"closed-{attempt}"
        gate, *quick = c.create_tasks([make_spec(callable="heldcalls:gate", input={"path": str(closed)}),
                                       *(make_spec(callable="heldcalls:quick", input={"tag": str(i)}) for i in range(4)),
                                       make_spec(argv=["true"])])
        command = quick.pop()
        # The gate's start and the placements behind it come in one round of the scheduler.
        wait_for(lambda: status_of(c, gate.id) == "RUNNING", what="the gate running")
        states = [status_of(c, t.id) for t in quick]
        held = states == ["QUEUED"] * 4
        if held:
            [node] = c.nodes.list_nodes()
            assert node.slots == 1 and node.free_slots == 0 and set(node.task_ids) == {gate.id, *(t.id for t in quick)}
            assert status_of(c, command.id) in ("NEW", "PENDING"), "a command waits for a slot"
        closed.write_text("")
        done = [c.wait(t.id) for t in (gate, *quick, command)]
        assert [status_name(t.status) for t in done] == ["SUCCESS"] * 6
        if held:
            starts = [t.start_time_ms for t in done[:5]]
            assert starts == sorted(starts) and all(t.retries == 0 for t in done)
            assert [t.result for t in done[1:5]] == ["0", "1", "2", "3"]
            return
        c.wait(c.create_task(callable="heldcalls:gate", input={"path": str(opened)}).id)
        c.wait(c.create_task(callable="heldcalls:quick").id)
    pytest.fail(f"short tasks were never held beyond the node's one slot; last states {states}")


def test_priority_orders_waiting_tasks(server_factory):
    srv = server_factory("--slots", "1")
    c = srv.client()
    blocker = c.create_task(argv=["sleep", "0.5"])
    low = c.create_task(argv=["true"], priority=0)
    high = c.create_task(argv=["true"], priority=10)
    for t in (blocker, low, high):
        c.wait(t.id)
    assert c.get_task(high.id).start_time_ms <= c.get_task(low.id).start_time_ms
