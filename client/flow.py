"""FlowClient: seed 004's FATE Flow SDK face, over FlowService (gRPC).

    from client.flow import FlowClient
    client = FlowClient("127.0.0.1", 50051, "v1")
    client.job.submit("conf.json", "dsl.json")

Nouns and functions are the seed's (job, component, data, task, model, tag, table, queue) and
answers are FATE's dicts: {"retcode", "retmsg", "data"?, "jobId"?, "meta"?}, with the same
retcodes as the HTTP family (client/flow_rows.py holds the shared shapes). A conf or DSL may be
given as a file path or as a dict. Model and tag nouns are in client/flow_models.py.
"""
from __future__ import annotations

import json
import os

from taskhub.v1 import flow_service_pb2 as fpb

from . import flow_rows as rows
from .client import TaskhubClient
from .fate_args import MAX_ROWS, limit_of, party_id_of, role_of
from .flow_common import CHUNK, Noun, answer, fate_call, load_json
from .flow_models import Model, Tag, generate_dsl

class Job(Noun):
    @fate_call()
    def submit(self, conf_path, dsl_path=None) -> dict:
        conf, dsl = load_json(conf_path, "conf"), load_json(dsl_path, "dsl")
        job = self._stub.SubmitJob(fpb.SubmitJobRequest(dsl_json=json.dumps(dsl), conf_json=json.dumps(conf)),
                                   timeout=self._timeout)
        return answer(rows.submit_data(job, f"/v1/flow/jobs/{job.job_id}/logs"), job_id=job.job_id)

    @fate_call(not_found=rows.DATA)
    def stop(self, job_id) -> dict:
        job = self._stub.StopJob(fpb.StopJobRequest(job_id=str(job_id), status=fpb.FLOW_JOB_STATUS_CANCELED,
                                                    reason="stopped through FlowClient"), timeout=self._timeout)
        return answer(retmsg=f"stop job {job.job_id}: {rows.job_status_name(job.status)}")

    @fate_call(not_found=rows.DATA)
    def rerun(self, job_id, component_name=None, force=False) -> dict:
        """Runs an ended job again from its components that did not succeed (or from component_name
        and downstream; force: succeeded ones too)."""
        done = self._stub.RerunJob(fpb.RerunJobRequest(job_id=str(job_id), component_name=component_name or "",
                                                       force=bool(force)), timeout=self._timeout)
        return answer({"job_id": done.job.job_id, "component_names": list(done.component_names)},
                      retmsg="rerun job success", job_id=done.job.job_id)

    @fate_call(not_found=rows.EXCEPTION)
    def clean(self, job_id, role=None, party_id=None, component_name=None) -> dict:
        """Deletes an ended job's output tables and metrics (of one role, party or component if given)."""
        done = self._stub.CleanJob(fpb.CleanJobRequest(job_id=str(job_id), role=role_of(role),
                                                       party_id=party_id_of(party_id) if party_id else 0,
                                                       component_name=component_name or ""), timeout=self._timeout)
        return answer({"tasks": done.tasks, "tables": done.tables, "metrics": done.metrics})

    @fate_call()
    def query(self, job_id=None, role=None, party_id=None, component_name=None, status=None) -> dict:
        req = fpb.ListJobsRequest(job_id=str(job_id or ""), limit=MAX_ROWS,
                                  statuses=[rows.job_status_value(status)] if status else [])
        found = self._stub.ListJobs(req, timeout=self._timeout)
        pid = party_id_of(party_id) if party_id not in (None, "") else None
        data = [r for job in found.jobs for r in rows.job_rows(job, role_of(role), pid)]
        return answer(data, retmsg="success" if data else "no job could be found")

    @fate_call()
    def list(self, limit=10) -> dict:
        found = self._stub.ListJobs(fpb.ListJobsRequest(limit=limit_of(limit, 10)), timeout=self._timeout)
        return answer({"jobs": [rows.job_list_row(j) for j in found.jobs], "count": found.total})

    @fate_call()
    def config(self, job_id, role, party_id, output_path) -> dict:
        job = self._stub.GetJob(fpb.GetJobRequest(job_id=str(job_id)), timeout=self._timeout)
        data = rows.job_config(job)
        directory = os.path.join(os.path.abspath(output_path), f"job_{job.job_id}_config")
        os.makedirs(directory, exist_ok=True)
        for key, value in data.items():
            if key != "job_id":
                with open(os.path.join(directory, f"{key}.json"), "w", encoding="utf-8") as f:
                    json.dump(value, f, indent=4)
        del data["dsl"], data["runtime_conf"]
        return answer(data, retmsg=f"download successfully, please check {directory} directory", directory=directory)

    @fate_call(not_found=404)
    def log(self, job_id, output_path) -> dict:
        directory = os.path.join(os.path.abspath(output_path), f"job_{job_id}_log")
        files: dict[str, Any] = {}
        try:
            for batch in self._stub.TraceJob(fpb.TraceJobRequest(job_id=str(job_id), follow=False)):
                for line in batch.lines:
                    name = rows.log_file_name(line)
                    if name not in files:
                        path = os.path.join(directory, name)
                        os.makedirs(os.path.dirname(path), exist_ok=True)
                        files[name] = open(path, "w", encoding="utf-8")
                    files[name].write(rows.log_text(line) + "\n")
        finally:
            for f in files.values():
                f.close()
        return answer(retmsg=f"download successfully, please check {directory} directory", directory=directory)

    @fate_call()
    def view(self, job_id=None, role=None, party_id=None, status=None, component_name=None) -> dict:
        if not job_id:
            raise ValueError("job_id is required")
        found = self._stub.ListFlowTasks(fpb.ListFlowTasksRequest(
            job_id=str(job_id), role=role_of(role), party_id=party_id_of(party_id),
            component_name=component_name or "", limit=MAX_ROWS), timeout=self._timeout)
        views = []
        for task in found.tasks:
            out = self._stub.GetComponentOutput(fpb.GetComponentOutputRequest(
                job_id=task.job_id, component_name=task.component_name, role=task.party.role,
                party_id=task.party.party_id), timeout=self._timeout)
            views += [{"f_job_id": task.job_id, "f_component_name": task.component_name, "f_task_id": task.task_id,
                       "f_task_version": task.task_version, "f_role": task.party.role,
                       "f_party_id": str(task.party.party_id), "f_data_name": t.output_name or "data",
                       "f_table_name": t.name, "f_table_namespace": t.namespace} for t in out.output_tables]
        if not views:
            return answer(retcode=rows.ARGUMENT, retmsg="find data view failed")
        return answer(views)

    def generate_dsl(self, train_dsl_path, cpn_file_path=None, cpn_list=None, version="2"):
        return generate_dsl(self, train_dsl_path, cpn_file_path, cpn_list, version)


