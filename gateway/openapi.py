"""GET /openapi.json: an OpenAPI 3 document generated from the protos, never written by hand.

Transcoded routes come from the `google.api.http` annotations of the services the gateway
serves (gateway/transcode.py), with summaries and descriptions from the protos' comments and
request/response schemas from the message definitions (proto3 JSON mapping, proto field
names, as the gateway speaks it). Comments need source info, which the generated Python
modules drop: `make proto` also writes build/gen/taskhub/descriptors.binpb with it; without
that file the document has no descriptions. The legacy families' routes are read from the
running app's router and listed under their family's name.
"""
from __future__ import annotations

import re
import sys
from importlib import resources

from aiohttp import web
from google.api import annotations_pb2
from google.protobuf import descriptor_pb2, descriptor_pool

from . import transcode
from .errors import json_response

FDP = descriptor_pb2.FieldDescriptorProto
DESCRIPTOR_SET = "descriptors.binpb"
# Source-info path numbers (descriptor.proto field numbers).
_MESSAGE, _ENUM, _SERVICE = 4, 5, 6
_FIELD, _NESTED, _NESTED_ENUM, _METHOD, _VALUE = 2, 3, 4, 2, 2

_SCALARS = {
    FDP.TYPE_DOUBLE: {"type": "number", "format": "double"},
    FDP.TYPE_FLOAT: {"type": "number", "format": "float"},
    FDP.TYPE_INT64: {"type": "string", "format": "int64"},
    FDP.TYPE_UINT64: {"type": "string", "format": "uint64"},
    FDP.TYPE_SINT64: {"type": "string", "format": "int64"},
    FDP.TYPE_FIXED64: {"type": "string", "format": "uint64"},
    FDP.TYPE_SFIXED64: {"type": "string", "format": "int64"},
    FDP.TYPE_INT32: {"type": "integer", "format": "int32"},
    FDP.TYPE_SINT32: {"type": "integer", "format": "int32"},
    FDP.TYPE_SFIXED32: {"type": "integer", "format": "int32"},
    FDP.TYPE_UINT32: {"type": "integer", "format": "int64"},
    FDP.TYPE_FIXED32: {"type": "integer", "format": "int64"},
    FDP.TYPE_BOOL: {"type": "boolean"},
    FDP.TYPE_STRING: {"type": "string"},
    FDP.TYPE_BYTES: {"type": "string", "format": "byte"},
}
# Well-known types with a JSON form of their own.
_WELL_KNOWN = {
    "google.protobuf.Empty": {"type": "object"},
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    "google.protobuf.Duration": {"type": "string"},
    "google.protobuf.Struct": {"type": "object"},
    "google.protobuf.Value": {},
}
ERROR_SCHEMA = {
    "type": "object",
    "description": "A failed call: the gRPC status code, what to do, and details.",
    "properties": {"code": {"type": "integer"}, "message": {"type": "string"},
                   "details": {"type": "array", "items": {"type": "object"}}},
}


def load_files() -> list[descriptor_pb2.FileDescriptorProto]:
    """The taskhub protos with their comments (the descriptor set `make proto` writes), or,
    without it, the same files from the descriptor pool (no comments)."""
    try:
        data = resources.files("taskhub").joinpath(DESCRIPTOR_SET).read_bytes()
        return list(descriptor_pb2.FileDescriptorSet.FromString(data).file)
    except (FileNotFoundError, OSError):
        pool = descriptor_pool.Default()
        out, seen = [], set()
        for name in transcode.TRANSCODED_SERVICES:
            stack = [pool.FindServiceByName(name).file]
            while stack:
                f = stack.pop()
                if f.name in seen:
                    continue
                seen.add(f.name)
                proto = descriptor_pb2.FileDescriptorProto()
                f.CopyToProto(proto)
                out.append(proto)
                stack.extend(f.dependencies)
        return out


