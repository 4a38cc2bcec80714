"""Reliability: idempotent creates, backpressure, bounded storage, leases and fencing, clean
agent shutdown, and a short chaos run (bench/chaos.py) against real servers and agents."""
from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import threading

import grpc
import psutil
import pytest
from taskhub.v1 import task_pb2 as pb
from taskhub.v1 import task_service_pb2 as svc

from client import make_spec
from server.engine import UNWRITTEN_SECONDS
from conftest import REPO, http, wait_for
from node_agents import agents_fixture_factory, free_port

NODES = ("--no-local-node", "--http-port", "-1")


@pytest.fixture
def agents(tmp_path):
    make, close_all = agents_fixture_factory(tmp_path)
    yield make
    close_all()


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_request_id_makes_one_task_across_a_server_sigkill(server_factory):
    first = server_factory("--no-local-node")
    c = first.client()
    spec = make_spec(argv=["echo", "hi"], name="once")
    one = c.stub.CreateTask(svc.CreateTaskRequest(spec=spec, request_id="order-17"), timeout=30)
    batch = c.stub.CreateTasks(svc.CreateTasksRequest(specs=[spec, spec], request_id="batch-3"), timeout=30)
    same = c.stub.CreateTask(svc.CreateTaskRequest(spec=spec, request_id="order-17"), timeout=30)
    assert same.id == one.id and same.uid == one.uid
    first.kill()  # SIGKILL: the key must have been committed with the task

    second = server_factory("--no-local-node", db=first.db)
    c2 = second.client()
    again = c2.stub.CreateTask(svc.CreateTaskRequest(spec=spec, request_id="order-17"), timeout=30)
    assert again.id == one.id
    batch_again = c2.stub.CreateTasks(svc.CreateTasksRequest(specs=[spec, spec], request_id="batch-3"), timeout=30)
    assert [t.id for t in batch_again.tasks] == [t.id for t in batch.tasks]
    names = [t.spec.name for t in c2.list_tasks(limit=100).tasks]
    assert names.count("once") == 3  # one + a batch of two; no repeat made another
    # Another namespace is another key space.
    other = c2.stub.CreateTask(svc.CreateTaskRequest(spec=make_spec(argv=["true"], namespace="b"),
                                                     request_id="order-17"), timeout=30)
    assert other.id != one.id
    # The HTTP face: Idempotency-Key on POST /v1/tasks.
    with_http = server_factory("--no-local-node", "--http-port", "0", db=first.db.with_name("http.db"))  # one server per db
    body = {"type": "TASK_TYPE_COMMAND", "argv": ["true"], "name": "via-http"}
    ids = {http("POST", f"{with_http.http_url}/v1/tasks", body, {"Idempotency-Key": "k-1",
                                                                   "Content-Type": "application/json"}).json()["id"]
           for _ in range(2)}
    assert len(ids) == 1


def test_sdk_retries_a_create_while_the_server_restarts(server_factory):
    """create_task sets a request_id and retries UNAVAILABLE with it: one task, though the server was down."""
    port = str(free_port())
    first = server_factory("--no-local-node", "--grpc-port", port)
    c = first.client(create_retries=30)  # minutes (backoff up to 5 s): a loaded machine restarts slowly
    c.create_task(argv=["true"], name="before")
    first.kill()
    restarted = threading.Timer(1.0, lambda: server_factory("--no-local-node", "--grpc-port", port, db=first.db))
    restarted.start()
    try:
        t = c.create_task(argv=["true"], name="during")  # UNAVAILABLE until the new server listens
    finally:
        restarted.join()
    assert [x.spec.name for x in c.list_tasks().tasks] == ["during", "before"]
    assert t.id == 2


def test_max_queued_answers_resource_exhausted(server_factory):
    s = server_factory("--no-local-node", "--max-queued", "3")
    c = s.client()
    c.create_tasks([make_spec(argv=["true"]) for _ in range(3)])
    with pytest.raises(grpc.RpcError) as e:
        c.create_task(argv=["true"])
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "--max-queued" in e.value.details()
    with pytest.raises(grpc.RpcError) as e:  # keep is for commands only
        c.create_task(callable="starter.examples:noop", annotations={"taskhub.on_disconnect": "keep"})
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "command tasks" in e.value.details()