class Component(Noun):
    def _output(self, job_id, role, party_id, component_name) -> fpb.ComponentOutput:
        return self._stub.GetComponentOutput(fpb.GetComponentOutputRequest(
            job_id=str(job_id), component_name=component_name, role=role_of(role),
            party_id=party_id_of(party_id)), timeout=self._timeout)

    @fate_call(not_found=rows.EXCEPTION)
    def list(self, job_id) -> dict:
        found = self._stub.ListComponents(fpb.ListComponentsRequest(job_id=str(job_id)), timeout=self._timeout)
        return answer({"components": [c.name for c in found.components]})

    @fate_call()
    def parameters(self, job_id, role, party_id, component_name) -> dict:
        return answer(rows.parameters(self._output(job_id, role, party_id, component_name)))

    @fate_call(not_found=rows.SUCCESS, not_found_data={})
    def metrics(self, job_id, role, party_id, component_name) -> dict:
        data = rows.metric_names(self._output(job_id, role, party_id, component_name))
        return answer(data, retmsg="success" if data else "no data")

    @fate_call(not_found=rows.SUCCESS, not_found_data={})
    def metric_all(self, job_id, role, party_id, component_name) -> dict:
        data = rows.metric_all(self._output(job_id, role, party_id, component_name))
        return answer(data, retmsg="success" if data else "no data")

    @fate_call()
    def metric_delete(self, date=None, job_id=None) -> dict:
        if not date and not job_id:
            raise ValueError("give date (YYYYMMDD) or job_id")
        done = self._stub.DeleteMetrics(fpb.DeleteMetricsRequest(date=str(date or ""), job_id=str(job_id or "")),
                                        timeout=self._timeout)
        return answer(done.deleted)

    @fate_call(not_found=rows.EXCEPTION)
    def output_model(self, job_id, role, party_id, component_name) -> dict:
        out = self._output(job_id, role, party_id, component_name)
        model = rows.loads(out.model_json, {})
        if not model:
            return answer({}, retmsg="no data")
        meta = {"meta_data": rows.loads(out.model_meta_json, {}), "module_name": out.task.module,
                "component_name": out.task.component_name}
        return answer(model, meta=meta)

    @fate_call(not_found=210)
    def output_data(self, job_id, role, party_id, component_name, output_path, limit=10) -> dict:
        limit = -1 if limit is None else int(limit)
        if limit == 0:
            return answer(retcode=210, retmsg="limit is 0")
        out = self._output(job_id, role, party_id, component_name)
        if not out.output_tables:
            return answer(retcode=210, retmsg="no data")
        task = out.task
        name = rows.OUTPUT_TAR.format(job=task.job_id, cpn=task.component_name, role=task.party.role,
                                      party=task.party.party_id).removesuffix(".tar.gz")
        directory = os.path.join(os.path.abspath(output_path), name)
        os.makedirs(directory, exist_ok=True)
        for t in out.output_tables:
            header, delimiter = rows.header_of(t), rows.delimiter_of(t)
            data_name = t.output_name or "data"
            with open(os.path.join(directory, f"{data_name}.csv"), "w", encoding="utf-8") as f:
                f.write(rows.csv_line(header) + "\n")
                req = fpb.ReadTableRequest(namespace=t.namespace, name=t.name, limit=max(limit, 0))
                for part in self._stub.ReadTable(req, timeout=self._timeout):
                    for line in part.lines:
                        f.write((line if delimiter == "," else rows.csv_line(rows.split_line(line, delimiter)))
                                + "\n")
            with open(os.path.join(directory, f"{data_name}.meta"), "w", encoding="utf-8") as f:
                json.dump({"header": header}, f, indent=4)
        return answer(retmsg=f"download successfully, please check {directory} directory", directory=directory)

    @fate_call(not_found=rows.EXCEPTION)
    def output_data_table(self, job_id, role, party_id, component_name) -> dict:
        tables = rows.output_tables(self._output(job_id, role, party_id, component_name))
        if not tables:
            return answer(retcode=rows.EXCEPTION, retmsg="No found table, please check if the parameters are correct.")
        return answer(tables)

    @fate_call(not_found=210)
    def get_summary(self, job_id, role, party_id, component_name) -> dict:
        data = rows.loads(self._output(job_id, role, party_id, component_name).summary_json, {})
        if not data:
            return answer({}, retcode=210, retmsg="No component summary found, please check if arguments are "
                                                  "specified correctly.")
        return answer(data)