class _Index:
    """Messages, enums and comments of a set of files, by full name."""

    def __init__(self, files):
        self.messages: dict[str, descriptor_pb2.DescriptorProto] = {}
        self.enums: dict[str, descriptor_pb2.EnumDescriptorProto] = {}
        self.services: dict[str, descriptor_pb2.ServiceDescriptorProto] = {}
        self.comments: dict[str, str] = {}  # full name (or "Msg.field", "Svc.Method") -> comment
        for f in files:
            where = {tuple(loc.path): loc.leading_comments for loc in f.source_code_info.location
                     if loc.leading_comments}
            pkg = f.package
            for i, m in enumerate(f.message_type):
                self._message(f"{pkg}.{m.name}" if pkg else m.name, m, (_MESSAGE, i), where)
            for i, e in enumerate(f.enum_type):
                self._enum(f"{pkg}.{e.name}" if pkg else e.name, e, (_ENUM, i), where)
            for i, s in enumerate(f.service):
                name = f"{pkg}.{s.name}" if pkg else s.name
                self.services[name] = s
                self._note(name, where.get((_SERVICE, i)))
                for j, m in enumerate(s.method):
                    self._note(f"{name}.{m.name}", where.get((_SERVICE, i, _METHOD, j)))

    def _note(self, key: str, text: str | None) -> None:
        if text:
            self.comments[key] = " ".join(line.strip() for line in text.strip().splitlines())

    def _message(self, name, m, path, where) -> None:
        self.messages[name] = m
        self._note(name, where.get(path))
        for i, f in enumerate(m.field):
            self._note(f"{name}.{f.name}", where.get(path + (_FIELD, i)))
        for i, n in enumerate(m.nested_type):
            self._message(f"{name}.{n.name}", n, path + (_NESTED, i), where)
        for i, e in enumerate(m.enum_type):
            self._enum(f"{name}.{e.name}", e, path + (_NESTED_ENUM, i), where)

    def _enum(self, name, e, path, where) -> None:
        self.enums[name] = e
        self._note(name, where.get(path))


class _Builder:
    def __init__(self, index: _Index):
        self.ix = index
        self.schemas: dict[str, dict] = {"Status": ERROR_SCHEMA}

    def ref(self, full_name: str) -> dict:
        if full_name in _WELL_KNOWN:
            return dict(_WELL_KNOWN[full_name])
        short = full_name.removeprefix("taskhub.v1.")
        if short not in self.schemas:
            self.schemas[short] = {}  # reserve first: messages may refer to themselves
            if full_name in self.ix.enums:
                e = self.ix.enums[full_name]
                self.schemas[short] = {"type": "string", "enum": [v.name for v in e.value]}
            else:
                self.schemas[short] = self.message_schema(full_name)
            if full_name in self.ix.comments:
                self.schemas[short]["description"] = self.ix.comments[full_name]
        return {"$ref": f"#/components/schemas/{short}"}

    def message_schema(self, full_name: str) -> dict:
        m = self.ix.messages.get(full_name)
        if m is None:
            return {"type": "object"}
        props = {}
        for f in m.field:
            schema = self.field_schema(f)
            note = self.ix.comments.get(f"{full_name}.{f.name}")
            if note:
                schema = {**schema, "description": note} if "$ref" not in schema else \
                    {"allOf": [schema], "description": note}
            props[f.name] = schema
        return {"type": "object", "properties": props}

    def field_schema(self, f) -> dict:
        type_name = f.type_name.lstrip(".")
        if f.type == FDP.TYPE_MESSAGE:
            entry = self.ix.messages.get(type_name)
            if entry is not None and entry.options.map_entry:
                return {"type": "object", "additionalProperties": self.field_schema(entry.field[1])}
            one = self.ref(type_name)
        elif f.type == FDP.TYPE_ENUM:
            one = self.ref(type_name)
        else:
            one = dict(_SCALARS.get(f.type, {}))
        if f.label == FDP.LABEL_REPEATED:
            return {"type": "array", "items": one}
        return one

    def scalar_fields(self, full_name: str, prefix: str = "", depth: int = 0):
        """(path, field) of every field a query parameter can set."""
        m = self.ix.messages.get(full_name)
        for f in m.field if m else ():
            type_name = f.type_name.lstrip(".")
            if f.type == FDP.TYPE_MESSAGE:
                entry = self.ix.messages.get(type_name)
                if depth < 2 and f.label != FDP.LABEL_REPEATED and entry is not None and not entry.options.map_entry \
                        and type_name not in _WELL_KNOWN:
                    yield from self.scalar_fields(type_name, f"{prefix}{f.name}.", depth + 1)
                continue
            yield f"{prefix}{f.name}", f, full_name