def test_log_cap_and_store_stats(server_factory):
    s = server_factory("--max-log-lines", "100")
    c = s.client()
    t = c.create_task(argv=["seq", "1", "1000"])
    assert c.wait(t.id).status == pb.TASK_STATUS_SUCCESS
    lines = [ln.text for ln in c.trace(t.id, follow=False)]
    assert lines[:100] == [str(i) for i in range(1, 101)]
    assert "log truncated" in lines[100] and len(lines) == 101
    stats = _store_stats(s.db)
    assert stats["rows"]["tasks"] == 1 and stats["rows"]["logs"] == 101
    assert stats["oldest_task"]["id"] == t.id and stats["wal_bytes"] >= 0


def test_retention_purges_finished_tasks_and_their_logs(server_factory):
    # Separate from the stats test: on a loaded machine 2 s may pass before stats are read.
    s = server_factory("--retain", "2s")
    c = s.client()
    t = c.create_task(argv=["seq", "1", "50"])
    assert c.wait(t.id).status == pb.TASK_STATUS_SUCCESS

    def purged():
        try:
            c.get_task(t.id)
        except grpc.RpcError as e:
            return e.code() == grpc.StatusCode.NOT_FOUND
    wait_for(purged, 30, interval=0.2, what="the finished task to be purged")
    assert _store_stats(s.db)["rows"]["logs"] == 0


def _store_stats(db) -> dict:
    out = subprocess.run([sys.executable, "-m", "server.cli", "store", "stats", "--db", str(db)],
                         capture_output=True, text=True, cwd=REPO, timeout=60)
    return json.loads(out.stdout)


def test_frozen_agent_is_fenced_before_its_task_runs_elsewhere(server_factory, agents, tmp_path):
    """SIGSTOP an agent mid-run: when its lease ends its fence kills the run, and only then
    (lease + grace) does the server start attempt 2 elsewhere. The old run's late word is refused."""
    # A lease the spare agent's heartbeats keep on a loaded machine (with 2 s, attempt 2 was lost too: retries 2).
    s = server_factory(*NODES, "--node-timeout", "5", "--lease-grace", "1")
    c = s.client()
    frozen = agents(s.grpc_target, "frozen")
    marks = tmp_path / "marks"
    script = f'echo "start $TASKHUB_ATTEMPT $(date +%s.%N)" >> {marks}; echo attempt $TASKHUB_ATTEMPT; sleep 60'
    t = c.create_task(argv=["sh", "-c", script], max_retries=2)
    kept = c.create_task(argv=["sleep", "60"], annotations={"taskhub.on_disconnect": "keep"})
    first = wait_for(lambda: (x := c.get_task(t.id)).status == pb.TASK_STATUS_RUNNING and x, what="attempt 1 running")
    kept_run = wait_for(lambda: (x := c.get_task(kept.id)).status == pb.TASK_STATUS_RUNNING and x, what="kept running")
    assert first.node == "frozen" and kept_run.node == "frozen"
    wait_for(lambda: marks.exists(), what="attempt 1 to write its mark")
    spare = agents(s.grpc_target, "spare")
    frozen.proc.send_signal(signal.SIGSTOP)
    try:
        second = wait_for(lambda: (x := c.get_task(t.id)).node == "spare" and x.status == pb.TASK_STATUS_RUNNING
                          and x, 60, what="attempt 2 running on the spare node")
        assert not alive(first.pid), "the frozen agent's run must have been killed before attempt 2 started"
        assert second.retries == 1
        # The task that opted in (on_disconnect=keep) runs on, still placed on the frozen node.
        assert alive(kept_run.pid)
        still = c.get_task(kept.id)
        assert still.status == pb.TASK_STATUS_RUNNING and still.node == "frozen" and still.retries == 0
    finally:
        frozen.proc.send_signal(signal.SIGCONT)
    wait_for(lambda: frozen.registrations() >= 2, what="the frozen agent to come back")
    assert [ln.split()[1] for ln in marks.read_text().splitlines()] == ["1", "2"]
    texts = [ln.text for ln in c.trace(t.id, follow=False)]
    assert "attempt 1" in texts and "attempt 2" in texts
    assert c.get_task(t.id).node == "spare"  # the returning agent did not take it back
    assert c.get_task(kept.id).status == pb.TASK_STATUS_RUNNING and alive(kept_run.pid)
    c.cancel_task(kept.id)
    assert c.wait(kept.id).status == pb.TASK_STATUS_CANCELLED
    c.cancel_task(t.id)
    assert c.wait(t.id).status == pb.TASK_STATUS_CANCELLED
    assert spare.proc.poll() is None


