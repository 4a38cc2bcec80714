"""FATE Flow's shapes of FlowService messages: the rows and answers FATE's clients read.

Shared by the HTTP family (gateway/families/fate.py) and the gRPC face (client/flow.py), so both
answer alike. Facts from FATE-Flow v1.11: job/query and job/task/query rows carry `f_`-prefixed
keys (times in ms, party_id as text); job/list/job and job/list/task rows drop the prefix
(party_id as an int, plus `partners`). taskhub keeps one job for all its parties, so job/query
gives one row per (role, party) like FATE's per-party job records.
"""
from __future__ import annotations

import csv
import io
import json
import time

import grpc
from taskhub.v1 import flow_service_pb2 as fpb

from .fate_args import ROLES  # noqa: F401 - the families read it from here too

# FATE's RetCode values.
SUCCESS, EXCEPTION, ARGUMENT, DATA, OPERATING, PERMISSION, AUTHENTICATION = 0, 100, 101, 102, 103, 108, 109
_RETCODES = {grpc.StatusCode.INVALID_ARGUMENT: ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION: OPERATING,
             grpc.StatusCode.PERMISSION_DENIED: PERMISSION, grpc.StatusCode.UNAUTHENTICATED: AUTHENTICATION}


def retcode_of(code: grpc.StatusCode, not_found: int) -> int:
    """FATE's retcode for a gRPC error: `not_found` is what FATE answers on that route."""
    if code == grpc.StatusCode.NOT_FOUND:
        return not_found
    return _RETCODES.get(code, EXCEPTION)
OUTPUT_TAR = "job_{job}_{cpn}_{role}_{party}_output_data.tar.gz"
REMOTE_NODE = "site:"   # a task's node when it runs at its party's own server (FATE across sites)


def job_status_name(status: int) -> str:
    """FLOW_JOB_STATUS_CANCELED -> 'canceled' ('' when unset)."""
    return fpb.FlowJobStatus.Name(status).removeprefix("FLOW_JOB_STATUS_").lower() if status else ""


def task_status_name(status: int) -> str:
    return fpb.FlowTaskStatus.Name(status).removeprefix("FLOW_TASK_STATUS_").lower() if status else ""


def job_status_value(name: str) -> int:
    """'success' -> FLOW_JOB_STATUS_SUCCESS; ValueError naming the choices for anything else."""
    try:
        return fpb.FlowJobStatus.Value("FLOW_JOB_STATUS_" + str(name).strip().upper())
    except ValueError:
        names = ", ".join(job_status_name(v) for v in fpb.FlowJobStatus.values() if v)
        raise ValueError(f"unknown job status {name!r}; one of {names}") from None


def task_status_value(name: str) -> int:
    try:
        return fpb.FlowTaskStatus.Value("FLOW_TASK_STATUS_" + str(name).strip().upper())
    except ValueError:
        names = ", ".join(task_status_name(v) for v in fpb.FlowTaskStatus.values() if v)
        raise ValueError(f"unknown task status {name!r}; one of {names}") from None


def loads(text: str, default=None):
    """JSON text from the server; `default` for empty (or, defensively, unreadable) text."""
    if not text:
        return default
    try:
        return json.loads(text)
    except ValueError:
        return default


def _elapsed(start_ms: int, end_ms: int) -> int | None:
    if not start_ms:
        return None
    return (end_ms or int(time.time() * 1000)) - start_ms


def _ms(value: int) -> int | None:
    return value or None


def roles_of(job: fpb.FlowJob) -> dict[str, list[int]]:
    roles: dict[str, list[int]] = {}
    for p in job.parties:
        roles.setdefault(p.role, []).append(p.party_id)
    return roles


def matching_parties(job: fpb.FlowJob, role: str | None = None, party_id: int | None = None) -> list[fpb.FlowParty]:
    return [p for p in job.parties
            if (not role or p.role == role) and (party_id is None or p.party_id == party_id)]


def model_info(job: fpb.FlowJob) -> dict:
    return {"model_id": job.model_id, "model_version": job.model_version}


