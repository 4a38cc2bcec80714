"""The legacy HTTP families on a real `taskhub serve`: aaas (seed 001), HugeGraph (seed 002), Delta (seed 000)."""
from __future__ import annotations

import io
import json
import re
import uuid

from conftest import http, wait_for

from client import DeltaNode, make_spec
from client.delta import dump_task

import sdk_tasks

HELLO = "starter.helloworld.auto"
SEED_URL = "/auto/run?module=starter.helloworld.auto&name=hook_task&bind_arg.example_task.range.start=5&task_ns=test"


def get(server, path: str, **kw):
    return http("GET", server.http_url + path, **kw)


def info(server, uid: str, ns: str = "") -> dict:
    answer = get(server, f"/auto/task_info?task_id={uid}" + (f"&task_ns={ns}" if ns else ""))
    assert answer.status == 200, answer
    body = answer.json()
    assert body["code"] == 0, body
    return body["data"]


def run(server, query: str) -> dict:
    answer = get(server, "/auto/run?" + query)
    assert answer.status == 200, answer
    body = answer.json()
    assert body["code"] == 0, body
    return body["data"]


def unique_ns(prefix: str = "t") -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


# -- aaas ---------------------------------------------------------------------------
def test_serve_prints_gateway_url(server):
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+", server.http_url)


def test_aaas_seed_example(server):
    data = run(server, SEED_URL.split("?", 1)[1])
    assert set(data) == {"task_id", "task_ns", "module", "name", "run_opts", "create_time"}
    assert re.fullmatch(r"[0-9a-f]{32}", data["task_id"])
    assert data["task_ns"] == "test" and data["module"] == HELLO and data["name"] == "hook_task"
    assert data["run_opts"] == {"bind_arg.example_task.range.start": "5", "extra": {}, "bind_arg": {}}
    assert isinstance(data["create_time"], float)

    done = wait_for(lambda: (d := info(server, data["task_id"], "test"))["done_flag"] and d, what="hook_task to end")
    assert done["done_flag"] == 1
    for key in ("task_id", "task_ns", "module", "name", "run_opts", "create_time"):
        assert done[key] == data[key]
    assert isinstance(done["process"]["pid"], int) and isinstance(done["process"]["ppid"], int)
    assert isinstance(done["done_time"], float) and done["done_time"] >= done["create_time"]
    assert "end_flag" not in done
    hi = done["task_resp"]["hi"]
    assert set(hi) == {"1", "2"}
    for step in ("1", "2"):
        assert hi[step]["from"] == "ExampleTask.check_state"
        assert hi[step]["step"] == int(step)
        assert isinstance(hi[step]["time"], float)
    # The entry received the nested bind args: range.start=5 counts 5, 6, 7.
    task = server.client(namespace="test").get_task(uid=data["task_id"])
    assert json.loads(task.spec.input_json) == {"example_task": {"range": {"start": "5"}}}
    assert json.loads(task.result) == {"total": 18}


def test_aaas_only_parse_describes_entries(server):
    body = get(server, f"/auto/run?module={HELLO}&only_parse=1").json()
    assert body["code"] == 0
    entries = {e["name"]: e for e in body["data"]["entries"]}
    assert set(entries) == {"hook_task", "sleep_task"}  # ExampleTask lives in another module
    [param] = entries["sleep_task"]["parameters"]
    assert param["name"] == "seconds" and param["default"] == 10 and param["required"] is False
    assert [p["name"] for p in entries["hook_task"]["parameters"]] == ["example_task"]  # ctx left out