def test_agent_exits_cleanly_on_sigterm_and_sigint(server_factory, agents):
    s = server_factory(*NODES)
    c = s.client()
    procs = {sig: agents(s.grpc_target, f"clean-{sig.name.lower()}", wait=False) for sig in (signal.SIGTERM, signal.SIGINT)}
    for a in procs.values():
        a.wait_registered()
    tasks = [c.create_task(argv=["sleep", "30"]) for _ in range(4)]
    wait_for(lambda: all(c.get_task(t.id).status == pb.TASK_STATUS_RUNNING for t in tasks), what="tasks running")
    for sig, a in procs.items():
        a.proc.send_signal(sig)
    for a in procs.values():
        assert a.proc.wait(30) == 0
        text = "\n".join(a.output)
        assert "Traceback" not in text and "destroyed but it is pending" not in text and "aclose()" not in text, text


def test_agent_outbox_is_bounded_while_disconnected(capsys):
    """Past --max-buffered-lines, log lines wait no more: they are dropped, counted and reported."""
    from taskhub.v1 import node_service_pb2 as npb
    from server.node.agent import Agent, AgentConfig
    agent = Agent(AgentConfig(max_buffered_lines=10))
    for _ in range(5):
        agent._buffer(npb.TaskEvent(task_id=7, logs=npb.LogBatch(streams=[1] * 4, texts=["x"] * 4)))
    agent._buffer(npb.TaskEvent(task_id=7, exit=npb.RunExit(kind="success")))
    assert agent.buffered_lines == 8 and agent.dropped_lines == {7: 12}
    assert [ev.WhichOneof("kind") for ev in agent.buffer] == ["logs", "logs", "exit"]  # an exit is never dropped
    agent._report_dropped()
    assert "task 7: 12 log lines dropped" in capsys.readouterr().out and not agent.dropped_lines


def test_short_chaos_run_keeps_every_invariant(tmp_path):
    sys.path.insert(0, str(REPO))
    from bench.chaos import run
    report = run(20, agents=2, seed=12345, workdir=tmp_path / "chaos", pace=(1.0, 2.5), min_kills=3)
    assert report["violations"] == 0, report["violation_details"]
    assert report["tasks"] > 20 and report["kills_total"] >= 3, report
    assert not report["logs_with_tracebacks"], report


def _status_in_store(db, task_id: int) -> int:
    with sqlite3.connect(db) as conn:
        row = conn.execute("SELECT status FROM tasks WHERE id = ?", (task_id,)).fetchone()
    return row[0] if row else 0


def test_a_quiet_create_commits_its_task_as_running_so_a_crash_does_not_run_it_again(server_factory):
    """Once CreateTask answers, the store says RUNNING (a quiet server commits a Python task as it
    placed and started it), and a SIGKILL then fails it (no retries asked) instead of running it a
    second time."""
    first = server_factory()
    c = first.client()
    spec = make_spec(callable="starter.examples:count", input={"n": 1000, "delay": 0.05}, name="once")
    task = c.stub.CreateTask(svc.CreateTaskRequest(spec=spec), timeout=30)
    assert _status_in_store(first.db, task.id) == pb.TASK_STATUS_RUNNING
    first.kill()
    second = server_factory(db=first.db)
    ended = second.client().wait(task.id)
    assert ended.status == pb.TASK_STATUS_FAILED and "interrupted" in ended.error


