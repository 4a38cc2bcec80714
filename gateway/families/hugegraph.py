"""HugeGraph async tasks (seed 002): /graphspaces/{gs}/graphs/{g}/tasks...

The namespace of a route is "{gs}/{g}". HTTP Basic credentials are accepted and ignored.
Errors: {"exception": "...", "message": "...", "cause": ""} with 400/404 (and 403/503 ...).
"""
from __future__ import annotations

import shlex

import grpc
from aiohttp import web
from taskhub.v1 import task_pb2 as pb
from taskhub.v1 import task_service_pb2 as svc

from ..errors import BadRequest, C, answers, json_response
from ..params import boolean, integer, one, to_int
from .common import TIMEOUT, status_name, stubs, task_input

BASE = "/graphspaces/{gs}/graphs/{g}/tasks"
EXCEPTION = {
    C.NOT_FOUND: "NotFoundException",
    C.INVALID_ARGUMENT: "IllegalArgumentException",
    C.FAILED_PRECONDITION: "IllegalStateException",
    C.PERMISSION_DENIED: "ForbiddenException",
    C.UNAUTHENTICATED: "NotAuthorizedException",
    C.ALREADY_EXISTS: "ExistedException",
    C.UNAVAILABLE: "ServiceUnavailableException",
}


def render(status: int, code: grpc.StatusCode, message: str) -> web.Response:
    return json_response({"exception": EXCEPTION.get(code, "HugeException"), "message": message, "cause": ""}, status)


def task_json(task: pb.Task) -> dict:
    spec = task.spec
    python = spec.type == pb.TASK_TYPE_PYTHON
    return {
        "task_name": spec.name,
        "task_progress": task.progress,
        "task_create": task.create_time_ms,
        "task_status": status_name(task.status).lower(),
        "task_update": task.update_time_ms,
        "task_result": task.result,
        "task_retries": task.retries,
        "id": task.id,
        "task_type": "python" if python else "command",
        "task_callable": spec.callable if python else shlex.join(spec.argv),
        "task_input": task_input(spec),
    }


def namespace(request: web.Request) -> str:
    return f"{request.match_info['gs']}/{request.match_info['g']}"


def task_id(request: web.Request) -> int:
    return to_int(request.match_info["id"], "task id", low=1)


def status_filter(text: str | None) -> list[int]:
    if not text:
        return []
    key = "TASK_STATUS_" + text.strip().upper()
    if key not in pb.TaskStatus.keys() or key == "TASK_STATUS_UNSPECIFIED":
        names = ", ".join(status_name(v) for v in pb.TaskStatus.values() if v)
        raise BadRequest(f"unknown status {text!r}; one of {names}")
    return [pb.TaskStatus.Value(key)]


@answers(render)
async def list_tasks(request: web.Request) -> web.Response:
    tasks = stubs(request).tasks
    q = request.query
    statuses = status_filter(one(q, "status"))
    limit = integer(q, "limit", 100, low=1, high=10_000)
    resp = await tasks.ListTasks(svc.ListTasksRequest(namespace=namespace(request), statuses=statuses,
                                                      limit=limit), timeout=TIMEOUT)
    return json_response({"tasks": [task_json(t) for t in resp.tasks]})


@answers(render)
async def get_task(request: web.Request) -> web.Response:
    tasks = stubs(request).tasks
    task = await tasks.GetTask(svc.GetTaskRequest(namespace=namespace(request), id=task_id(request)),
                               timeout=TIMEOUT)
    return json_response(task_json(task))


@answers(render)
async def delete_task(request: web.Request) -> web.Response:
    tasks = stubs(request).tasks
    force = boolean(request.query, "force")
    await tasks.DeleteTask(svc.DeleteTaskRequest(namespace=namespace(request), id=task_id(request), force=force),
                           timeout=TIMEOUT)
    return web.Response(status=204)


@answers(render)
async def update_task(request: web.Request) -> web.Response:
    tasks = stubs(request).tasks
    action = one(request.query, "action", required=True)
    if action != "cancel":
        raise BadRequest(f"action must be 'cancel', got {action!r}")
    resp = await tasks.CancelTask(svc.CancelTaskRequest(namespace=namespace(request), id=task_id(request),
                                                        reason="cancelled over HTTP"), timeout=TIMEOUT)
    return json_response({"cancelled": resp.cancelled}, 202)


ONE_TASK = BASE + "/{id}"
ROUTES = [("GET", BASE, list_tasks), ("GET", ONE_TASK, get_task), ("DELETE", ONE_TASK, delete_task),
          ("PUT", ONE_TASK, update_task)]
