"""Routes transcoded from TaskService's google.api.http annotations, and the gateway's process modes."""
from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import threading
import urllib.request

from conftest import REPO, http, wait_for

from client import make_spec


def url(server, path: str) -> str:
    return server.http_url + path


def test_create_get_list_cancel_delete(server):
    answer = http("POST", url(server, "/v1/tasks"),
                  {"namespace": "tc", "type": "TASK_TYPE_PYTHON", "callable": "starter.examples:count",
                   "input_json": json.dumps({"n": 100, "delay": 0.5}), "name": "counter"})
    assert answer.status == 200, answer
    task = answer.json()
    task_id = int(task["id"])
    assert task["spec"]["name"] == "counter" and re.fullmatch(r"[0-9a-f]{32}", task["uid"])
    got = http("GET", url(server, f"/v1/tasks/{task_id}?namespace=tc")).json()
    assert got["uid"] == task["uid"]
    assert http("GET", url(server, f"/v1/tasks/{task_id}")).status == 404  # not in "default"
    wait_for(lambda: http("GET", url(server, f"/v1/tasks/{task_id}?namespace=tc")).json()["status"]
             == "TASK_STATUS_RUNNING", what="running")
    listed = http("GET", url(server, "/v1/tasks?namespace=tc&statuses=running&statuses=TASK_STATUS_QUEUED")).json()
    assert [t["id"] for t in listed["tasks"]] == [str(task_id)]
    answer = http("DELETE", url(server, f"/v1/tasks/{task_id}?namespace=tc"))
    assert answer.status == 400 and answer.json()["code"] == 9  # FAILED_PRECONDITION
    answer = http("POST", url(server, f"/v1/tasks/{task_id}:cancel"), {"namespace": "tc", "reason": "test"})
    assert answer.status == 200 and answer.json()["cancelled"] is True
    final = [json.loads(ln) for ln in http("GET", url(server, f"/v1/tasks/{task_id}:wait?namespace=tc")).body.splitlines()]
    assert final[-1]["status"] == "TASK_STATUS_CANCELLED"
    assert http("DELETE", url(server, f"/v1/tasks/{task_id}?namespace=tc")).status == 200
    answer = http("GET", url(server, f"/v1/tasks/{task_id}?namespace=tc"))
    assert answer.status == 404 and set(answer.json()) == {"code", "message", "details"}


def test_run_route_streams_the_task_until_it_ends(server):
    answer = http("POST", url(server, "/v1/tasks:run"),
                  {"namespace": "tc", "type": "TASK_TYPE_COMMAND", "argv": ["true"], "name": "run-http"})
    assert answer.status == 200, answer
    stream = [json.loads(ln) for ln in answer.body.splitlines()]
    statuses = [s["status"] for s in stream]  # the task once committed (RUNNING if a node took it), then each change
    assert statuses[-1] == "TASK_STATUS_SUCCESS" and len(set(statuses)) == len(statuses)
    assert {s["spec"]["name"] for s in stream} == {"run-http"}
    bad = http("POST", url(server, "/v1/tasks:run"), {"type": "TASK_TYPE_COMMAND"})
    assert bad.status == 400 and "argv" in bad.json()["message"]


def test_execute_route_answers_with_the_task_as_it_ended(server):
    answer = http("POST", url(server, "/v1/tasks:execute"),
                  {"namespace": "tc", "type": "TASK_TYPE_COMMAND", "argv": ["sh", "-c", "sleep 0.3; exit 3"],
                   "name": "execute-http"})
    assert answer.status == 200, answer
    task = answer.json()
    assert task["status"] == "TASK_STATUS_FAILED" and task["exit_code"] == 3 and task["spec"]["name"] == "execute-http"
    bad = http("POST", url(server, "/v1/tasks:execute"), {"type": "TASK_TYPE_PYTHON"})
    assert bad.status == 400 and "callable" in bad.json()["message"]


def test_trace_follow_ndjson_every_line_in_order(server):
    n = 300
    task = server.client().create_task(
        argv=["sh", "-c", f"i=0; while [ $i -lt {n} ]; do echo line $i; i=$((i+1)); "
                          "[ $((i % 50)) -eq 0 ] && sleep 0.05; done"])
    # Opened right away: stored lines first, then live ones, then the end marker.
    with urllib.request.urlopen(url(server, f"/v1/tasks/{task.id}/logs?follow=true"), timeout=60) as resp:
        assert resp.headers["Content-Type"].startswith("application/x-ndjson")
        messages = [json.loads(line) for line in resp]
    lines = [ln for m in messages for ln in m["lines"]]
    assert [int(ln["seq"]) for ln in lines] == list(range(n))
    assert [ln["text"] for ln in lines] == [f"line {i}" for i in range(n)]
    assert messages[-1]["end"] is True and messages[-1]["status"] == "TASK_STATUS_SUCCESS"


