"""FATE Flow component tracking: /v1/tracking/component/... over FlowService.GetComponentOutput.

A missing role/party_id means the job's initiator (the server resolves it). Retcodes when the
job or task does not exist follow FATE per route: list and output/model 100, parameters 101,
metrics and output data "no data" with retcode 0.
"""
from __future__ import annotations

import json

from aiohttp import web
from taskhub.v1 import flow_service_pb2 as fpb

from client import flow_rows as rows

from ..errors import BadRequest, C
from .common import TIMEOUT, stubs
from .fate_files import TarDraft
from .fate_wire import EXCEPTION, SUCCESS, body_of, download_route, envelope, integer, party, route, text

PREVIEW_ROWS = 100  # FATE's output/data shows part of each table
NO_TABLE = "No found table, please check if the parameters are correct."
NO_SUMMARY = "No component summary found, please check if arguments are specified correctly."


async def component_output(flow, body: dict) -> fpb.ComponentOutput:
    role, party_id = party(body)
    req = fpb.GetComponentOutputRequest(job_id=text(body, "job_id", required=True),
                                        component_name=text(body, "component_name", required=True),
                                        role=role, party_id=party_id or 0)
    return await flow.GetComponentOutput(req, timeout=TIMEOUT)


async def table_lines(flow, table: fpb.TableInfo, limit: int):
    """Rows of a table as comma-separated CSV lines."""
    delimiter = rows.delimiter_of(table)
    req = fpb.ReadTableRequest(namespace=table.namespace, name=table.name, limit=limit)
    async for part in flow.ReadTable(req, timeout=TIMEOUT):
        for line in part.lines:
            yield line if delimiter == "," else rows.csv_line(rows.split_line(line, delimiter))


async def output_views(flow, body: dict) -> list[dict]:
    """job/data/view/query: one row per output table of the matching tasks."""
    role, party_id = party(body)
    req = fpb.ListFlowTasksRequest(job_id=text(body, "job_id", required=True), role=role, party_id=party_id or 0,
                                   component_name=text(body, "component_name"), limit=10_000)
    found = await flow.ListFlowTasks(req, timeout=TIMEOUT)
    views = []
    for task in found.tasks:
        out = await flow.GetComponentOutput(fpb.GetComponentOutputRequest(
            job_id=task.job_id, component_name=task.component_name, role=task.party.role,
            party_id=task.party.party_id), timeout=TIMEOUT)
        for t in out.output_tables:
            views.append({"f_job_id": task.job_id, "f_component_name": task.component_name,
                          "f_task_id": task.task_id, "f_task_version": task.task_version,
                          "f_role": task.party.role, "f_party_id": str(task.party.party_id),
                          "f_data_name": t.output_name or "data", "f_table_name": t.name,
                          "f_table_namespace": t.namespace, "f_create_time": t.create_time_ms or None})
    return views


@route(not_found=EXCEPTION)
async def component_list(request: web.Request) -> web.Response:
    flow = stubs(request).flow
    body = await body_of(request)
    found = await flow.ListComponents(fpb.ListComponentsRequest(job_id=text(body, "job_id", required=True)),
                                      timeout=TIMEOUT)
    return envelope({"components": [c.name for c in found.components]})


@route()
async def parameters(request: web.Request) -> web.Response:
    flow = stubs(request).flow
    out = await component_output(flow, await body_of(request))
    return envelope(rows.parameters(out))


@route(not_found=SUCCESS, not_found_data={})
async def metrics(request: web.Request) -> web.Response:
    flow = stubs(request).flow
    out = await component_output(flow, await body_of(request))
    data = rows.metric_names(out)
    return envelope(data, retmsg="success" if data else "no data")


@route(not_found=SUCCESS, not_found_data={})
async def metric_all(request: web.Request) -> web.Response:
    flow = stubs(request).flow
    out = await component_output(flow, await body_of(request))
    data = rows.metric_all(out)
    return envelope(data, retmsg="success" if data else "no data")