def test_aaas_sleep_task_cancel_over_hugegraph(server):
    ns = unique_ns("gs")
    data = run(server, f"module={HELLO}&name=sleep_task&bind_arg.seconds=30&task_ns={ns}/g")
    running = wait_for(lambda: info(server, data["task_id"]).get("process"), what="sleep_task to start")
    assert running["pid"] > 0
    [task] = get(server, f"/graphspaces/{ns}/graphs/g/tasks").json()["tasks"]
    assert task["task_name"] == "sleep_task" and task["task_type"] == "python"
    wait_for(lambda: "sleep_task: 1 s of 30" in [ln.text for ln in server.client(namespace="*").trace(task["id"], follow=False)],
             what="the first log line")
    answer = http("PUT", server.http_url + f"/graphspaces/{ns}/graphs/g/tasks/{task['id']}?action=cancel")
    assert (answer.status, answer.json()) == (202, {"cancelled": True})
    done = wait_for(lambda: (d := info(server, data["task_id"], f"{ns}/g"))["done_flag"] and d, what="cancel")
    assert done["done_flag"] == 3 and "end_flag" not in done
    answer = http("PUT", server.http_url + f"/graphspaces/{ns}/graphs/g/tasks/{task['id']}?action=cancel")
    assert (answer.status, answer.json()) == (202, {"cancelled": False})


def test_aaas_end_flag_when_cancelled_while_queued(server):
    c = server.client(namespace="q")
    task = c.create_task(make_spec(callable="starter.examples:noop", node_selector={"no-such-label": "1"}))
    assert "process" not in info(server, task.uid)
    assert c.cancel_task(task.id).cancelled
    data = info(server, task.uid, "q")
    assert data["done_flag"] == 3 and data["end_flag"] == 1 and "process" not in data


def test_aaas_failure_done_flag_and_errors(server):
    data = run(server, f"module={HELLO}&name=no_such_entry&task_ns=x")
    done = wait_for(lambda: (d := info(server, data["task_id"]))["done_flag"] and d, what="failure")
    assert done["done_flag"] == 2
    for path, status in [
        ("/auto/run?module=os&name=system", 403),
        ("/auto/run?module=os&only_parse=1", 403),
        ("/auto/run?name=x", 400),
        ("/auto/run?module=starter.helloworld.auto", 400),
        (f"/auto/run?module={HELLO}&name=hook_task&bind_arg.a=1&bind_arg.a.b=2", 400),
        (f"/auto/run?module={HELLO}&name=hook_task&bind_arg..a=1", 400),
        (f"/auto/run?module={HELLO}&name=hook_task&task_ns=*", 400),
        (f"/auto/run?module={HELLO}&name=bad-name", 400),
        ("/auto/run?module=starter.nothing_here&only_parse=1", 404),
        ("/auto/task_info?task_id=" + "0" * 32, 404),
        ("/auto/task_info?task_id=xyz", 400),
        ("/auto/task_info", 400),
        (f"/auto/task_info?task_id={data['task_id']}&task_ns=elsewhere", 404),
    ]:
        answer = get(server, path)
        assert answer.status == status, (path, answer)
        body = answer.json()
        assert set(body) == {"code", "msg"} and body["code"] != 0 and body["msg"], (path, body)
    assert "not allowed" in get(server, "/auto/run?module=os&name=system").json()["msg"]


def test_aaas_refused_module_is_never_imported(server_factory, tmp_path):
    mods = tmp_path / "mods"
    mods.mkdir()
    for name in ("evilmod", "okmod"):
        (mods / f"{name}.py").write_text(
            "import os, pathlib\n"
            f"pathlib.Path({str(mods)!r}, '{name}.imported').write_text(str(os.getpid()))\n"
            "def entry(a, b=2, ctx=None):\n    'Adds.'\n    return a\n")
    s = server_factory("--task-path", str(mods), "--allow-module", "okmod")
    for query in ("module=evilmod&only_parse=1", "module=evilmod&name=entry"):
        body = get(s, "/auto/run?" + query).json()
        assert body["code"] != 0 and "not allowed" in body["msg"]
    assert not (mods / "evilmod.imported").exists()
    body = get(s, "/auto/run?module=okmod&only_parse=1").json()
    assert body["code"] == 0
    [entry] = body["data"]["entries"]
    assert [(p["name"], p["required"]) for p in entry["parameters"]] == [("a", True), ("b", False)]
    importer = int((mods / "okmod.imported").read_text())
    assert importer != s.proc.pid  # described in a subprocess, not in the server