def test_trace_server_sent_events_and_offset(server):
    c = server.client()
    task = c.create_task(argv=["sh", "-c", "echo a; echo b; echo c"])
    c.wait(task.id)
    answer = http("GET", url(server, f"/v1/tasks/{task.id}/logs?offset=1"), headers={"Accept": "text/event-stream"})
    assert answer.headers["Content-Type"].startswith("text/event-stream")
    events = [json.loads(chunk.removeprefix("data: ")) for chunk in answer.body.decode().split("\n\n") if chunk]
    assert [ln["text"] for e in events for ln in e["lines"]] == ["b", "c"]
    assert events[-1]["end"] is True
    answer = http("GET", url(server, f"/v1/tasks/{task.id}/logs?follow=false"))
    assert [ln["text"] for m in map(json.loads, answer.body.splitlines()) for ln in m["lines"]] == ["a", "b", "c"]
    assert http("GET", url(server, "/v1/tasks/99999999/logs")).status == 404
    assert http("GET", url(server, f"/v1/tasks/{task.id}/logs?offset=-1")).status == 400


def test_batch_create_and_describe_module(server):
    specs = [{"type": "TASK_TYPE_COMMAND", "argv": ["true"], "namespace": "batch"} for _ in range(3)]
    answer = http("POST", url(server, "/v1/tasks:batchCreate"), {"specs": specs})
    assert answer.status == 200 and len(answer.json()["tasks"]) == 3
    d = http("GET", url(server, "/v1/modules/starter.helloworld.auto")).json()
    assert [e["name"] for e in d["entries"]] == ["hook_task", "sleep_task"]
    assert http("GET", url(server, "/v1/modules/subprocess")).status == 403
    assert http("GET", url(server, "/v1/modules/a..b")).status == 400


def test_gateway_runs_alone_and_serve_without_http(server_factory, tmp_path):
    s = server_factory("--http-port", "-1")
    assert not s.http_url and not any("HTTP gateway" in line for line in s.output)
    proc = subprocess.Popen([sys.executable, "-m", "server.cli", "gateway", "--grpc", s.grpc_target, "--port", "0"],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        found: list[str] = []

        def pump():
            for line in proc.stdout:
                m = re.search(r"HTTP gateway listening on (\S+)", line)
                if m:
                    found.append(m.group(1))

        threading.Thread(target=pump, daemon=True).start()
        base = wait_for(lambda: found and found[0], what="the standalone gateway")
        task = s.client().create_task(make_spec(argv=["echo", "alone"]))
        s.client().wait(task.id)
        answer = http("GET", f"{base}/graphspaces/x/graphs/y/tasks")
        assert answer.status == 200 and answer.json() == {"tasks": []}
        assert http("GET", f"{base}/v1/task/result?task_id={task.id}").body == b"alone"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_sigterm_with_open_log_stream(server_factory):
    s = server_factory()
    task = s.client().create_task(callable="starter.examples:count", input={"n": 1000, "delay": 0.5})
    resp = urllib.request.urlopen(url(s, f"/v1/tasks/{task.id}/logs"), timeout=60)
    try:
        assert json.loads(resp.readline())  # the stream is open and live
        assert s.terminate(20) == 0
    finally:
        resp.close()


def test_node_and_task_group_services_are_transcoded(server):
    nodes = http("GET", url(server, "/v1/nodes")).json()["nodes"]
    assert any(n["local"] for n in nodes)
    assert http("GET", url(server, "/v1/nodes/no-such-node")).status == 404
    assert http("GET", url(server, "/v1/taskgroups/templates")).status == 200
    assert http("POST", url(server, "/v1/taskgroups/instances/none:stop"), {}).status == 404


def test_clients_leaving_log_streams_cause_no_errors(server):
    c = server.client()
    task = c.create_task(callable="starter.examples:count", input={"n": 1000, "delay": 0.05})
    for _ in range(5):
        with urllib.request.urlopen(url(server, f"/v1/tasks/{task.id}/logs?follow=true"), timeout=60) as resp:
            assert json.loads(resp.readline())["lines"]
    c.cancel_task(task.id)
    assert c.wait(task.id).status  # ended; the server still answers
    assert http("GET", url(server, f"/v1/tasks/{task.id}")).status == 200
    assert not [line for line in server.output if "Traceback" in line or "taskhub.gateway" in line]