class Data(Noun):
    @fate_call(not_found=rows.EXCEPTION)
    def upload(self, conf_path, verbose=0, drop=0) -> dict:
        conf = {**load_json(conf_path, "conf"), "drop": int(drop), "verbose": int(verbose)}
        local = str(conf.get("use_local_data", 1)) != "0"
        if local:
            path = conf.get("file") or ""
            if not os.path.isfile(path):
                raise ValueError(f"the file to upload does not exist on this machine: {path!r}")

        def messages():
            yield fpb.UploadDataRequest(conf_json=json.dumps(conf))
            if local:
                with open(conf["file"], "rb") as f:
                    while chunk := f.read(CHUNK):
                        yield fpb.UploadDataRequest(chunk=chunk)

        job = self._stub.UploadData(messages(), timeout=3600)
        data = {"job_id": job.job_id, "namespace": conf.get("namespace"), "table_name": conf.get("table_name"),
                "model_info": rows.model_info(job)}
        return answer(data, job_id=job.job_id)

    @fate_call(not_found=rows.EXCEPTION)
    def download(self, conf_path) -> dict:
        conf = load_json(conf_path, "conf")
        req = fpb.DownloadDataRequest(namespace=str(conf.get("namespace", "")),
                                      table_name=str(conf.get("table_name", "")),
                                      output_path=str(conf.get("output_path", "")),
                                      delimiter=str(conf.get("delimiter", conf.get("delimitor", ""))))
        job = self._stub.DownloadData(req, timeout=self._timeout)
        data = {"job_id": job.job_id, "namespace": req.namespace, "table_name": req.table_name,
                "output_path": req.output_path}
        return answer(data, job_id=job.job_id, retmsg=f"download job {job.job_id}: {rows.job_status_name(job.status)}")

    @fate_call()
    def upload_history(self, limit=10, job_id=None) -> dict:
        found = self._stub.UploadHistory(fpb.UploadHistoryRequest(limit=limit_of(limit, 10), job_id=str(job_id or "")),
                                         timeout=self._timeout)
        return answer([rows.upload_record(r) for r in found.uploads])


