"""Seed 001 (aaas api), every example as written: the curl lines against a real `taskhub serve`.

Host and port are the test server's. The task_info example reads the task the create example
made, so its task_id is the one our create returned (the seed's came from its own run).
The module the first example describes, `starter.aaas.client`, ships with taskhub
(server/examples/starter/aaas/client.py), as does `starter.helloworld.auto`.
"""
from __future__ import annotations

import importlib
import json
import sys

import pytest
from conftest import http, wait_for
from seedlib import HEX32, INT, SECONDS, documented, match, ok_json, send

DESCRIBE = "curl 'http://127.0.0.1/auto/run?module=starter.aaas.client&only_parse=1'"
CREATE = ("curl 'http://127.0.0.1/auto/run?module=starter.helloworld.auto&name=hook_task"
          "&bind_arg.example_task.range.start=5&task_ns=test'")
TASK_INFO = ("curl --location --request GET "
             "'http://127.0.0.1:81/auto/task_info?task_id=bcfd6834886711eb869facde48001122&task_ns=test'")
SEED_TASK_ID = "bcfd6834886711eb869facde48001122"

CREATE_RESPONSE = documented("""
{
    "code": 0,
    "data": {
        "task_id": "bcfd6834886711eb869facde48001122",
        "task_ns": "test",
        "module": "starter.helloworld.auto",
        "name": "hook_task",
        "run_opts": {
            "bind_arg.example_task.range.start": "5",
            "extra": {},
            "bind_arg": {}
        },
        "create_time": 1616126469.8762
    }
}""", data__task_id=HEX32, data__create_time=SECONDS)

TASK_INFO_RESPONSE = documented("""
{
    "code": 0,
    "data": {
        "task_id": "bcfd6834886711eb869facde48001122",
        "task_ns": "test",
        "module": "starter.helloworld.auto",
        "name": "hook_task",
        "run_opts": {
            "bind_arg.example_task.range.start": "5",
            "extra": {},
            "bind_arg": {}
        },
        "create_time": 1616126469.8762,
        "process": {
            "pid": 13197,
            "ppid": 13183
        },
        "done_flag": 1,
        "done_time": 1616126470.183182,
        "task_resp": {
            "hi": {
                "1": {
                    "from": "ExampleTask.check_state",
                    "step": 1,
                    "time": 1616126470.134312
                },
                "2": {
                    "from": "ExampleTask.check_state",
                    "step": 2,
                    "time": 1616126470.138442
                }
            }
        }
    }
}""", data__task_id=HEX32, data__create_time=SECONDS, data__process__pid=INT, data__process__ppid=INT,
    data__done_time=SECONDS, data__task_resp__hi__1__time=SECONDS, data__task_resp__hi__2__time=SECONDS)

CLIENT_ENTRIES = {
    "start_task": ["module", "name", "task_ns", "bind_arg", "server"],
    "wait_task": ["task_id", "task_ns", "server", "timeout"],
    "run_task": ["module", "name", "task_ns", "bind_arg", "server", "timeout"],
    "task_info": ["task_id", "task_ns", "server"],
}


def test_describe_the_client_module(server):
    """查看服务描述: the service describes its own aaas client module, entry by entry."""
    body = ok_json(send(server.http_url, DESCRIBE))
    assert body["code"] == 0 and set(body) == {"code", "data"}
    data = body["data"]
    assert set(data) == {"module", "doc", "entries"} and data["module"] == "starter.aaas.client"
    assert data["doc"].startswith("aaas client entries")
    entries = {e["name"]: e for e in data["entries"]}
    assert {name: [p["name"] for p in e["parameters"]] for name, e in entries.items()} == CLIENT_ENTRIES
    for entry in data["entries"]:
        assert set(entry) == {"name", "doc", "parameters"} and entry["doc"]
        for p in entry["parameters"]:
            assert {"name", "kind", "required", "annotation"} <= set(p) <= {"name", "kind", "required",
                                                                               "annotation", "default"}
            assert p["required"] is ("default" not in p), p
    timeout = next(p for p in entries["run_task"]["parameters"] if p["name"] == "timeout")
    assert timeout == {"name": "timeout", "kind": "POSITIONAL_OR_KEYWORD", "required": False,
                       "annotation": "float", "default": 600.0}


