"""Every read and write of FATE models and tags (server/flow/models.py is their domain).

A model version is one row per party (model_id, model_version, role, party_id) plus that party's
component models, copied out of the train job's tasks when the job succeeds: the model outlives
its job. Tags name model versions. Written through the store's single writer, like store.py.
"""
from __future__ import annotations

from ..store import EXTRA_MIGRATIONS, Store
from .store import match, within_scope  # importing flow's store also registers its first step, which must come before this one


def _flow_models_v1(db) -> None:
    db.execute("""CREATE TABLE flow_models (
        model_id TEXT NOT NULL, model_version TEXT NOT NULL, role TEXT NOT NULL, party_id INTEGER NOT NULL,
        job_id TEXT NOT NULL, parent_version TEXT NOT NULL, initiator_role TEXT NOT NULL,
        initiator_party INTEGER NOT NULL, roles_json TEXT NOT NULL, train_dsl_json TEXT NOT NULL,
        train_conf_json TEXT NOT NULL, inference_dsl_json TEXT NOT NULL, imported INTEGER NOT NULL,
        loaded_times INTEGER NOT NULL, service_ids_json TEXT NOT NULL, create_time_ms INTEGER NOT NULL,
        update_time_ms INTEGER NOT NULL,
        PRIMARY KEY (model_id, model_version, role, party_id)) WITHOUT ROWID""")
    db.execute("CREATE INDEX flow_models_version ON flow_models (model_version)")
    db.execute("""CREATE TABLE flow_model_components (
        model_id TEXT NOT NULL, model_version TEXT NOT NULL, role TEXT NOT NULL, party_id INTEGER NOT NULL,
        component TEXT NOT NULL, module TEXT NOT NULL, model_json TEXT NOT NULL, meta_json TEXT NOT NULL,
        PRIMARY KEY (model_id, model_version, role, party_id, component)) WITHOUT ROWID""")
    db.execute("""CREATE TABLE flow_tags (
        name TEXT PRIMARY KEY, description TEXT NOT NULL, create_time_ms INTEGER NOT NULL)""")
    db.execute("""CREATE TABLE flow_model_tags (
        tag TEXT NOT NULL, model_version TEXT NOT NULL, PRIMARY KEY (tag, model_version)) WITHOUT ROWID""")


EXTRA_MIGRATIONS.setdefault("flow", []).append(_flow_models_v1)


def _flow_tenants_v1(db) -> None:
    """The namespace each table, model and tag belongs to (server/flow/tenants.py)."""
    for table in ("flow_tables", "flow_models", "flow_tags"):
        db.execute(f"ALTER TABLE {table} ADD COLUMN tenant TEXT NOT NULL DEFAULT 'fate'")
    for table in ("flow_tables", "flow_models"):  # rows from before: their job's namespace
        db.execute(f"UPDATE {table} SET tenant = COALESCE((SELECT namespace FROM flow_jobs j"
                   f" WHERE j.job_id = {table}.job_id), 'fate')")


# Its own key: runs after every "flow" step, whatever order other modules append theirs in.
EXTRA_MIGRATIONS.setdefault("flow_tenants", []).append(_flow_tenants_v1)

MODEL_COLS = ("model_id", "model_version", "role", "party_id", "job_id", "parent_version", "initiator_role",
              "initiator_party", "roles_json", "train_dsl_json", "train_conf_json", "inference_dsl_json", "imported",
              "loaded_times", "service_ids_json", "create_time_ms", "update_time_ms", "tenant")
_INSERT_MODEL = f"INSERT OR REPLACE INTO flow_models ({', '.join(MODEL_COLS)}) VALUES ({', '.join('?' * len(MODEL_COLS))})"
_INSERT_COMPONENT = ("INSERT OR REPLACE INTO flow_model_components (model_id, model_version, role, party_id, component,"
                     " module, model_json, meta_json) VALUES (?, ?, ?, ?, ?, ?, ?, ?)")
_KEY = " WHERE model_id=? AND model_version=? AND role=? AND party_id=?"


