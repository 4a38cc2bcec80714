"""The server's event loop (server/event_loop.py): uvloop by default, asyncio's own with
`--loop asyncio`; on either, Python and command tasks run, log and end the same way."""
from __future__ import annotations

import subprocess
import sys

import pytest
from taskhub.v1 import task_pb2 as pb

from conftest import REPO


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
