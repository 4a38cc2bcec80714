"""Every read and write of FATE Flow state: jobs, tasks, tracking, tables, uploads, federation.

The statements are SQLite's dialect, run through the store's `query_sql` and `Batch.sql` (written by
its single writer); the tables are created by each backend's migration list (server/storage/).
Domain code (server/flow/jobs.py, tables.py) never writes SQL.
"""
from __future__ import annotations

import json
from typing import Iterator

from ..retention import PurgeStep
from ..storage import Batch, Store
from .model import FlowJob, FlowTask, JobStatus, TaskStatus


def finished_job_ids(store: Store, cutoff_ms: int, limit: int) -> list[str]:
    """A few jobs that ended before cutoff_ms (each brings its tasks, metrics and tables: limit // 50)."""
    return [r[0] for r in store.query_sql(
        "SELECT job_id FROM flow_jobs WHERE status IN (4, 5, 6, 7) AND end_time_ms > 0 AND end_time_ms < ?"
        " ORDER BY end_time_ms LIMIT ?", (cutoff_ms, max(1, limit // 50)))]


def delete_jobs(batch: Batch, ids: list[str]) -> None:
    """The jobs with their tasks, metrics, messages and output tables (uploaded tables are the user's
    and stay). Run by server/retention.py."""
    ids = tuple(ids)
    marks = ",".join("?" * len(ids))
    outputs = tuple(f"output_data_{j}" for j in ids)
    batch.sql([(f"DELETE FROM flow_table_chunks WHERE namespace IN ({marks})", outputs),
               (f"DELETE FROM flow_tables WHERE namespace IN ({marks})", outputs),
               *[(f"DELETE FROM {table} WHERE job_id IN ({marks})", ids)
                 for table in ("flow_metrics", "flow_tasks", "flow_messages", "flow_uploads")],
               (f"DELETE FROM flow_jobs WHERE job_id IN ({marks})", ids)])


def write_sql(store: Store, statements: list[tuple], wait: bool = True):
    """One batch of statements for the writer; with wait, a future of its commit."""
    b = store.batch()
    b.sql(statements)
    return b.submit(wait)


def purge_step(store: Store) -> PurgeStep:
    return PurgeStep("flow_jobs", lambda cutoff, limit: finished_job_ids(store, cutoff, limit), delete_jobs)


_JOB_COLS = ("job_id", "namespace", "job_type", "status", "dsl_json", "conf_json", "initiator_role", "initiator_party",
             "parties_json", "model_id", "model_version", "timeout_seconds", "description", "error", "progress",
             "create_time_ms", "start_time_ms", "end_time_ms", "update_time_ms")
_TASK_COLS = ("job_id", "component", "role", "party_id", "module", "status", "taskhub_task_id", "task_version",
              "run_pid", "node", "error", "retries", "create_time_ms", "start_time_ms", "end_time_ms")
_UPSERT_JOB = (f"INSERT OR REPLACE INTO flow_jobs ({', '.join(_JOB_COLS)}) VALUES ({', '.join('?' * len(_JOB_COLS))})")
_INSERT_TASK = (f"INSERT INTO flow_tasks ({', '.join(_TASK_COLS)}) VALUES ({', '.join('?' * len(_TASK_COLS))})")
_UPDATE_TASK = ("UPDATE flow_tasks SET " + ", ".join(f"{c}=?" for c in _TASK_COLS[4:])
                + " WHERE job_id=? AND component=? AND role=? AND party_id=?")


def match(equal: dict, statuses: list[int] = ()) -> tuple[list[str], list]:
    """WHERE conditions and their parameters: each column equal to its value (empty values and 0
    match anything), and `status` one of `statuses` when given."""
    where, params = [], []
    for col, value in equal.items():
        if value:
            where.append(f"{col} = ?")
            params.append(value)
    if statuses:
        where.append(f"status IN ({','.join('?' * len(statuses))})")
        params.extend(statuses)
    return where, params


def within_scope(where: list[str], params: list, column: str, scope: tuple[str, ...] | None) -> None:
    """Adds "column is one of the caller's namespaces" (nothing for every namespace)."""
    if scope is not None:
        where.append(f"{column} IN ({','.join('?' * len(scope)) or 'NULL'})")
        params.extend(scope)


def _job_row(j: FlowJob) -> tuple:
    return (j.job_id, j.namespace, j.job_type, int(j.status), j.dsl_json, j.conf_json, j.initiator[0], j.initiator[1],
            json.dumps(j.parties), j.model_id, j.model_version, j.timeout_seconds, j.description, j.error, j.progress,
            j.create_time_ms, j.start_time_ms, j.end_time_ms, j.update_time_ms)


def _task_values(t: FlowTask) -> tuple:
    return (t.module, int(t.status), t.taskhub_task_id, t.task_version, t.run_pid, t.node, t.error, t.retries,
            t.create_time_ms, t.start_time_ms, t.end_time_ms)


def job_from_row(r) -> FlowJob:
    return FlowJob(
        job_id=r["job_id"], namespace=r["namespace"], job_type=r["job_type"], dsl_json=r["dsl_json"],
        conf_json=r["conf_json"], initiator=(r["initiator_role"], r["initiator_party"]),
        parties=[tuple(p) for p in json.loads(r["parties_json"])], status=JobStatus(r["status"]),
        model_id=r["model_id"], model_version=r["model_version"], timeout_seconds=r["timeout_seconds"],
        description=r["description"], error=r["error"], progress=r["progress"], create_time_ms=r["create_time_ms"],
        start_time_ms=r["start_time_ms"], end_time_ms=r["end_time_ms"], update_time_ms=r["update_time_ms"])


def task_from_row(r) -> FlowTask:
    t = FlowTask(**{c: r[c] for c in _TASK_COLS})
    t.status = TaskStatus(t.status)
    return t


class FlowStore:
    def __init__(self, store: Store):
        self.store = store

    # ---------------------------------------------------------------- jobs and tasks
    def insert_job(self, job: FlowJob, params: dict[tuple[str, str, int], dict]):
        """The job and all its tasks (with their parameters), in one commit."""
        stmts = [(_UPSERT_JOB, _job_row(job))]
        for t in job.tasks.values():
            stmts.append((_INSERT_TASK, (t.job_id, t.component, t.role, t.party_id) + _task_values(t)))
            stmts.append(("UPDATE flow_tasks SET parameters_json=? WHERE job_id=? AND component=? AND role=? AND party_id=?",
                          (json.dumps(params.get(t.key, {})), t.job_id, t.component, t.role, t.party_id)))
        return self.execute(stmts)

    def save_job(self, job: FlowJob, wait: bool = False):
        return self.execute([(_UPSERT_JOB, _job_row(job))], wait=wait)

    def save_tasks(self, tasks: list[FlowTask], wait: bool = False):
        return self.execute([(_UPDATE_TASK, _task_values(t) + (t.job_id, t.component, t.role, t.party_id))
                                    for t in tasks], wait=wait)

    def unfinished_jobs(self) -> list[FlowJob]:
        rows = self.store.query_sql("SELECT * FROM flow_jobs WHERE status IN (1, 2, 3) ORDER BY create_time_ms, job_id")
        return [job_from_row(r) for r in rows]

    def get_job(self, job_id: str) -> FlowJob | None:
        rows = self.store.query_sql("SELECT * FROM flow_jobs WHERE job_id=?", (job_id,))
        return job_from_row(rows[0]) if rows else None

    def count_jobs_by_status(self) -> dict[int, int]:
        return {r[0]: r[1] for r in self.store.query_sql("SELECT status, COUNT(*) FROM flow_jobs GROUP BY status")}

    def job_tasks(self, job_id: str) -> list[FlowTask]:
        return [task_from_row(r) for r in self.store.query_sql("SELECT * FROM flow_tasks WHERE job_id=?", (job_id,))]

    def list_jobs(self, job_id: str, party: tuple[str, int] | None, statuses: list[int], job_type: str,
                  limit: int, offset: int, scope: tuple[str, ...] | None = None) -> tuple[list[FlowJob], int]:
        where, params = match({"job_id": "" if job_id.endswith("*") else job_id, "job_type": job_type}, statuses)
        within_scope(where, params, "namespace", scope)
        if job_id.endswith("*"):
            where.append("job_id LIKE ? ESCAPE '\\'")
            params.append(job_id[:-1].replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%")
        if party:
            where.append(self.store.FLOW_JOB_HAS_PARTY)
            params.extend([party[0], party[1], party[1]])
        sql_where = f"WHERE {' AND '.join(where)}" if where else ""
        total = self.store.query_sql(f"SELECT COUNT(*) FROM flow_jobs {sql_where}", params)[0][0]
        rows = self.store.query_sql(f"SELECT * FROM flow_jobs {sql_where} ORDER BY create_time_ms DESC, job_id DESC"
                                " LIMIT ? OFFSET ?", (*params, limit, offset))
        return [job_from_row(r) for r in rows], total

    def list_tasks(self, job_id: str, role: str, party_id: int, component: str, statuses: list[int],
                   limit: int, offset: int, scope: tuple[str, ...] | None = None) -> tuple[list[FlowTask], int]:
        where, params = match({"job_id": job_id, "role": role, "component": component, "party_id": party_id},
                              statuses)
        within_scope(where, params, "(SELECT namespace FROM flow_jobs j WHERE j.job_id = flow_tasks.job_id)", scope)
        sql_where = f"WHERE {' AND '.join(where)}" if where else ""
        total = self.store.query_sql(f"SELECT COUNT(*) FROM flow_tasks {sql_where}", params)[0][0]
        rows = self.store.query_sql(f"SELECT * FROM flow_tasks {sql_where} ORDER BY job_id DESC, create_time_ms, component,"
                                " role, party_id LIMIT ? OFFSET ?", (*params, limit, offset))
        return [task_from_row(r) for r in rows], total

    # ---------------------------------------------------------------- tracking
    def task_outputs(self, job_id: str, component: str, role: str, party_id: int) -> dict | None:
        rows = self.store.query_sql("SELECT parameters_json, summary_json, model_json, model_meta_json FROM flow_tasks"
                                " WHERE job_id=? AND component=? AND role=? AND party_id=?",
                                (job_id, component, role, party_id))
        return dict(rows[0]) if rows else None

    def metrics(self, job_id: str, component: str, role: str, party_id: int) -> list[dict]:
        rows = self.store.query_sql("SELECT namespace, name, data_json, meta_json FROM flow_metrics WHERE job_id=? AND"
                                " component=? AND role=? AND party_id=? ORDER BY namespace, name",
                                (job_id, component, role, party_id))
        return [dict(r) for r in rows]

    def put_metric(self, key: tuple, namespace: str, name: str, points: list, meta_json: str):
        """Append points (a JSON list merge done in SQL, so concurrent appends never lose one)."""
        b = self.store.batch()
        b.append_flow_metric(tuple(key) + (namespace, name, json.dumps(points), meta_json))
        return b.submit(wait=True)

    def put_outputs(self, key: tuple, summary_json: str = "", model_json: str = "", model_meta_json: str = ""):
        b = self.store.batch()
        if summary_json:
            b.patch_flow_summary(tuple(key), summary_json)
        if model_json:
            b.sql([("UPDATE flow_tasks SET model_json=?, model_meta_json=? WHERE job_id=? AND component=? AND role=?"
                    " AND party_id=?", (model_json, model_meta_json or "{}", *key))])
        return b.submit(wait=True)

    async def clear_task_outputs(self, tasks: list[FlowTask], tracking: bool) -> tuple[int, int]:
        """Deletes the tasks' output tables and metrics (with tracking, also their summaries and
        models), in one commit; (tables, metric series) deleted."""
        tables = metrics = 0
        stmts = []
        for t in tasks:
            key = (t.job_id, t.component, t.role, t.party_id)
            for info in self.output_tables(*key):
                stmts.extend(self.replace_table(info["namespace"], info["name"]))
                tables += 1
            where = " WHERE job_id=? AND component=? AND role=? AND party_id=?"
            metrics += self.store.query_sql("SELECT COUNT(*) FROM flow_metrics" + where, key)[0][0]
            stmts.append(("DELETE FROM flow_metrics" + where, key))
            if tracking:
                stmts.append(("UPDATE flow_tasks SET summary_json='{}', model_json='', model_meta_json=''" + where, key))
        if stmts:
            await self.execute(stmts)
        return tables, metrics

    def delete_metrics(self, job_ids: list[str]):
        return self.execute([("DELETE FROM flow_metrics WHERE job_id=?", (j,)) for j in job_ids])

    def count_metrics(self, job_ids: list[str]) -> int:
        if not job_ids:
            return 0
        return self.store.query_sql(f"SELECT COUNT(*) FROM flow_metrics WHERE job_id IN ({','.join('?' * len(job_ids))})",
                                job_ids)[0][0]

    def job_ids_created_between(self, start_ms: int, end_ms: int, scope: tuple[str, ...] | None = None) -> list[str]:
        where, params = ["create_time_ms >= ?", "create_time_ms < ?"], [start_ms, end_ms]
        within_scope(where, params, "namespace", scope)
        return [r[0] for r in self.store.query_sql(f"SELECT job_id FROM flow_jobs WHERE {' AND '.join(where)}", params)]

    # ---------------------------------------------------------------- tables
    def get_table(self, namespace: str, name: str) -> dict | None:
        rows = self.store.query_sql("SELECT * FROM flow_tables WHERE namespace=? AND name=?", (namespace, name))
        return dict(rows[0]) if rows else None

    def output_tables(self, job_id: str, component: str, role: str, party_id: int) -> list[dict]:
        rows = self.store.query_sql("SELECT * FROM flow_tables WHERE job_id=? AND component=? AND role=? AND party_id=?"
                                " ORDER BY output_name", (job_id, component, role, party_id))
        return [dict(r) for r in rows]

    def table_chunks(self, namespace: str, name: str) -> Iterator[str]:
        """The table's rows as text chunks (lines joined by newlines), in order; read lazily."""
        last = -1
        while True:
            rows = self.store.query_sql("SELECT seq, data FROM flow_table_chunks WHERE namespace=? AND name=? AND seq>?"
                                    " ORDER BY seq LIMIT 16", (namespace, name, last))
            if not rows:
                return
            for seq, data in rows:
                last = seq
                yield data

    def replace_table(self, namespace: str, name: str):
        """Statements that drop a table's rows and description (run first in a table's writing batch)."""
        return [("DELETE FROM flow_table_chunks WHERE namespace=? AND name=?", (namespace, name)),
                ("DELETE FROM flow_tables WHERE namespace=? AND name=?", (namespace, name))]

    def append_chunk_stmt(self, namespace: str, name: str, seq: int, rows: int, data: str) -> tuple:
        return ("INSERT OR REPLACE INTO flow_table_chunks (namespace, name, seq, rows, data) VALUES (?, ?, ?, ?, ?)",
                (namespace, name, seq, rows, data))

    def execute(self, statements: list[tuple], wait: bool = True):
        return write_sql(self.store, statements, wait)

    def describe_table_stmt(self, info: dict) -> tuple:
        """The table's row; it belongs to (tenant) the namespace of the job that writes it."""
        cols = ("namespace", "name", "count", "partitions", "schema_json", "job_id", "component", "role", "party_id",
                "output_name", "create_time_ms")
        return (f"INSERT OR REPLACE INTO flow_tables ({', '.join(cols)}, tenant) VALUES ({', '.join('?' * len(cols))},"
                " COALESCE((SELECT namespace FROM flow_jobs WHERE job_id=?), 'fate'))",
                tuple(info[c] for c in cols) + (info["job_id"],))

    def delete_tables(self, tables: list[tuple[str, str]]):
        stmts = []
        for ns, name in tables:
            stmts.extend(self.replace_table(ns, name))
        return self.execute(stmts)

    # ---------------------------------------------------------------- uploads
    def record_upload(self, job_id: str, namespace: str, name: str, conf_json: str, count: int, ts: int):
        return self.execute([(
            "INSERT OR REPLACE INTO flow_uploads (job_id, namespace, name, conf_json, upload_count, create_time_ms)"
            " VALUES (?, ?, ?, ?, ?, ?)", (job_id, namespace, name, conf_json, count, ts))])

    def set_upload_count(self, job_id: str, count: int):
        return self.execute([("UPDATE flow_uploads SET upload_count=? WHERE job_id=?", (count, job_id))], wait=False)

    def uploads(self, limit: int, job_id: str, scope: tuple[str, ...] | None = None) -> list[dict]:
        where, params = match({"job_id": job_id})
        within_scope(where, params, "(SELECT namespace FROM flow_jobs j WHERE j.job_id = flow_uploads.job_id)", scope)
        rows = self.store.query_sql(f"SELECT * FROM flow_uploads WHERE {' AND '.join(where) or '1=1'}"
                                " ORDER BY create_time_ms DESC, job_id DESC LIMIT ?", (*params, limit))
        return [dict(r) for r in rows]

    # ---------------------------------------------------------------- federation
    def put_message(self, job_id: str, name: str, tag: str, src: tuple[str, int], dst: tuple[str, int], payload: bytes):
        return self.execute([(
            "INSERT OR REPLACE INTO flow_messages (job_id, name, tag, src_role, src_party, dst_role, dst_party, payload)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)", (job_id, name, tag, src[0], src[1], dst[0], dst[1], payload))])

    def get_message(self, job_id: str, name: str, tag: str, src: tuple[str, int], dst: tuple[str, int]) -> bytes | None:
        rows = self.store.query_sql("SELECT payload FROM flow_messages WHERE job_id=? AND name=? AND tag=? AND src_role=?"
                                " AND src_party=? AND dst_role=? AND dst_party=?",
                                (job_id, name, tag, src[0], src[1], dst[0], dst[1]))
        return rows[0][0] if rows else None

    def delete_messages(self, job_id: str):
        return self.execute([("DELETE FROM flow_messages WHERE job_id=?", (job_id,))], wait=False)
