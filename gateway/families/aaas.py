"""aaas (seed 001): /auto/run and /auto/task_info over TaskService.

A run becomes a PYTHON task calling `<module>:<name>` with the `bind_arg.*` query values as
nested keyword arguments (all strings, as a query gives them). What the seed echoes back
(module, name, run_opts) is kept in the task's annotations, so task_info works for any task.

done_flag: 0 not ended (queued or running), 1 succeeded, 2 failed, 3 cancelled.
end_flag: 1 when the task was cancelled before it started running.
Errors: {"code": <gRPC status code, non-zero>, "msg": "..."} with the matching HTTP status.
"""
from __future__ import annotations

import json
import re

import grpc
from aiohttp import web
from taskhub.v1 import task_pb2 as pb
from taskhub.v1 import task_service_pb2 as svc

from ..errors import BadRequest, answers, json_response
from ..params import boolean, one
from ..transcode import to_json
from .common import TIMEOUT, stubs

CONTROL = ("module", "name", "task_ns", "only_parse")
BIND = "bind_arg."
DONE_FLAG = {pb.TASK_STATUS_SUCCESS: 1, pb.TASK_STATUS_FAILED: 2, pb.TASK_STATUS_CANCELLED: 3}
STARTED = frozenset({pb.TASK_STATUS_RUNNING, pb.TASK_STATUS_CANCELLING, pb.TASK_STATUS_UNKNOWN})
UID = re.compile(r"^[0-9a-fA-F]{32}$")
ANN_MODULE, ANN_NAME, ANN_RUN_OPTS = "aaas.module", "aaas.name", "aaas.run_opts"


def render(status: int, code: grpc.StatusCode, message: str) -> web.Response:
    return json_response({"code": code.value[0] or 2, "msg": message}, status)


def ok(data) -> web.Response:
    return json_response({"code": 0, "data": data})


def nest(target: dict, path: str, value: str, key: str) -> None:
    """bind_arg.a.b=v -> target["a"]["b"] = "v"."""
    names = path.split(".")
    if not all(names):
        raise BadRequest(f"query parameter {key!r} has an empty name part")
    for name in names[:-1]:
        target = target.setdefault(name, {})
        if not isinstance(target, dict):
            raise BadRequest(f"query parameter {key!r} sets inside {name!r}, which another bind_arg gives a value")
    if isinstance(target.get(names[-1]), dict):
        raise BadRequest(f"query parameter {key!r} gives a value to {names[-1]!r}, which other bind_args nest into")
    target[names[-1]] = value


def run_data(task: pb.Task) -> dict:
    spec = task.spec
    ann = spec.annotations
    module, _, entry = spec.callable.partition(":")
    try:
        run_opts = json.loads(ann[ANN_RUN_OPTS]) if ANN_RUN_OPTS in ann else {"extra": {}, "bind_arg": {}}
    except ValueError:
        run_opts = {"extra": {}, "bind_arg": {}}
    return {
        "task_id": task.uid, "task_ns": spec.namespace, "module": ann.get(ANN_MODULE, module),
        "name": ann.get(ANN_NAME, entry or spec.name), "run_opts": run_opts,
        "create_time": task.create_time_ms / 1000,
    }


def task_info(task: pb.Task) -> dict:
    data = run_data(task)
    if task.pid:
        data["process"] = {"pid": task.pid, "ppid": task.ppid}
    data["done_flag"] = DONE_FLAG.get(task.status, 0)
    if task.done_time_ms:
        data["done_time"] = task.done_time_ms / 1000
    try:
        data["task_resp"] = json.loads(task.response_json or "{}")
    except ValueError:
        data["task_resp"] = {}
    if task.status == pb.TASK_STATUS_CANCELLED and task.cancelled_from and task.cancelled_from not in STARTED:
        data["end_flag"] = 1
    if task.status == pb.TASK_STATUS_FAILED and task.error:
        data["error"] = task.error
    return data


def describe_data(resp: svc.DescribeModuleResponse) -> dict:
    data = to_json(resp)
    for entry in data["entries"]:
        for p in entry["parameters"]:
            text = p.pop("default_json")
            if text:
                p["default"] = json.loads(text)
    return data


@answers(render)
async def run(request: web.Request) -> web.Response:
    tasks = stubs(request).tasks
    q = request.query
    module = one(q, "module", required=True)
    if not module:
        raise BadRequest("query parameter 'module' is empty")
    if boolean(q, "only_parse"):
        resp = await tasks.DescribeModule(svc.DescribeModuleRequest(module=module), timeout=TIMEOUT)
        return ok(describe_data(resp))
    name = one(q, "name", required=True)
    if not name:
        raise BadRequest("query parameter 'name' is empty")
    namespace = one(q, "task_ns") or "default"
    run_opts: dict = {}
    bind_args: dict = {}
    for key in dict.fromkeys(q.keys()):
        if key in CONTROL:
            continue
        value = one(q, key)
        run_opts[key] = value
        if key.startswith(BIND):
            nest(bind_args, key[len(BIND):], value, key)
    run_opts.setdefault("extra", {})
    run_opts.setdefault("bind_arg", {})
    spec = pb.TaskSpec(
        type=pb.TASK_TYPE_PYTHON, namespace=namespace, name=name, callable=f"{module}:{name}",
        input_json=json.dumps(bind_args, ensure_ascii=False),
        annotations={ANN_MODULE: module, ANN_NAME: name, ANN_RUN_OPTS: json.dumps(run_opts, ensure_ascii=False)},
    )
    task = await tasks.CreateTask(svc.CreateTaskRequest(
        spec=spec, request_id=request.headers.get("Idempotency-Key", "")), timeout=TIMEOUT)
    return ok(run_data(task))


@answers(render)
async def info(request: web.Request) -> web.Response:
    tasks = stubs(request).tasks
    q = request.query
    uid = one(q, "task_id", required=True)
    if not UID.match(uid):
        raise BadRequest(f"task_id must be 32 hexadecimal characters, got {uid!r}")
    namespace = one(q, "task_ns") or "*"
    task = await tasks.GetTask(svc.GetTaskRequest(namespace=namespace, uid=uid.lower()), timeout=TIMEOUT)
    return ok(task_info(task))


ROUTES = [("GET", "/auto/run", run), ("GET", "/auto/task_info", info)]