def job_row(job: fpb.FlowJob, party: fpb.FlowParty | None = None) -> dict:
    """One f_-prefixed row of job/query for `party` (default: the initiator)."""
    party = party or job.initiator
    conf = loads(job.conf_json, {})
    local = {**conf, "local": {"role": party.role, "party_id": party.party_id}} if isinstance(conf, dict) else conf
    is_initiator = (party.role, party.party_id) == (job.initiator.role, job.initiator.party_id)
    return {
        "f_job_id": job.job_id,
        "f_name": "",
        "f_description": job.description,
        "f_tag": "",
        "f_dsl": loads(job.dsl_json, {}),
        "f_runtime_conf": conf,
        "f_runtime_conf_on_party": local,
        "f_train_runtime_conf": {},
        "f_roles": roles_of(job),
        "f_initiator_role": job.initiator.role,
        "f_initiator_party_id": str(job.initiator.party_id),
        "f_status": job_status_name(job.status),
        "f_status_code": None,
        "f_role": party.role,
        "f_party_id": str(party.party_id),
        "f_is_initiator": is_initiator,
        "f_progress": job.progress,
        "f_cancel_signal": job.status == fpb.FLOW_JOB_STATUS_CANCELED,
        "f_job_type": job.job_type,
        "f_error": job.error or None,
        "f_queue_position": job.queue_position or None,
        "f_create_time": _ms(job.create_time_ms),
        "f_update_time": _ms(job.update_time_ms),
        "f_start_time": _ms(job.start_time_ms),
        "f_end_time": _ms(job.end_time_ms),
        "f_elapsed": _elapsed(job.start_time_ms, job.end_time_ms),
    }


def job_rows(job: fpb.FlowJob, role: str | None = None, party_id: int | None = None) -> list[dict]:
    return [job_row(job, p) for p in matching_parties(job, role, party_id)]


def human(row: dict) -> dict:
    """A row without the f_ prefix (FATE's to_human_model_dict)."""
    return {k.removeprefix("f_"): v for k, v in row.items()}


def job_list_row(job: fpb.FlowJob, party: fpb.FlowParty | None = None) -> dict:
    """job/list/job: the job seen from one party, party_id as an int, with the other parties."""
    row = human(job_row(job, party))
    row["party_id"] = int(row["party_id"])
    row["partners"] = sorted({p.party_id for p in job.parties if p.role in ("guest", "host", "arbiter")}
                             - {row["party_id"]})
    return row


def task_row(task: fpb.FlowTask) -> dict:
    """One f_-prefixed row of job/task/query."""
    return {
        "f_job_id": task.job_id,
        "f_component_name": task.component_name,
        "f_component_module": task.module,
        "f_task_id": task.task_id,
        "f_task_version": task.task_version,
        "f_role": task.party.role,
        "f_party_id": str(task.party.party_id),
        "f_status": task_status_name(task.status),
        "f_party_status": task_status_name(task.status),
        "f_run_on_this_party": not task.node.startswith(REMOTE_NODE),
        "f_run_pid": task.run_pid or None,
        "f_run_ip": task.node or None,
        "f_auto_retries": task.retries,
        "f_error_report": task.error or None,
        "f_taskhub_task_id": task.taskhub_task_id or None,
        "f_create_time": _ms(task.create_time_ms),
        "f_start_time": _ms(task.start_time_ms),
        "f_end_time": _ms(task.end_time_ms),
        "f_elapsed": _elapsed(task.start_time_ms, task.end_time_ms),
    }


def task_list_row(task: fpb.FlowTask) -> dict:
    row = human(task_row(task))
    row["party_id"] = int(row["party_id"])
    return row


def job_config(job: fpb.FlowJob) -> dict:
    """job/config's data."""
    return {"job_id": job.job_id, "dsl": loads(job.dsl_json, {}), "runtime_conf": loads(job.conf_json, {}),
            "train_runtime_conf": {}, "model_info": model_info(job)}


def submit_data(job: fpb.FlowJob, logs_url: str = "") -> dict:
    """job/submit's data. FATE's *_path keys name its files; taskhub keeps DSL and conf with the
    job, so they name the job's REST route (GET gives dsl_json and conf_json)."""
    job_url = f"/v1/flow/jobs/{job.job_id}"
    return {"job_id": job.job_id, "model_info": model_info(job), "logs_directory": logs_url,
            "board_url": "", "dsl_path": job_url, "runtime_conf_path": job_url,
            "code": 0, "message": "success"}


