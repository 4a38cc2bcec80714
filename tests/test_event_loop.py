"""The server's event loop (server/event_loop.py): uvloop by default, asyncio's own with
`--loop asyncio`; on either, Python and command tasks run, log and end the same way. And the
gRPC set-up `taskhub serve` chooses (server/grpc_setup.py: the listener, fork support off), which
its tasks do not inherit."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
from taskhub.v1 import task_pb2 as pb

from conftest import REPO
from server import grpc_setup

ECHO_EXPERIMENTS = ["sh", "-c", 'echo "[${GRPC_EXPERIMENTS-unset}] [${GRPC_ENABLE_FORK_SUPPORT-unset}]"']


@pytest.mark.parametrize("flags, loop", [((), "uvloop"), (("--loop", "asyncio"), "asyncio")])
def test_serve_runs_tasks_on_the_loop_asked_for(server_factory, flags, loop):
    srv = server_factory("--python-workers", "1", *flags)
    assert any(line.endswith(f"; event loop {loop}") for line in srv.output), srv.output
    c = srv.client()
    python = c.run_task(callable="starter.examples:count", input={"n": 3})
    command = c.run_task(argv=["sh", "-c", "echo on the loop; exit 4"])
    assert python.status == pb.TASK_STATUS_SUCCESS, python
    assert command.status == pb.TASK_STATUS_FAILED and command.exit_code == 4, command
    assert "on the loop" in [line.text for line in c.trace(command.id)]


def test_an_unknown_loop_is_refused_with_the_choices():
    done = subprocess.run([sys.executable, "-m", "server.cli", "serve", "--loop", "trio"], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "choose from 'auto', 'uvloop', 'asyncio'" in done.stderr, done.stderr


def _listener_line(srv) -> str:
    return next(line for line in srv.output if "gRPC listening on" in line)


def test_serve_takes_the_older_grpc_listener_and_its_tasks_do_not_inherit_the_choice(server_factory, monkeypatch):
    monkeypatch.delenv("GRPC_EXPERIMENTS", raising=False)
    srv = server_factory("--python-workers", "1")
    expected = "GRPC_EXPERIMENTS=-event_engine_listener" if grpc_setup._measured() else "gRPC's default listener"
    assert expected in _listener_line(srv), srv.output
    c = srv.client()
    task = c.run_task(argv=ECHO_EXPERIMENTS)
    assert task.status == pb.TASK_STATUS_SUCCESS, task
    assert [line.text for line in c.trace(task.id)] == ["[unset] [unset]"]


def test_grpc_experiments_set_by_the_operator_stand(server_factory, monkeypatch):
    monkeypatch.setenv("GRPC_EXPERIMENTS", "-event_engine_client")
    srv = server_factory("--python-workers", "1")
    assert "(GRPC_EXPERIMENTS=-event_engine_client as set)" in _listener_line(srv), srv.output
    c = srv.client()
    task = c.run_task(argv=ECHO_EXPERIMENTS)
    assert [line.text for line in c.trace(task.id)] == ["[-event_engine_client] [unset]"]


# Forks while a call is in flight, the child exiting at once (as the server's spawn execs at once).
FORKS = """
import asyncio, os, sys
if sys.argv[1] == "set-up":
    import server.grpc_setup
import grpc

async def main():
    server = grpc.aio.server()
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    for _ in range(20):
        call = channel.unary_unary("/none.Service/Method")(b"", timeout=5)
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
        try:
            await call
        except grpc.RpcError:
            pass
    await server.stop(None)
asyncio.run(main())
"""


def test_the_server_imports_grpc_without_its_fork_handlers():
    """gRPC's fork handlers run in a forked child before it execs, and can hang it there (a CI run
    hung so: server/grpc_setup.py). grpcio logs each time they run while another thread is in
    gRPC; imported through grpc_setup, they never run."""
    def forks(how: str) -> str:
        done = subprocess.run([sys.executable, "-c", FORKS, how], cwd=REPO, capture_output=True, text=True,
                              timeout=120, env={k: v for k, v in os.environ.items() if not k.startswith("GRPC_")})
        assert done.returncode == 0, done.stderr
        return done.stderr
    assert "fork() handlers" not in forks("set-up")
    if grpc_setup._measured():  # the default this guards against, on the grpcio it was seen on
        assert "fork() handlers" in forks("plain")
