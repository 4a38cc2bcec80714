"""A warm worker sets each run's environment and takes it back (server/node/run_env.py): the task
and the processes it starts see it, nothing of it stays after the run, and a value that differs
per task (the task token) costs no memory for good."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

from client.client import make_spec
from server.node.run_env import RunEnv
from taskhub.v1 import task_pb2 as pb

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

GROWTH = textwrap.dedent("""
    import os, sys
    from server.node.run_env import RunEnv
    def rss_kb():
        return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024
    env, runs = RunEnv(), 50_000
    set_and_take_back = {
        "run_env": lambda e: env.restore(env.apply(e)),
        "run_env back to back": lambda e: env.restore(env.apply(e), e),
        "os.environ": lambda e: (os.environ.update(e), os.environ.pop("TASKHUB_TOKEN")),
    }[sys.argv[1]]
    set_and_take_back({"TASKHUB_TOKEN": "tht_0_" + "0" * 40})
    before = rss_kb()
    for i in range(runs):
        set_and_take_back({"TASKHUB_TOKEN": f"tht_{i}_{i:040x}", "TASKHUB_SERVER": "127.0.0.1:50051"})
    print(rss_kb() - before)
""")


def _growth_kb(how: str) -> int:
    out = subprocess.run([sys.executable, "-c", GROWTH, how], cwd=REPO, capture_output=True, text=True, check=True)
    return int(out.stdout)


def test_a_token_per_run_costs_no_memory_for_good():
    # setenv keeps every distinct value: 50,000 tokens grow a process by ~5 MB for good
    assert _growth_kb("os.environ") > 3_000
    assert _growth_kb("run_env") < 500
    assert _growth_kb("run_env back to back") < 500


def _seen_by_a_child(name: str) -> str:
    return subprocess.run(["/bin/sh", "-c", f'printf %s "${{{name}-unset}}"'], capture_output=True, text=True).stdout


def test_the_run_and_its_children_see_the_environment_and_nothing_stays(monkeypatch):
    monkeypatch.setenv("TASKHUB_KEPT", "the worker's own")
    monkeypatch.delenv("TASKHUB_NEW", raising=False)
    env = RunEnv()
    for i in range(3):  # the same buffers, run after run
        undo = env.apply({"TASKHUB_NEW": f"task {i}", "TASKHUB_KEPT": f"task {i}'s"})
        assert os.environ["TASKHUB_NEW"] == f"task {i}" and os.getenv("TASKHUB_KEPT") == f"task {i}'s"
        assert _seen_by_a_child("TASKHUB_NEW") == f"task {i}"
        assert _seen_by_a_child("TASKHUB_KEPT") == f"task {i}'s"
        env.restore(undo)
        assert "TASKHUB_NEW" not in os.environ and _seen_by_a_child("TASKHUB_NEW") == "unset"
        assert os.environ["TASKHUB_KEPT"] == "the worker's own" == _seen_by_a_child("TASKHUB_KEPT")


def test_a_value_longer_than_its_buffer_and_one_the_task_changed_are_put_back(monkeypatch):
    monkeypatch.delenv("TASKHUB_NEW", raising=False)
    env = RunEnv()
    env.restore(env.apply({"TASKHUB_NEW": "short"}))
    long = "x" * 1000
    undo = env.apply({"TASKHUB_NEW": long})
    assert os.environ["TASKHUB_NEW"] == long == _seen_by_a_child("TASKHUB_NEW")
    os.environ["TASKHUB_NEW"] = "the task's own"  # the task sets it itself (setenv: libc's copy)
    assert _seen_by_a_child("TASKHUB_NEW") == "the task's own"
    env.restore(undo)
    assert "TASKHUB_NEW" not in os.environ and _seen_by_a_child("TASKHUB_NEW") == "unset"
    undo = env.apply({"TASKHUB_NEW": "again"})
    assert _seen_by_a_child("TASKHUB_NEW") == "again"
    del os.environ["TASKHUB_NEW"]  # and removes it
    env.restore(undo)
    assert "TASKHUB_NEW" not in os.environ and _seen_by_a_child("TASKHUB_NEW") == "unset"


def test_a_name_the_next_run_sets_again_stays_until_it_runs_and_no_longer(monkeypatch):
    monkeypatch.setenv("TASKHUB_KEPT", "the worker's own")
    monkeypatch.delenv("TASKHUB_NEW", raising=False)
    env = RunEnv()
    runs = [{"TASKHUB_NEW": "1", "TASKHUB_KEPT": "1's"}, {"TASKHUB_NEW": "2"}, {"TASKHUB_NEW": "3"}, {}]
    undo = env.apply(runs[0])
    for i, run in enumerate(runs[1:], 1):
        env.restore(undo, run)  # back to back: what `run` sets again stays until its apply
        assert os.environ["TASKHUB_KEPT"] == "the worker's own" == _seen_by_a_child("TASKHUB_KEPT")
        undo = env.apply(run)
        assert os.getenv("TASKHUB_NEW") == run.get("TASKHUB_NEW") and os.environ["TASKHUB_KEPT"] == "the worker's own"
        assert _seen_by_a_child("TASKHUB_NEW") == run.get("TASKHUB_NEW", "unset"), i
    env.restore(undo)
    undo = env.apply({"TASKHUB_NEW": "5"})
    env.restore(undo, {"TASKHUB_NEW": "6"})  # and then the run named does not come
    assert os.environ["TASKHUB_NEW"] == "5"
    env.settle()
    assert "TASKHUB_NEW" not in os.environ and _seen_by_a_child("TASKHUB_NEW") == "unset"
    env.restore(env.apply({"TASKHUB_NEW": "5"}), {"TASKHUB_NEW": "6"})
    undo = env.apply({"TASKHUB_OTHER": "x"})  # another run comes, which does not set it
    assert "TASKHUB_NEW" not in os.environ and _seen_by_a_child("TASKHUB_NEW") == "unset"
    env.restore(undo)
    undo = env.apply({"TASKHUB_NEW": "7"})
    os.environ["TASKHUB_NEW"] = "the task's own"  # a task that sets it itself: put back at once
    env.restore(undo, {"TASKHUB_NEW": "8"})
    assert "TASKHUB_NEW" not in os.environ and _seen_by_a_child("TASKHUB_NEW") == "unset"


def test_a_value_libc_cannot_hold_is_refused_as_os_environ_refuses_it():
    env = RunEnv()
    for bad in ({"TASKHUB_NEW": "a\0b"}, {"A=B": "x"}):
        try:
            env.apply(bad)
        except ValueError:
            continue
        raise AssertionError(f"{bad!r} was taken")


def test_each_task_of_one_worker_sees_its_own_env_and_token_and_none_of_the_last_ones(server_factory):
    srv = server_factory("--auth", "--python-workers", "1")
    c = srv.client(token=(srv.workdir / "admin.token").read_text().strip())
    names = ["RUN_ENV_PROBE", "TASKHUB_TOKEN"]
    for i, env in enumerate([{"RUN_ENV_PROBE": "first"}, {}, {"RUN_ENV_PROBE": "third" * 40}, {}]):
        t = c.run_task(callable="sdk_tasks:environment", input={"names": names}, env=env, timeout=60)
        assert t.status == pb.TASK_STATUS_SUCCESS, t
        seen = json.loads(t.result)
        probe, token = seen["task"]
        assert probe == env.get("RUN_ENV_PROBE") and token.startswith(f"tht_{t.id}_"), (i, seen)
        assert seen["child"] == [probe or "unset", token], (i, seen)


def test_tasks_back_to_back_in_one_worker_see_only_their_own_env(server_factory):
    srv = server_factory("--auth", "--python-workers", "1")
    c = srv.client(token=(srv.workdir / "admin.token").read_text().strip())
    names = ["RUN_ENV_PROBE", "TASKHUB_TOKEN"]
    # One worker and short runs: after the first, the worker holds the next ones in its line and
    # runs them back to back (server/node/pool.py), so a token stays placed between two runs.
    # Runs with the probe and without take turns in runs of two.
    specs = [make_spec(callable="sdk_tasks:environment_now", input={"names": names},
                       env={"RUN_ENV_PROBE": f"run {i}"} if i % 4 < 2 else {}) for i in range(200)]
    created = c.create_tasks(specs)
    ended = {t.id: t for t in c.wait_tasks([t.id for t in created])}
    for spec, made in zip(specs, created):
        t = ended[made.id]
        assert t.status == pb.TASK_STATUS_SUCCESS, t
        seen = json.loads(t.result)
        probe, token = seen["task"]
        assert probe == spec.env.get("RUN_ENV_PROBE"), (t.id, seen)
        assert token.startswith(f"tht_{t.id}_") and seen["libc"] == seen["task"], (t.id, seen)
    after = c.run_task(callable="sdk_tasks:environment", input={"names": names}, timeout=60)
    seen = json.loads(after.result)
    assert seen["task"][0] is None and seen["child"][0] == "unset", seen


def test_the_nodes_values_lie_beneath_a_specs_own(server_factory):
    srv = server_factory("--python-workers", "1")
    c = srv.client()
    names = ["TASKHUB_SERVER", "TASKHUB_DATA_DIR"]
    own = c.run_task(callable="sdk_tasks:environment", input={"names": names},
                     env={"TASKHUB_DATA_DIR": "/the/spec's/own"}, timeout=60)
    node = c.run_task(callable="sdk_tasks:environment", input={"names": names}, timeout=60)
    (server, data_dir), (server_after, node_dir) = json.loads(own.result)["task"], json.loads(node.result)["task"]
    assert data_dir == "/the/spec's/own" and json.loads(own.result)["child"][1] == data_dir
    assert node_dir and node_dir != data_dir and json.loads(node.result)["child"] == [server_after, node_dir]
    assert server and server == server_after  # the server's address, from the worker's start
