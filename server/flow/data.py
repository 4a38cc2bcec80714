"""What FATE jobs read and produce: tables (upload, download, output data), tracking (parameters,
metrics, summary, output model), and the calls component tasks make back into the server.

A component task identifies itself by its taskhub task uid; it may only write outputs of, and
read messages for, its own (job, component, role, party) while it runs.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import os
from typing import AsyncIterator

from .. import auth, errors
from . import names, tenants
from .jobs import FlowJobs, day_range_ms
from .model import FlowJob, FlowTask, JobStatus
from .store import FlowStore
from .tables import CsvIngest, TableWriter, check_name, read_lines

MAX_METRIC_POINTS = 100_000


class FlowData:
    def __init__(self, jobs: FlowJobs, fstore: FlowStore, data_dir: str):
        self.jobs = jobs
        self.fstore = fstore
        self.data_dir = os.path.abspath(data_dir)
        self.engine = jobs.engine
        self._writing: dict[tuple[str, str], asyncio.Lock] = {}

    # ------------------------------------------------------------------ who is calling
    def caller(self, task_uid: str) -> tuple[FlowJob, FlowTask]:
        """The running component task with this taskhub uid, or FailedPrecondition."""
        found = self.jobs.running_component(task_uid) if task_uid else None
        if found is None:
            raise errors.FailedPrecondition("only a running FATE component task may make this call (unknown task_uid)")
        if not auth.in_scope(found[0].namespace):
            raise errors.PermissionDenied("this task_uid is a component task of another namespace's job")
        return found

    # ------------------------------------------------------------------ tracking
    def put_tracking(self, task_uid: str, metrics: list[tuple[str, str, str, str]], summary_json: str,
                     model_json: str, model_meta_json: str) -> None:
        _, t = self.caller(task_uid)
        key = (t.job_id, t.component, t.role, t.party_id)
        for namespace, name, data_json, meta_json in metrics:
            if not namespace or not name:
                raise errors.InvalidArgument("a metric needs a namespace and a name")
            points = _json(data_json or "[]", f"metric {namespace}/{name} data_json", list)
            if len(points) > MAX_METRIC_POINTS:
                raise errors.InvalidArgument(f"at most {MAX_METRIC_POINTS} points per call")
            if meta_json:
                _json(meta_json, f"metric {namespace}/{name} meta_json", dict)
            self.fstore.put_metric(key, namespace, name, points, meta_json)
        if summary_json:
            _json(summary_json, "summary_json", dict)
        if model_json:
            _json(model_json, "model_json", (dict, list))
            if model_meta_json:
                _json(model_meta_json, "model_meta_json", dict)
        if summary_json or model_json:
            self.fstore.put_outputs(key, summary_json, model_json, model_meta_json)

    def resolve_party(self, job: FlowJob, role: str, party_id: int) -> tuple[str, int]:
        """FATE: a missing role/party means the initiator (or the role's first party)."""
        if not role:
            return job.initiator if not party_id or party_id == job.initiator[1] else ("", party_id)
        if not party_id:
            ids = [p for r, p in job.parties if r == role]
            if not ids:
                raise errors.NotFound(f"job {job.job_id} has no role {role!r}")
            return role, ids[0]
        return role, party_id

    def component_output(self, job_id: str, component: str, role: str, party_id: int) -> tuple[FlowTask, dict]:
        job = self.jobs.get(job_id)
        role, party_id = self.resolve_party(job, role, party_id)
        if not role:
            roles = [r for r, p in job.parties if p == party_id]
            role = roles[0] if roles else ""
        t = job.tasks.get((component, role, party_id))
        if t is None:
            if not any(c == component for c, _, _ in job.tasks):
                raise errors.NotFound(f"job {job_id} has no component {component!r}")
            raise errors.NotFound(f"component {component} of job {job_id} has no task for {role} {party_id}")
        outs = self.fstore.task_outputs(job_id, component, role, party_id) or {}
        outs["metrics"] = self.fstore.metrics(job_id, component, role, party_id)
        outs["tables"] = self.fstore.output_tables(job_id, component, role, party_id)
        return t, outs

    async def delete_metrics(self, date: str, job_id: str) -> int:
        if date:
            job_ids = self.fstore.job_ids_created_between(*day_range_ms(date), auth.CALL_SCOPE.get())
        elif job_id:
            self.jobs.get(job_id)
            job_ids = [job_id]
        else:
            raise errors.InvalidArgument("give a date (YYYYMMDD) or a job_id")
        n = self.fstore.count_metrics(job_ids)
        await self.fstore.delete_metrics(job_ids)
        return n

    # ------------------------------------------------------------------ output tables
    @staticmethod
    def output_table_name(t: FlowTask, output: str) -> tuple[str, str]:
        return f"output_data_{t.job_id}", f"{t.component}_{t.role}_{t.party_id}_{output}"

    async def write_output(self, task_uid: str, output_name: str, schema_json: str,
                           batches: AsyncIterator[list[str]]) -> dict:
        _, t = self.caller(task_uid)
        output_name = output_name or "data"
        schema = _json(schema_json or "{}", "schema_json", dict)
        namespace, name = self.output_table_name(t, output_name)
        async with self._table_lock(namespace, name):
            writer = TableWriter(self.fstore, namespace, name, schema, 1,
                                 (t.job_id, t.component, t.role, t.party_id, output_name))
            try:
                async for lines in batches:
                    writer.add(lines)
            except BaseException:
                writer.abort()
                raise
            return await writer.finish()

    @contextlib.asynccontextmanager
    async def _table_lock(self, namespace: str, name: str):
        """One writer per table at a time: a second write of it (a retried call, an upload with drop)
        waits, then replaces the first."""
        lock = self._writing.setdefault((namespace, name), asyncio.Lock())
        try:
            async with lock:
                yield
        finally:
            if not lock.locked() and not getattr(lock, "_waiters", None):
                self._writing.pop((namespace, name), None)

    # ------------------------------------------------------------------ tables
    def get_table(self, namespace: str, name: str) -> dict | None:
        check_name(namespace, name)
        return self.fstore.get_table(namespace, name)

    def read(self, namespace: str, name: str, limit: int):
        info = self.get_table(namespace, name)
        if info is None:
            raise errors.NotFound(f"no table {namespace}.{name}")
        return info, read_lines(self.fstore, namespace, name, limit)

    async def delete_table(self, namespace: str, name: str, job_id: str, component: str, role: str,
                           party_id: int) -> list[dict]:
        if namespace or name:
            info = self.get_table(namespace, name)
            found = [info] if info else []
        elif job_id:
            job = self.jobs.get(job_id)
            found = []
            for (cpn, r, p) in job.tasks:
                if (not component or cpn == component) and (not role or r == role) and (not party_id or p == party_id):
                    found.extend(self.fstore.output_tables(job_id, cpn, r, p))
        else:
            raise errors.InvalidArgument("give namespace and table_name, or a job_id (with component_name, role, party_id)")
        if not found:
            raise errors.NotFound("no such table")
        await self.fstore.delete_tables([(i["namespace"], i["name"]) for i in found])
        return found

    # ------------------------------------------------------------------ upload / download
    def safe_path(self, path: str, what: str) -> str:
        """A path inside the data directory (relative paths are taken from it); anything else is refused.
        A caller held to some namespaces has <data dir>/<its namespace> instead: no other namespace's files."""
        if not path:
            raise errors.InvalidArgument(f"{what} is required")
        root = self.data_dir
        if auth.CALL_SCOPE.get() is not None:
            root = os.path.join(root, names.check_name(tenants.home(), "the caller's namespace"))
            os.makedirs(root, mode=0o700, exist_ok=True)
        return names.inside(root, path, what, "data directory (taskhub serve --flow-data-dir)")

    async def upload(self, conf: dict, chunks: AsyncIterator[bytes] | None) -> FlowJob:
        """Store a CSV as a table while its bytes arrive (or from a server-side file); recorded as a job."""
        namespace, name = str(conf.get("namespace") or ""), str(conf.get("table_name") or "")
        check_name(namespace, name)
        try:
            head = int(conf.get("head", 1)) == 1
            drop = int(conf.get("drop", 0)) == 1
            partitions = int(conf.get("partition", 1) or 1)
        except (TypeError, ValueError):
            raise errors.InvalidArgument("head, drop and partition must be integers") from None
        delimiter = str(conf.get("delimiter") or ",")
        existing = self.fstore.get_table(namespace, name)
        if existing is not None and not auth.in_scope(existing["tenant"]):
            raise errors.PermissionDenied(f"table {namespace}.{name} belongs to another namespace; choose another name")
        if existing is not None and not drop:
            raise errors.AlreadyExists(f"table {namespace}.{name} already exists; upload with drop=1 to replace it")
        if chunks is None:
            chunks = self._file_chunks(self.safe_path(str(conf.get("file") or ""), "file"))
        job = self.jobs.record_job("upload", tenants.home(), conf, ("local", 0), "Upload",
                                   f"upload {namespace}.{name}")
        await self.jobs.begin_recorded(job)
        self.fstore.record_upload(job.job_id, namespace, name, json.dumps(conf), 0, job.create_time_ms)
        try:
            async with self._table_lock(namespace, name):
                writer = TableWriter(self.fstore, namespace, name, {}, partitions,
                                     (job.job_id, "upload_0", "local", 0, "data"))
                ingest = CsvIngest(writer, head, delimiter)
                try:
                    async for data in chunks:
                        ingest.feed(data)
                    ingest.feed(b"", final=True)
                    if writer.count == 0:
                        raise errors.InvalidArgument("the file has no data rows")
                    writer.schema = ingest.schema()
                    await writer.finish()
                except BaseException:
                    writer.abort()
                    raise
        except BaseException as e:
            self.jobs.end_recorded(job, False, str(e) if isinstance(e, errors.TaskhubError) else repr(e))
            raise
        self.fstore.set_upload_count(job.job_id, writer.count)
        self.jobs.end_recorded(job, True)
        return job

    async def _file_chunks(self, path: str) -> AsyncIterator[bytes]:
        if not os.path.isfile(path):
            raise errors.NotFound(f"no file {path} on the server")
        loop = asyncio.get_running_loop()
        with open(path, "rb") as f:
            while True:
                data = await loop.run_in_executor(None, f.read, 1 << 20)
                if not data:
                    return
                yield data

    async def download(self, namespace: str, name: str, output_path: str, delimiter: str = ",") -> FlowJob:
        info = self.get_table(namespace, name)
        if info is None:
            raise errors.NotFound(f"no table {namespace}.{name}")
        path = self.safe_path(output_path, "output_path")
        conf = {"namespace": namespace, "table_name": name, "output_path": path, "delimiter": delimiter or ","}
        job = self.jobs.record_job("download", info["tenant"], conf, ("local", 0), "Download", f"download {namespace}.{name}")
        await self.jobs.begin_recorded(job)
        schema = json.loads(info["schema_json"] or "{}")
        d = delimiter or ","

        def write() -> None:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w") as f:
                f.write(d.join([schema.get("sid", "id"), *schema.get("header", [])]) + "\n")
                for lines in read_lines(self.fstore, namespace, name):
                    f.write("\n".join(lines if d == "," else (l.replace(",", d) for l in lines)) + "\n")

        try:
            await asyncio.get_running_loop().run_in_executor(None, write)
        except OSError as e:
            self.jobs.end_recorded(job, False, f"could not write {path}: {e}")
            raise errors.FailedPrecondition(f"could not write {path}: {e.strerror}") from None
        self.jobs.end_recorded(job, True)
        return job

    def upload_history(self, limit: int, job_id: str) -> list[tuple[dict, dict | None, JobStatus]]:
        out = []
        for rec in self.fstore.uploads(limit or 10, job_id, auth.CALL_SCOPE.get()):
            try:
                status = self.jobs.get(rec["job_id"]).status
            except errors.NotFound:
                continue
            out.append((rec, self.fstore.get_table(rec["namespace"], rec["name"]), status))
        return out


def _json(text: str, what: str, kind):
    try:
        value = json.loads(text)
    except ValueError as e:
        raise errors.InvalidArgument(f"{what} is not valid JSON: {e}") from None
    if not isinstance(value, kind):
        raise errors.InvalidArgument(f"{what} has the wrong JSON type")
    return value
