"""Lists of servers (issue 18): the SDK, the CLI, the gateway and the agent fail over by themselves.

Real setups: the first address of a list is a port nothing listens on, or a server SIGKILLed
while a task runs on an agent and streams follow it; a second server then opens the same SQLite
file on another port (a database has one owner at a time), and everything moves to it.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import urllib.request

import grpc
import pytest
from taskhub.v1 import task_pb2 as pb

from client import TaskhubClient
from client.servers import resumer
from conftest import REPO, ServerProcess, http, wait_for, watch_output
from node_agents import AgentProcess, free_port


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "server.cli", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=120, env={**os.environ, **(env or {})})


class GatewayProcess:
    def __init__(self, grpc_targets: str, *extra: str):
        self.proc = subprocess.Popen([sys.executable, "-m", "server.cli", "gateway", "--grpc", grpc_targets,
                                      "--port", "0", *extra], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True)
        self.found: list[str] = []
        self.output: list[str] = []
        watch_output("gateway", self)
        threading.Thread(target=self._pump, daemon=True).start()
        self.url = wait_for(lambda: self.found and self.found[0], what="the standalone gateway")

    def _pump(self):
        for line in self.proc.stdout:
            self.output.append(line.rstrip("\n"))
            m = re.search(r"HTTP gateway listening on (\S+)", line)
            if m:
                self.found.append(m.group(1))

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def test_bad_lists_are_named():
    for bad, words in [("127.0.0.1:1,,127.0.0.1:2", "server address 2 of '127.0.0.1:1,,127.0.0.1:2' is empty"),
                       ("127.0.0.1:x,127.0.0.1:2", "has a bad port 'x'"),
                       ("127.0.0.1:1,nohost", "'nohost', is not host:port"),
                       ("127.0.0.1:70000", "bad port '70000'")]:
        with pytest.raises(ValueError, match=re.escape(words)):
            TaskhubClient(bad)
    answer = run_cli("task", "list", env={"TASKHUB_SERVER": "127.0.0.1:1,"})
    assert answer.returncode != 0 and "--server: server address 2 of '127.0.0.1:1,' is empty" in answer.stderr
    answer = run_cli("task", "get", "1", "--server", "127.0.0.1:1,127.0.0.1:0")
    assert answer.returncode != 0 and "bad port '0'" in answer.stderr
    answer = run_cli("gateway", "--grpc", "a:1,b:c", "--port", "0")
    assert answer.returncode != 0
    assert "--grpc: server address 2 of 'a:1,b:c', 'b:c', has a bad port 'c'" in answer.stderr
    answer = run_cli("node", "--server", ",a:1")
    assert answer.returncode != 0 and "--server: server address 1 of ',a:1' is empty" in answer.stderr


def test_streams_resume_without_repeats():
    """What each stream asks the next server, and which of its first answers it drops."""
    from taskhub.v1 import flow_service_pb2 as fpb
    from taskhub.v1 import task_service_pb2 as svc

    trace = resumer("/taskhub.v1.TaskService/TraceTask", svc.TraceTaskRequest(id=7, offset=2))
    trace.seen(svc.TraceTaskResponse(lines=[pb.LogLine(seq=2), pb.LogLine(seq=3)]))
    assert trace.resume(True).offset == 4
    trace.seen(svc.TraceTaskResponse(end=True, status=pb.TASK_STATUS_SUCCESS))
    assert trace.resume(True) is None

    wait = resumer("/taskhub.v1.TaskService/WaitTask", svc.WaitTaskRequest(id=7))
    assert wait.seen(pb.Task(id=7, status=pb.TASK_STATUS_RUNNING)) is not None
    wait.resume(True)
    assert wait.seen(pb.Task(id=7, status=pb.TASK_STATUS_RUNNING)) is None  # the reader has it
    assert wait.seen(pb.Task(id=7, status=pb.TASK_STATUS_SUCCESS)) is not None
    assert wait.resume(True) is None

    many = resumer("/taskhub.v1.TaskService/WaitTasks", svc.WaitTasksRequest(ids=[1, 2, 3]))
    many.seen(svc.WaitTasksResponse(tasks=[pb.Task(id=2)]))
    assert list(many.resume(True).ids) == [1, 3]
    many.seen(svc.WaitTasksResponse(tasks=[pb.Task(id=1), pb.Task(id=3)]))
    assert many.resume(True) is None

    watch = resumer("/taskhub.v1.TaskService/WatchTasks", svc.WatchTasksRequest())
    watch.resume(False)
    assert watch.pending is None  # never reached a server: it missed nothing
    watch.resume(True)
    assert watch.pending.overflow

    job = resumer("/taskhub.v1.FlowService/WatchJob", fpb.WatchJobRequest(job_id="j"))
    running = fpb.FlowJob(job_id="j", status=fpb.FLOW_JOB_STATUS_RUNNING)
    task = fpb.FlowTask(job_id="j", task_id="j_reader", party=fpb.FlowParty(role="guest", party_id=9))
    assert job.seen(fpb.WatchJobResponse(job=running)) is not None
    assert job.seen(fpb.WatchJobResponse(task=task)) is not None
    job.resume(True)
    assert job.seen(fpb.WatchJobResponse(job=running)) is None
    assert job.seen(fpb.WatchJobResponse(task=task)) is None
    done = fpb.FlowJob(job_id="j", status=fpb.FLOW_JOB_STATUS_SUCCESS)
    assert job.seen(fpb.WatchJobResponse(job=done)) is not None


def test_a_dead_first_address_is_passed_by(server):
    targets = f"127.0.0.1:{free_port()},{server.grpc_target}"
    with TaskhubClient(targets) as c:
        task = c.create_task(argv=["sh", "-c", "echo one; echo two"])
        assert [line.text for line in c.trace(task.id)] == ["one", "two"]
        assert c.wait(task.id).status == pb.TASK_STATUS_SUCCESS
        # Not repeatable once sent, but never sent to the dead address: it goes to the next.
        c.groups.create_template({"name": "failover-tpl",
                                  "task_groups": [{"tasks": [{"name": "a", "config": {"command": "true"}}]}]})
        assert "failover-tpl" in [t.name for t in c.groups.list_templates()]
    answer = run_cli("task", "wait", str(task.id), env={"TASKHUB_SERVER": targets})
    assert answer.returncode == 0 and "SUCCESS" in answer.stdout, answer.stderr
    answer = run_cli("task", "create", "--server", targets, "--", "echo", "cli")
    assert answer.returncode == 0 and answer.stdout.strip().isdigit(), answer.stderr
    gw = GatewayProcess(targets)
    try:
        got = http("GET", f"{gw.url}/v1/tasks/{task.id}")
        assert got.status == 200 and got.json()["status"] == "TASK_STATUS_SUCCESS"
    finally:
        gw.close()
    answer = run_cli("task", "list", "--server", f"127.0.0.1:{free_port()},127.0.0.1:{free_port()}")
    assert answer.returncode == 2 and "cannot reach any of the servers" in answer.stderr


def test_server_killed_under_streams_agent_and_gateway(tmp_path):
    """A task runs on an agent given both addresses; the SDK follows its log, its end, a batch wait
    and the namespace's changes through the list; the gateway too. The server is SIGKILLed; a second
    server opens the same database on the second address. The agent re-registers there with the
    run still going, every stream resumes: each line once, the end once, the task run once, and a
    create repeated with its request_id is not doubled."""
    pa, pb_ = free_port(), free_port()
    targets = f"127.0.0.1:{pa},127.0.0.1:{pb_}"
    db = tmp_path / "shared.db"
    flags = ("--no-local-node", "--http-port", "-1", "--node-timeout", "120")
    first = ServerProcess(tmp_path, ["--grpc-port", str(pa), *flags], db=db).start()
    second = ServerProcess(tmp_path, ["--grpc-port", str(pb_), *flags], db=db)
    agent = AgentProcess(targets, "failover-agent", tmp_path).start()
    # Both turn over the list for minutes: the second server starts in seconds, many on a loaded machine.
    gw = GatewayProcess(targets, "--retries", "30")
    go = tmp_path / "go"
    c = TaskhubClient(targets, create_retries=30)
    try:
        agent.wait_registered()
        script = (f"for i in 1 2 3; do echo line $i; done; while [ ! -e {go} ]; do sleep 0.05; done;"
                  " for i in 4 5 6; do echo line $i; done")
        task = c.create_task(argv=["sh", "-c", script])
        before = c.create_task(argv=["true"], request_id="failover-create-1")
        lines: list[str] = []
        results: dict[str, object] = {}
        watched: list = []
        threads = [threading.Thread(target=lambda: lines.extend(x.text for x in c.trace(task.id)), daemon=True),
                   threading.Thread(target=lambda: results.__setitem__("wait", c.wait(task.id)), daemon=True),
                   threading.Thread(target=lambda: results.__setitem__(
                       "wait_tasks", [t.id for t in c.wait_tasks([task.id, before.id])]), daemon=True)]
        watch = c.watch_tasks()

        def follow_changes():
            try:
                watched.extend(watch)
            except grpc.RpcError as e:
                assert e.code() == grpc.StatusCode.CANCELLED  # by the test, at its end
        threads.append(threading.Thread(target=follow_changes, daemon=True))
        run_script = f"while [ ! -e {go} ]; do sleep 0.05; done; echo ran"
        threads.append(threading.Thread(target=lambda: results.__setitem__(
            "run", c.run_task(argv=["sh", "-c", run_script])), daemon=True))
        http_lines: list[dict] = []

        def http_follow():
            with urllib.request.urlopen(f"{gw.url}/v1/tasks/{task.id}/logs", timeout=120) as resp:
                for raw in resp:
                    http_lines.append(json.loads(raw))
        threads.append(threading.Thread(target=http_follow, daemon=True))
        for t in threads:
            t.start()
        wait_for(lambda: len(lines) == 3 and sum(len(m.get("lines", ())) for m in http_lines) == 3,
                 what="the first lines, through the SDK and the gateway")
        wait_for(lambda: "wait_tasks" not in results and len(watched) >= 1, what="the watch to open")
        wait_for(lambda: len(c.list_tasks([pb.TASK_STATUS_RUNNING]).tasks) == 2, what="the task run_task made to run")

        first.kill()  # SIGKILL: the agent's run goes on (its lease), every stream breaks
        second.start()
        wait_for(lambda: agent.registrations() >= 2, timeout=120, what="the agent to re-register")
        assert any(f"registered as failover-agent with 127.0.0.1:{pb_}" in line for line in agent.output)
        go.touch()
        for t in threads[:3] + threads[4:]:
            t.join(120)
        ran = results["run"]  # ExecuteTask re-sent with its request_id: the same task, waited for to its end
        assert ran.status == pb.TASK_STATUS_SUCCESS and [x.text for x in c.trace(ran.id)] == ["ran"]
        assert lines == [f"line {i}" for i in range(1, 7)]
        assert [line["text"] for m in http_lines for line in m.get("lines", ())] == lines
        assert results["wait"].status == pb.TASK_STATUS_SUCCESS
        assert sorted(results["wait_tasks"]) == sorted([task.id, before.id])
        done = c.get_task(task.id)
        assert done.status == pb.TASK_STATUS_SUCCESS and done.retries == 0  # adopted, not run again
        assert any(m.overflow for m in watched)  # changes missed while no server was followed: list again
        watch.cancel()
        again = c.create_task(argv=["true"], request_id="failover-create-1")
        assert again.id == before.id
        assert len(c.list_tasks(limit=100).tasks) == 3
    finally:
        c.close()
        gw.close()
        agent.close()
        first.close()
        second.close()


def test_agent_and_clients_follow_the_scheduler_of_a_cluster(tmp_path, pg_url):
    """Three servers on one PostgreSQL. An agent and a client given followers first are sent on to
    the scheduler by its hint; the scheduler is SIGKILLed with a run on the agent and streams on
    it: the agent finds the next scheduler along its list with the run going on, and the streams
    resume on a follower, each line and the end once."""
    servers = []
    for i in range(3):  # one after the other: the first one is the scheduler
        (tmp_path / f"s{i}").mkdir()
        servers.append(ServerProcess(tmp_path / f"s{i}", ["--http-port", "-1", "--no-local-node", "--node-timeout",
                                                          "120"], db=pg_url).start())
    leader, f1, f2 = (s.grpc_target for s in servers)
    agent = AgentProcess(f"{f1},{f2},{leader}", "cluster-agent", tmp_path).start()
    go = tmp_path / "go"
    c = TaskhubClient(f"{leader},{f1},{f2}", create_retries=30)
    gw = None
    try:
        agent.wait_registered()
        assert any(f"{f1} is not the scheduler; connecting to the scheduler at {leader}" in line
                   for line in agent.output), agent.output
        assert any(f"registered as cluster-agent with {leader}" in line for line in agent.output)
        with TaskhubClient(f"{f1},{f2}") as via_followers:  # a node call on a follower: sent on to the scheduler
            assert [n.name for n in via_followers.nodes.list_nodes()] == ["cluster-agent"]
        gw = GatewayProcess(f"{leader},{f1},{f2}")
        got = http("GET", f"{gw.url}/v1/nodes")
        assert got.status == 200 and [n["name"] for n in got.json()["nodes"]] == ["cluster-agent"]

        script = f"echo line 1; while [ ! -e {go} ]; do sleep 0.05; done; echo line 2"
        task = c.create_task(argv=["sh", "-c", script])
        lines: list[str] = []
        ended: list = []
        threads = [threading.Thread(target=lambda: lines.extend(x.text for x in c.trace(task.id)), daemon=True),
                   threading.Thread(target=lambda: ended.append(c.wait(task.id)), daemon=True)]
        for t in threads:
            t.start()
        wait_for(lambda: lines == ["line 1"], what="the first line")

        servers[0].kill()
        wait_for(lambda: agent.registrations() >= 2, timeout=120, what="the agent to find the next scheduler")
        go.touch()
        for t in threads:
            t.join(120)
        assert lines == ["line 1", "line 2"]
        assert ended and ended[0].status == pb.TASK_STATUS_SUCCESS and ended[0].retries == 0
        answer = run_cli("node", "list", env={"TASKHUB_SERVER": f"{leader},{f1},{f2}"})
        assert answer.returncode == 0 and "cluster-agent" in answer.stdout, answer.stderr
        got = http("GET", f"{gw.url}/v1/nodes")  # the gateway's scheduler is gone: the next one, by the hint
        assert got.status == 200 and [n["name"] for n in got.json()["nodes"]] == ["cluster-agent"]
        got = http("GET", f"{gw.url}/v1/tasks/{task.id}")
        assert got.status == 200 and got.json()["status"] == "TASK_STATUS_SUCCESS"
    finally:
        c.close()
        if gw is not None:
            gw.close()
        agent.close()
        for s in servers:
            s.close()
