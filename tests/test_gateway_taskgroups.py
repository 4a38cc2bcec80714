"""Seed 003 over HTTP: task-group templates, instances and the node list, on a real server."""
from __future__ import annotations

import json
import re
import uuid

import pytest

from conftest import http, wait_for

TEMPLATE = {
    "name": "我的数据处理任务",
    "task_groups": [{"tasks": [
        {"name": "数据清洗器", "config": {"command": "echo cleaning; sleep 30"}},
        {"name": "数据分析器", "config": {"command": "echo analysing; sleep 30"}},
    ]}],
}


def post(server, path, body):
    return http("POST", server.http_url + path, body, {"Content-Type": "application/json"})


def test_seed_003_flow(server):
    text = json.dumps(TEMPLATE, ensure_ascii=False, indent=2)
    created = post(server, "/api/task/task_group", text)
    assert created.status == 200 and created.json() == {"status": "success"}
    dup = post(server, "/api/task/task_group", text)
    assert dup.status == 409 and dup.json()["status"] == "error" and TEMPLATE["name"] in dup.json()["message"]

    stored = post(server, "/api/task/query", {"name": TEMPLATE["name"]})
    assert stored.status == 200 and stored.body.decode() == text  # exactly as stored
    assert stored.json() == TEMPLATE

    deployed = post(server, "/api/task/task_group/deploy", {"name": TEMPLATE["name"]})
    assert deployed.status == 200
    instance_id = deployed.json()["id"]
    assert str(uuid.UUID(instance_id)) == instance_id
    assert post(server, "/api/task/task_group/query", {"id": instance_id}).json() == {"id": instance_id, "status": 0}

    # Its tasks are ordinary tasks: listed and running.
    wait_for(lambda: {"数据清洗器", "数据分析器"} <= {t.spec.name for t in server.client().list_tasks(
        ["running"], namespace="*", limit=1000).tasks}, what="group tasks running")

    stopped = post(server, "/api/task/task_group/stop", {"id": instance_id})
    assert stopped.status == 200 and stopped.json() == {"id": instance_id}
    gone = post(server, "/api/task/task_group/query", {"id": instance_id})
    assert gone.status == 404 and instance_id in gone.json()["message"]


def test_failed_group_reports_status_1(server):
    name = "fails-" + uuid.uuid4().hex[:6]
    body = {"name": name, "task_groups": [{"tasks": [{"name": "bad", "config": {"command": "exit 4"}}]}]}
    assert post(server, "/api/task/task_group", body).json() == {"status": "success"}
    instance_id = post(server, "/api/task/task_group/deploy", {"name": name}).json()["id"]
    wait_for(lambda: post(server, "/api/task/task_group/query", {"id": instance_id}).json()["status"] == 1,
             what="instance status 1")


def test_node_list(server):
    answer = http("GET", server.http_url + "/api/task/node")
    assert answer.status == 200
    nodes = answer.json()["nodes"]
    assert len(nodes) == 1
    [local] = nodes
    assert local["ip"] == "127.0.0.1" and local["status"] == 0
    assert re.fullmatch(r"cpu_usage_percent:\d+,memory_usage_percent:\d+", local["resources"])


@pytest.mark.parametrize("path,body,status,needle", [
    ("/api/task/task_group", "{not json", 400, "not valid JSON"),
    ("/api/task/task_group", "", 400, "not valid JSON"),
    ("/api/task/task_group", {"name": "x"}, 400, "task_groups"),
    ("/api/task/task_group", {"name": "x", "task_groups": [{"tasks": [{"name": "t", "config": {}}]}]}, 400, "command"),
    ("/api/task/query", {"name": "no such template"}, 404, "no such template"),
    ("/api/task/query", {}, 400, '"name"'),
    ("/api/task/query", [], 400, "JSON object"),
    ("/api/task/query", {"name": 5}, 400, '"name"'),
    ("/api/task/task_group/deploy", {"name": "no such template"}, 404, "no such template"),
    ("/api/task/task_group/query", {"id": "00000000-0000-0000-0000-000000000000"}, 404, "00000000"),
    ("/api/task/task_group/query", b"\xff\xfe", 400, "UTF-8"),
    ("/api/task/task_group/stop", {"id": "nope"}, 404, "nope"),
    ("/api/task/task_group/stop", "null", 400, "JSON object"),
])
def test_errors(server, path, body, status, needle):
    answer = post(server, path, body)
    assert answer.status == status, answer
    assert answer.json()["status"] == "error" and needle in answer.json()["message"]
