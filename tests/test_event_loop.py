"""The server's event loop (server/event_loop.py): uvloop by default, asyncio's own with
`--loop asyncio`; on either, Python and command tasks run, log and end the same way. And the
gRPC listener `taskhub serve` chooses (server/grpc_listener.py), which its tasks do not inherit."""
from __future__ import annotations

import subprocess
import sys

import pytest
from taskhub.v1 import task_pb2 as pb

from conftest import REPO
from server import grpc_listener

ECHO_EXPERIMENTS = ["sh", "-c", 'echo "[${GRPC_EXPERIMENTS-unset}]"']


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
    measured = grpc_listener.MEASURED[0] <= grpc_listener._version() < grpc_listener.MEASURED[1]
    expected = "GRPC_EXPERIMENTS=-event_engine_listener" if measured else "gRPC's default listener"
    assert expected in _listener_line(srv), srv.output
    c = srv.client()
    task = c.run_task(argv=ECHO_EXPERIMENTS)
    assert task.status == pb.TASK_STATUS_SUCCESS, task
    assert [line.text for line in c.trace(task.id)] == ["[unset]"]


def test_grpc_experiments_set_by_the_operator_stand(server_factory, monkeypatch):
    monkeypatch.setenv("GRPC_EXPERIMENTS", "-event_engine_client")
    srv = server_factory("--python-workers", "1")
    assert "(GRPC_EXPERIMENTS=-event_engine_client as set)" in _listener_line(srv), srv.output
    c = srv.client()
    task = c.run_task(argv=ECHO_EXPERIMENTS)
    assert [line.text for line in c.trace(task.id)] == ["[-event_engine_client]"]