_VAR = re.compile(r"\{([A-Za-z_][\w.]*)(?:=[^}]*)?\}")


def _summary(text: str) -> str:
    first = re.split(r"(?<=\.)\s", text, maxsplit=1)[0]
    return first.rstrip(".")


def rpc_operations(files, services: list[str]) -> tuple[dict, dict, list]:
    """paths, component schemas and tags for every annotated RPC of `services`."""
    ix = _Index(files)
    b = _Builder(ix)
    paths: dict[str, dict] = {}
    tags = []
    for service_name in services:
        service = ix.services.get(service_name)
        if service is None:
            continue
        short_service = service_name.rsplit(".", 1)[-1]
        tags.append({"name": short_service, "description": ix.comments.get(service_name, "")})
        for method in service.method:
            if not method.options.HasExtension(annotations_pb2.http):
                continue
            rule = method.options.Extensions[annotations_pb2.http]
            for r in [rule, *rule.additional_bindings]:
                kind = r.WhichOneof("pattern")
                if kind is None:
                    continue
                verb, template = (r.custom.kind, r.custom.path) if kind == "custom" else (kind, getattr(r, kind))
                op = _operation(b, ix, service_name, short_service, method, r.body, template)
                paths.setdefault(_VAR.sub(lambda m: "{" + m.group(1) + "}", template), {})[verb.lower()] = op
    return paths, b.schemas, tags


def _operation(b: _Builder, ix: _Index, service_name, short_service, method, body: str, template: str) -> dict:
    note = ix.comments.get(f"{service_name}.{method.name}", "")
    input_name, output_name = method.input_type.lstrip("."), method.output_type.lstrip(".")
    path_vars = [m.group(1) for m in _VAR.finditer(template)]
    op: dict = {"operationId": f"{short_service}_{method.name}", "tags": [short_service],
                "summary": _summary(note) or method.name, "description": note,
                "x-grpc-method": f"/{service_name}/{method.name}"}
    params = []
    for var in path_vars:
        params.append({"name": var, "in": "path", "required": True, "schema": _param_schema(b, input_name, var)})
    if body != "*":
        for path, f, owner in b.scalar_fields(input_name):
            if path in path_vars or (body and (path == body or path.startswith(body + "."))):
                continue
            schema = b.field_schema(f)
            params.append({"name": path, "in": "query", "required": False, "schema": schema,
                           "description": ix.comments.get(f"{owner}.{f.name}", "")})
    if params:
        op["parameters"] = params
    if body:
        if body == "*":
            schema = b.ref(input_name)
        else:
            field = next((f for f in ix.messages[input_name].field if f.name == body), None)
            schema = b.field_schema(field) if field is not None else {"type": "object"}
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": schema}}}
    answer = b.ref(output_name)
    if method.server_streaming:
        op["responses"] = {"200": {
            "description": "A stream: one JSON message per line (NDJSON), or server-sent events "
                           "(`data: <message>`) when the request has `Accept: text/event-stream`.",
            "content": {"application/x-ndjson": {"schema": answer}, "text/event-stream": {"schema": answer}}}}
        op["x-server-streaming"] = True
    else:
        op["responses"] = {"200": {"description": "OK", "content": {"application/json": {"schema": answer}}}}
    op["responses"]["default"] = {"description": "Error", "content": {
        "application/json": {"schema": {"$ref": "#/components/schemas/Status"}}}}
    return op


