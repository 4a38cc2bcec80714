"""Generic HTTP/JSON transcoding of gRPC services from their `google.api.http` annotations.

For every annotated RPC of the listed services: the path template becomes an aiohttp route;
path variables, query parameters and the body (as the rule's `body` says) fill the request
message through google.protobuf.json_format; a unary answer is the response message as JSON
(proto field names, defaults included); a server-streaming answer is NDJSON, one message per
line, or server-sent events when the client sends `Accept: text/event-stream`. Errors are
google.rpc.Status-shaped JSON: {"code": <gRPC code>, "message": "...", "details": []}.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass

import grpc
from aiohttp import web
from google.api import annotations_pb2
from google.protobuf import descriptor as _d
from google.protobuf import descriptor_pool, json_format, message_factory
# The generated modules register the services in the default pool when imported.
from taskhub.v1 import (cluster_pb2, flow_service_pb2, node_service_pb2, task_group_service_pb2,  # noqa: F401
                        task_service_pb2)

from .errors import BadRequest, answers, error_of, json_response
from .params import to_bool

# Services whose annotated RPCs the gateway serves. Add a service's full name here once its
# servicer runs in `taskhub serve`.
TRANSCODED_SERVICES = ["taskhub.v1.TaskService", "taskhub.v1.NodeService", "taskhub.v1.TaskGroupService",
                       "taskhub.v1.FlowService", "taskhub.v1.ClusterService"]
UNARY_TIMEOUT = 60.0
# Unary calls that answer when a task has ended: no deadline (the HTTP client's disconnect ends
# the call; the task goes on).
UNTIL_ENDED = frozenset({"/taskhub.v1.TaskService/ExecuteTask"})
NDJSON = "application/x-ndjson"


def to_json(message) -> dict:
    return json_format.MessageToDict(message, preserving_proto_field_name=True,
                                     always_print_fields_with_no_presence=True)


def render_status(status: int, code: grpc.StatusCode, message: str) -> web.Response:
    return json_response({"code": code.value[0], "message": message, "details": []}, status)


@dataclass
class Binding:
    """One HTTP rule of one RPC."""

    method: _d.MethodDescriptor
    verb: str           # GET, POST, ...
    template: str       # "/v1/tasks/{id}:cancel"
    body: str           # "", "*" or a field name
    route: str = ""     # the aiohttp path
    variables: dict | None = None  # aiohttp variable name -> field path

    @property
    def rpc_path(self) -> str:
        return f"/{self.method.containing_service.full_name}/{self.method.name}"


def bindings_of(service: _d.ServiceDescriptor) -> list[Binding]:
    out = []
    for method in service.methods:
        opts = method.GetOptions()
        if not opts.HasExtension(annotations_pb2.http):
            continue
        rule = opts.Extensions[annotations_pb2.http]
        for r in [rule, *rule.additional_bindings]:
            kind = r.WhichOneof("pattern")
            if kind is None:
                continue
            if kind == "custom":
                verb, template = r.custom.kind.upper(), r.custom.path
            else:
                verb, template = kind.upper(), getattr(r, kind)
            b = Binding(method, verb, template, r.body)
            b.route, b.variables = route_of(template)
            out.append(b)
    return out


_VAR = re.compile(r"\{([A-Za-z_][\w.]*)(?:=([^}]*))?\}")


def route_of(template: str) -> tuple[str, dict[str, str]]:
    """'/v1/tasks/{id}:cancel' -> ('/v1/tasks/{v0:[^/:]+}:cancel', {'v0': 'id'})."""
    variables: dict[str, str] = {}
    parts, pos = [], 0
    for m in _VAR.finditer(template):
        parts.append(_literal(template[pos:m.start()]))
        name = f"v{len(variables)}"
        variables[name] = m.group(1)
        parts.append("{%s:%s}" % (name, _pattern(m.group(2) or "*")))
        pos = m.end()
    parts.append(_literal(template[pos:]))
    return "".join(parts), variables


def _literal(text: str) -> str:
    if "{" in text or "}" in text:
        raise ValueError(f"unsupported path template text {text!r}")
    return text


def _pattern(segments: str) -> str:
    out = []
    for seg in segments.split("/"):
        out.append("[^/:]+" if seg == "*" else ".+" if seg == "**" else re.escape(seg))
    return "/".join(out)


# -- request building ---------------------------------------------------------------
def _field(desc: _d.Descriptor, name: str) -> _d.FieldDescriptor | None:
    f = desc.fields_by_name.get(name)
    if f is None:
        f = next((x for x in desc.fields if x.json_name == name), None)
    return f


def _scalar(field: _d.FieldDescriptor, text: str, where: str):
    if field.type == _d.FieldDescriptor.TYPE_BOOL:
        return to_bool(text, where)
    if field.type == _d.FieldDescriptor.TYPE_ENUM:
        enum = field.enum_type
        if text.lstrip("-").isdigit():
            if int(text) not in enum.values_by_number:
                raise BadRequest(f"{where}: {text} is not a value of {enum.name}")
            return int(text)
        prefix = re.sub(r"(?<!^)(?=[A-Z])", "_", enum.name).upper() + "_"  # TaskStatus -> TASK_STATUS_
        for candidate in (text, text.upper(), prefix + text.upper()):
            if candidate in enum.values_by_name:
                return candidate
        names = ", ".join(v.name for v in enum.values)
        raise BadRequest(f"{where}: unknown value {text!r}; one of {names}")
    if field.type == _d.FieldDescriptor.TYPE_MESSAGE:
        raise BadRequest(f"{where} is a message; set its fields as {where}.<field>")
    return text  # json_format parses numbers (and checks them) from strings


def _repeated(field: _d.FieldDescriptor) -> bool:
    flag = getattr(field, "is_repeated", None)  # protobuf >= 5.29; `label` before
    return flag if flag is not None else field.label == _d.FieldDescriptor.LABEL_REPEATED


def _put(target: dict, desc: _d.Descriptor, path: str, text: str, origin: str) -> None:
    names = path.split(".")
    for i, name in enumerate(names):
        field = _field(desc, name)
        where = f"{origin} {'.'.join(names[:i + 1])!r}"
        if field is None:
            raise BadRequest(f"{where} is not a field of {desc.name}")
        if i == len(names) - 1:
            if field.message_type is not None and field.message_type.GetOptions().map_entry:
                raise BadRequest(f"{where} is a map; send it in the JSON body")
            value = _scalar(field, text, where)
            if _repeated(field):
                target.setdefault(field.name, []).append(value)
            else:
                target[field.name] = value
            return
        if field.type != _d.FieldDescriptor.TYPE_MESSAGE or _repeated(field):
            raise BadRequest(f"{where} has no sub-fields")
        nested = target.setdefault(field.name, {})
        if not isinstance(nested, dict):
            raise BadRequest(f"{where} is given twice")
        target, desc = nested, field.message_type


async def read_json_body(request: web.Request):
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise BadRequest(f"request body is not valid JSON: {e}") from None
    except RecursionError:
        raise BadRequest("request body is nested too deeply") from None


class Transcoder:
    def __init__(self, channel: grpc.aio.Channel, binding: Binding):
        self.b = binding
        pool = descriptor_pool.Default()
        self.req_cls = message_factory.GetMessageClass(pool.FindMessageTypeByName(binding.method.input_type.full_name))
        self.resp_cls = message_factory.GetMessageClass(pool.FindMessageTypeByName(binding.method.output_type.full_name))
        kind = channel.unary_stream if binding.method.server_streaming else channel.unary_unary
        self.call = kind(binding.rpc_path, request_serializer=self.req_cls.SerializeToString,
                         response_deserializer=self.resp_cls.FromString)

    async def request_message(self, request: web.Request):
        desc = self.req_cls.DESCRIPTOR
        data: dict = {}
        body = self.b.body
        if body:
            payload = await read_json_body(request)
            if body == "*":
                if not isinstance(payload, dict):
                    raise BadRequest("request body must be a JSON object")
                data = payload
            else:
                data[body] = payload
        # Query parameters fill fields outside the path (also next to a "*" body: a namespace
        # on a POST ...:cancel is easier to give in the query than in a body).
        for key in dict.fromkeys(request.query.keys()):
            for value in request.query.getall(key):
                _put(data, desc, key, value, "query parameter")
        for var, path in (self.b.variables or {}).items():
            _put(data, desc, path, request.match_info[var], "path parameter")
        idempotency_key = request.headers.get("Idempotency-Key")
        if idempotency_key and "request_id" in desc.fields_by_name:
            data.setdefault("request_id", idempotency_key)  # the HTTP header for a create's request_id
        try:
            return json_format.ParseDict(data, self.req_cls())
        except json_format.ParseError as e:
            raise BadRequest(str(e)) from None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        message = await self.request_message(request)
        if not self.b.method.server_streaming:
            reply = await self.call(message, timeout=None if self.b.rpc_path in UNTIL_ENDED else UNARY_TIMEOUT)
            return json_response(to_json(reply))
        return await stream(request, self.call(message))


OPEN_STREAMS = web.AppKey("open_streams", set)  # the gRPC calls of the streams being relayed


def end_streams(app: web.Application) -> None:
    """Shutting down: end every relayed stream now. Follows never end by themselves, and the
    server would otherwise wait out its whole shutdown timeout for each connection."""
    for call in list(app.get(OPEN_STREAMS, ())):
        call.cancel()


async def stream(request: web.Request, call) -> web.StreamResponse:
    """Relay a server stream as NDJSON (or SSE). The first message is awaited before the
    headers go out, so an immediate error (unknown id, ...) still gets its HTTP status."""
    sse = "text/event-stream" in request.headers.get("Accept", "")
    resp = None
    open_streams = request.app[OPEN_STREAMS]
    open_streams.add(call)
    try:
        first = await call.read()
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream" if sse else NDJSON,
                                           "Cache-Control": "no-cache"})
        await resp.prepare(request)
        item = first
        while item is not grpc.aio.EOF:
            line = json.dumps(to_json(item), ensure_ascii=False)
            await resp.write(f"data: {line}\n\n".encode() if sse else (line + "\n").encode())
            item = await call.read()
        await resp.write_eof()
    except grpc.aio.AioRpcError as e:
        if resp is None:
            raise
        code, message = error_of(e)
        line = json.dumps({"error": {"code": code.value[0], "message": message}})
        try:
            await resp.write(f"event: error\ndata: {line}\n\n".encode() if sse else (line + "\n").encode())
            await resp.write_eof()
        except ConnectionResetError:
            pass
    except ConnectionResetError:
        pass  # the client went away; nothing to tell it
    finally:
        open_streams.discard(call)
        call.cancel()
    return resp


def add_routes(app: web.Application, channel: grpc.aio.Channel, taken: set[tuple[str, str]]) -> list[Binding]:
    """Register every annotated RPC; a route already served by a family adapter is skipped."""
    app[OPEN_STREAMS] = set()
    pool = descriptor_pool.Default()
    done = []
    all_bindings = [b for name in TRANSCODED_SERVICES for b in bindings_of(pool.FindServiceByName(name))]
    # A template with a custom verb (":cancel") goes first so "{id}" never swallows it.
    all_bindings.sort(key=lambda b: ":" not in b.template.rsplit("/", 1)[-1])
    for b in all_bindings:
        if (b.verb, b.template) in taken:
            continue
        handler = answers(render_status)(Transcoder(channel, b).handle)
        app.router.add_route(b.verb, b.route, handler, name=None)
        done.append(b)
    return done

