"""FATE Flow's model and tag routes (`/v1/model/...`) over FlowService's model RPCs, plus
job/dsl/generate. Shapes follow FATE Flow 1.11's model_app.py: FATE raises on most tag errors
(retcode 100), answers export/predict-DSL misses with a non-200 error, and reports federated
operations (load, deploy, migrate) per role and party ({"guest": {"9999": 0}, "detail": ...}).

Deviations: there is no online serving system, so load and bind record the operation on the
model (listed by model/query: f_loaded_times, f_service_ids); store/restore write and read a zip
in the server's model directory at once instead of running a job.
"""
from __future__ import annotations

import json

import grpc
from aiohttp import web
from taskhub.v1 import flow_service_pb2 as fpb

from client.fate_args import component_names, json_object
from client.flow_model_rows import by_party, deployed, model_row, tag_rows, tagged_model_rows

from .. import fate_auth, uploads
from ..errors import BadRequest, answers, json_response
from .common import TIMEOUT, stubs
from .fate_wire import EXCEPTION, body_of, download_route, envelope, integer, party, refused, route, signed, text

MODEL_ROUTES_PREFIX = "/v1/model/"


def exception_route(handler):
    """FATE raises on these routes and its error handler answers retcode 100 with the message."""
    def render(status, code, message):
        if (answer := refused(code, message)) is not None:
            return answer
        return envelope(retcode=EXCEPTION, retmsg=message)
    return signed(answers(render)(handler))


def model_ref(body: dict) -> fpb.ModelRef:
    """model_id/model_version from the body, or from a conf's job_parameters (flow_sdk's conf files)."""
    jp = body.get("job_parameters") if isinstance(body.get("job_parameters"), dict) else {}
    common = jp.get("common") if isinstance(jp.get("common"), dict) else jp
    model_id = text(body, "model_id") or text(common, "model_id")
    version = text(body, "model_version") or text(common, "model_version")
    if not model_id or not version:
        raise BadRequest("model_id and model_version are required (or job_parameters with them, or job_id)")
    return fpb.ModelRef(model_id=model_id, model_version=version)


async def ref_of(flow, body: dict) -> fpb.ModelRef:
    """A job_id names the model that job trained (its version); else model_id/model_version."""
    job_id = text(body, "job_id")
    if job_id:
        found = await flow.ListModels(fpb.ListModelsRequest(model_version=job_id), timeout=TIMEOUT)
        if not found.models:
            raise LookupError(f"Model with version {job_id} can not be found in database. "
                              f"Please check if the model version is valid.")
        return fpb.ModelRef(model_id=found.models[0].model_id, model_version=job_id)
    return model_ref(body)


@route()
async def load(request: web.Request) -> web.Response:
    flow = stubs(request).flow
    body = await body_of(request)
    try:
        ref = await ref_of(flow, body)
    except LookupError as e:
        return envelope(retcode=101, retmsg=str(e))
    done = await flow.LoadModel(ref, timeout=TIMEOUT)
    return envelope(by_party(done.models), job_id=ref.model_version)


@route()
async def bind(request: web.Request) -> web.Response:
    flow = stubs(request).flow
    body = await body_of(request)
    try:
        ref = await ref_of(flow, body)
    except LookupError as e:
        return envelope(retcode=101, retmsg=str(e))
    service_id = text(body, "service_id")
    if not service_id:
        return envelope(retcode=101, retmsg="no service id")
    await flow.BindModel(fpb.BindModelRequest(model=ref, service_id=service_id), timeout=TIMEOUT)
    return envelope(retmsg=f"service id is {service_id}")


@download_route(404)
async def deploy(request: web.Request) -> web.Response:
    flow = stubs(request).flow
    body = await body_of(request)
    ref = model_ref(body)
    cpn = component_names(body.get("cpn_list"))
    dsl = json_object(body.get("predict_dsl"), "predict_dsl")
    done = await flow.DeployModel(fpb.DeployModelRequest(
        model_id=ref.model_id, model_version=ref.model_version, cpn_list=cpn or [],
        predict_dsl_json=json.dumps(dsl) if dsl else ""), timeout=TIMEOUT)
    data, retcode, retmsg = deployed(done)
    return envelope(data, retcode=retcode, retmsg=retmsg)


