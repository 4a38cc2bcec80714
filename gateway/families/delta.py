"""Delta Node API (seed 000): /v1/task, /v1/task/{metadata,logs,result,list}.

A built task travels as the multipart field `file`: a taskhub.v1.TaskSpec in protobuf binary
form (what `client.delta.dump_task` writes), or as TaskSpec JSON, or delta-task's own serialized
task (`delta.serialize.dump_task`, a pickle: handed to DeltaService as bytes, never loaded here;
its result is the pickle Delta's `get_result` reads). Reads find tasks by id in
any namespace. Statuses fold to PENDING, RUNNING, FINISHED, ERROR.
Errors: {"detail": "..."} with the matching HTTP status.
"""
from __future__ import annotations

import base64

import grpc
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from taskhub.v1 import delta_service_pb2 as dpb
from taskhub.v1 import task_pb2 as pb
from taskhub.v1 import task_service_pb2 as svc

from ..errors import BadRequest, C, answers, json_response
from ..params import integer
from .common import TERMINAL, TIMEOUT, status_name, stubs

ANY = "*"
DELTA_ROLE = "delta.role"  # annotation of a Delta task's coordinator (server/delta/service.py)
MAX_LIST = 10_000
LOGS_WAIT = 60.0  # seconds a logs page waits for a line of a task still running (get_logs)
DELTA_STATUS = {
    pb.TASK_STATUS_RUNNING: "RUNNING", pb.TASK_STATUS_CANCELLING: "RUNNING", pb.TASK_STATUS_UNKNOWN: "RUNNING",
    pb.TASK_STATUS_SUCCESS: "FINISHED", pb.TASK_STATUS_FAILED: "ERROR", pb.TASK_STATUS_CANCELLED: "ERROR",
}


def render(status: int, code: grpc.StatusCode, message: str) -> web.Response:
    return json_response({"detail": message}, status)


def metadata(task: pb.Task) -> dict:
    return {
        "id": task.id, "name": task.spec.name,
        "type": "python" if task.spec.type == pb.TASK_TYPE_PYTHON else "command",
        "creator": task.spec.annotations.get("creator", ""), "created_at": task.create_time_ms,
        "status": DELTA_STATUS.get(task.status, "PENDING"), "enable_verify": False,
        "namespace": task.spec.namespace, "progress": task.progress, "detail_status": status_name(task.status),
    }


def is_pickle(data: bytes) -> bool:
    """delta-task's dump_task output: a pickle of protocol 2 or later (PROTO opcode first, STOP last)."""
    return len(data) > 2 and data[0] == 0x80 and data.rstrip()[-1:] == b"."


def parse_task(data: bytes) -> pb.TaskSpec:
    """A built task: TaskSpec as protobuf bytes, or as JSON."""
    if not data.strip():
        raise BadRequest("the uploaded task file is empty")
    try:
        if data.lstrip()[:1] == b"{":
            return json_format.Parse(data, pb.TaskSpec())
        spec = pb.TaskSpec.FromString(data)
    except (json_format.ParseError, DecodeError, UnicodeDecodeError, ValueError) as e:
        raise BadRequest(f"the uploaded file is not a built task (TaskSpec protobuf or JSON): {e}") from None
    if spec.type == pb.TASK_TYPE_UNSPECIFIED:
        raise BadRequest("the uploaded file is not a built task: it names no task type")
    return spec


async def get(tasks, task_id: int) -> pb.Task:
    return await tasks.GetTask(svc.GetTaskRequest(namespace=ANY, id=task_id), timeout=TIMEOUT)


def the_id(request: web.Request) -> int:
    return integer(request.query, "task_id", required=True, low=1)