def metric_names(out: fpb.ComponentOutput) -> dict:
    """tracking/component/metrics: {namespace: [names]}."""
    names: dict[str, list[str]] = {}
    for m in out.metrics:
        names.setdefault(m.namespace, []).append(m.name)
    return names


def metric_all(out: fpb.ComponentOutput) -> dict:
    """tracking/component/metric/all: {namespace: {name: {data: [[x, y], ...], meta: {...}}}}."""
    data: dict[str, dict] = {}
    for m in out.metrics:
        data.setdefault(m.namespace, {})[m.name] = {"data": loads(m.data_json, []), "meta": loads(m.meta_json, {})}
    return data


# FATE 1.11's parameter class of each module: tracking/component/parameters nests the parameters under it.
PARAM_CLASSES = {"Reader": "ReaderParam", "DataTransform": "DataTransformParam", "DataIO": "DataIOParam",
                 "Intersection": "IntersectParam", "FeatureScale": "ScaleParam", "HeteroLR": "HeteroLogisticParam",
                 "HomoLR": "HomoLogisticParam", "Evaluation": "EvaluateParam",
                 "HeteroFeatureBinning": "HeteroFeatureBinningParam", "HeteroFeatureSelection": "FeatureSelectionParam",
                 "OneHotEncoder": "OneHotEncoderParam", "SampleWeight": "SampleWeightParam"}


def parameters(out: fpb.ComponentOutput) -> dict:
    """tracking/component/parameters: {"module": ..., "<Module>Param": {the task's parameters}}, as FATE answers."""
    params = loads(out.parameters_json, {})
    module = out.task.module
    return {"module": module, PARAM_CLASSES.get(module, f"{module}Param"): params}


def table_info(t: fpb.TableInfo) -> dict:
    """table/table_info's data."""
    return {"table_name": t.name, "namespace": t.namespace, "exist": int(t.exist), "count": t.count,
            "partition": t.partitions, "schema": loads(t.schema_json, {}), "create_time": _ms(t.create_time_ms),
            "job_id": t.job_id or None}


def output_tables(out: fpb.ComponentOutput) -> list[dict]:
    """tracking/component/output/data/table's data."""
    return [{"data_name": t.output_name or "data", "table_name": t.name, "table_namespace": t.namespace,
             "namespace": t.namespace} for t in out.output_tables]


def header_of(t: fpb.TableInfo) -> list[str]:
    """Column names of an output table: the id column, then the schema's header."""
    schema = loads(t.schema_json, {}) or {}
    header = schema.get("header") or []
    if isinstance(header, str):
        header = [h for h in header.split(schema.get("delimiter", ",")) if h]
    return [schema.get("sid_name") or schema.get("sid") or "sid", *header]


def delimiter_of(t: fpb.TableInfo) -> str:
    schema = loads(t.schema_json, {}) or {}
    return schema.get("delimiter") or ","


def split_line(line: str, delimiter: str = ",") -> list[str]:
    """A stored row line -> its values (lines are CSV: quoted where a value holds the delimiter)."""
    if '"' in line:
        return next(csv.reader([line], delimiter=delimiter))
    return line.split(delimiter)


def csv_line(values) -> str:
    """Values as one comma-separated CSV line, quoted where needed."""
    buf = io.StringIO()
    csv.writer(buf, lineterminator="").writerow(values)
    return buf.getvalue()


def upload_record(r: fpb.UploadRecord) -> dict:
    """data/upload/history: {job_id: {upload_info, notes, meta}}."""
    conf = loads(r.conf_json, {}) or {}
    return {r.job_id: {
        "upload_info": {"table_name": r.table.name, "namespace": r.table.namespace,
                        "partition": r.table.partitions, "upload_count": r.upload_count,
                        "actual_count": r.table.count},
        "status": job_status_name(r.status),
        "notes": conf.get("notes", ""),
        "meta": loads(r.table.schema_json, {}),
    }}


def log_file_name(line: fpb.JobLogLine) -> str:
    """Where a line goes in the log tar: {role}/{party_id}/{component}/INFO.log (FATE's layout)."""
    return f"{line.role}/{line.party_id}/{line.component_name or 'job'}/INFO.log"


def log_text(line: fpb.JobLogLine) -> str:
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(line.line.time_ms / 1000))
    return f"[INFO] [{stamp}] {line.line.text}"
