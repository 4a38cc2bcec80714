"""PostgreSQL's SQL for the FATE part of the store (storage/flow.py says what each method does).

A mixin of PostgresStore: reads go through its `_rows`/`_dicts` (pooled, autocommit), operations
get the writer's cursor. The tables are created by postgres.py's migration list.
"""
from __future__ import annotations

from typing import Callable

from ..flow.model import JOB_TERMINAL
from .flow import (FLOW_COMPONENT_COLUMNS, FLOW_JOB_COLUMNS, FLOW_MESSAGE_COLUMNS, FLOW_MODEL_COLUMNS,
                   FLOW_TABLE_COLUMNS, FLOW_TASK_COLUMNS, FLOW_UPLOAD_COLUMNS)

_ENDED = ", ".join(str(int(s)) for s in sorted(JOB_TERMINAL))
_KEY = " WHERE job_id=%s AND component=%s AND role=%s AND party_id=%s"
_MODEL_KEY = " WHERE model_id=%s AND model_version=%s AND role=%s AND party_id=%s"
_SIZE = ("(SELECT COALESCE(SUM(LENGTH(model_json) + LENGTH(meta_json)), 0) FROM flow_model_components c"
         " WHERE c.model_id=m.model_id AND c.model_version=m.model_version AND c.role=m.role"
         " AND c.party_id=m.party_id) AS size")


def _upsert(table: str, columns: tuple, keys: tuple) -> str:
    """Insert, or replace the row with the same key (SQLite's INSERT OR REPLACE of every column)."""
    rest = [c for c in columns if c not in keys]
    return (f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join(['%s'] * len(columns))})"
            f" ON CONFLICT ({', '.join(keys)}) DO UPDATE SET " + ", ".join(f"{c}=EXCLUDED.{c}" for c in rest))


_PUT_JOB = _upsert("flow_jobs", FLOW_JOB_COLUMNS, ("job_id",))
_INSERT_TASK = (f"INSERT INTO flow_tasks ({', '.join(FLOW_TASK_COLUMNS)}, parameters_json)"
                f" VALUES ({', '.join(['%s'] * (len(FLOW_TASK_COLUMNS) + 1))})")
_UPDATE_TASK = "UPDATE flow_tasks SET " + ", ".join(f"{c}=%s" for c in FLOW_TASK_COLUMNS[4:]) + _KEY
_PARTY_KEY = ("model_id", "model_version", "role", "party_id")
_PUT_MODEL = _upsert("flow_models", FLOW_MODEL_COLUMNS, _PARTY_KEY)
_PUT_COMPONENT = _upsert("flow_model_components", FLOW_COMPONENT_COLUMNS, _PARTY_KEY + ("component",))
_PUT_TABLE = (f"INSERT INTO flow_tables ({', '.join(FLOW_TABLE_COLUMNS)}, tenant)"
              f" VALUES ({', '.join(['%s'] * len(FLOW_TABLE_COLUMNS))},"
              " COALESCE((SELECT namespace FROM flow_jobs WHERE job_id=%s), 'fate'))"
              " ON CONFLICT (namespace, name) DO UPDATE SET "
              + ", ".join(f"{c}=EXCLUDED.{c}" for c in FLOW_TABLE_COLUMNS[2:] + ("tenant",)))


def _match(equal: dict, statuses: list[int] = ()) -> tuple[list[str], list]:
    """Each column equal to its value (empty values and 0 match anything), status one of `statuses`."""
    where, params = [], []
    for col, value in equal.items():
        if value:
            where.append(f"{col} = %s")
            params.append(value)
    if statuses:
        where.append("status = ANY(%s)")
        params.append(list(statuses))
    return where, params


def _scope(where: list[str], params: list, column: str, scope: tuple[str, ...] | None) -> None:
    if scope is not None:
        where.append(f"{column} = ANY(%s)")
        params.append(list(scope))


def _where(where: list[str]) -> str:
    return f" WHERE {' AND '.join(where)}" if where else ""