class Task(Noun):
    @fate_call()
    def list(self, limit=10) -> dict:
        found = self._stub.ListFlowTasks(fpb.ListFlowTasksRequest(limit=limit_of(limit, 10)), timeout=self._timeout)
        return answer({"tasks": [rows.task_list_row(t) for t in found.tasks], "count": found.total})

    @fate_call()
    def query(self, job_id=None, role=None, party_id=None, component_name=None, status=None) -> dict:
        req = fpb.ListFlowTasksRequest(job_id=str(job_id or ""), role=role_of(role), party_id=party_id_of(party_id),
                                       component_name=component_name or "", limit=MAX_ROWS,
                                       statuses=[rows.task_status_value(status)] if status else [])
        found = self._stub.ListFlowTasks(req, timeout=self._timeout)
        if not found.tasks:
            return answer(retcode=rows.ARGUMENT, retmsg="find task failed")
        return answer([rows.task_row(t) for t in found.tasks])


class Table(Noun):
    @fate_call()
    def info(self, namespace, table_name) -> dict:
        t = self._stub.GetTable(fpb.GetTableRequest(namespace=namespace, name=table_name), timeout=self._timeout)
        return answer(rows.table_info(t))

    @fate_call()
    def delete(self, namespace=None, table_name=None, job_id=None, role=None, party_id=None, component_name=None):
        if not (namespace and table_name) and not job_id:
            raise ValueError("give namespace and table_name, or job_id (with component_name, role, party_id)")
        done = self._stub.DeleteTable(fpb.DeleteTableRequest(
            namespace=namespace or "", name=table_name or "", job_id=str(job_id or ""),
            component_name=component_name or "", role=role_of(role), party_id=party_id_of(party_id)),
            timeout=self._timeout)
        if not done.tables:
            return answer(retcode=rows.ARGUMENT, retmsg="no find table")
        tables = [{"table_name": t.name, "namespace": t.namespace} for t in done.tables]
        return answer(tables[0] if table_name else tables)


class Queue(Noun):
    @fate_call()
    def clean(self) -> dict:
        cleaned = self._stub.CleanQueue(fpb.CleanQueueRequest(), timeout=self._timeout)
        return answer({job_id: 0 for job_id in cleaned.job_ids})


class FlowClient:
    """FlowClient("127.0.0.1", 50051) or FlowClient("127.0.0.1:50051"): FATE Flow's SDK over gRPC."""

    def __init__(self, ip_or_target: str, port: int | str | None = None, version: str = "v1", *,
                 timeout: float | None = 60, token: str | None = None, tls_ca: str | None = None,
                 taskhub: TaskhubClient | None = None):
        # token / tls_ca default to TASKHUB_TOKEN / TASKHUB_TLS_CA, as for TaskhubClient.
        if version != "v1":
            raise ValueError(f"only version v1 exists, got {version!r}")
        target = f"{ip_or_target}:{port}" if port not in (None, "") else ip_or_target
        self.taskhub = taskhub or TaskhubClient(target, timeout=timeout, token=token, tls_ca=tls_ca)
        self.timeout = timeout
        self.job, self.component, self.data, self.task = Job(self), Component(self), Data(self), Task(self)
        self.model, self.tag, self.table, self.queue = Model(self), Tag(self), Table(self), Queue(self)

    def close(self) -> None:
        self.taskhub.close()

    def __enter__(self) -> "FlowClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