@download_route(210)
async def predict_dsl(request: web.Request) -> web.Response:
    flow = stubs(request).flow
    found = await flow.GetPredictDsl(model_ref(await body_of(request)), timeout=TIMEOUT)
    return envelope(json.loads(found.dsl_json))


@download_route(210)
async def predict_conf(request: web.Request) -> web.Response:
    flow = stubs(request).flow
    found = await flow.GetPredictConf(model_ref(await body_of(request)), timeout=TIMEOUT)
    return envelope(json.loads(found.conf_json))


@route(not_found=EXCEPTION)
async def query(request: web.Request) -> web.Response:
    flow = stubs(request).flow
    body = await body_of(request)
    role, party_id = party(body)
    filters = body.get("query_filters")
    if filters is not None and not (isinstance(filters, list) and all(isinstance(f, str) for f in filters)):
        raise BadRequest("query_filters must be a list of field names")
    found = await flow.ListModels(fpb.ListModelsRequest(
        model_id=text(body, "model_id"), model_version=text(body, "model_version") or text(body, "job_id"),
        role=role, party_id=party_id or 0), timeout=TIMEOUT)
    if not found.models:
        return envelope([], retcode=EXCEPTION, retmsg="Query model info failed, cannot find model from db.")
    return envelope([model_row(m, filters) for m in found.models], retmsg="Query model info from db success.")


def party_ref(body: dict) -> fpb.PartyModelRef:
    role, party_id = party(body)
    ref = model_ref(body)
    if not role or party_id is None:
        raise BadRequest("role and party_id are required")
    return fpb.PartyModelRef(model_id=ref.model_id, model_version=ref.model_version, role=role,
                             party_id=party_id)


@download_route(404)
async def export(request: web.Request) -> web.StreamResponse:
    flow = stubs(request).flow
    ref = party_ref(await body_of(request))
    stream = flow.ExportModel(ref, timeout=TIMEOUT)
    first = await stream.read()  # the first chunk (or the error) before any header is sent
    if first is grpc.aio.EOF:
        raise BadRequest("the model archive is empty")
    resp = web.StreamResponse(headers={"Content-Type": "application/zip",
                                       "Content-Disposition": f"attachment; filename={first.file_name}"})
    await resp.prepare(request)
    await resp.write(first.chunk)
    while (part := await stream.read()) is not grpc.aio.EOF:  # read() once used, async-for may not be
        await resp.write(part.chunk)
    await resp.write_eof()
    return resp


@route()
async def import_model(request: web.Request) -> web.Response:
    flow = stubs(request).flow
    if not request.content_type.startswith("multipart/"):
        raise BadRequest("model/import is a multipart upload: fields model_id, model_version, role, party_id "
                         "and the archive as `file`")
    # The fields (flow_sdk sends them first; a signed import signs them), then the archive (the
    # part with a file name), streamed to the server: never whole in memory here.
    fields: dict = {}
    reader = await request.multipart()
    while (part := await reader.next()) is not None and not (part.name == "file" and part.filename):
        if part.name:
            fields[part.name] = await uploads.text_field(part)
    if part is None:
        raise BadRequest("model/import: the multipart body has no `file` (the exported archive) after its fields")
    denial = fate_auth.verify_form(request, fields)
    if denial is not None:
        return json_response(denial.envelope(), 401)
    role, party_id = party(fields)
    expect = fpb.ImportModelExpect(model_id=text(fields, "model_id"), model_version=text(fields, "model_version"),
                                   role=role, party_id=party_id or 0,
                                   force_update=str(fields.get("force_update", "0")) in ("1", "true", "True"))
    got = await uploads.send_stream(flow.ImportModel(timeout=TIMEOUT), fpb.ImportModelRequest(expect=expect), part,
                                    lambda data: fpb.ImportModelRequest(chunk=data), uploads.limit_of(request),
                                    "model/import: the archive")
    return envelope({"model_id": got.model_id, "model_version": got.model_version, "role": got.party.role,
                     "party_id": got.party.party_id})