def _param_schema(b: _Builder, message_name: str, path: str) -> dict:
    name = message_name
    f = None
    for part in path.split("."):
        m = b.ix.messages.get(name)
        f = next((x for x in (m.field if m else ()) if x.name == part), None)
        if f is None:
            return {"type": "string"}
        name = f.type_name.lstrip(".")
    return b.field_schema(f)


def family_operations(app: web.Application, skip: set[tuple[str, str]]) -> tuple[dict, list]:
    """Every other route of the running app, tagged with the module that serves it."""
    paths: dict[str, dict] = {}
    tags: dict[str, str] = {}
    for route in app.router.routes():
        if route.method in ("HEAD", "*"):
            continue
        info = route.resource.get_info() if route.resource else {}
        raw = info.get("formatter") or info.get("path") or (info.get("prefix", "") + "/{filename}")
        if not raw or (route.method, raw) in skip or raw.startswith("/ui/static"):
            continue
        handler = getattr(route.handler, "__wrapped__", route.handler)
        if isinstance(getattr(handler, "__self__", None), transcode.Transcoder):
            continue  # described from its RPC above
        module = getattr(handler, "__module__", "") or ""
        family = module.rsplit(".", 1)[-1] if ".families." in module else "gateway"
        doc = (sys.modules.get(module).__doc__ or "") if module in sys.modules else ""
        tags.setdefault(family, "The gateway's own routes: metrics, this document, the dashboard." if family == "gateway"
                        else " ".join(doc.strip().split("\n\n")[0].split()))
        note = " ".join((handler.__doc__ or "").split())
        # "/ui" and "/ui/" are two routes: a trailing slash names the directory's index (operationIds are unique).
        slug = re.sub(r'[^A-Za-z0-9]+', '_', raw).strip('_') + ("_index" if raw.endswith("/") and raw != "/" else "")
        op = {"operationId": f"{family}_{route.method.lower()}_{slug}",
              "tags": [family], "summary": _summary(note) or f"{route.method} {raw}", "description": note,
              "responses": {"default": {"description": "The family's own JSON envelope (see the README)."}}}
        variables = re.findall(r"\{([^}:]+)", raw)
        if variables:
            op["parameters"] = [{"name": v, "in": "path", "required": True, "schema": {"type": "string"}}
                                for v in variables]
        paths.setdefault(raw, {})[route.method.lower()] = op
    return paths, [{"name": k, "description": v} for k, v in tags.items()]


def build_document(app: web.Application | None = None, files=None, services: list[str] | None = None) -> dict:
    files = files if files is not None else load_files()
    services = services if services is not None else transcode.TRANSCODED_SERVICES
    paths, schemas, tags = rpc_operations(files, services)
    if app is not None:
        skip = {(verb.upper(), p) for p, ops in paths.items() for verb in ops}
        more, more_tags = family_operations(app, skip)
        for p, ops in more.items():
            for verb, op in ops.items():
                paths.setdefault(p, {}).setdefault(verb, op)
        tags += more_tags
    return {
        "openapi": "3.0.3",
        "info": {"title": "taskhub HTTP API", "version": "v1",
                 "description": "Generated from the taskhub protos (google.api.http annotations and comments) "
                                "and the gateway's legacy route families."},
        "tags": tags,
        "paths": dict(sorted(paths.items())),
        "components": {"schemas": dict(sorted(schemas.items()))},
    }


def add_routes(app: web.Application) -> None:
    built: list[dict] = []  # the routes never change once the app runs: built once, on first request

    async def openapi(request: web.Request) -> web.Response:
        """This document: the gateway's HTTP API as OpenAPI 3."""
        if not built:
            built.append(build_document(request.app))
        return json_response(built[0])
    app.router.add_get("/openapi.json", openapi)