@route()
async def metric_delete(request: web.Request) -> web.Response:
    flow = stubs(request).flow
    body = await body_of(request)
    date = text(body, "model") or text(body, "date")  # flow_sdk sends the date as "model"
    job_id = text(body, "job_id")
    if not date and not job_id:
        raise BadRequest("give date (YYYYMMDD) or job_id")
    if date and (len(date) != 8 or not date.isdigit()):
        raise BadRequest(f"date must look like YYYYMMDD, got {date!r}")
    done = await flow.DeleteMetrics(fpb.DeleteMetricsRequest(date=date, job_id=job_id), timeout=TIMEOUT)
    return envelope(done.deleted)


@route(not_found=EXCEPTION)
async def output_model(request: web.Request) -> web.Response:
    flow = stubs(request).flow
    out = await component_output(flow, await body_of(request))
    model = rows.loads(out.model_json, {})
    if not model:
        return envelope({}, retmsg="no data")
    meta = rows.loads(out.model_meta_json, {}) or {}
    meta = {"meta_data": meta, "module_name": out.task.module, "component_name": out.task.component_name}
    return envelope(model, meta=meta)


@route(not_found=SUCCESS, not_found_data=[])
async def output_data(request: web.Request) -> web.Response:
    flow = stubs(request).flow
    body = await body_of(request)
    out = await component_output(flow, body)
    data, headers, totals, data_names = [], [], [], []
    for t in out.output_tables:
        data.append([rows.split_line(line) async for line in table_lines(flow, t, PREVIEW_ROWS)])
        headers.append(rows.header_of(t))
        totals.append(t.count)
        data_names.append(t.output_name or "data")
    if not any(data):
        return envelope([], retmsg="no data")
    return envelope(data, meta={"header": headers, "total": totals, "names": data_names})


@download_route(210)
async def output_data_download(request: web.Request) -> web.StreamResponse:
    flow = stubs(request).flow
    body = await body_of(request)
    limit = integer(body, "limit", -1)
    if limit == 0:
        raise BadRequest("limit is 0", C.NOT_FOUND)
    out = await component_output(flow, body)
    if not out.output_tables:
        raise BadRequest("no data", C.NOT_FOUND)
    head = body.get("head", True)
    draft = TarDraft()
    try:
        for t in out.output_tables:
            name = t.output_name or "data"
            header = rows.header_of(t)
            if head:
                draft.append(f"{name}.csv", rows.csv_line(header))
            async for line in table_lines(flow, t, limit if limit > 0 else 0):
                draft.append(f"{name}.csv", line)
            draft.append(f"{name}.meta", json.dumps({"header": header}, indent=4))
    except BaseException:
        draft.close()
        raise
    task = out.task
    return await draft.send(request, rows.OUTPUT_TAR.format(job=task.job_id, cpn=task.component_name,
                                                            role=task.party.role, party=task.party.party_id))


@route(not_found=EXCEPTION)
async def output_data_table(request: web.Request) -> web.Response:
    flow = stubs(request).flow
    body = await body_of(request)
    tables = rows.output_tables(await component_output(flow, body))
    if not tables:
        return envelope(retcode=EXCEPTION, retmsg=NO_TABLE)
    return envelope(tables)


@route(not_found=210)
async def summary(request: web.Request) -> web.Response:
    flow = stubs(request).flow
    out = await component_output(flow, await body_of(request))
    data = rows.loads(out.summary_json, {})
    if not data:
        return envelope(retcode=210, retmsg=NO_SUMMARY)
    return envelope(data)


BASE = "/v1/tracking/component"
ROUTES = [
    ("POST", f"{BASE}/list", component_list),
    ("POST", f"{BASE}/parameters", parameters),
    ("POST", f"{BASE}/metrics", metrics),
    ("POST", f"{BASE}/metric/all", metric_all),
    ("POST", f"{BASE}/metric/delete", metric_delete),
    ("POST", f"{BASE}/output/model", output_model),
    ("POST", f"{BASE}/output/data", output_data),
    ("GET", f"{BASE}/output/data/download", output_data_download),
    ("POST", f"{BASE}/output/data/table", output_data_table),
    ("POST", f"{BASE}/summary/download", summary),
]
