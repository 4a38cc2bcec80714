"""FATE Flow state in the store: jobs and tasks as records (server/flow/model.py), tracking, tables,
uploads, federation messages.

The SQL is each backend's (server/storage/flow.py declares the methods); this module turns records
into rows and back, and groups writes into the store's batches (one commit each, by its writer).
"""
from __future__ import annotations

import json
from typing import Iterator

from ..retention import PurgeStep
from ..storage import Batch, Store
from ..storage.flow import FLOW_TABLE_COLUMNS, FLOW_TASK_COLUMNS
from .model import FlowJob, FlowTask, JobStatus, TaskStatus


def output_namespace(job_id: str) -> str:
    """The table namespace a job's output tables are written in."""
    return f"output_data_{job_id}"


def delete_jobs(batch: Batch, ids: list[str]) -> None:
    """The jobs with their tasks, metrics, messages and output tables (uploaded tables are the user's
    and stay). Run by server/retention.py."""
    batch.delete_flow_jobs(ids, [output_namespace(j) for j in ids])


def purge_step(store: Store) -> PurgeStep:
    # Each job brings its tasks, metrics and tables: a fiftieth of the batch of jobs.
    return PurgeStep("flow_jobs", lambda cutoff, limit: store.flow_finished_job_ids(cutoff, max(1, limit // 50)),
                     delete_jobs)


def _job_row(j: FlowJob) -> tuple:
    return (j.job_id, j.namespace, j.job_type, int(j.status), j.dsl_json, j.conf_json, j.initiator[0], j.initiator[1],
            json.dumps(j.parties), j.model_id, j.model_version, j.timeout_seconds, j.description, j.error, j.progress,
            j.create_time_ms, j.start_time_ms, j.end_time_ms, j.update_time_ms)


def _task_row(t: FlowTask) -> tuple:
    return (t.job_id, t.component, t.role, t.party_id, t.module, int(t.status), t.taskhub_task_id, t.task_version,
            t.run_pid, t.node, t.error, t.retries, t.create_time_ms, t.start_time_ms, t.end_time_ms)


def job_from_row(r) -> FlowJob:
    return FlowJob(
        job_id=r["job_id"], namespace=r["namespace"], job_type=r["job_type"], dsl_json=r["dsl_json"],
        conf_json=r["conf_json"], initiator=(r["initiator_role"], r["initiator_party"]),
        parties=[tuple(p) for p in json.loads(r["parties_json"])], status=JobStatus(r["status"]),
        model_id=r["model_id"], model_version=r["model_version"], timeout_seconds=r["timeout_seconds"],
        description=r["description"], error=r["error"], progress=r["progress"], create_time_ms=r["create_time_ms"],
        start_time_ms=r["start_time_ms"], end_time_ms=r["end_time_ms"], update_time_ms=r["update_time_ms"])


def task_from_row(r) -> FlowTask:
    t = FlowTask(**{c: r[c] for c in FLOW_TASK_COLUMNS})
    t.status = TaskStatus(t.status)
    return t


class FlowStore:
    def __init__(self, store: Store):
        self.store = store

    def _write(self, wait: bool, fill):
        """One batch filled by fill(batch); with wait, a future of its commit."""
        b = self.store.batch()
        fill(b)
        return b.submit(wait)

    # ---------------------------------------------------------------- jobs and tasks
    def insert_job(self, job: FlowJob, params: dict[tuple[str, str, int], dict]):
        """The job and all its tasks (with their parameters), in one commit."""
        def fill(b: Batch) -> None:
            b.put_flow_job(_job_row(job))
            b.insert_flow_tasks([_task_row(t) + (json.dumps(params.get(t.key, {})),) for t in job.tasks.values()])
        return self._write(True, fill)

    def save_job(self, job: FlowJob, wait: bool = False):
        return self._write(wait, lambda b: b.put_flow_job(_job_row(job)))

    def save_tasks(self, tasks: list[FlowTask], wait: bool = False):
        return self._write(wait, lambda b: b.update_flow_tasks([_task_row(t) for t in tasks]))

    def unfinished_jobs(self) -> list[FlowJob]:
        return [job_from_row(r) for r in self.store.flow_unfinished_jobs()]

    def get_job(self, job_id: str) -> FlowJob | None:
        row = self.store.flow_job(job_id)
        return job_from_row(row) if row else None

    def count_jobs_by_status(self) -> dict[int, int]:
        return self.store.flow_job_counts()

    def job_tasks(self, job_id: str) -> list[FlowTask]:
        return [task_from_row(r) for r in self.store.flow_job_tasks(job_id)]

    def list_jobs(self, job_id: str, party: tuple[str, int] | None, statuses: list[int], job_type: str,
                  limit: int, offset: int, scope: tuple[str, ...] | None = None) -> tuple[list[FlowJob], int]:
        rows, total = self.store.flow_list_jobs(job_id, party, statuses, job_type, limit, offset, scope)
        return [job_from_row(r) for r in rows], total

    def list_tasks(self, job_id: str, role: str, party_id: int, component: str, statuses: list[int],
                   limit: int, offset: int, scope: tuple[str, ...] | None = None) -> tuple[list[FlowTask], int]:
        rows, total = self.store.flow_list_tasks(job_id, role, party_id, component, statuses, limit, offset, scope)
        return [task_from_row(r) for r in rows], total

    # ---------------------------------------------------------------- tracking
    def task_outputs(self, job_id: str, component: str, role: str, party_id: int) -> dict | None:
        return self.store.flow_task_outputs((job_id, component, role, party_id))

    def metrics(self, job_id: str, component: str, role: str, party_id: int) -> list[dict]:
        return self.store.flow_metrics((job_id, component, role, party_id))

    def put_metric(self, key: tuple, namespace: str, name: str, points: list, meta_json: str):
        """Append points (a JSON list merge done in SQL, so concurrent appends never lose one)."""
        return self._write(True, lambda b: b.append_flow_metric(tuple(key) + (namespace, name, json.dumps(points),
                                                                               meta_json)))

    def put_outputs(self, key: tuple, summary_json: str = "", model_json: str = "", model_meta_json: str = ""):
        def fill(b: Batch) -> None:
            if summary_json:
                b.patch_flow_summary(tuple(key), summary_json)
            if model_json:
                b.set_flow_task_model(key, model_json, model_meta_json or "{}")
        return self._write(True, fill)

    async def clear_task_outputs(self, tasks: list[FlowTask], tracking: bool) -> tuple[int, int]:
        """Deletes the tasks' output tables and metrics (with tracking, also their summaries and
        models), in one commit; (tables, metric series) deleted."""
        tables = metrics = 0
        b = self.store.batch()
        for t in tasks:
            key = (t.job_id, t.component, t.role, t.party_id)
            for info in self.output_tables(*key):
                b.delete_flow_table(info["namespace"], info["name"])
                tables += 1
            metrics += self.store.flow_count_metrics(key=key)
            b.clear_flow_task_outputs(key, tracking)
        await b.submit(wait=True)
        return tables, metrics

    def delete_metrics(self, job_ids: list[str]):
        return self._write(True, lambda b: b.delete_flow_metrics(job_ids))

    def count_metrics(self, job_ids: list[str]) -> int:
        return self.store.flow_count_metrics(job_ids)

    def job_ids_created_between(self, start_ms: int, end_ms: int, scope: tuple[str, ...] | None = None) -> list[str]:
        return self.store.flow_job_ids_created_between(start_ms, end_ms, scope)

    # ---------------------------------------------------------------- tables
    def get_table(self, namespace: str, name: str) -> dict | None:
        return self.store.flow_table(namespace, name)

    def output_tables(self, job_id: str, component: str, role: str, party_id: int) -> list[dict]:
        return self.store.flow_output_tables((job_id, component, role, party_id))

    def table_chunks(self, namespace: str, name: str) -> Iterator[str]:
        """The table's rows as text chunks (lines joined by newlines), in order; read lazily."""
        last = -1
        while rows := self.store.flow_table_chunks(namespace, name, last, 16):
            for last, data in rows:
                yield data

    def drop_table(self, namespace: str, name: str, wait: bool = False):
        """The table's rows and description (first in a table's writing, or its abort)."""
        return self._write(wait, lambda b: b.delete_flow_table(namespace, name))

    def append_chunk(self, namespace: str, name: str, seq: int, rows: int, data: str) -> None:
        self._write(False, lambda b: b.put_flow_table_chunk(namespace, name, seq, rows, data))

    def describe_table(self, info: dict):
        """The table's row, committed after its chunks (it becomes visible); it belongs to (tenant)
        the namespace of the job that writes it."""
        return self._write(True, lambda b: b.put_flow_table(tuple(info[c] for c in FLOW_TABLE_COLUMNS)))

    def delete_tables(self, tables: list[tuple[str, str]]):
        def fill(b: Batch) -> None:
            for ns, name in tables:
                b.delete_flow_table(ns, name)
        return self._write(True, fill)

    # ---------------------------------------------------------------- uploads
    def record_upload(self, job_id: str, namespace: str, name: str, conf_json: str, count: int, ts: int):
        return self._write(True, lambda b: b.put_flow_upload((job_id, namespace, name, conf_json, count, ts)))

    def set_upload_count(self, job_id: str, count: int):
        return self._write(False, lambda b: b.set_flow_upload_count(job_id, count))

    def uploads(self, limit: int, job_id: str, scope: tuple[str, ...] | None = None) -> list[dict]:
        return self.store.flow_uploads(limit, job_id, scope)

    # ---------------------------------------------------------------- federation
    def put_message(self, job_id: str, name: str, tag: str, src: tuple[str, int], dst: tuple[str, int], payload: bytes):
        return self._write(True, lambda b: b.put_flow_messages([(job_id, name, tag, *src, *dst, payload)]))

    def get_message(self, job_id: str, name: str, tag: str, src: tuple[str, int], dst: tuple[str, int]) -> bytes | None:
        return self.store.flow_message(job_id, name, tag, src, dst)

    def delete_messages(self, job_id: str):
        return self._write(False, lambda b: b.delete_flow_job_messages(job_id))
