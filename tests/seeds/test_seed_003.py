"""Seed 003 (task management, node management), every example as written against a real `taskhub serve`.

Requests are the seed's paths and bodies. Instance ids ("business-instance-uuid" in the seed)
are the ones our deploy returned. The template's commands, /opt/apps/clean.sh and
/opt/apps/analyze.py, are programs the seed assumes are installed: creating and querying the
template use the seed's text unchanged; to deploy it, the test writes both programs under a
tmp dir and rewrites only those two paths in the template (nothing outside tmp is written).
"""
from __future__ import annotations

import json
import sys
import urllib.parse

import pytest
from conftest import http, wait_for
from node_agents import AgentProcess
from seedlib import UUID, ByType, documented, match, ok_json, send

from server.groups import INSTANCE_ANNOTATION

TEMPLATE = """{
  "name": "我的数据处理任务",
  "task_groups": [
    {
      "tasks": [
        {
          "name": "数据清洗器",
          "config": {
            "command": "/opt/apps/clean.sh"
          }
        },
        {
          "name": "数据分析器",
          "config": {
            "command": "/opt/apps/analyze.py"
          }
        }
      ]
    }
  ]
}"""
CREATE = "POST /api/task/task_group"
CREATED = '{\n  "status": "success"\n}'
QUERY_TEMPLATE = "POST /api/task/query"
BY_NAME = '{\n  "name": "我的数据处理任务"\n}'
DEPLOY = "POST /api/task/task_group/deploy"
DEPLOYED = '{\n  "id": "generated-business-instance-uuid"\n}'
QUERY_INSTANCE = "POST /api/task/task_group/query"
STOP = "POST /api/task/task_group/stop"
BY_ID = '{\n  "id": "business-instance-uuid"\n}'
INSTANCE_STATUS = '{\n  "id": "business-instance-uuid",\n  "status": 0\n}'
NODES = "GET /api/task/node"
NODE_LIST = """{
  "nodes": [
    {
      "ip": "192.168.1.100",
      "status": 0,
      "resources": "cpu_usage_percent:50,memory_usage_percent:30"
    },
    {
      "ip": "192.168.1.101",
      "status": 1,
      "resources": "cpu_usage_percent:0,memory_usage_percent:0"
    }
  ]
}"""
SEED_ID = "business-instance-uuid"
IP = ByType(str, r"(\d{1,3}\.){3}\d{1,3}", "an IPv4 address")
RESOURCES = ByType(str, r"cpu_usage_percent:\d+,memory_usage_percent:\d+", "cpu/memory usage")


def by_id(instance_id: str) -> str:
    return BY_ID.replace(SEED_ID, instance_id)  # the id our deploy returned


@pytest.fixture
def fresh(server):
    """The module's server, where the seed's template is removed again after the test."""
    yield server
    name = urllib.parse.quote(json.loads(TEMPLATE)["name"])
    assert http("DELETE", f"{server.http_url}/v1/taskgroups/templates/{name}").status in (200, 404)


def test_create_template(fresh):
    """1. 创建任务组模板."""
    match(ok_json(send(fresh.http_url, CREATE, TEMPLATE)), documented(CREATED))


def test_query_template(fresh):
    """2. 查询任务组模板: the template exactly as created."""
    ok_json(send(fresh.http_url, CREATE, TEMPLATE))
    answer = send(fresh.http_url, QUERY_TEMPLATE, BY_NAME)
    match(ok_json(answer), documented(TEMPLATE))
    assert answer.body.decode() == TEMPLATE


@pytest.fixture(scope="module")
def deployable(server, tmp_path_factory):
    """The seed's template, created with its two programs written under tmp (see the module doc)."""
    apps = tmp_path_factory.mktemp("opt") / "apps"
    apps.mkdir()
    programs = {
        "clean.sh": "#!/bin/sh\necho cleaning\nexec sleep 60\n",
        "analyze.py": f"#!{sys.executable}\nimport time\nprint('analysing', flush=True)\ntime.sleep(60)\n",
    }
    for name, text in programs.items():
        (apps / name).write_text(text)
        (apps / name).chmod(0o755)
    template = TEMPLATE.replace("/opt/apps/", f"{apps}/")  # only the two paths change
    assert json.loads(template)["name"] == json.loads(TEMPLATE)["name"]
    match(ok_json(send(server.http_url, CREATE, template)), documented(CREATED))
    return server


def deploy(server) -> str:
    body = ok_json(send(server.http_url, DEPLOY, BY_NAME))
    match(body, documented(DEPLOYED, id=UUID))
    return body["id"]


def logs_of_instance(server, instance_id: str) -> set[str]:
    c = server.client(namespace="*")
    tasks = c.list_tasks(namespace="*", limit=1000).tasks
    mine = [t for t in tasks if t.spec.annotations.get(INSTANCE_ANNOTATION) == instance_id]
    return {line.text for t in mine for line in c.trace(t.id, follow=False)}


def test_deploy(deployable):
    """3. 部署任务组: a new instance id, and both programs of the group run."""
    instance_id = deploy(deployable)
    wait_for(lambda: {"cleaning", "analysing"} <= logs_of_instance(deployable, instance_id),
             what="both programs to run")
    send(deployable.http_url, STOP, by_id(instance_id))


def test_query_instance(deployable):
    """4. 查询任务组状态: 0 while it runs."""
    instance_id = deploy(deployable)
    match(ok_json(send(deployable.http_url, QUERY_INSTANCE, by_id(instance_id))),
          documented(INSTANCE_STATUS, id=instance_id))
    send(deployable.http_url, STOP, by_id(instance_id))


def test_stop_instance(deployable):
    """5. 停止任务组: stops and removes the instance (a query afterwards finds nothing)."""
    instance_id = deploy(deployable)
    wait_for(lambda: {"cleaning", "analysing"} <= logs_of_instance(deployable, instance_id), what="programs to run")
    match(ok_json(send(deployable.http_url, STOP, by_id(instance_id))), documented(BY_ID, id=instance_id))
    assert send(deployable.http_url, QUERY_INSTANCE, by_id(instance_id)).status == 404


def test_list_nodes(server_factory, tmp_path):
    """节点管理 1. 查询节点列表: one node online (the server's own), one offline (an agent that died)."""
    server = server_factory("--node-timeout", "1")
    agent = AgentProcess(server.grpc_target, "seed-003-agent", tmp_path).start()
    try:
        agent.wait_registered()
        wait_for(lambda: len(ok_json(send(server.http_url, NODES))["nodes"]) == 2, what="the agent's node")
    finally:
        agent.kill()  # SIGKILL: it stops heartbeating and goes offline after --node-timeout
    body = wait_for(lambda: (b := ok_json(send(server.http_url, NODES))) and
                    sorted(n["status"] for n in b["nodes"]) == [0, 1] and b, what="the agent to be offline")
    body["nodes"].sort(key=lambda n: n["status"])
    match(body, documented(NODE_LIST, nodes__0__ip=IP, nodes__0__resources=RESOURCES,
                           nodes__1__ip=IP, nodes__1__resources=RESOURCES))
