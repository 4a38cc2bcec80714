"""FATE Flow (seed 004): the `/v1/<path>` routes fate-client's `flow_sdk` calls, over FlowService.

Jobs, tasks and the queue are here; component tracking in fate_tracking.py; data upload,
download and tables in fate_data.py. Wire conventions (envelope, retcodes, reading bodies) are in
fate_wire.py, row shapes in client/flow_rows.py (shared with client/flow.py).

Deviation: taskhub keeps one job for all its parties, so job/query answers one row per
(role, party) and job/list/job one row per job (seen from the party asked for, else the initiator).
"""
from __future__ import annotations

import json

from aiohttp import web
from taskhub.v1 import flow_service_pb2 as fpb

from client import flow_rows as rows

from ..errors import BadRequest
from . import fate_data, fate_tracking
from .common import TIMEOUT, stubs
from .fate_files import TarDraft
from .fate_wire import ARGUMENT, DATA, EXCEPTION, body_of, download_route, envelope, flag, integer, names, party, route, \
    text

MAX_ROWS = 10_000
STOP_STATUS = {"canceled": fpb.FLOW_JOB_STATUS_CANCELED, "failed": fpb.FLOW_JOB_STATUS_FAILED,
               "timeout": fpb.FLOW_JOB_STATUS_TIMEOUT}
LIST_STATUSES = {"success", "running", "waiting", "failed", "canceled"}


def job_statuses(values: list[str], allowed: set[str] | None = None) -> list[int]:
    out = []
    for v in values:
        if allowed is not None and v not in allowed:
            raise BadRequest(f"Invalid parameter 'status': {v!r}; one of {', '.join(sorted(allowed))}")
        try:
            out.append(rows.job_status_value(v))
        except ValueError as e:
            raise BadRequest(f"Invalid parameter 'status': {e}") from None
    return out


def flow_party(role: str, party_id: int | None) -> fpb.FlowParty | None:
    if not role and party_id is None:
        return None
    return fpb.FlowParty(role=role, party_id=party_id or 0)


def logs_url(job_id: str) -> str:
    return f"/v1/flow/jobs/{job_id}/logs"


@route()
async def submit(request: web.Request) -> web.Response:
    flow = stubs(request).flow
    body = await body_of(request)
    conf, dsl = body.get("job_runtime_conf"), body.get("job_dsl")
    if not isinstance(conf, dict) or not conf:
        raise BadRequest("job_runtime_conf is required and must be a JSON object (the runtime conf)")
    if dsl is not None and not isinstance(dsl, dict):
        raise BadRequest("job_dsl must be a JSON object (the DSL)")
    job = await flow.SubmitJob(fpb.SubmitJobRequest(dsl_json=json.dumps(dsl or {}), conf_json=json.dumps(conf)),
                               timeout=TIMEOUT)
    return envelope(rows.submit_data(job, logs_url(job.job_id)), job_id=job.job_id)


@route(not_found=DATA)
async def stop(request: web.Request) -> web.Response:
    flow = stubs(request).flow
    body = await body_of(request)
    job_id = text(body, "job_id", required=True)
    name = text(body, "stop_status") or "canceled"
    if name not in STOP_STATUS:
        raise BadRequest(f"Invalid parameter 'stop_status': {name!r}; one of {', '.join(STOP_STATUS)}")
    job = await flow.StopJob(fpb.StopJobRequest(job_id=job_id, status=STOP_STATUS[name],
                                                reason="stopped through job/stop"), timeout=TIMEOUT)
    return envelope(retmsg=f"stop job {job.job_id}: {rows.job_status_name(job.status)}")


@route()
async def query(request: web.Request) -> web.Response:
    flow = stubs(request).flow
    body = await body_of(request)
    role, party_id = party(body)
    req = fpb.ListJobsRequest(job_id=text(body, "job_id"), statuses=job_statuses(names(body, "status")),
                              limit=MAX_ROWS)
    found = await flow.ListJobs(req, timeout=TIMEOUT)
    data = [row for job in found.jobs for row in rows.job_rows(job, role, party_id)]
    if not data:
        return envelope([], retmsg="no job could be found")
    return envelope(data)


@route()
async def list_jobs(request: web.Request) -> web.Response:
    flow = stubs(request).flow
    body = await body_of(request)
    limit = integer(body, "limit", 0, low=0, high=MAX_ROWS) or MAX_ROWS
    page = integer(body, "page", 1, low=1)
    role, party_id = party({"party_id": body.get("party_id")})
    roles = names(body, "role")
    for r in roles:
        if r not in rows.ROLES:
            raise BadRequest(f"Invalid parameter 'role': {r!r}; one of {', '.join(rows.ROLES)}")
    job_id = text(body, "job_id")
    req = fpb.ListJobsRequest(job_id=f"{job_id}*" if job_id and not job_id.endswith("*") else job_id,
                              statuses=job_statuses(names(body, "status"), LIST_STATUSES),
                              limit=limit, page=page)
    if len(roles) == 1 or party_id is not None:
        req.party.CopyFrom(flow_party(roles[0] if len(roles) == 1 else "", party_id))
    found = await flow.ListJobs(req, timeout=TIMEOUT)
    jobs = []
    for job in found.jobs:  # the server filters by one (role, party); several roles are filtered here
        seen_from = [p for p in job.parties if (not roles or p.role in roles)
                     and (party_id is None or p.party_id == party_id)]
        if seen_from:
            jobs.append(rows.job_list_row(job, seen_from[0]))
    return envelope({"jobs": jobs, "count": found.total})


@route()
async def config(request: web.Request) -> web.Response:
    flow = stubs(request).flow
    body = await body_of(request)
    job = await flow.GetJob(fpb.GetJobRequest(job_id=text(body, "job_id", required=True)), timeout=TIMEOUT)
    return envelope(rows.job_config(job))