class ModelStore:
    def __init__(self, store: Store):
        self.store = store
        self.writer = store.writer

    # ---------------------------------------------------------------- writing
    def register_job_stmts(self, rows: list[dict]) -> list[tuple]:
        """A train job's model: its party rows, and its tasks' models copied in SQL (so the copy runs in
        the writer's order, after every model the tasks wrote)."""
        stmts = []
        for row in rows:
            stmts.append((_INSERT_MODEL, tuple(row[c] for c in MODEL_COLS)))
            stmts.append((
                "INSERT OR REPLACE INTO flow_model_components (model_id, model_version, role, party_id, component,"
                " module, model_json, meta_json) SELECT ?, ?, role, party_id, component, module, model_json,"
                " model_meta_json FROM flow_tasks WHERE job_id=? AND role=? AND party_id=? AND model_json != ''",
                (row["model_id"], row["model_version"], row["job_id"], row["role"], row["party_id"])))
        return stmts

    def put_models(self, rows: list[dict], components: list[dict]):
        """New model versions (deploy, import, restore, migrate): rows and components in one commit; a
        party's earlier components are replaced (an import with force_update)."""
        stmts = []
        for r in rows:
            stmts.append(("DELETE FROM flow_model_components" + _KEY,
                          (r["model_id"], r["model_version"], r["role"], r["party_id"])))
            stmts.append((_INSERT_MODEL, tuple(r[c] for c in MODEL_COLS)))
        stmts += [(_INSERT_COMPONENT, (c["model_id"], c["model_version"], c["role"], c["party_id"], c["component"],
                                       c["module"], c["model_json"], c["meta_json"])) for c in components]
        return self.writer.execute(stmts)

    def execute(self, stmts: list[tuple]):
        return self.writer.execute(stmts)

    def mark_loaded(self, keys: list[tuple], ts: int):
        return self.writer.execute([("UPDATE flow_models SET loaded_times = loaded_times + 1, update_time_ms=?" + _KEY,
                                     (ts, *k)) for k in keys])

    def bind_service(self, keys: list[tuple], service_id: str, ts: int):
        """Adds the service id to each row's list (kept once, in binding order)."""
        return self.writer.execute([(
            "UPDATE flow_models SET service_ids_json = CASE WHEN EXISTS (SELECT 1 FROM json_each(service_ids_json)"
            " WHERE value = ?) THEN service_ids_json ELSE json_insert(service_ids_json, '$[#]', ?) END,"
            " update_time_ms=?" + _KEY, (service_id, service_id, ts, *k)) for k in keys])

    def delete_model(self, model_id: str, model_version: str):
        return self.writer.execute([
            ("DELETE FROM flow_model_components WHERE model_id=? AND model_version=?", (model_id, model_version)),
            ("DELETE FROM flow_models WHERE model_id=? AND model_version=?", (model_id, model_version)),
            ("DELETE FROM flow_model_tags WHERE model_version=? AND NOT EXISTS (SELECT 1 FROM flow_models"
             " WHERE model_version=?)", (model_version, model_version))])

    # ---------------------------------------------------------------- reading
    def models(self, model_id: str = "", model_version: str = "", role: str = "", party_id: int = 0,
               scope: tuple[str, ...] | None = None) -> list[dict]:
        where, params = match({"model_id": model_id, "model_version": model_version, "role": role,
                               "party_id": party_id})
        within_scope(where, params, "tenant", scope)
        sql_where = f" WHERE {' AND '.join(where)}" if where else ""
        rows = self.store.query(
            "SELECT m.*, (SELECT COALESCE(SUM(LENGTH(model_json) + LENGTH(meta_json)), 0) FROM flow_model_components c"
            " WHERE c.model_id=m.model_id AND c.model_version=m.model_version AND c.role=m.role"
            " AND c.party_id=m.party_id) AS size FROM flow_models m" + sql_where
            + " ORDER BY create_time_ms DESC, model_version DESC, role, party_id", params)
        return [dict(r) for r in rows]

    def components(self, model_id: str, model_version: str, role: str = "", party_id: int = 0) -> list[dict]:
        sql = "SELECT * FROM flow_model_components WHERE model_id=? AND model_version=?"
        params: list = [model_id, model_version]
        if role:
            sql += " AND role=? AND party_id=?"
            params += [role, party_id]
        return [dict(r) for r in self.store.query(sql + " ORDER BY role, party_id, component", params)]

    # ---------------------------------------------------------------- tags
    def tags(self, name_contains: str = "", limit: int = 0, scope: tuple[str, ...] | None = None) -> list[dict]:
        sql = ("SELECT t.name, t.description, t.create_time_ms, (SELECT COUNT(*) FROM flow_model_tags m"
               " WHERE m.tag=t.name) AS model_count FROM flow_tags t")
        where: list[str] = []
        params: list = []
        if name_contains:
            where.append("instr(t.name, ?) > 0")
            params.append(name_contains)
        within_scope(where, params, "t.tenant", scope)
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY t.create_time_ms, t.name"
        if limit:
            sql += " LIMIT ?"
            params.append(limit)
        return [dict(r) for r in self.store.query(sql, params)]

    def get_tag(self, name: str) -> dict | None:
        rows = self.store.query("SELECT name, description, create_time_ms FROM flow_tags WHERE name=?", (name,))
        return dict(rows[0]) if rows else None

    def create_tag(self, name: str, description: str, ts: int, tenant: str):
        return self.writer.execute([("INSERT INTO flow_tags (name, description, create_time_ms, tenant)"
                                     " VALUES (?, ?, ?, ?)", (name, description, ts, tenant))])

    def update_tag(self, name: str, new_name: str, description: str):
        return self.writer.execute([
            ("UPDATE flow_tags SET name=?, description=? WHERE name=?", (new_name, description, name)),
            ("UPDATE flow_model_tags SET tag=? WHERE tag=?", (new_name, name))])

    def delete_tag(self, name: str):
        return self.writer.execute([("DELETE FROM flow_model_tags WHERE tag=?", (name,)),
                                    ("DELETE FROM flow_tags WHERE name=?", (name,))])

    def model_tags(self, model_version: str) -> list[dict]:
        rows = self.store.query("SELECT t.name, t.description FROM flow_model_tags m JOIN flow_tags t ON t.name=m.tag"
                                " WHERE m.model_version=? ORDER BY t.create_time_ms, t.name", (model_version,))
        return [dict(r) for r in rows]

    def tagged_models(self, tag: str) -> list[dict]:
        rows = self.store.query(
            "SELECT m.model_id, m.model_version, m.role, m.party_id, (SELECT COALESCE(SUM(LENGTH(model_json)"
            " + LENGTH(meta_json)), 0) FROM flow_model_components c WHERE c.model_id=m.model_id AND"
            " c.model_version=m.model_version AND c.role=m.role AND c.party_id=m.party_id) AS size"
            " FROM flow_model_tags g JOIN flow_models m ON m.model_version=g.model_version WHERE g.tag=?"
            " ORDER BY m.model_version, m.role, m.party_id", (tag,))
        return [dict(r) for r in rows]

    def tag_model(self, tag: str, model_version: str, remove: bool):
        if remove:
            return self.writer.execute([("DELETE FROM flow_model_tags WHERE tag=? AND model_version=?",
                                         (tag, model_version))])
        return self.writer.execute([("INSERT OR IGNORE INTO flow_model_tags (tag, model_version) VALUES (?, ?)",
                                     (tag, model_version))])