def create_task(server) -> dict:
    body = ok_json(send(server.http_url, CREATE))
    match(body, CREATE_RESPONSE)
    return body["data"]


def test_create_task(server):
    """创建任务: the response is the seed's, field by field (task_id and create_time by type)."""
    data = create_task(server)
    assert data["task_id"] != SEED_TASK_ID


def test_task_info_of_the_created_task(server):
    """查看任务执行结果: once the task has ended, task_info answers the seed's shape."""
    created = create_task(server)
    example = TASK_INFO.replace(SEED_TASK_ID, created["task_id"])  # the id our create returned
    wait_for(lambda: ok_json(send(server.http_url, example))["data"]["done_flag"], what="hook_task to end")
    body = ok_json(send(server.http_url, example))
    match(body, TASK_INFO_RESPONSE)
    data = body["data"]
    for key in ("task_id", "create_time"):
        assert data[key] == created[key]
    # 响应数据说明: a pid means it ran; done_flag > 0 means it ended; no end_flag (it was not ended while queued).
    assert data["process"]["pid"] > 0 and data["done_time"] >= data["create_time"]
    steps = data["task_resp"]["hi"]
    assert steps["1"]["time"] <= steps["2"]["time"]


def test_client_module_runs_an_entry_and_waits(server):
    """starter.aaas.client as a task: run_task starts hook_task over /auto/run and waits for it."""
    query = ("/auto/run?module=starter.aaas.client&name=run_task&bind_arg.module=starter.helloworld.auto"
             "&bind_arg.name=hook_task&bind_arg.bind_arg.example_task.range.start=5&bind_arg.task_ns=test"
             f"&bind_arg.server={server.http_url}&bind_arg.timeout=60")
    outer = ok_json(http("GET", server.http_url + query))["data"]
    info_url = f"{server.http_url}/auto/task_info?task_id={outer['task_id']}"
    done = wait_for(lambda: (d := ok_json(http("GET", info_url))["data"])["done_flag"] and d, what="run_task to end")
    assert done["done_flag"] == 1, done
    inner = done["task_resp"]["task"]  # what wait_task read of the task it started
    match({"code": 0, "data": inner}, TASK_INFO_RESPONSE)
    assert inner["task_id"] != outer["task_id"]
    result = server.client(namespace="*").get_task(uid=outer["task_id"]).result
    assert json.loads(result)["task_id"] == inner["task_id"]


def import_example(module: str):
    """A module of server/examples/, imported here as the server's workers import it."""
    from server.node.pool import EXAMPLES_DIR
    sys.path.insert(0, EXAMPLES_DIR)
    try:
        return importlib.import_module(module)
    finally:
        sys.path.remove(EXAMPLES_DIR)


def test_client_module_as_functions(server):
    """The same entries called in-process; errors of the aaas routes surface as AaasError."""
    aaas = import_example("starter.aaas.client")
    started = aaas.start_task("starter.helloworld.auto", "sleep_task", task_ns="fn",
                              bind_arg={"seconds": 0.1}, server=server.http_url)
    assert started["run_opts"] == {"bind_arg.seconds": "0.1", "extra": {}, "bind_arg": {}}
    done = aaas.wait_task(started["task_id"], "fn", server=server.http_url, timeout=60)
    assert done["done_flag"] == 1 and done["task_id"] == started["task_id"]
    assert aaas.task_info(started["task_id"], server=server.http_url)["task_ns"] == "fn"
    with pytest.raises(aaas.AaasError, match="did not succeed"):
        aaas.run_task("starter.helloworld.auto", "no_such_entry", server=server.http_url, timeout=60)
    with pytest.raises(aaas.AaasError, match="not allowed"):
        aaas.start_task("os", "system", server=server.http_url)
    with pytest.raises(aaas.AaasError, match="code 5"):
        aaas.task_info("0" * 32, server=server.http_url)