class PostgresFlow:
    """Needs the store's `_rows(sql, params)` and `_dicts(sql, params)`."""

    _rows: Callable
    _dicts: Callable

    def _column(self, sql: str, params=()) -> list:
        return [r[0] for r in self._rows(sql, params)]

    # ---------------------------------------------------------------- operations: jobs and tasks
    def op_put_flow_job(self, cur, row: tuple) -> None:
        cur.execute(_PUT_JOB, row)

    def op_insert_flow_tasks(self, cur, rows: list[tuple]) -> None:
        if rows:
            cur.executemany(_INSERT_TASK, rows)

    def op_update_flow_tasks(self, cur, rows: list[tuple]) -> None:
        cur.executemany(_UPDATE_TASK, [r[4:] + r[:4] for r in rows])

    def op_delete_flow_jobs(self, cur, ids: list[str], table_namespaces: list[str]) -> None:
        for table in ("flow_table_chunks", "flow_tables"):
            cur.execute(f"DELETE FROM {table} WHERE namespace = ANY(%s)", (table_namespaces,))
        for table in ("flow_metrics", "flow_tasks", "flow_messages", "flow_uploads", "flow_jobs"):
            cur.execute(f"DELETE FROM {table} WHERE job_id = ANY(%s)", (ids,))

    # ---------------------------------------------------------------- operations: tracking
    def op_append_flow_metric(self, cur, row: tuple) -> None:
        cur.execute(
            "INSERT INTO flow_metrics (job_id, component, role, party_id, namespace, name, data_json, meta_json)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (job_id, component, role, party_id, namespace, name)"
            " DO UPDATE SET data_json = (flow_metrics.data_json::jsonb || EXCLUDED.data_json::jsonb)::text,"
            " meta_json = CASE WHEN EXCLUDED.meta_json = '' THEN flow_metrics.meta_json ELSE EXCLUDED.meta_json END",
            row)

    def op_patch_flow_summary(self, cur, key: tuple, summary_json: str) -> None:
        # A merge patch at the top level: keys replaced, a null deletes its key. (SQLite's json_patch
        # also merges nested objects; components write flat summaries.)
        cur.execute("UPDATE flow_tasks SET summary_json = ((summary_json::jsonb || %s::jsonb)"
                    " - ARRAY(SELECT key FROM jsonb_each(%s::jsonb) WHERE value = 'null'::jsonb))::text" + _KEY,
                    (summary_json, summary_json, *key))

    def op_set_flow_task_model(self, cur, key: tuple, model_json: str, meta_json: str) -> None:
        cur.execute("UPDATE flow_tasks SET model_json=%s, model_meta_json=%s" + _KEY, (model_json, meta_json, *key))

    def op_clear_flow_task_outputs(self, cur, key: tuple, tracking: bool) -> None:
        cur.execute("DELETE FROM flow_metrics" + _KEY, key)
        if tracking:
            cur.execute("UPDATE flow_tasks SET summary_json='{}', model_json='', model_meta_json=''" + _KEY, key)

    def op_delete_flow_metrics(self, cur, job_ids: list[str]) -> None:
        cur.execute("DELETE FROM flow_metrics WHERE job_id = ANY(%s)", (job_ids,))

    # ---------------------------------------------------------------- operations: tables, uploads, messages
    def op_delete_flow_table(self, cur, namespace: str, name: str) -> None:
        cur.execute("DELETE FROM flow_table_chunks WHERE namespace=%s AND name=%s", (namespace, name))
        cur.execute("DELETE FROM flow_tables WHERE namespace=%s AND name=%s", (namespace, name))

    def op_put_flow_table_chunk(self, cur, row: tuple) -> None:
        cur.execute("INSERT INTO flow_table_chunks (namespace, name, seq, rows, data) VALUES (%s, %s, %s, %s, %s)"
                    " ON CONFLICT (namespace, name, seq) DO UPDATE SET rows=EXCLUDED.rows, data=EXCLUDED.data", row)

    def op_put_flow_table(self, cur, row: tuple) -> None:
        cur.execute(_PUT_TABLE, row + (row[FLOW_TABLE_COLUMNS.index("job_id")],))

    def op_put_flow_upload(self, cur, row: tuple) -> None:
        cur.execute(_upsert("flow_uploads", FLOW_UPLOAD_COLUMNS, ("job_id",)), row)

    def op_set_flow_upload_count(self, cur, job_id: str, count: int) -> None:
        cur.execute("UPDATE flow_uploads SET upload_count=%s WHERE job_id=%s", (count, job_id))

    def op_put_flow_messages(self, cur, rows: list[tuple]) -> None:
        cur.executemany(_upsert("flow_messages", FLOW_MESSAGE_COLUMNS, FLOW_MESSAGE_COLUMNS[:-1]), rows)

    def op_delete_flow_messages(self, cur, keys: list[tuple]) -> None:
        cur.executemany("DELETE FROM flow_messages WHERE " + " AND ".join(f"{c}=%s" for c in FLOW_MESSAGE_COLUMNS[:-1]),
                        keys)

    def op_delete_flow_job_messages(self, cur, job_id: str) -> None:
        cur.execute("DELETE FROM flow_messages WHERE job_id=%s", (job_id,))

    # ---------------------------------------------------------------- operations: models and tags
    def op_register_flow_models(self, cur, rows: list[tuple]) -> None:
        at = [FLOW_MODEL_COLUMNS.index(c) for c in ("model_id", "model_version", "job_id", "role", "party_id")]
        for row in rows:
            cur.execute(_PUT_MODEL, row)
            cur.execute(
                "INSERT INTO flow_model_components (model_id, model_version, role, party_id, component, module,"
                " model_json, meta_json) SELECT %s, %s, role, party_id, component, module, model_json, model_meta_json"
                " FROM flow_tasks WHERE job_id=%s AND role=%s AND party_id=%s AND model_json <> ''"
                " ON CONFLICT (model_id, model_version, role, party_id, component) DO UPDATE SET"
                " module=EXCLUDED.module, model_json=EXCLUDED.model_json, meta_json=EXCLUDED.meta_json",
                tuple(row[i] for i in at))

    def op_put_flow_models(self, cur, rows: list[tuple], components: list[tuple]) -> None:
        for row in rows:
            cur.execute("DELETE FROM flow_model_components" + _MODEL_KEY, row[:4])
            cur.execute(_PUT_MODEL, row)
        if components:
            cur.executemany(_PUT_COMPONENT, components)

    def op_mark_flow_models_loaded(self, cur, keys: list[tuple], ts: int) -> None:
        cur.executemany("UPDATE flow_models SET loaded_times = loaded_times + 1, update_time_ms=%s" + _MODEL_KEY,
                        [(ts, *k) for k in keys])

    def op_bind_model_service(self, cur, key: tuple, service_id: str, ts: int) -> None:
        cur.execute("UPDATE flow_models SET service_ids_json = CASE WHEN service_ids_json::jsonb ? %s"
                    " THEN service_ids_json ELSE (service_ids_json::jsonb || to_jsonb(%s::text))::text END,"
                    " update_time_ms=%s" + _MODEL_KEY, (service_id, service_id, ts, *key))

    def op_delete_flow_model(self, cur, model_id: str, model_version: str) -> None:
        cur.execute("DELETE FROM flow_model_components WHERE model_id=%s AND model_version=%s", (model_id, model_version))
        cur.execute("DELETE FROM flow_models WHERE model_id=%s AND model_version=%s", (model_id, model_version))
        cur.execute("DELETE FROM flow_model_tags WHERE model_version=%s AND NOT EXISTS (SELECT 1 FROM flow_models"
                    " WHERE model_version=%s)", (model_version, model_version))

    def op_insert_flow_tag(self, cur, row: tuple) -> None:
        cur.execute("INSERT INTO flow_tags (name, description, create_time_ms, tenant) VALUES (%s, %s, %s, %s)", row)

    def op_rename_flow_tag(self, cur, name: str, new_name: str, description: str) -> None:
        cur.execute("UPDATE flow_tags SET name=%s, description=%s WHERE name=%s", (new_name, description, name))
        cur.execute("UPDATE flow_model_tags SET tag=%s WHERE tag=%s", (new_name, name))

    def op_delete_flow_tag(self, cur, name: str) -> None:
        cur.execute("DELETE FROM flow_model_tags WHERE tag=%s", (name,))
        cur.execute("DELETE FROM flow_tags WHERE name=%s", (name,))

    def op_tag_flow_model(self, cur, tag: str, model_version: str, remove: bool) -> None:
        if remove:
            cur.execute("DELETE FROM flow_model_tags WHERE tag=%s AND model_version=%s", (tag, model_version))
        else:
            cur.execute("INSERT INTO flow_model_tags (tag, model_version) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                        (tag, model_version))

    # ---------------------------------------------------------------- reads: jobs and tasks
    def flow_job(self, job_id: str) -> dict | None:
        found = self._dicts("SELECT * FROM flow_jobs WHERE job_id=%s", (job_id,))
        return found[0] if found else None

    def flow_unfinished_jobs(self) -> list[dict]:
        return self._dicts(f"SELECT * FROM flow_jobs WHERE status NOT IN ({_ENDED}) ORDER BY create_time_ms, job_id")

    def flow_finished_job_ids(self, cutoff_ms: int, limit: int) -> list[str]:
        return self._column(f"SELECT job_id FROM flow_jobs WHERE status IN ({_ENDED}) AND end_time_ms > 0"
                            " AND end_time_ms < %s ORDER BY end_time_ms LIMIT %s", (cutoff_ms, limit))

    def flow_job_counts(self) -> dict[int, int]:
        return {r[0]: r[1] for r in self._rows("SELECT status, COUNT(*) FROM flow_jobs GROUP BY status")}

    def flow_job_tasks(self, job_id: str) -> list[dict]:
        return self._dicts("SELECT * FROM flow_tasks WHERE job_id=%s", (job_id,))

    def flow_list_jobs(self, job_id, party, statuses, job_type, limit, offset, scope):
        prefix = job_id.endswith("*")
        where, params = _match({"job_id": "" if prefix else job_id, "job_type": job_type}, statuses)
        _scope(where, params, "namespace", scope)
        if prefix:
            where.append("job_id LIKE %s ESCAPE '\\'")
            params.append(job_id[:-1].replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%")
        if party:  # a party id 0 matches any id of that role
            where.append("EXISTS (SELECT 1 FROM jsonb_array_elements(parties_json::jsonb) p WHERE p->>0 = %s"
                         " AND (%s = 0 OR (p->>1)::bigint = %s))")
            params.extend([party[0], party[1], party[1]])
        total = self._rows("SELECT COUNT(*) FROM flow_jobs" + _where(where), params)[0][0]
        rows = self._dicts("SELECT * FROM flow_jobs" + _where(where) + " ORDER BY create_time_ms DESC, job_id DESC"
                           " LIMIT %s OFFSET %s", (*params, limit, offset))
        return rows, total

    def flow_list_tasks(self, job_id, role, party_id, component, statuses, limit, offset, scope):
        where, params = _match({"job_id": job_id, "role": role, "component": component, "party_id": party_id},
                               statuses)
        _scope(where, params, "(SELECT namespace FROM flow_jobs j WHERE j.job_id = flow_tasks.job_id)", scope)
        total = self._rows("SELECT COUNT(*) FROM flow_tasks" + _where(where), params)[0][0]
        rows = self._dicts("SELECT * FROM flow_tasks" + _where(where) + " ORDER BY job_id DESC, create_time_ms,"
                           " component, role, party_id LIMIT %s OFFSET %s", (*params, limit, offset))
        return rows, total

    def flow_job_ids_created_between(self, start_ms, end_ms, scope):
        where, params = ["create_time_ms >= %s", "create_time_ms < %s"], [start_ms, end_ms]
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
        return self._rows("SELECT COUNT(*) FROM flow_metrics WHERE job_id = ANY(%s)", (list(job_ids),))[0][0]

    # ---------------------------------------------------------------- reads: tables, uploads, messages
    def flow_table(self, namespace: str, name: str) -> dict | None:
        found = self._dicts("SELECT * FROM flow_tables WHERE namespace=%s AND name=%s", (namespace, name))
        return found[0] if found else None

    def flow_output_tables(self, key: tuple) -> list[dict]:
        return self._dicts("SELECT * FROM flow_tables" + _KEY + " ORDER BY output_name", key)

    def flow_table_chunks(self, namespace, name, after_seq, limit):
        return [(r[0], r[1]) for r in self._rows("SELECT seq, data FROM flow_table_chunks WHERE namespace=%s"
                                                 " AND name=%s AND seq>%s ORDER BY seq LIMIT %s",
                                                 (namespace, name, after_seq, limit))]

    def flow_uploads(self, limit, job_id, scope):
        where, params = _match({"job_id": job_id})
        _scope(where, params, "(SELECT namespace FROM flow_jobs j WHERE j.job_id = flow_uploads.job_id)", scope)
        return self._dicts("SELECT * FROM flow_uploads" + _where(where) + " ORDER BY create_time_ms DESC, job_id DESC"
                           " LIMIT %s", (*params, limit))

    def flow_message(self, job_id, name, tag, src, dst):
        found = self._rows("SELECT payload FROM flow_messages WHERE job_id=%s AND name=%s AND tag=%s AND src_role=%s"
                           " AND src_party=%s AND dst_role=%s AND dst_party=%s",
                           (job_id, name, tag, src[0], src[1], dst[0], dst[1]))
        return bytes(found[0][0]) if found else None

    def flow_outbox(self, own_party: int) -> list[tuple]:
        return [tuple(r[:-1]) + (bytes(r[-1]),) for r in self._rows(
            f"SELECT {', '.join(FLOW_MESSAGE_COLUMNS)} FROM flow_messages WHERE dst_party != %s", (own_party,))]

    # ---------------------------------------------------------------- reads: models and tags
    def flow_models(self, model_id, model_version, role, party_id, scope):
        where, params = _match({"model_id": model_id, "model_version": model_version, "role": role,
                                "party_id": party_id})
        _scope(where, params, "tenant", scope)
        return self._dicts(f"SELECT m.*, {_SIZE} FROM flow_models m" + _where(where)
                           + " ORDER BY create_time_ms DESC, model_version DESC, role, party_id", params)

    def flow_model_components(self, model_id, model_version, role="", party_id=0):
        sql, params = "SELECT * FROM flow_model_components WHERE model_id=%s AND model_version=%s", [model_id, model_version]
        if role:
            sql += " AND role=%s AND party_id=%s"
            params += [role, party_id]
        return self._dicts(sql + " ORDER BY role, party_id, component", params)

    def flow_tags(self, name_contains, limit, scope):
        where, params = [], []
        if name_contains:
            where.append("strpos(t.name, %s) > 0")
            params.append(name_contains)
        _scope(where, params, "t.tenant", scope)
        sql = ("SELECT t.name, t.description, t.create_time_ms, (SELECT COUNT(*) FROM flow_model_tags m"
               " WHERE m.tag=t.name) AS model_count FROM flow_tags t" + _where(where) + " ORDER BY t.create_time_ms, t.name")
        if limit:
            sql += " LIMIT %s"
            params.append(limit)
        return self._dicts(sql, params)

    def flow_tag(self, name: str) -> dict | None:
        found = self._dicts("SELECT name, description, create_time_ms FROM flow_tags WHERE name=%s", (name,))
        return found[0] if found else None

    def flow_model_tags(self, model_version: str) -> list[dict]:
        return self._dicts("SELECT t.name, t.description FROM flow_model_tags m JOIN flow_tags t ON t.name=m.tag"
                           " WHERE m.model_version=%s ORDER BY t.create_time_ms, t.name", (model_version,))

    def flow_tagged_models(self, tag: str) -> list[dict]:
        return self._dicts(f"SELECT m.model_id, m.model_version, m.role, m.party_id, {_SIZE} FROM flow_model_tags g"
                           " JOIN flow_models m ON m.model_version=g.model_version WHERE g.tag=%s"
                           " ORDER BY m.model_version, m.role, m.party_id", (tag,))

    # ---------------------------------------------------------------- reads: tenants
    def flow_job_tenants(self, job_id: str) -> list[str]:
        return self._column("SELECT namespace FROM flow_jobs WHERE job_id=%s", (job_id,))

    def flow_table_tenants(self, namespace: str, name: str) -> list[str]:
        return self._column("SELECT tenant FROM flow_tables WHERE namespace=%s AND name=%s", (namespace, name))

    def flow_model_tenants(self, model_version: str, model_id: str | None = None) -> list[str]:
        if model_id is None:
            return self._column("SELECT DISTINCT tenant FROM flow_models WHERE model_version=%s", (model_version,))
        return self._column("SELECT DISTINCT tenant FROM flow_models WHERE model_id=%s AND model_version=%s",
                            (model_id, model_version))

    def flow_tag_tenants(self, name: str) -> list[str]:
        return self._column("SELECT tenant FROM flow_tags WHERE name=%s", (name,))
