"""The FATE part of the store's interface: jobs, tasks, tracking, tables, uploads, federation
messages, models, tags and tenants (server/flow/ is their domain).

Like the rest of the store: reads are Store methods (`FlowReads`), writes are Batch operations
(`FlowBatch`) applied by the one writer in the batch's transaction. Each backend implements them
with its own SQL (sqlite_flow.py, postgres_flow.py). A FATE task is keyed by
key = (job_id, component, role, party_id); a model party row by (model_id, model_version, role, party_id).
Rows cross this interface as dicts keyed by the column names below (reads) or tuples in their order
(writes). `scope`: the caller's namespaces, or None for every namespace.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

FLOW_JOB_COLUMNS = ("job_id", "namespace", "job_type", "status", "dsl_json", "conf_json", "initiator_role",
                    "initiator_party", "parties_json", "model_id", "model_version", "timeout_seconds", "description",
                    "error", "progress", "create_time_ms", "start_time_ms", "end_time_ms", "update_time_ms")
FLOW_TASK_COLUMNS = ("job_id", "component", "role", "party_id", "module", "status", "taskhub_task_id",
                     "task_version", "run_pid", "node", "error", "retries", "create_time_ms", "start_time_ms",
                     "end_time_ms")
# A table's description; its tenant is the namespace of the job that writes it (set by the backend).
FLOW_TABLE_COLUMNS = ("namespace", "name", "count", "partitions", "schema_json", "job_id", "component", "role",
                      "party_id", "output_name", "create_time_ms")
FLOW_UPLOAD_COLUMNS = ("job_id", "namespace", "name", "conf_json", "upload_count", "create_time_ms")
FLOW_MODEL_COLUMNS = ("model_id", "model_version", "role", "party_id", "job_id", "parent_version", "initiator_role",
                      "initiator_party", "roles_json", "train_dsl_json", "train_conf_json", "inference_dsl_json",
                      "imported", "loaded_times", "service_ids_json", "create_time_ms", "update_time_ms", "tenant")
# A federation message: its address (all but the payload) is its key.
FLOW_MESSAGE_COLUMNS = ("job_id", "name", "tag", "src_role", "src_party", "dst_role", "dst_party", "payload")
FLOW_COMPONENT_COLUMNS = ("model_id", "model_version", "role", "party_id", "component", "module", "model_json",
                          "meta_json")


class FlowBatch:
    """FATE writes of a Batch (each an `op_<name>` of the backend)."""

    __slots__ = ()
    _op: Any  # Batch's

    # -- jobs and tasks
    def put_flow_job(self, row: tuple) -> None:
        """row: FLOW_JOB_COLUMNS; the job is inserted or replaced whole."""
        self._op("put_flow_job", row)

    def insert_flow_tasks(self, rows: list[tuple]) -> None:
        """rows: FLOW_TASK_COLUMNS + (parameters_json,); a task already there fails the batch."""
        self._op("insert_flow_tasks", list(rows))

    def update_flow_tasks(self, rows: list[tuple]) -> None:
        """rows: FLOW_TASK_COLUMNS (the key first); the columns after the key are written."""
        self._op("update_flow_tasks", list(rows))

    def delete_flow_jobs(self, job_ids: list[str], table_namespaces: list[str]) -> None:
        """Jobs with their tasks, metrics, messages and uploads, and the tables in table_namespaces."""
        self._op("delete_flow_jobs", list(job_ids), list(table_namespaces))

    # -- tracking
    def append_flow_metric(self, row: tuple) -> None:
        """row: key + (namespace, name, points as a JSON list, meta_json): points appended, meta replaced
        unless empty (merged in SQL, so concurrent appends never lose one)."""
        self._op("append_flow_metric", row)

    def patch_flow_summary(self, key: tuple, summary_json: str) -> None:
        """The task's summary with summary_json's keys merged in (a JSON merge patch)."""
        self._op("patch_flow_summary", key, summary_json)

    def set_flow_task_model(self, key: tuple, model_json: str, meta_json: str) -> None:
        self._op("set_flow_task_model", tuple(key), model_json, meta_json)

    def clear_flow_task_outputs(self, key: tuple, tracking: bool) -> None:
        """The task's metrics; with tracking also its summary and model."""
        self._op("clear_flow_task_outputs", tuple(key), tracking)

    def delete_flow_metrics(self, job_ids: list[str]) -> None:
        self._op("delete_flow_metrics", list(job_ids))

    # -- tables
    def delete_flow_table(self, namespace: str, name: str) -> None:
        """Its rows and its description."""
        self._op("delete_flow_table", namespace, name)

    def put_flow_table_chunk(self, namespace: str, name: str, seq: int, rows: int, data: str) -> None:
        self._op("put_flow_table_chunk", (namespace, name, seq, rows, data))

    def put_flow_table(self, row: tuple) -> None:
        """row: FLOW_TABLE_COLUMNS; replaces the description (the table becomes visible)."""
        self._op("put_flow_table", row)

    # -- uploads
    def put_flow_upload(self, row: tuple) -> None:
        """row: FLOW_UPLOAD_COLUMNS (inserted or replaced)."""
        self._op("put_flow_upload", row)

    def set_flow_upload_count(self, job_id: str, count: int) -> None:
        self._op("set_flow_upload_count", job_id, count)

    # -- federation
    def put_flow_messages(self, rows: list[tuple]) -> None:
        """Federation messages (FLOW_MESSAGE_COLUMNS), each replacing one with the same address."""
        self._op("put_flow_messages", [tuple(r) for r in rows])

    def delete_flow_messages(self, keys: list[tuple]) -> None:
        """The messages at these addresses (FLOW_MESSAGE_COLUMNS but the payload)."""
        self._op("delete_flow_messages", [tuple(k) for k in keys])

    def delete_flow_job_messages(self, job_id: str) -> None:
        """Every message of the job."""
        self._op("delete_flow_job_messages", job_id)

    # -- models
    def register_flow_models(self, rows: list[tuple]) -> None:
        """A train job's model: its party rows (FLOW_MODEL_COLUMNS), each with the component models its
        job's tasks of that party wrote, copied in SQL (so the copy runs in the writer's order)."""
        self._op("register_flow_models", list(rows))

    def put_flow_models(self, rows: list[tuple], components: list[tuple]) -> None:
        """Model party rows (FLOW_MODEL_COLUMNS), each replacing the party's earlier components, then
        the new components (FLOW_COMPONENT_COLUMNS)."""
        self._op("put_flow_models", list(rows), list(components))

    def mark_flow_models_loaded(self, keys: list[tuple], ts: int) -> None:
        self._op("mark_flow_models_loaded", [tuple(k) for k in keys], ts)

    def bind_model_service(self, key: tuple, service_id: str, ts: int) -> None:
        """key: (model_id, model_version, role, party_id); the id is added to its list once."""
        self._op("bind_model_service", key, service_id, ts)

    def delete_flow_model(self, model_id: str, model_version: str) -> None:
        """Every party of the version, its components, and its tags once no model has the version."""
        self._op("delete_flow_model", model_id, model_version)

    # -- tags
    def insert_flow_tag(self, name: str, description: str, ts: int, tenant: str) -> None:
        self._op("insert_flow_tag", (name, description, ts, tenant))

    def rename_flow_tag(self, name: str, new_name: str, description: str) -> None:
        """The tag (and its models' links) renamed, its description replaced."""
        self._op("rename_flow_tag", name, new_name, description)

    def delete_flow_tag(self, name: str) -> None:
        self._op("delete_flow_tag", name)

    def tag_flow_model(self, tag: str, model_version: str, remove: bool = False) -> None:
        """Link (once) or unlink a model version and a tag."""
        self._op("tag_flow_model", tag, model_version, remove)