@route()
async def store(request: web.Request) -> web.Response:
    flow = stubs(request).flow
    body = await body_of(request)
    ref = party_ref(body)
    done = await flow.StoreModel(fpb.StoreModelRequest(model=ref, force_update=bool(body.get("force_update"))),
                                 timeout=TIMEOUT)
    return envelope({"model_id": ref.model_id, "model_version": ref.model_version, "role": ref.role,
                     "party_id": ref.party_id, "path": done.path})


@route()
async def restore(request: web.Request) -> web.Response:
    flow = stubs(request).flow
    ref = party_ref(await body_of(request))
    await flow.RestoreModel(ref, timeout=TIMEOUT)
    return envelope({"model_id": ref.model_id, "model_version": ref.model_version, "role": ref.role,
                     "party_id": ref.party_id})


@route(not_found=EXCEPTION)
async def migrate(request: web.Request) -> web.Response:
    flow = stubs(request).flow
    body = await body_of(request)
    need = ("migrate_initiator", "role", "migrate_role", "model_id", "model_version", "execute_party",
            "job_parameters")
    missing = [k for k in need if k not in body]
    if missing:
        return envelope(retcode=101, retmsg=f"required argument are missing: {','.join(missing)}")
    init = body["migrate_initiator"] if isinstance(body["migrate_initiator"], dict) else {}
    role, party_id = party(init)
    done = await flow.MigrateModel(fpb.MigrateModelRequest(
        model_id=text(body, "model_id"), model_version=text(body, "model_version"),
        role_json=json.dumps(body["role"]), migrate_role_json=json.dumps(body["migrate_role"]),
        migrate_initiator=fpb.FlowParty(role=role, party_id=party_id or 0),
        unify_model_version=text(body, "unify_model_version")), timeout=TIMEOUT)
    data = by_party(done.models)
    data.update(model_id=done.model_id, model_version=done.model_version)
    return envelope(data, job_id=done.model_version)


@exception_route
async def model_tag_create(request: web.Request) -> web.Response:
    flow = stubs(request).flow
    body = await body_of(request)
    job_id, tag = text(body, "job_id", required=True), text(body, "tag_name")
    await flow.TagModel(fpb.TagModelRequest(job_id=job_id, tag=tag), timeout=TIMEOUT)
    return envelope(retmsg=f"Adding {tag} tag for model with job id: {job_id} successfully.")


@exception_route
async def model_tag_remove(request: web.Request) -> web.Response:
    flow = stubs(request).flow
    body = await body_of(request)
    job_id, tag = text(body, "job_id", required=True), text(body, "tag_name")
    await flow.TagModel(fpb.TagModelRequest(job_id=job_id, tag=tag, remove=True), timeout=TIMEOUT)
    return envelope(retmsg=f"'{tag}' tag has been removed from tag list of model with job id: {job_id}.")


@exception_route
async def model_tag_retrieve(request: web.Request) -> web.Response:
    flow = stubs(request).flow
    body = await body_of(request)
    found = await flow.ListModelTags(fpb.ListModelTagsRequest(job_id=text(body, "job_id", required=True)),
                                     timeout=TIMEOUT)
    return envelope({"tags": tag_rows(found.tags), "count": len(found.tags)})


@exception_route
async def tag_create(request: web.Request) -> web.Response:
    flow = stubs(request).flow
    body = await body_of(request)
    name = text(body, "tag_name")
    await flow.CreateTag(fpb.CreateTagRequest(name=name, description=text(body, "tag_desc")), timeout=TIMEOUT)
    return envelope(retmsg=f"'{name}' tag has been created successfully.")


@exception_route
async def tag_list(request: web.Request) -> web.Response:
    flow = stubs(request).flow
    body = await body_of(request)
    found = await flow.ListTags(fpb.ListTagsRequest(limit=integer(body, "limit", 10, low=0)), timeout=TIMEOUT)
    return envelope({"tags": tag_rows(found.tags, with_count=True)})