@answers(render)
async def create(request: web.Request) -> web.Response:
    delta = stubs(request).delta
    tasks = stubs(request).tasks
    if not request.content_type.startswith("multipart/"):
        raise BadRequest("send the task as multipart/form-data with a field named 'file'")
    try:
        form = await request.post()
    except (ValueError, AssertionError, UnicodeDecodeError, HttpProcessingError) as e:
        raise BadRequest(f"the multipart body cannot be read: {e}") from None
    field = form.get("file")
    if field is None:
        raise BadRequest("the multipart body has no field named 'file'")
    data = field.file.read() if hasattr(field, "file") else str(field).encode()
    if is_pickle(data):
        task = await delta.CreateDeltaTask(dpb.CreateDeltaTaskRequest(task=data), timeout=TIMEOUT)
        return json_response({"task_id": task.id})
    spec = parse_task(data)
    task = await tasks.CreateTask(svc.CreateTaskRequest(
        spec=spec, request_id=request.headers.get("Idempotency-Key", "")), timeout=TIMEOUT)
    return json_response({"task_id": task.id})


@answers(render)
async def get_metadata(request: web.Request) -> web.Response:
    tasks = stubs(request).tasks
    return json_response(metadata(await get(tasks, the_id(request))))


@answers(render)
async def get_logs(request: web.Request) -> web.Response:
    tasks = stubs(request).tasks
    q = request.query
    task_id = the_id(request)
    start = integer(q, "start", 0, low=0)
    limit = integer(q, "limit", 20, low=1, high=MAX_LIST)
    # Delta's SDK (DeltaNode.trace) reads pages until an empty one, then asks the metadata and stops
    # at FINISHED. An empty page answered while the task runs lets it end between the two calls and
    # its last lines go unread; so a page waits (up to LOGS_WAIT) for a line or for the task's end,
    # and is empty only once the task ended and every line was read.
    call = tasks.TraceTask(svc.TraceTaskRequest(namespace=ANY, id=task_id, offset=start, follow=True),
                           timeout=LOGS_WAIT)
    out = []
    try:
        async for batch in call:
            for line in batch.lines:
                out.append({"id": line.seq, "created_at": line.time_ms, "message": line.text})
            if out:  # what was there at once: the next page waits for more
                break
    except grpc.aio.AioRpcError as e:
        if e.code() != grpc.StatusCode.DEADLINE_EXCEEDED:
            raise
    finally:
        call.cancel()
    return json_response(out[:limit])


@answers(render)
async def get_result(request: web.Request) -> web.Response:
    tasks = stubs(request).tasks
    task = await get(tasks, the_id(request))
    if task.status not in TERMINAL:
        raise BadRequest(f"task {task.id} has not finished (it is {status_name(task.status)})",
                         C.FAILED_PRECONDITION)
    if task.spec.annotations.get(DELTA_ROLE) == "coordinator":
        if task.status != pb.TASK_STATUS_SUCCESS:
            raise BadRequest(f"Delta task {task.id} ended {status_name(task.status)}: {task.error}",
                             C.FAILED_PRECONDITION)
        return web.Response(body=base64.b64decode(task.result), content_type="application/octet-stream")
    return web.Response(body=task.result.encode(), content_type="application/octet-stream")


@answers(render)
async def list_tasks(request: web.Request) -> web.Response:
    tasks = stubs(request).tasks
    q = request.query
    page = integer(q, "page", 1, low=1)
    size = integer(q, "page_size", 20, low=1, high=100)
    if page * size >= MAX_LIST:
        raise BadRequest(f"page * page_size must be below {MAX_LIST}")
    resp = await tasks.ListTasks(svc.ListTasksRequest(namespace=ANY, limit=page * size + 1), timeout=TIMEOUT)
    rows = resp.tasks[(page - 1) * size:]
    return json_response({"tasks": [metadata(t) for t in rows[:size]], "page": page, "page_size": size,
                          "has_next": len(rows) > size})


ROUTES = [("POST", "/v1/task", create), ("GET", "/v1/task/metadata", get_metadata),
          ("GET", "/v1/task/logs", get_logs), ("GET", "/v1/task/result", get_result),
          ("GET", "/v1/task/list", list_tasks)]