# -- HugeGraph ------------------------------------------------------------------------
def test_hugegraph_list_get_and_fields(server):
    ns = unique_ns("gs")
    c = server.client(namespace=f"{ns}/hugegraph")
    cmd = c.create_task(argv=["sh", "-c", "echo 42"], name="answer")
    data = run(server, f"module={HELLO}&name=hook_task&task_ns={ns}/hugegraph")
    c.wait(cmd.id)
    wait_for(lambda: info(server, data["task_id"])["done_flag"], what="aaas task")
    base = f"/graphspaces/{ns}/graphs/hugegraph/tasks"
    auth = {"Authorization": "Basic YWRtaW46cGE="}  # accepted and ignored
    for status in ("SUCCESS", "success", "Success"):
        answer = get(server, f"{base}?status={status}", headers=auth)
        assert answer.status == 200
        tasks = answer.json()["tasks"]
        assert {t["task_name"] for t in tasks} == {"answer", "hook_task"}
    assert get(server, f"{base}?status=running").json() == {"tasks": []}
    assert len(get(server, f"{base}?limit=1").json()["tasks"]) == 1
    t = get(server, f"{base}/{cmd.id}").json()
    assert set(t) == {"task_name", "task_progress", "task_create", "task_status", "task_update", "task_result",
                      "task_retries", "id", "task_type", "task_callable", "task_input"}
    assert t["id"] == cmd.id and t["task_status"] == "success" and t["task_type"] == "command"
    assert t["task_callable"] == "sh -c 'echo 42'" and json.loads(t["task_input"]) == ["sh", "-c", "echo 42"]
    assert t["task_result"] == "42" and t["task_retries"] == 0 and t["task_progress"] == 100
    assert isinstance(t["task_create"], int) and t["task_update"] >= t["task_create"]
    [py] = [x for x in get(server, base).json()["tasks"] if x["task_type"] == "python"]
    assert py["task_callable"] == f"{HELLO}:hook_task" and json.loads(py["task_input"]) == {}
    # Another graph is another namespace.
    assert get(server, f"/graphspaces/{ns}/graphs/other/tasks/{cmd.id}").status == 404


def test_hugegraph_delete_semantics(server):
    ns = unique_ns("gs")
    c = server.client(namespace=f"{ns}/g")
    task = c.create_task(callable="starter.examples:count", input={"n": 100, "delay": 0.5})
    wait_for(lambda: c.get_task(task.id).pid, what="task to run")
    url = server.http_url + f"/graphspaces/{ns}/graphs/g/tasks/{task.id}"
    answer = http("DELETE", url)
    assert answer.status == 400 and "cancel" in answer.json()["message"]
    assert set(answer.json()) == {"exception", "message", "cause"}
    assert http("DELETE", url + "?force=maybe").status == 400
    answer = http("DELETE", url + "?force=true")
    assert answer.status == 204 and answer.body == b""
    answer = http("GET", url)
    assert answer.status == 404 and answer.json()["exception"]
    assert http("DELETE", url).status == 404
    # A finished task needs no force.
    done = c.create_task(argv=["true"])
    c.wait(done.id)
    assert http("DELETE", server.http_url + f"/graphspaces/{ns}/graphs/g/tasks/{done.id}").status == 204


def test_hugegraph_errors(server):
    base = server.http_url + "/graphspaces/a/graphs/b/tasks"
    for method, path, status in [("GET", "/999999", 404), ("GET", "/abc", 400), ("GET", "?limit=0", 400),
                                 ("GET", "?limit=x", 400), ("GET", "?status=bogus", 400),
                                 ("PUT", "/1", 400), ("PUT", "/1?action=pause", 400),
                                 ("PUT", "/999999?action=cancel", 404), ("DELETE", "/-3", 400)]:
        answer = http(method, base + path)
        assert answer.status == status, (method, path, answer)
        assert set(answer.json()) == {"exception", "message", "cause"}


