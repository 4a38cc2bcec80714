"""Task-group templates, instances and nodes (seed 003): /api/task/...

Bodies are JSON objects. A template is stored as the exact text posted, so querying it
returns it as stored. Errors: {"status": "error", "message": "..."} with 400/404/409.
"""
from __future__ import annotations

import json

import grpc
from aiohttp import web
from taskhub.v1 import node_service_pb2 as node_pb
from taskhub.v1 import task_group_service_pb2 as group_pb

from ..errors import BadRequest, answers, json_response
from .common import TIMEOUT, stubs

# Seed 003's instance status: 0 running, 1 stopped or failed.
RUNNING, STOPPED = 0, 1
# Seed 003's node status: 0 online, 1 offline.
ONLINE, OFFLINE = 0, 1


def render(status: int, code: grpc.StatusCode, message: str) -> web.Response:
    return json_response({"status": "error", "message": message}, status)


async def body_text(request: web.Request) -> str:
    raw = await request.read()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("the body must be UTF-8 JSON") from None


async def body_field(request: web.Request, field: str) -> str:
    """The string `field` of the JSON object body."""
    text = await body_text(request)
    try:
        data = json.loads(text)
    except ValueError as e:
        raise BadRequest(f"the body is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise BadRequest(f'the body must be a JSON object like {{"{field}": "..."}}')
    value = data.get(field)
    if not isinstance(value, str) or not value:
        raise BadRequest(f'the body needs "{field}" as a non-empty string')
    return value


def resources(node: node_pb.NodeInfo) -> str:
    return f"cpu_usage_percent:{round(node.cpu_percent)},memory_usage_percent:{round(node.memory_percent)}"


@answers(render)
async def create_template(request: web.Request) -> web.Response:
    groups = stubs(request).groups
    text = await body_text(request)
    try:
        json.loads(text)
    except ValueError as e:
        raise BadRequest(f"the body is not valid JSON: {e}") from None
    await groups.CreateTemplate(group_pb.CreateTemplateRequest(json=text), timeout=TIMEOUT)
    return json_response({"status": "success"})


@answers(render)
async def query_template(request: web.Request) -> web.Response:
    groups = stubs(request).groups
    name = await body_field(request, "name")
    template = await groups.GetTemplate(group_pb.GetTemplateRequest(name=name), timeout=TIMEOUT)
    return web.Response(text=template.json, content_type="application/json")


@answers(render)
async def deploy(request: web.Request) -> web.Response:
    groups = stubs(request).groups
    name = await body_field(request, "name")
    instance = await groups.Deploy(group_pb.DeployRequest(name=name), timeout=TIMEOUT)
    return json_response({"id": instance.id})


@answers(render)
async def query_instance(request: web.Request) -> web.Response:
    groups = stubs(request).groups
    instance_id = await body_field(request, "id")
    instance = await groups.GetInstance(group_pb.GetInstanceRequest(id=instance_id), timeout=TIMEOUT)
    running = instance.status == group_pb.INSTANCE_STATUS_RUNNING
    return json_response({"id": instance.id, "status": RUNNING if running else STOPPED})


@answers(render)
async def stop(request: web.Request) -> web.Response:
    groups = stubs(request).groups
    instance_id = await body_field(request, "id")
    resp = await groups.StopInstance(group_pb.StopInstanceRequest(id=instance_id), timeout=TIMEOUT)
    return json_response({"id": resp.id})


@answers(render)
async def list_nodes(request: web.Request) -> web.Response:
    nodes = stubs(request).nodes
    resp = await nodes.ListNodes(node_pb.ListNodesRequest(), timeout=TIMEOUT)
    return json_response({"nodes": [
        {"ip": n.address, "status": ONLINE if n.state == node_pb.NODE_STATE_ONLINE else OFFLINE,
         "resources": resources(n)}
        for n in resp.nodes]})


ROUTES = [
    ("POST", "/api/task/task_group", create_template),
    ("POST", "/api/task/query", query_template),
    ("POST", "/api/task/task_group/deploy", deploy),
    ("POST", "/api/task/task_group/query", query_instance),
    ("POST", "/api/task/task_group/stop", stop),
    ("GET", "/api/task/node", list_nodes),
]
