"""The Python faces: DeltaNode with built task classes, and the CLI."""
from __future__ import annotations

import io
import os
import re
import subprocess
import sys

import pytest

from client import DeltaNode, PythonTask

import sdk_tasks


def test_delta_node_python_task_trace_and_wait(server):
    node = DeltaNode(server.grpc_target)
    task_id = node.create_task(sdk_tasks.Countdown(3).build())
    assert isinstance(task_id, int)
    out = io.StringIO()
    assert node.trace(task_id, out=out) is True
    lines = out.getvalue().splitlines()
    assert [ln.split("  ", 1)[1] for ln in lines] == ["3...", "2...", "1...", "liftoff"]
    assert all(re.match(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d  ", ln) for ln in lines)
    assert node.wait(task_id) is True
    assert node.client.get_task(task_id).result == '{"counted":3}'


def test_delta_node_failure_and_command_task(server):
    node = DeltaNode(server.grpc_target)
    bad = node.create_task(sdk_tasks.Broken().build())
    assert node.wait(bad) is False
    assert node.trace(bad, out=io.StringIO()) is False
    hello = node.create_task(sdk_tasks.Hello().build())
    out = io.StringIO()
    assert node.trace(hello, out=out) is True
    assert out.getvalue().rstrip().endswith(f"hello from {hello}")


def test_task_class_in_main_is_refused():
    Local = type("Local", (PythonTask,), {"run": lambda self: None, "__module__": "__main__"})
    with pytest.raises(ValueError, match="importable module"):
        Local().build()


def cli(server, *args, check=True):
    p = subprocess.run([sys.executable, "-m", "client.cli", "task", "--server", server.grpc_target, *args],
                       capture_output=True, text=True, timeout=120)
    if check and p.returncode not in (0, 1):
        raise AssertionError(p.stderr)
    return p


def test_cli_create_trace_wait_list_cancel_delete(server):
    p = cli(server, "create", "--name", "steps", "--", "sh", "-c", "for i in 1 2 3; do echo step $i; done")
    task_id = p.stdout.strip()
    assert task_id.isdigit()
    trace = cli(server, "trace", task_id)
    assert trace.returncode == 0 and trace.stdout.splitlines() == ["step 1", "step 2", "step 3"]
    assert cli(server, "wait", task_id).returncode == 0
    assert re.search(rf"^\s*{task_id}\s+SUCCESS", cli(server, "list", "--status", "success").stdout, re.M)
    failing = cli(server, "create", "--", "false").stdout.strip()
    assert cli(server, "trace", failing).returncode == 1
    long = cli(server, "create", "--", "sleep", "30").stdout.strip()
    bad = cli(server, "delete", long, check=False)
    assert bad.returncode == 2 and "FAILED_PRECONDITION" in bad.stderr and "cancel it first" in bad.stderr
    assert "cancel requested" in cli(server, "cancel", long).stdout
    assert cli(server, "wait", long).returncode == 1
    assert cli(server, "delete", long).returncode == 0
    missing = cli(server, "get", long, check=False)
    assert missing.returncode == 2 and "NOT_FOUND" in missing.stderr
    ran = cli(server, "create", "--wait", "--", "true")
    assert ran.returncode == 0 and re.fullmatch(r"task \d+: SUCCESS\n", ran.stdout), ran.stdout
    ran_failing = cli(server, "create", "--wait", "--", "false", check=False)
    assert ran_failing.returncode == 1 and ": FAILED" in ran_failing.stdout
    py = cli(server, "create", "--python", "starter.examples:count", "--input", '{"n": 2}').stdout.strip()
    assert cli(server, "trace", py).stdout.splitlines() == ["step 1 of 2", "step 2 of 2"]
    unreachable = subprocess.run([sys.executable, "-m", "client.cli", "task", "--server", "127.0.0.1:1", "get", "1"],
                                 capture_output=True, text=True, timeout=60)
    assert unreachable.returncode == 2 and "cannot reach the server" in unreachable.stderr


def test_cli_global_flags_after_the_verb_and_a_closed_pipe(server):
    """kubectl style: --server, -n, --token, --tls-ca after the verb; `taskhub task list | head` ends quietly."""
    base = [sys.executable, "-m", "client.cli", "task"]
    made = subprocess.run(base + ["create", "--server", server.grpc_target, "-n", "fate", "--name", "after-verb",
                                  "--", "true"], capture_output=True, text=True, timeout=120)
    assert made.returncode == 0, made.stderr
    listed = subprocess.run(base + ["list", "-n", "fate", "--server", server.grpc_target, "--token", ""],
                            capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0, listed.stderr
    rows = listed.stdout.splitlines()[1:]
    assert rows and all(" fate " in r for r in rows) and any(r.endswith("after-verb") for r in rows)
    # The flag after the verb wins over the one before it.
    got = subprocess.run(base + ["--server", "127.0.0.1:1", "get", made.stdout.strip(), "--namespace", "fate",
                                 "--server", server.grpc_target], capture_output=True, text=True, timeout=120)
    assert got.returncode == 0 and '"name": "after-verb"' in got.stdout, got.stderr
    # The reader is gone before anything is written: no BrokenPipeError traceback.
    read_end, write_end = os.pipe()
    os.close(read_end)
    p = subprocess.run(base + ["list", "--server", server.grpc_target, "-A"], stdout=write_end,
                       stderr=subprocess.PIPE, text=True, timeout=120)
    os.close(write_end)
    assert p.stderr == "" and p.returncode == 141, p.stderr