# -- Delta ------------------------------------------------------------------------------
def test_delta_node_over_http(server):
    node = DeltaNode(server.http_url)
    task_id = node.create_task(sdk_tasks.Countdown(3).build())
    assert isinstance(task_id, int)
    out = io.StringIO()
    assert node.trace(task_id, out=out) is True
    assert [ln.split("  ", 1)[1] for ln in out.getvalue().splitlines()] == ["3...", "2...", "1...", "liftoff"]
    assert node.wait(task_id) is True
    bad = node.create_task(sdk_tasks.Broken().build())
    assert node.wait(bad) is False
    assert node.trace(bad, out=io.StringIO()) is False


def test_delta_routes(server):
    c = server.client(namespace=unique_ns("d"))
    task = c.create_task(argv=["sh", "-c", "for i in 0 1 2 3 4; do echo line $i; done; echo result"])
    c.wait(task.id)
    meta = get(server, f"/v1/task/metadata?task_id={task.id}").json()
    assert meta["id"] == task.id and meta["status"] == "FINISHED" and meta["enable_verify"] is False
    assert meta["name"] == "sh"
    logs = get(server, f"/v1/task/logs?task_id={task.id}&start=1&limit=3").json()
    assert [(x["id"], x["message"]) for x in logs] == [(1, "line 1"), (2, "line 2"), (3, "line 3")]
    assert all(isinstance(x["created_at"], int) for x in logs)
    assert get(server, f"/v1/task/logs?task_id={task.id}&start=100").json() == []
    answer = get(server, f"/v1/task/result?task_id={task.id}")
    assert answer.status == 200 and answer.body == b"result"
    page1 = get(server, "/v1/task/list?page=1&page_size=2").json()
    page2 = get(server, "/v1/task/list?page=2&page_size=2").json()
    assert len(page1["tasks"]) == 2 and page1["has_next"] is True
    assert not {t["id"] for t in page1["tasks"]} & {t["id"] for t in page2["tasks"]}
    assert page1["tasks"][0]["id"] > page2["tasks"][0]["id"]


def test_delta_upload_formats_and_errors(server):
    boundary = "b0undary"

    def upload(data: bytes, field: str = "file"):
        body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"t\"\r\n\r\n").encode() \
            + data + f"\r\n--{boundary}--\r\n".encode()
        return http("POST", server.http_url + "/v1/task", body,
                    headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})

    answer = upload(dump_task(make_spec(argv=["echo", "hi"], namespace="delta")))
    assert answer.status == 200 and isinstance(answer.json()["task_id"], int)
    answer = upload(b'{"type": "TASK_TYPE_COMMAND", "argv": ["true"]}')
    assert answer.status == 200
    for data, field in [(b"garbage\xff\x00", "file"), (b"", "file"), (b"{bad json", "file"), (b"x", "other"),
                        (dump_task(make_spec(callable="os:system")), "file")]:
        answer = upload(data, field)
        assert 400 <= answer.status < 500 and answer.json()["detail"], (data, answer)
    assert http("POST", server.http_url + "/v1/task", b"{}", {"Content-Type": "application/json"}).status == 400
    running = server.client().create_task(callable="starter.examples:count", input={"n": 50, "delay": 0.2})
    for path, status in [("/v1/task/metadata?task_id=99999999", 404), ("/v1/task/metadata", 400),
                         ("/v1/task/metadata?task_id=x", 400), ("/v1/task/logs?task_id=1&limit=0", 400),
                         ("/v1/task/logs?task_id=99999999", 404), (f"/v1/task/result?task_id={running.id}", 400),
                         ("/v1/task/list?page=0", 400), ("/v1/task/list?page_size=1000", 400)]:
        answer = get(server, path)
        assert answer.status == status, (path, answer)
        assert answer.json()["detail"]
    server.client().cancel_task(running.id)