class FlowReads(ABC):
    """FATE reads of a Store (any thread)."""

    # -- jobs and tasks
    @abstractmethod
    def flow_job(self, job_id: str) -> dict | None: ...

    @abstractmethod
    def flow_unfinished_jobs(self) -> list[dict]:
        """Jobs not in an end status, oldest first."""

    @abstractmethod
    def flow_finished_job_ids(self, cutoff_ms: int, limit: int) -> list[str]:
        """Up to `limit` jobs that ended before cutoff_ms, oldest end first."""

    @abstractmethod
    def flow_job_counts(self) -> dict[int, int]:
        """Status -> jobs."""

    @abstractmethod
    def flow_job_tasks(self, job_id: str) -> list[dict]:
        """FLOW_TASK_COLUMNS of each of the job's tasks."""

    @abstractmethod
    def flow_list_jobs(self, job_id: str, party: tuple[str, int] | None, statuses: list[int], job_type: str,
                       limit: int, offset: int, scope: tuple[str, ...] | None) -> tuple[list[dict], int]:
        """One page of the matching jobs, newest first, and how many match. job_id: exact, or a prefix
        ending in '*'; party: (role, id), id 0 for any of that role; empty values match anything."""

    @abstractmethod
    def flow_list_tasks(self, job_id: str, role: str, party_id: int, component: str, statuses: list[int],
                        limit: int, offset: int, scope: tuple[str, ...] | None) -> tuple[list[dict], int]:
        """One page of the matching tasks (newest job first) and how many match; empty values match anything."""

    @abstractmethod
    def flow_job_ids_created_between(self, start_ms: int, end_ms: int, scope: tuple[str, ...] | None) -> list[str]: ...

    # -- tracking
    @abstractmethod
    def flow_task_outputs(self, key: tuple) -> dict | None:
        """parameters_json, summary_json, model_json, model_meta_json."""

    @abstractmethod
    def flow_metrics(self, key: tuple) -> list[dict]:
        """namespace, name, data_json, meta_json of each of the task's series, by namespace and name."""

    @abstractmethod
    def flow_count_metrics(self, job_ids: list[str] = (), key: tuple | None = None) -> int:
        """Metric series of these jobs, or of one task."""

    # -- tables
    @abstractmethod
    def flow_table(self, namespace: str, name: str) -> dict | None:
        """FLOW_TABLE_COLUMNS and tenant."""

    @abstractmethod
    def flow_output_tables(self, key: tuple) -> list[dict]:
        """The tables the task wrote, by output name."""

    @abstractmethod
    def flow_table_chunks(self, namespace: str, name: str, after_seq: int, limit: int) -> list[tuple[int, str]]:
        """(seq, data) of up to `limit` chunks after after_seq, in order."""

    # -- uploads and federation
    @abstractmethod
    def flow_uploads(self, limit: int, job_id: str, scope: tuple[str, ...] | None) -> list[dict]:
        """Newest first."""

    @abstractmethod
    def flow_message(self, job_id: str, name: str, tag: str, src: tuple[str, int],
                     dst: tuple[str, int]) -> bytes | None: ...

    @abstractmethod
    def flow_outbox(self, own_party: int) -> list[tuple]:
        """The messages kept here for another party's server (dst_party is not own_party), as
        FLOW_MESSAGE_COLUMNS rows: what is still to be delivered (FATE across sites)."""

    # -- models and tags
    @abstractmethod
    def flow_models(self, model_id: str, model_version: str, role: str, party_id: int,
                    scope: tuple[str, ...] | None) -> list[dict]:
        """FLOW_MODEL_COLUMNS and size (characters of its components) of each matching party row,
        newest first; empty values match anything."""

    @abstractmethod
    def flow_model_components(self, model_id: str, model_version: str, role: str = "", party_id: int = 0) -> list[dict]:
        """FLOW_COMPONENT_COLUMNS, by role, party and component; role "" for every party."""

    @abstractmethod
    def flow_tags(self, name_contains: str, limit: int, scope: tuple[str, ...] | None) -> list[dict]:
        """name, description, create_time_ms, model_count; oldest first; limit 0: all."""

    @abstractmethod
    def flow_tag(self, name: str) -> dict | None:
        """name, description, create_time_ms."""

    @abstractmethod
    def flow_model_tags(self, model_version: str) -> list[dict]:
        """name, description of the version's tags, oldest first."""

    @abstractmethod
    def flow_tagged_models(self, tag: str) -> list[dict]:
        """model_id, model_version, role, party_id, size of each party row of the tag's versions."""

    # -- tenants (server/flow/tenants.py): the namespaces what a request names belongs to
    @abstractmethod
    def flow_job_tenants(self, job_id: str) -> list[str]: ...

    @abstractmethod
    def flow_table_tenants(self, namespace: str, name: str) -> list[str]: ...

    @abstractmethod
    def flow_model_tenants(self, model_version: str, model_id: str | None = None) -> list[str]:
        """Of the version's party rows (of model_id's only, when given), each tenant once."""

    @abstractmethod
    def flow_tag_tenants(self, name: str) -> list[str]: ...
