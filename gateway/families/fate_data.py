"""FATE Flow data and tables: /v1/data/{upload,download,upload/history}, /v1/table/{table_info,delete}.

data/upload from a client file is multipart (field `file`) with the whole conf as ONE query
parameter whose key is the JSON text (what flow_sdk sends); the file goes to UploadData in
chunks of about 1 MiB straight from the multipart reader. With `use_local_data: 0` the conf is
the JSON body and `file` a path on the server.
"""
from __future__ import annotations

import json
from urllib.parse import unquote

from aiohttp import web
from taskhub.v1 import flow_service_pb2 as fpb

from client import flow_rows as rows

from .. import fate_auth, uploads
from ..errors import BadRequest, json_response
from .common import TIMEOUT, stubs
from .fate_wire import ARGUMENT, EXCEPTION, body_of, envelope, integer, party, route, text

UPLOAD_TIMEOUT = 3600.0


def upload_conf(request: web.Request) -> dict:
    """The conf of a multipart upload: the query string is the conf's JSON text."""
    raw = unquote(request.rel_url.raw_query_string)
    if raw.endswith("="):  # a parser that saw `key=` with an empty value
        raw = raw[:-1]
    if not raw.strip():
        raise BadRequest("data/upload: give the upload conf (JSON) as the query string, as flow_sdk does")
    try:
        conf = json.loads(raw)
    except ValueError as e:
        raise BadRequest(f"data/upload: the query string is not the conf's JSON text: {e}") from None
    if not isinstance(conf, dict):
        raise BadRequest("data/upload: the conf must be a JSON object")
    return conf


async def file_part(request: web.Request):
    """The multipart field `file`."""
    try:
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if part.name == "file":
                return part
    except (ValueError, AssertionError) as e:
        raise BadRequest(f"data/upload: the multipart body cannot be read: {e}") from None
    raise BadRequest("data/upload: the multipart body has no field 'file'")


def job_data(job: fpb.FlowJob, conf: dict) -> dict:
    return {"job_id": job.job_id, "namespace": conf.get("namespace"), "table_name": conf.get("table_name"),
            "logs_directory": f"/v1/flow/jobs/{job.job_id}/logs", "board_url": "",
            "model_info": rows.model_info(job)}


@route(not_found=EXCEPTION)
async def upload(request: web.Request) -> web.Response:
    flow = stubs(request).flow
    if request.content_type.startswith("multipart/"):
        conf = upload_conf(request)
        conf["use_local_data"] = 1
        refused = fate_auth.verify_form(request, {})  # flow_sdk signs an upload with no form fields
        if refused is not None:
            return json_response(refused.envelope(), 401)
        part = await file_part(request)
    else:
        conf = await body_of(request)
        if str(conf.get("use_local_data", 1)) != "0":
            raise BadRequest("data/upload: send the file as multipart field 'file' (conf JSON as the query "
                             "string), or set use_local_data 0 and give 'file' as a path on the server")
        part = None
    job = await uploads.send_stream(flow.UploadData(timeout=UPLOAD_TIMEOUT),
                                    fpb.UploadDataRequest(conf_json=json.dumps(conf)), part,
                                    lambda data: fpb.UploadDataRequest(chunk=data), uploads.limit_of(request),
                                    "data/upload: the file")
    return envelope(job_data(job, conf), job_id=job.job_id)


@route(not_found=EXCEPTION)
async def download(request: web.Request) -> web.Response:
    flow = stubs(request).flow
    body = await body_of(request)
    req = fpb.DownloadDataRequest(namespace=text(body, "namespace", required=True),
                                  table_name=text(body, "table_name", required=True),
                                  output_path=text(body, "output_path", required=True),
                                  delimiter=text(body, "delimiter") or text(body, "delimitor"))
    job = await flow.DownloadData(req, timeout=TIMEOUT)
    data = {**job_data(job, body), "output_path": req.output_path}
    return envelope(data, job_id=job.job_id, retmsg=f"download job {job.job_id}: {rows.job_status_name(job.status)}")


@route()
async def upload_history(request: web.Request) -> web.Response:
    flow = stubs(request).flow
    body = await body_of(request)
    req = fpb.UploadHistoryRequest(limit=integer(body, "limit", 10, low=0, high=10_000),
                                   job_id=text(body, "job_id"))
    found = await flow.UploadHistory(req, timeout=TIMEOUT)
    return envelope([rows.upload_record(r) for r in found.uploads])


@route()
async def table_info(request: web.Request) -> web.Response:
    flow = stubs(request).flow
    body = await body_of(request)
    namespace = text(body, "namespace", required=True)
    name = text(body, "table_name", required=True)
    table = await flow.GetTable(fpb.GetTableRequest(namespace=namespace, name=name), timeout=TIMEOUT)
    return envelope(rows.table_info(table))


@route()
async def table_delete(request: web.Request) -> web.Response:
    flow = stubs(request).flow
    body = await body_of(request)
    role, party_id = party(body)
    req = fpb.DeleteTableRequest(namespace=text(body, "namespace"), name=text(body, "table_name"),
                                 job_id=text(body, "job_id"), component_name=text(body, "component_name"),
                                 role=role, party_id=party_id or 0)
    if not (req.namespace and req.name) and not req.job_id:
        raise BadRequest("give namespace and table_name, or job_id (with component_name, role, party_id)")
    done = await flow.DeleteTable(req, timeout=TIMEOUT)
    if not done.tables:
        return envelope(retcode=ARGUMENT, retmsg="no find table")
    tables = [{"table_name": t.name, "namespace": t.namespace} for t in done.tables]
    return envelope(tables[0] if req.name else tables)


ROUTES = [
    ("POST", "/v1/data/upload", upload),
    ("POST", "/v1/data/download", download),
    ("POST", "/v1/data/upload/history", upload_history),
    ("POST", "/v1/table/table_info", table_info),
    ("POST", "/v1/table/delete", table_delete),
]
