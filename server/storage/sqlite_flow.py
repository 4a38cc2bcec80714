"""SQLite's SQL for the FATE part of the store (storage/flow.py says what each method does).

A mixin of SqliteStore: reads go through its `_rows`, operations get the writer's connection.
The tables are created by sqlite.py's migration list.
"""
from __future__ import annotations

import sqlite3
from typing import Callable

from ..flow.model import JOB_TERMINAL
from .flow import (FLOW_COMPONENT_COLUMNS, FLOW_JOB_COLUMNS, FLOW_MESSAGE_COLUMNS, FLOW_MODEL_COLUMNS,
                   FLOW_TABLE_COLUMNS, FLOW_TASK_COLUMNS, FLOW_UPLOAD_COLUMNS)

_ENDED = ", ".join(str(int(s)) for s in sorted(JOB_TERMINAL))
_KEY = " WHERE job_id=? AND component=? AND role=? AND party_id=?"
_MODEL_KEY = " WHERE model_id=? AND model_version=? AND role=? AND party_id=?"
# Characters of a model party row's components.
_SIZE = ("(SELECT COALESCE(SUM(LENGTH(model_json) + LENGTH(meta_json)), 0) FROM flow_model_components c"
         " WHERE c.model_id=m.model_id AND c.model_version=m.model_version AND c.role=m.role"
         " AND c.party_id=m.party_id) AS size")


def _marks(n: int) -> str:
    return ",".join("?" * n)


def _insert(table: str, columns: tuple, verb: str = "INSERT OR REPLACE") -> str:
    return f"{verb} INTO {table} ({', '.join(columns)}) VALUES ({_marks(len(columns))})"


_PUT_JOB = _insert("flow_jobs", FLOW_JOB_COLUMNS)
_INSERT_TASK = _insert("flow_tasks", FLOW_TASK_COLUMNS + ("parameters_json",), "INSERT")
_UPDATE_TASK = "UPDATE flow_tasks SET " + ", ".join(f"{c}=?" for c in FLOW_TASK_COLUMNS[4:]) + _KEY
_PUT_MODEL = _insert("flow_models", FLOW_MODEL_COLUMNS)
_PUT_COMPONENT = _insert("flow_model_components", FLOW_COMPONENT_COLUMNS)


def _match(equal: dict, statuses: list[int] = ()) -> tuple[list[str], list]:
    """Each column equal to its value (empty values and 0 match anything), status one of `statuses`."""
    where, params = [], []
    for col, value in equal.items():
        if value:
            where.append(f"{col} = ?")
            params.append(value)
    if statuses:
        where.append(f"status IN ({_marks(len(statuses))})")
        params.extend(statuses)
    return where, params


def _scope(where: list[str], params: list, column: str, scope: tuple[str, ...] | None) -> None:
    if scope is not None:
        where.append(f"{column} IN ({_marks(len(scope)) or 'NULL'})")
        params.extend(scope)


def _where(where: list[str]) -> str:
    return f" WHERE {' AND '.join(where)}" if where else ""