def test_an_execute_task_of_a_short_task_commits_its_row_once_with_its_end(server_factory):
    """On a quiet server ExecuteTask (no request id) starts the task before it has a row: a short
    one's row is inserted as it ended, in one commit; a longer one's is written as RUNNING within
    UNWRITTEN_SECONDS, then updated at its end."""
    server = server_factory()
    c = server.client()
    with sqlite3.connect(server.db) as db:  # real SQLite triggers count what reaches the tasks table
        db.execute("CREATE TABLE seen (kind TEXT, id INTEGER, status INTEGER)")
        db.execute("CREATE TRIGGER seen_insert AFTER INSERT ON tasks BEGIN"
                   " INSERT INTO seen VALUES ('insert', NEW.id, NEW.status); END")
        db.execute("CREATE TRIGGER seen_update AFTER UPDATE ON tasks BEGIN"
                   " INSERT INTO seen VALUES ('update', NEW.id, NEW.status); END")

    def seen(task_id):
        with sqlite3.connect(server.db) as db:
            return db.execute("SELECT kind, status FROM seen WHERE id = ? ORDER BY rowid", (task_id,)).fetchall()

    for _ in range(5):
        short = c.stub.ExecuteTask(svc.CreateTaskRequest(spec=make_spec(callable="starter.examples:noop")), timeout=30)
        assert short.status == pb.TASK_STATUS_SUCCESS
        once = [("insert", pb.TASK_STATUS_SUCCESS)]
        if short.done_time_ms - short.create_time_ms < UNWRITTEN_SECONDS * 1000 / 2:
            assert seen(short.id) == once
        else:  # a loaded machine took longer: its row may have been written as it ran
            assert seen(short.id) in (once, [("insert", pb.TASK_STATUS_RUNNING), ("update", pb.TASK_STATUS_SUCCESS)])

    call = c.stub.ExecuteTask.future(svc.CreateTaskRequest(spec=make_spec(argv=["sleep", "2"])), timeout=30)
    wait_for(lambda: c.list_tasks(limit=10).tasks and c.list_tasks(limit=10).tasks[0].id != short.id,
             what="the running task's row (written while it runs)")
    running = c.list_tasks(limit=1).tasks[0]
    assert running.status == pb.TASK_STATUS_RUNNING and seen(running.id) == [("insert", pb.TASK_STATUS_RUNNING)]
    assert call.result().status == pb.TASK_STATUS_SUCCESS
    assert seen(running.id) == [("insert", pb.TASK_STATUS_RUNNING), ("update", pb.TASK_STATUS_SUCCESS)]


def test_a_create_whose_commit_fails_is_refused_and_its_early_start_cancelled(server_factory, tmp_path):
    server = server_factory()
    c = server.client(create_retries=0)
    # A real failure of the commit: a trigger the test adds refuses the rows of tasks named 'refused'.
    with sqlite3.connect(server.db) as db:
        db.execute("CREATE TRIGGER refuse BEFORE INSERT ON tasks WHEN NEW.name = 'refused'"
                   " BEGIN SELECT RAISE(ABORT, 'refused by the test'); END")
    marker = tmp_path / "started"
    spec = make_spec(argv=["sh", "-c", f"touch {marker}; exec sleep 61.75"], name="refused")

    def stopped():
        wait_for(lambda: not any("61.75" in " ".join(p.info["cmdline"] or []) for p in psutil.process_iter(["cmdline"])),
                 what="the early start to be stopped")
        wait_for(lambda: not c.list_tasks(limit=100).tasks, what="the refused task to be let go")

    # No request id: started beside the commit (CreateTask), or before its row is written
    # (ExecuteTask: as it runs, or with its end), so cancelled when the commit fails.
    for call in (c.stub.CreateTask, c.stub.ExecuteTask):
        marker.unlink(missing_ok=True)
        with pytest.raises(grpc.RpcError) as e:
            call(svc.CreateTaskRequest(spec=spec), timeout=30)
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE, call
        assert "could not commit" in e.value.details() and "cancelled" in e.value.details()
        stopped()
    with pytest.raises(grpc.RpcError) as e:
        c.stub.ExecuteTask(svc.CreateTaskRequest(spec=make_spec(argv=["true"], name="refused")), timeout=30)
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE and "may have run" in e.value.details()
    wait_for(lambda: not c.list_tasks(limit=100).tasks, what="the refused task to be let go")

    # With a request id (the SDK's create): committed first, so nothing started at all.
    marker.unlink(missing_ok=True)
    with pytest.raises(grpc.RpcError) as e:
        c.create_task(spec, request_id="refused-1")
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE and "cancelled" not in e.value.details()
    assert not marker.exists()

    with sqlite3.connect(server.db) as db:
        db.execute("DROP TRIGGER refuse")
    done = c.run_task(make_spec(argv=["true"], name="refused"))
    assert done.status == pb.TASK_STATUS_SUCCESS
    assert c.stub.ExecuteTask(svc.CreateTaskRequest(spec=make_spec(argv=["true"], name="refused")),
                              timeout=30).status == pb.TASK_STATUS_SUCCESS
