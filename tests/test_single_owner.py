"""One owner each: a SQLite database has one server, an agent's files in a shared work
directory belong to one agent. A second server or agent started in the same place must not
touch the first one's running tasks, and no task may run twice at once."""
from __future__ import annotations

import signal
import socket
import subprocess
import sys

import psutil
from taskhub.v1 import task_pb2 as pb

from conftest import ServerProcess, wait_for
from node_agents import AgentProcess


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def running(c, task_id: int):
    return wait_for(lambda: (x := c.get_task(task_id)).status == pb.TASK_STATUS_RUNNING and x, 60,
                    what=f"task {task_id} running")


def test_two_agents_from_one_work_directory(server_factory, tmp_path):
    """The second agent neither kills the first's runs nor renews its lease: frozen, the first
    is fenced, and only then does the task's next attempt start on the second."""
    # 5 s: a lease the second agent keeps on a loaded machine (its run must be attempt 2, not 3)
    s = server_factory("--no-local-node", "--http-port", "-1", "--node-timeout", "5", "--lease-grace", "1")
    c = s.client()
    shared = tmp_path / "one-dir"
    agents = [AgentProcess(s.grpc_target, "first", tmp_path, work_dir=shared).start()]
    try:
        agents[0].wait_registered()
        marks = tmp_path / "marks"
        t = c.create_task(argv=["sh", "-c", f"echo $TASKHUB_ATTEMPT >> {marks}; sleep 60"], max_retries=2)
        first = running(c, t.id)
        assert first.node == "first"
        agents.append(AgentProcess(s.grpc_target, "second", tmp_path, work_dir=shared).start())
        agents[1].wait_registered()
        assert any("uses slot 1" in line and f"pid {agents[0].proc.pid} on host {socket.gethostname()}" in line
                   for line in agents[1].output), agents[1].output
        assert alive(first.pid) and c.get_task(t.id).status == pb.TASK_STATUS_RUNNING, "the second agent killed it"
        agents[0].proc.send_signal(signal.SIGSTOP)
        try:
            second = wait_for(lambda: (x := c.get_task(t.id)).node == "second" and x.status == pb.TASK_STATUS_RUNNING
                              and x, 60, what="attempt 2 running on the second agent")
            assert not alive(first.pid), "attempt 1 must have been fenced before attempt 2 started"
            assert second.retries == 1
        finally:
            agents[0].proc.send_signal(signal.SIGCONT)
        assert marks.read_text().split() == ["1", "2"]
        c.cancel_task(t.id)
        assert c.wait(t.id).status == pb.TASK_STATUS_CANCELLED
    finally:
        for a in agents:
            a.close()


def test_second_server_on_a_database_is_refused(server_factory, tmp_path):
    first = server_factory("--http-port", "-1")
    c = first.client()
    t = c.create_task(argv=["sleep", "30"])
    pid = running(c, t.id).pid
    second = subprocess.run(ServerProcess(tmp_path, ["--http-port", "-1"], db=first.db).args, cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert second.returncode != 0
    assert "in use by another taskhub server" in second.stderr, second.stderr
    assert f"pid {first.proc.pid} on host {socket.gethostname()}" in second.stderr
    assert alive(pid) and c.get_task(t.id).status == pb.TASK_STATUS_RUNNING
    assert "gRPC listening" not in second.stdout
    c.cancel_task(t.id)
    assert c.wait(t.id).status == pb.TASK_STATUS_CANCELLED


def test_db_url_of_an_unsupported_scheme_is_refused(tmp_path):
    for url in ("mysql://db/x", "sqlite3://x.db"):  # postgresql://: tests/test_postgres_e2e.py
        args = [sys.executable, "-m", "server.cli", "serve", "--db", url, "--grpc-port", "0", "--http-port", "-1"]
        p = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=120)
        scheme = url.split(":")[0]
        assert p.returncode != 0 and f"{scheme}:// databases are not supported by this build" in p.stderr, p.stderr
    assert list(tmp_path.iterdir()) == []  # no directory named "postgresql:" or anything else