class SqliteFlow:
    """Needs the store's `_rows(sql, params)`."""

    _rows: Callable

    def _dicts(self, sql: str, params=()) -> list[dict]:
        return [dict(r) for r in self._rows(sql, params)]

    def _column(self, sql: str, params=()) -> list:
        return [r[0] for r in self._rows(sql, params)]

    # ---------------------------------------------------------------- operations: jobs and tasks
    def op_put_flow_job(self, conn: sqlite3.Connection, row: tuple) -> None:
        conn.execute(_PUT_JOB, row)

    def op_insert_flow_tasks(self, conn, rows: list[tuple]) -> None:
        if rows:
            conn.executemany(_INSERT_TASK, rows)

    def op_update_flow_tasks(self, conn, rows: list[tuple]) -> None:
        conn.executemany(_UPDATE_TASK, [r[4:] + r[:4] for r in rows])

    def op_delete_flow_jobs(self, conn, ids: list[str], table_namespaces: list[str]) -> None:
        for table in ("flow_table_chunks", "flow_tables"):
            conn.execute(f"DELETE FROM {table} WHERE namespace IN ({_marks(len(table_namespaces))})", table_namespaces)
        for table in ("flow_metrics", "flow_tasks", "flow_messages", "flow_uploads", "flow_jobs"):
            conn.execute(f"DELETE FROM {table} WHERE job_id IN ({_marks(len(ids))})", ids)

    # ---------------------------------------------------------------- operations: tracking
    def op_append_flow_metric(self, conn, row: tuple) -> None:
        conn.execute(
            "INSERT INTO flow_metrics (job_id, component, role, party_id, namespace, name, data_json, meta_json)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO UPDATE SET"
            " data_json = (SELECT json_group_array(CASE WHEN type IN ('array', 'object') THEN json(value) ELSE value END)"
            " FROM (SELECT value, type FROM json_each(flow_metrics.data_json)"
            " UNION ALL SELECT value, type FROM json_each(excluded.data_json))),"
            " meta_json = CASE WHEN excluded.meta_json = '' THEN flow_metrics.meta_json ELSE excluded.meta_json END",
            row)

    def op_patch_flow_summary(self, conn, key: tuple, summary_json: str) -> None:
        conn.execute("UPDATE flow_tasks SET summary_json=json_patch(summary_json, ?)" + _KEY, (summary_json, *key))

    def op_set_flow_task_model(self, conn, key: tuple, model_json: str, meta_json: str) -> None:
        conn.execute("UPDATE flow_tasks SET model_json=?, model_meta_json=?" + _KEY, (model_json, meta_json, *key))

    def op_clear_flow_task_outputs(self, conn, key: tuple, tracking: bool) -> None:
        conn.execute("DELETE FROM flow_metrics" + _KEY, key)
        if tracking:
            conn.execute("UPDATE flow_tasks SET summary_json='{}', model_json='', model_meta_json=''" + _KEY, key)

    def op_delete_flow_metrics(self, conn, job_ids: list[str]) -> None:
        conn.execute(f"DELETE FROM flow_metrics WHERE job_id IN ({_marks(len(job_ids))})", job_ids)

    # ---------------------------------------------------------------- operations: tables, uploads, messages
    def op_delete_flow_table(self, conn, namespace: str, name: str) -> None:
        conn.execute("DELETE FROM flow_table_chunks WHERE namespace=? AND name=?", (namespace, name))
        conn.execute("DELETE FROM flow_tables WHERE namespace=? AND name=?", (namespace, name))

    def op_put_flow_table_chunk(self, conn, row: tuple) -> None:
        conn.execute("INSERT OR REPLACE INTO flow_table_chunks (namespace, name, seq, rows, data) VALUES (?, ?, ?, ?, ?)",
                     row)

    def op_put_flow_table(self, conn, row: tuple) -> None:
        conn.execute(f"INSERT OR REPLACE INTO flow_tables ({', '.join(FLOW_TABLE_COLUMNS)}, tenant)"
                     f" VALUES ({_marks(len(FLOW_TABLE_COLUMNS))},"
                     " COALESCE((SELECT namespace FROM flow_jobs WHERE job_id=?), 'fate'))",
                     row + (row[FLOW_TABLE_COLUMNS.index("job_id")],))

    def op_put_flow_upload(self, conn, row: tuple) -> None:
        conn.execute(_insert("flow_uploads", FLOW_UPLOAD_COLUMNS), row)

    def op_set_flow_upload_count(self, conn, job_id: str, count: int) -> None:
        conn.execute("UPDATE flow_uploads SET upload_count=? WHERE job_id=?", (count, job_id))

    def op_put_flow_messages(self, conn, rows: list[tuple]) -> None:
        conn.executemany(_insert("flow_messages", FLOW_MESSAGE_COLUMNS), rows)

    def op_delete_flow_messages(self, conn, keys: list[tuple]) -> None:
        conn.executemany("DELETE FROM flow_messages WHERE " + " AND ".join(f"{c}=?" for c in FLOW_MESSAGE_COLUMNS[:-1]),
                         keys)

    def op_delete_flow_job_messages(self, conn, job_id: str) -> None:
        conn.execute("DELETE FROM flow_messages WHERE job_id=?", (job_id,))

    # ---------------------------------------------------------------- operations: models and tags
    def op_register_flow_models(self, conn, rows: list[tuple]) -> None:
        at = {c: FLOW_MODEL_COLUMNS.index(c) for c in ("model_id", "model_version", "job_id", "role", "party_id")}
        for row in rows:
            conn.execute(_PUT_MODEL, row)
            conn.execute(
                "INSERT OR REPLACE INTO flow_model_components (model_id, model_version, role, party_id, component,"
                " module, model_json, meta_json) SELECT ?, ?, role, party_id, component, module, model_json,"
                " model_meta_json FROM flow_tasks WHERE job_id=? AND role=? AND party_id=? AND model_json != ''",
                tuple(row[at[c]] for c in ("model_id", "model_version", "job_id", "role", "party_id")))

    def op_put_flow_models(self, conn, rows: list[tuple], components: list[tuple]) -> None:
        for row in rows:
            conn.execute("DELETE FROM flow_model_components" + _MODEL_KEY, row[:4])
            conn.execute(_PUT_MODEL, row)
        conn.executemany(_PUT_COMPONENT, components)

    def op_mark_flow_models_loaded(self, conn, keys: list[tuple], ts: int) -> None:
        conn.executemany("UPDATE flow_models SET loaded_times = loaded_times + 1, update_time_ms=?" + _MODEL_KEY,
                         [(ts, *k) for k in keys])

    def op_bind_model_service(self, conn, key: tuple, service_id: str, ts: int) -> None:
        conn.execute("UPDATE flow_models SET service_ids_json = CASE WHEN EXISTS (SELECT 1 FROM json_each(service_ids_json)"
                     " WHERE value = ?) THEN service_ids_json ELSE json_insert(service_ids_json, '$[#]', ?) END,"
                     " update_time_ms=?" + _MODEL_KEY, (service_id, service_id, ts, *key))

    def op_delete_flow_model(self, conn, model_id: str, model_version: str) -> None:
        conn.execute("DELETE FROM flow_model_components WHERE model_id=? AND model_version=?", (model_id, model_version))
        conn.execute("DELETE FROM flow_models WHERE model_id=? AND model_version=?", (model_id, model_version))
        conn.execute("DELETE FROM flow_model_tags WHERE model_version=? AND NOT EXISTS (SELECT 1 FROM flow_models"
                     " WHERE model_version=?)", (model_version, model_version))

    def op_insert_flow_tag(self, conn, row: tuple) -> None:
        conn.execute("INSERT INTO flow_tags (name, description, create_time_ms, tenant) VALUES (?, ?, ?, ?)", row)

    def op_rename_flow_tag(self, conn, name: str, new_name: str, description: str) -> None:
        conn.execute("UPDATE flow_tags SET name=?, description=? WHERE name=?", (new_name, description, name))
        conn.execute("UPDATE flow_model_tags SET tag=? WHERE tag=?", (new_name, name))

    def op_delete_flow_tag(self, conn, name: str) -> None:
        conn.execute("DELETE FROM flow_model_tags WHERE tag=?", (name,))
        conn.execute("DELETE FROM flow_tags WHERE name=?", (name,))

    def op_tag_flow_model(self, conn, tag: str, model_version: str, remove: bool) -> None:
        if remove:
            conn.execute("DELETE FROM flow_model_tags WHERE tag=? AND model_version=?", (tag, model_version))
        else:
            conn.execute("INSERT OR IGNORE INTO flow_model_tags (tag, model_version) VALUES (?, ?)", (tag, model_version))

    # ---------------------------------------------------------------- reads: jobs and tasks
    def flow_job(self, job_id: str) -> dict | None:
        found = self._dicts("SELECT * FROM flow_jobs WHERE job_id=?", (job_id,))
        return found[0] if found else None

    def flow_unfinished_jobs(self) -> list[dict]:
        return self._dicts(f"SELECT * FROM flow_jobs WHERE status NOT IN ({_ENDED}) ORDER BY create_time_ms, job_id")

    def flow_finished_job_ids(self, cutoff_ms: int, limit: int) -> list[str]:
        return self._column(f"SELECT job_id FROM flow_jobs WHERE status IN ({_ENDED}) AND end_time_ms > 0"
                            " AND end_time_ms < ? ORDER BY end_time_ms LIMIT ?", (cutoff_ms, limit))

    def flow_job_counts(self) -> dict[int, int]:
        return {r[0]: r[1] for r in self._rows("SELECT status, COUNT(*) FROM flow_jobs GROUP BY status")}

    def flow_job_tasks(self, job_id: str) -> list[dict]:
        return self._dicts("SELECT * FROM flow_tasks WHERE job_id=?", (job_id,))

    def flow_list_jobs(self, job_id, party, statuses, job_type, limit, offset, scope):
        prefix = job_id.endswith("*")
        where, params = _match({"job_id": "" if prefix else job_id, "job_type": job_type}, statuses)
        _scope(where, params, "namespace", scope)
        if prefix:
            where.append("job_id LIKE ? ESCAPE '\\'")
            params.append(job_id[:-1].replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%")
        if party:  # a party id 0 matches any id of that role
            where.append("EXISTS (SELECT 1 FROM json_each(parties_json) p WHERE json_extract(p.value, '$[0]') = ?"
                         " AND (? = 0 OR json_extract(p.value, '$[1]') = ?))")
            params.extend([party[0], party[1], party[1]])
        total = self._rows("SELECT COUNT(*) FROM flow_jobs" + _where(where), params)[0][0]
        rows = self._dicts("SELECT * FROM flow_jobs" + _where(where) + " ORDER BY create_time_ms DESC, job_id DESC"
                           " LIMIT ? OFFSET ?", (*params, limit, offset))
        return rows, total

    def flow_list_tasks(self, job_id, role, party_id, component, statuses, limit, offset, scope):
        where, params = _match({"job_id": job_id, "role": role, "component": component, "party_id": party_id},
                               statuses)
        _scope(where, params, "(SELECT namespace FROM flow_jobs j WHERE j.job_id = flow_tasks.job_id)", scope)
        total = self._rows("SELECT COUNT(*) FROM flow_tasks" + _where(where), params)[0][0]
        rows = self._dicts("SELECT * FROM flow_tasks" + _where(where) + " ORDER BY job_id DESC, create_time_ms,"
                           " component, role, party_id LIMIT ? OFFSET ?", (*params, limit, offset))
        return rows, total

    def flow_job_ids_created_between(self, start_ms, end_ms, scope):
        where, params = ["create_time_ms >= ?", "create_time_ms < ?"], [start_ms, end_ms]
        _scope(where, params, "namespace", scope)
        return self._column("SELECT job_id FROM flow_jobs" + _where(where), params)

    # ---------------------------------------------------------------- reads: tracking
    def flow_task_outputs(self, key: tuple) -> dict | None:
        found = self._dicts("SELECT parameters_json, summary_json, model_json, model_meta_json FROM flow_tasks" + _KEY,
                            key)
        return found[0] if found else None

    def flow_metrics(self, key: tuple) -> list[dict]:
        return self._dicts("SELECT namespace, name, data_json, meta_json FROM flow_metrics" + _KEY
                           + " ORDER BY namespace, name", key)

    def flow_count_metrics(self, job_ids=(), key=None) -> int:
        if key is not None:
            return self._rows("SELECT COUNT(*) FROM flow_metrics" + _KEY, key)[0][0]
        if not job_ids:
            return 0
        return self._rows(f"SELECT COUNT(*) FROM flow_metrics WHERE job_id IN ({_marks(len(job_ids))})",
                          list(job_ids))[0][0]

    # ---------------------------------------------------------------- reads: tables, uploads, messages
    def flow_table(self, namespace: str, name: str) -> dict | None:
        found = self._dicts("SELECT * FROM flow_tables WHERE namespace=? AND name=?", (namespace, name))
        return found[0] if found else None

    def flow_output_tables(self, key: tuple) -> list[dict]:
        return self._dicts("SELECT * FROM flow_tables" + _KEY + " ORDER BY output_name", key)

    def flow_table_chunks(self, namespace, name, after_seq, limit):
        return [(r[0], r[1]) for r in self._rows("SELECT seq, data FROM flow_table_chunks WHERE namespace=?"
                                                 " AND name=? AND seq>? ORDER BY seq LIMIT ?",
                                                 (namespace, name, after_seq, limit))]

    def flow_uploads(self, limit, job_id, scope):
        where, params = _match({"job_id": job_id})
        _scope(where, params, "(SELECT namespace FROM flow_jobs j WHERE j.job_id = flow_uploads.job_id)", scope)
        return self._dicts("SELECT * FROM flow_uploads" + _where(where) + " ORDER BY create_time_ms DESC, job_id DESC"
                           " LIMIT ?", (*params, limit))

    def flow_message(self, job_id, name, tag, src, dst):
        found = self._rows("SELECT payload FROM flow_messages WHERE job_id=? AND name=? AND tag=? AND src_role=?"
                           " AND src_party=? AND dst_role=? AND dst_party=?",
                           (job_id, name, tag, src[0], src[1], dst[0], dst[1]))
        return bytes(found[0][0]) if found else None

    def flow_outbox(self, own_party: int) -> list[tuple]:
        return [tuple(r[:-1]) + (bytes(r[-1]),) for r in self._rows(
            f"SELECT {', '.join(FLOW_MESSAGE_COLUMNS)} FROM flow_messages WHERE dst_party != ?", (own_party,))]

    # ---------------------------------------------------------------- reads: models and tags
    def flow_models(self, model_id, model_version, role, party_id, scope):
        where, params = _match({"model_id": model_id, "model_version": model_version, "role": role,
                                "party_id": party_id})
        _scope(where, params, "tenant", scope)
        return self._dicts(f"SELECT m.*, {_SIZE} FROM flow_models m" + _where(where)
                           + " ORDER BY create_time_ms DESC, model_version DESC, role, party_id", params)

    def flow_model_components(self, model_id, model_version, role="", party_id=0):
        sql, params = "SELECT * FROM flow_model_components WHERE model_id=? AND model_version=?", [model_id, model_version]
        if role:
            sql += " AND role=? AND party_id=?"
            params += [role, party_id]
        return self._dicts(sql + " ORDER BY role, party_id, component", params)

    def flow_tags(self, name_contains, limit, scope):
        where, params = [], []
        if name_contains:
            where.append("instr(t.name, ?) > 0")
            params.append(name_contains)
        _scope(where, params, "t.tenant", scope)
        sql = ("SELECT t.name, t.description, t.create_time_ms, (SELECT COUNT(*) FROM flow_model_tags m"
               " WHERE m.tag=t.name) AS model_count FROM flow_tags t" + _where(where) + " ORDER BY t.create_time_ms, t.name")
        if limit:
            sql += " LIMIT ?"
            params.append(limit)
        return self._dicts(sql, params)

    def flow_tag(self, name: str) -> dict | None:
        found = self._dicts("SELECT name, description, create_time_ms FROM flow_tags WHERE name=?", (name,))
        return found[0] if found else None

    def flow_model_tags(self, model_version: str) -> list[dict]:
        return self._dicts("SELECT t.name, t.description FROM flow_model_tags m JOIN flow_tags t ON t.name=m.tag"
                           " WHERE m.model_version=? ORDER BY t.create_time_ms, t.name", (model_version,))

    def flow_tagged_models(self, tag: str) -> list[dict]:
        return self._dicts(f"SELECT m.model_id, m.model_version, m.role, m.party_id, {_SIZE} FROM flow_model_tags g"
                           " JOIN flow_models m ON m.model_version=g.model_version WHERE g.tag=?"
                           " ORDER BY m.model_version, m.role, m.party_id", (tag,))

    # ---------------------------------------------------------------- reads: tenants
    def flow_job_tenants(self, job_id: str) -> list[str]:
        return self._column("SELECT namespace FROM flow_jobs WHERE job_id=?", (job_id,))

    def flow_table_tenants(self, namespace: str, name: str) -> list[str]:
        return self._column("SELECT tenant FROM flow_tables WHERE namespace=? AND name=?", (namespace, name))

    def flow_model_tenants(self, model_version: str, model_id: str | None = None) -> list[str]:
        if model_id is None:
            return self._column("SELECT DISTINCT tenant FROM flow_models WHERE model_version=?", (model_version,))
        return self._column("SELECT DISTINCT tenant FROM flow_models WHERE model_id=? AND model_version=?",
                            (model_id, model_version))

    def flow_tag_tenants(self, name: str) -> list[str]:
        return self._column("SELECT tenant FROM flow_tags WHERE name=?", (name,))