@download_route(404)
async def log_download(request: web.Request) -> web.StreamResponse:
    flow = stubs(request).flow
    body = await body_of(request)
    job_id = text(body, "job_id", required=True)
    draft = TarDraft()
    try:
        async for batch in flow.TraceJob(fpb.TraceJobRequest(job_id=job_id, follow=False)):
            for line in batch.lines:
                draft.append(rows.log_file_name(line), rows.log_text(line))
    except BaseException:
        draft.close()
        raise
    return await draft.send(request, f"job_{job_id}_log.tar.gz")


async def job_lines(flow, body: dict):
    """(line_num from 1, text) of the job's log, or one component/role/party's."""
    role, party_id = party(body)
    req = fpb.TraceJobRequest(job_id=text(body, "job_id", required=True),
                              component_name=text(body, "component_name"), role=role,
                              party_id=party_id or 0, follow=False)
    num = 0
    async for batch in flow.TraceJob(req, timeout=TIMEOUT):
        for line in batch.lines:
            num += 1
            yield num, line


@route()
async def log_size(request: web.Request) -> web.Response:
    flow = stubs(request).flow
    body = await body_of(request)
    size = 0
    async for _ in job_lines(flow, body):
        size += 1
    return envelope(size)


@route()
async def log_cat(request: web.Request) -> web.Response:
    flow = stubs(request).flow
    body = await body_of(request)
    begin = integer(body, "begin", 1, low=0)
    end = integer(body, "end", 0, low=0)
    data = [{"line_num": num, "content": rows.log_text(line)} async for num, line in job_lines(flow, body)
            if num >= begin and (not end or num <= end)]
    return envelope(data)


@route()
async def data_view(request: web.Request) -> web.Response:
    flow = stubs(request).flow
    body = await body_of(request)
    views = await fate_tracking.output_views(flow, body)
    if not views:
        return envelope(retcode=ARGUMENT, retmsg="find data view failed")
    return envelope(views)


async def flow_tasks(flow, body: dict, limit: int, page: int = 1) -> fpb.ListFlowTasksResponse:
    role, party_id = party(body)
    statuses = []
    for v in names(body, "status"):
        try:
            statuses.append(rows.task_status_value(v))
        except ValueError as e:
            raise BadRequest(f"Invalid parameter 'status': {e}") from None
    req = fpb.ListFlowTasksRequest(job_id=text(body, "job_id"), role=role, party_id=party_id or 0,
                                   component_name=text(body, "component_name"), statuses=statuses,
                                   limit=limit, page=page)
    return await flow.ListFlowTasks(req, timeout=TIMEOUT)


@route()
async def list_tasks(request: web.Request) -> web.Response:
    flow = stubs(request).flow
    body = await body_of(request)
    limit = integer(body, "limit", 0, low=0, high=MAX_ROWS) or MAX_ROWS
    page = integer(body, "page", 1, low=1)
    found = await flow_tasks(flow, body, limit, page)
    return envelope({"tasks": [rows.task_list_row(t) for t in found.tasks], "count": found.total})


@route()
async def task_query(request: web.Request) -> web.Response:
    flow = stubs(request).flow
    body = await body_of(request)
    found = await flow_tasks(flow, body, MAX_ROWS)
    if not found.tasks:
        return envelope(retcode=ARGUMENT, retmsg="find task failed")
    return envelope([rows.task_row(t) for t in found.tasks])


@route(not_found=DATA)
async def rerun(request: web.Request) -> web.Response:
    flow = stubs(request).flow
    body = await body_of(request)
    req = fpb.RerunJobRequest(job_id=text(body, "job_id", required=True), component_name=text(body, "component_name"),
                              force=flag(body, "force"))
    answer = await flow.RerunJob(req, timeout=TIMEOUT)
    return envelope({"job_id": answer.job.job_id, "component_names": list(answer.component_names)},
                    retmsg="rerun job success", job_id=answer.job.job_id)


@route(not_found=EXCEPTION)
async def clean(request: web.Request) -> web.Response:
    flow = stubs(request).flow
    body = await body_of(request)
    role, party_id = party(body)
    req = fpb.CleanJobRequest(job_id=text(body, "job_id", required=True), role=role, party_id=party_id or 0,
                              component_name=text(body, "component_name"))
    answer = await flow.CleanJob(req, timeout=TIMEOUT)
    return envelope({"tasks": answer.tasks, "tables": answer.tables, "metrics": answer.metrics})


@route()
async def clean_queue(request: web.Request) -> web.Response:
    flow = stubs(request).flow
    await body_of(request)
    cleaned = await flow.CleanQueue(fpb.CleanQueueRequest(), timeout=TIMEOUT)
    return envelope({job_id: 0 for job_id in cleaned.job_ids})


ROUTES = [
    ("POST", "/v1/job/submit", submit),
    ("POST", "/v1/job/stop", stop),
    ("POST", "/v1/job/query", query),
    ("POST", "/v1/job/list/job", list_jobs),
    ("POST", "/v1/job/config", config),
    ("POST", "/v1/job/log/download", log_download),
    ("POST", "/v1/job/log", log_download),            # what FATE 1.5/1.6 clients call for the same archive
    ("POST", "/v1/job/data/view/query", data_view),
    ("POST", "/v1/job/list/task", list_tasks),
    ("POST", "/v1/job/task/query", task_query),
    ("POST", "/v1/job/rerun", rerun),
    ("POST", "/v1/job/clean", clean),
    ("POST", "/v1/job/clean/queue", clean_queue),
    ("POST", "/v1/log/size", log_size),
    ("POST", "/v1/log/cat", log_cat),
    *fate_tracking.ROUTES,
    *fate_data.ROUTES,
]