@exception_route
async def tag_retrieve(request: web.Request) -> web.Response:
    flow = stubs(request).flow
    body = await body_of(request)
    name = text(body, "tag_name", required=True)
    if body.get("with_model"):
        found = await flow.ListTaggedModels(fpb.TagRef(name=name), timeout=TIMEOUT)
        return envelope({"models": tagged_model_rows(found.models), "count": len(found.models)})
    found = await flow.ListTags(fpb.ListTagsRequest(name_contains=name), timeout=TIMEOUT)
    if not found.tags:
        return envelope(retcode=EXCEPTION, retmsg="No tags found.")
    return envelope({"tags": tag_rows(found.tags)})


@exception_route
async def tag_update(request: web.Request) -> web.Response:
    flow = stubs(request).flow
    body = await body_of(request)
    name = text(body, "tag_name", required=True)
    req = fpb.UpdateTagRequest(name=name, new_name=text(body, "new_tag_name"))
    if body.get("new_tag_desc") is not None:
        req.new_description = text(body, "new_tag_desc")
    await flow.UpdateTag(req, timeout=TIMEOUT)
    return envelope(retmsg=f"Infomation of '{name}' tag has been updated successfully.")


@exception_route
async def tag_destroy(request: web.Request) -> web.Response:
    flow = stubs(request).flow
    body = await body_of(request)
    name = text(body, "tag_name", required=True)
    await flow.DeleteTag(fpb.TagRef(name=name), timeout=TIMEOUT)
    return envelope(retmsg=f"'{name}' tag has been deleted successfully.")


@exception_route
async def unsupported(request: web.Request) -> web.Response:
    flow = stubs(request).flow
    await flow.ListTags(fpb.ListTagsRequest(limit=1), timeout=TIMEOUT)  # the caller is still checked
    return envelope(retcode=EXCEPTION, retmsg=f"'{request.match_info['tail']}' is not currently supported.")


async def dispatch(request: web.Request) -> web.StreamResponse:
    """One route per method for /v1/model/*: each operation's handler checks the caller itself."""
    handler = OPERATIONS.get((request.method, request.match_info["tail"]), unsupported)
    return await handler(request)


# /v1/model/<operation>: one route per method, each operation's handler checks the caller itself.
OPERATIONS = {
    ("POST", "load"): load, ("POST", "bind"): bind, ("POST", "deploy"): deploy,
    ("POST", "get/predict/dsl"): predict_dsl, ("POST", "get/predict/conf"): predict_conf,
    ("POST", "query"): query, ("GET", "export"): export, ("POST", "export"): export,
    ("POST", "import"): import_model, ("POST", "store"): store, ("POST", "restore"): restore,
    ("POST", "migrate"): migrate, ("POST", "model_tag/create"): model_tag_create,
    ("POST", "model_tag/remove"): model_tag_remove, ("POST", "model_tag/retrieve"): model_tag_retrieve,
    ("POST", "tag/create"): tag_create, ("POST", "tag/list"): tag_list, ("POST", "tag/retrieve"): tag_retrieve,
    ("POST", "tag/update"): tag_update, ("POST", "tag/destroy"): tag_destroy,
}


@route()
async def generate(request: web.Request) -> web.Response:
    flow = stubs(request).flow
    body = await body_of(request)
    train = json_object(body.get("train_dsl"), "train_dsl", required=True)
    cpn = component_names(body.get("cpn_str", body.get("cpn_list")), "cpn_str")
    found = await flow.GenerateDsl(fpb.GenerateDslRequest(train_dsl_json=json.dumps(train), cpn_list=cpn or []),
                                   timeout=TIMEOUT)
    return envelope(json.loads(found.dsl_json))


ROUTES = [("POST", "/v1/model/{tail:.*}", dispatch), ("GET", "/v1/model/{tail:.*}", dispatch),
          ("POST", "/v1/job/dsl/generate", generate)]
