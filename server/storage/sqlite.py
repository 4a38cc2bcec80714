"""SQLite: the embedded default store (`--db PATH`). All of its SQL (the FATE part in sqlite_flow.py)
and its migrations.

One process owns the file. Reads use one connection per thread; the writer has its own, with
automatic checkpoints off (a checkpointer thread moves the WAL into the database off the commit
path, see _checkpoint_loop).
"""
from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
from typing import Callable

from ._sqlite_utils import sqlite_utils

from ..model import ACTIVE, MUTABLE_FIELDS, SCHEDULABLE, TERMINAL, Status, Task
from .base import AUDIT_COLUMNS, NODE_COLUMNS, NOT_SUCCESS, TOKEN_COLUMNS, Store, StoreError, Work, Writer
from .sqlite_flow import SqliteFlow

log = logging.getLogger(__name__)

_DONE = ", ".join(str(int(s)) for s in sorted(TERMINAL))
ACTIVE_ = "status IN (" + ", ".join(str(int(s)) for s in sorted(ACTIVE)) + ")"  # spelled as the index says
# The queue index's condition: a query must spell it the same way for SQLite to use the index.
QUEUED = "status IN (" + ", ".join(str(int(s)) for s in sorted(SCHEDULABLE)) + ")"


# ---------------------------------------------------------------- migrations
def _tasks(db: sqlite_utils.Database) -> None:
    db["tasks"].create(
        {
            "id": int, "uid": str, "namespace": str, "name": str, "spec": str,
            "create_time_ms": int, "status": int, "progress": int, "result": str,
            "response_json": str, "retries": int, "node": str, "pid": int, "ppid": int,
            "exit_code": int, "error": str, "update_time_ms": int, "start_time_ms": int,
            "done_time_ms": int, "queue_reason": str, "cancel_requested": int,
            "cancelled_from": int,
        },
        pk="id",
    )
    db["tasks"].create_index(["uid"], unique=True)
    db["tasks"].create_index(["namespace", "id"])
    db["tasks"].create_index(["namespace", "status", "id"])
    db["tasks"].create_index(["status"])
    db.execute(
        "CREATE TABLE logs (task_id INTEGER NOT NULL, seq INTEGER NOT NULL, time_ms INTEGER NOT NULL,"
        " stream INTEGER NOT NULL, text TEXT NOT NULL, PRIMARY KEY (task_id, seq)) WITHOUT ROWID"
    )
    db["kv"].create({"key": str, "value": str}, pk="key")


def _attempts_and_requests(db: sqlite_utils.Database) -> None:
    """Attempt numbers (fencing), idempotent creates, and an index for the retention purge."""
    db.execute("ALTER TABLE tasks ADD COLUMN attempt INTEGER NOT NULL DEFAULT 0")
    # "attempt:next line" of the lines an agent sent: committed with them, so re-sent lines are kept once.
    db.execute("ALTER TABLE tasks ADD COLUMN log_cursor TEXT NOT NULL DEFAULT ''")
    db.execute("CREATE INDEX tasks_done ON tasks(done_time_ms) WHERE done_time_ms > 0")
    db.execute("CREATE TABLE create_requests (key TEXT PRIMARY KEY, task_ids TEXT NOT NULL,"
               " created_ms INTEGER NOT NULL)")
    db.execute("CREATE INDEX create_requests_time ON create_requests(created_ms)")


def _groups(db: sqlite_utils.Database) -> None:
    db["group_templates"].create({"name": str, "json": str, "create_time_ms": int}, pk="name")
    db["group_instances"].create({"id": str, "template": str, "namespace": str, "task_ids": str,
                                  "create_time_ms": int}, pk="id")


def _nodes(db: sqlite_utils.Database) -> None:
    db["nodes"].create({"name": str, "address": str, "slots": int, "labels": str, "cpu_count": int,
                        "memory_mb": int, "session": str, "draining": int, "last_heartbeat_ms": int}, pk="name")


def _auth(db: sqlite_utils.Database) -> None:
    db.execute("CREATE TABLE auth_tokens (id TEXT PRIMARY KEY, name TEXT NOT NULL, role TEXT NOT NULL,"
               " namespaces TEXT NOT NULL, hash TEXT NOT NULL UNIQUE, create_time_ms INTEGER NOT NULL,"
               " expire_time_ms INTEGER NOT NULL, revoke_time_ms INTEGER NOT NULL)")
    db.execute("CREATE TABLE auth_audit (seq INTEGER PRIMARY KEY AUTOINCREMENT, time_ms INTEGER NOT NULL,"
               " token_id TEXT NOT NULL, token_name TEXT NOT NULL, method TEXT NOT NULL, namespace TEXT NOT NULL,"
               " tasks TEXT NOT NULL, allowed INTEGER NOT NULL, reason TEXT NOT NULL, peer TEXT NOT NULL)")
    db.execute("CREATE INDEX auth_audit_token ON auth_audit (token_id, seq)")


def _flow(db: sqlite_utils.Database) -> None:
    db.execute("""CREATE TABLE flow_jobs (
        job_id TEXT PRIMARY KEY, namespace TEXT NOT NULL, job_type TEXT NOT NULL, status INTEGER NOT NULL,
        dsl_json TEXT NOT NULL, conf_json TEXT NOT NULL, initiator_role TEXT NOT NULL, initiator_party INTEGER NOT NULL,
        parties_json TEXT NOT NULL, model_id TEXT NOT NULL, model_version TEXT NOT NULL, timeout_seconds REAL NOT NULL,
        description TEXT NOT NULL, error TEXT NOT NULL, progress INTEGER NOT NULL, create_time_ms INTEGER NOT NULL,
        start_time_ms INTEGER NOT NULL, end_time_ms INTEGER NOT NULL, update_time_ms INTEGER NOT NULL)""")
    db.execute("CREATE INDEX flow_jobs_status ON flow_jobs (status)")
    db.execute("""CREATE TABLE flow_tasks (
        job_id TEXT NOT NULL, component TEXT NOT NULL, role TEXT NOT NULL, party_id INTEGER NOT NULL,
        module TEXT NOT NULL, status INTEGER NOT NULL, taskhub_task_id INTEGER NOT NULL, task_version INTEGER NOT NULL,
        run_pid INTEGER NOT NULL, node TEXT NOT NULL, error TEXT NOT NULL, retries INTEGER NOT NULL,
        create_time_ms INTEGER NOT NULL, start_time_ms INTEGER NOT NULL, end_time_ms INTEGER NOT NULL,
        parameters_json TEXT NOT NULL DEFAULT '{}', summary_json TEXT NOT NULL DEFAULT '{}',
        model_json TEXT NOT NULL DEFAULT '', model_meta_json TEXT NOT NULL DEFAULT '',
        PRIMARY KEY (job_id, component, role, party_id)) WITHOUT ROWID""")
    db.execute("CREATE INDEX flow_tasks_taskhub ON flow_tasks (taskhub_task_id)")
    db.execute("""CREATE TABLE flow_metrics (
        job_id TEXT NOT NULL, component TEXT NOT NULL, role TEXT NOT NULL, party_id INTEGER NOT NULL,
        namespace TEXT NOT NULL, name TEXT NOT NULL, data_json TEXT NOT NULL, meta_json TEXT NOT NULL,
        PRIMARY KEY (job_id, component, role, party_id, namespace, name)) WITHOUT ROWID""")
    db.execute("""CREATE TABLE flow_tables (
        namespace TEXT NOT NULL, name TEXT NOT NULL, count INTEGER NOT NULL, partitions INTEGER NOT NULL,
        schema_json TEXT NOT NULL, job_id TEXT NOT NULL, component TEXT NOT NULL, role TEXT NOT NULL,
        party_id INTEGER NOT NULL, output_name TEXT NOT NULL, create_time_ms INTEGER NOT NULL,
        PRIMARY KEY (namespace, name)) WITHOUT ROWID""")
    db.execute("CREATE INDEX flow_tables_output ON flow_tables (job_id, component, role, party_id)")
    db.execute("""CREATE TABLE flow_table_chunks (
        namespace TEXT NOT NULL, name TEXT NOT NULL, seq INTEGER NOT NULL, rows INTEGER NOT NULL, data TEXT NOT NULL,
        PRIMARY KEY (namespace, name, seq)) WITHOUT ROWID""")
    db.execute("""CREATE TABLE flow_uploads (
        job_id TEXT PRIMARY KEY, namespace TEXT NOT NULL, name TEXT NOT NULL, conf_json TEXT NOT NULL,
        upload_count INTEGER NOT NULL, create_time_ms INTEGER NOT NULL)""")
    db.execute("""CREATE TABLE flow_messages (
        job_id TEXT NOT NULL, name TEXT NOT NULL, tag TEXT NOT NULL, src_role TEXT NOT NULL, src_party INTEGER NOT NULL,
        dst_role TEXT NOT NULL, dst_party INTEGER NOT NULL, payload BLOB NOT NULL,
        PRIMARY KEY (job_id, name, tag, src_role, src_party, dst_role, dst_party)) WITHOUT ROWID""")


def _flow_models(db: sqlite_utils.Database) -> None:
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


def _flow_tenants(db: sqlite_utils.Database) -> None:
    """The namespace each table, model and tag belongs to (server/flow/tenants.py)."""
    for table in ("flow_tables", "flow_models", "flow_tags"):
        db.execute(f"ALTER TABLE {table} ADD COLUMN tenant TEXT NOT NULL DEFAULT 'fate'")
    for table in ("flow_tables", "flow_models"):  # rows from before: their job's namespace
        db.execute(f"UPDATE {table} SET tenant = COALESCE((SELECT namespace FROM flow_jobs j"
                   f" WHERE j.job_id = {table}.job_id), 'fate')")


def _queue(db: sqlite_utils.Database) -> None:
    """The queue lives in the database: the engine reads a window of it in scheduling order
    (priority, then id) through a partial index that holds only the tasks waiting to be placed,
    and what is on nodes (read back whole at start) through another that holds only those."""
    db.execute("ALTER TABLE tasks ADD COLUMN priority INTEGER NOT NULL DEFAULT 0")
    db.execute(f"UPDATE tasks SET priority = CAST(json_extract(spec, '$.priority') AS INTEGER)"
               f" WHERE {QUEUED} AND json_extract(spec, '$.priority') != 0")
    db.execute(f"CREATE INDEX tasks_queue ON tasks (priority DESC, id) WHERE {QUEUED}")
    db.execute(f"CREATE INDEX tasks_active ON tasks (id) WHERE {ACTIVE_}")


def _cluster(db: sqlite_utils.Database) -> None:
    """Kept in step with PostgreSQL's schema (a SQLite file has one server: epoch stays 0, no server rows)."""
    db.execute("ALTER TABLE tasks ADD COLUMN epoch INTEGER NOT NULL DEFAULT 0")
    db.execute("CREATE TABLE servers (name TEXT PRIMARY KEY, address TEXT NOT NULL, started_ms INTEGER NOT NULL,"
               " heartbeat_ms INTEGER NOT NULL)")


def _status_indexes(db: sqlite_utils.Database) -> None:
    """Successes leave the status indexes (see base.NOT_SUCCESS): a no-op task's row, inserted as it
    ended, then writes 4 b-tree pages instead of 6 (C's p50 -2.5 %: README)."""
    db.execute("DROP INDEX idx_tasks_status")
    db.execute("DROP INDEX idx_tasks_namespace_status_id")
    db.execute(f"CREATE INDEX tasks_status ON tasks (status) WHERE {NOT_SUCCESS}")
    db.execute(f"CREATE INDEX tasks_namespace_status ON tasks (namespace, status, id) WHERE {NOT_SUCCESS}")


# The one ordered list: append only; entry i moves the schema from version i to i+1 (PRAGMA user_version).
MIGRATIONS: list[Callable[[sqlite_utils.Database], None]] = [
    _tasks, _attempts_and_requests, _groups, _nodes, _auth, _flow, _flow_models, _flow_tenants, _queue,
    _cluster, _status_indexes,
]
# Databases written before the one list kept groups, nodes, auth and flow in kv rows
# "schema:<name>" = steps done. Version (index + 1) -> (name, step) it was there.
_LEGACY_STEPS = {3: ("groups", 0), 4: ("nodes", 0), 5: ("auth", 0), 6: ("flow", 0), 7: ("flow", 1),
                 8: ("flow_tenants", 0)}

WAL_LIMIT_BYTES = 16 << 20     # journal_size_limit: what a reset WAL is truncated to
WAL_TRUNCATE_BYTES = 16 << 20  # above this the writer runs a TRUNCATE checkpoint between rounds
WAL_CHECK_SECONDS = 0.05       # how often inline commits look at the WAL's size (writer_may_inline)
CHECKPOINT_INTERVAL = 0.5      # seconds between WAL checkpoints


def connect(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA busy_timeout=10000")
    conn.execute("PRAGMA foreign_keys=ON")
    # A reset WAL is cut back to this size (without it the file keeps its high-water mark).
    conn.execute(f"PRAGMA journal_size_limit={WAL_LIMIT_BYTES}")
    return conn


def _legacy_done(conn: sqlite3.Connection) -> dict[str, int]:
    if not conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='kv'").fetchone():
        return {}
    return {r[0][len("schema:"):]: int(r[1]) for r in conn.execute("SELECT key, value FROM kv WHERE key LIKE 'schema:%'")}


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the schema to the newest version; returns that version."""
    db = sqlite_utils.Database(conn)
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > len(MIGRATIONS):
        raise StoreError(f"the database has schema v{version}, newer than this taskhub's v{len(MIGRATIONS)};"
                         " run a newer taskhub or give another --db")
    legacy = _legacy_done(conn)
    for i in range(version, len(MIGRATIONS)):
        name_step = _LEGACY_STEPS.get(i + 1)
        with db.conn:
            conn.execute("BEGIN")
            if not (name_step and legacy.get(name_step[0], 0) > name_step[1]):
                MIGRATIONS[i](db)
            conn.execute(f"PRAGMA user_version={i + 1}")
        log.info("migrated schema to v%d", i + 1)
    if legacy:
        conn.execute("DELETE FROM kv WHERE key LIKE 'schema:%'")
    return len(MIGRATIONS)


_INSERT_TASK = (
    "INSERT INTO tasks (id, uid, namespace, name, spec, create_time_ms, "
    + ", ".join(MUTABLE_FIELDS)
    + ", priority) VALUES (" + ", ".join("?" * (7 + len(MUTABLE_FIELDS))) + ")"
)
_UPDATE_TASK = "UPDATE tasks SET " + ", ".join(f"{f}=?" for f in MUTABLE_FIELDS) + " WHERE id=?"
_INSERT_REQUEST = "INSERT INTO create_requests (key, task_ids, created_ms) VALUES (?, ?, ?)"
_INSERT_LOG = "INSERT OR IGNORE INTO logs (task_id, seq, time_ms, stream, text) VALUES (?, ?, ?, ?, ?)"


def _marks(n: int) -> str:
    return ",".join("?" * n)


class SqliteStore(SqliteFlow, Store):
    """Reads from any thread (one connection per thread); writes only through batches."""

    def __init__(self, path: str, read_only: bool = False):
        """read_only: only read an existing database (no migration, no writer), e.g. `taskhub store stats`."""
        self.url = self.path = path
        self.local_dir = os.path.dirname(os.path.abspath(path))
        self._local = threading.local()
        self._next_id = 0
        self._ids_lock = threading.Lock()
        self.writer = None
        if read_only:
            return
        if path != ":memory:":
            os.makedirs(self.local_dir, exist_ok=True)
        try:
            conn = connect(path)
            migrate(conn)
            self._next_id = conn.execute("SELECT COALESCE(MAX(id), 0) FROM tasks").fetchone()[0]
            conn.close()
        except sqlite3.Error as e:
            raise StoreError(f"cannot open the SQLite database {path}: {e}") from e
        self._wal = path + "-wal"
        self._truncate_after = 0.0  # monotonic time before which no TRUNCATE is tried again
        self._wal_large = False     # past WAL_TRUNCATE_BYTES when last looked at (writer_may_inline)
        self._wal_checked_at = 0.0  # monotonic time of the next look
        self._stop = threading.Event()
        self.writer = Writer(self)

    def describe(self) -> str:
        return os.path.abspath(self.path)

    @property
    def conn(self) -> sqlite3.Connection:
        c = getattr(self._local, "conn", None)
        if c is None:
            c = self._local.conn = connect(self.path)
        return c

    def _rows(self, sql: str, params=()) -> list[sqlite3.Row]:
        return self.conn.execute(sql, tuple(params)).fetchall()

    # ---------------------------------------------------------------- the writer's side
    INLINE_COMMITS = True  # a small commit to the local WAL costs less than the hand-off to the writer

    def writer_connect(self) -> sqlite3.Connection:
        conn = connect(self.path)
        conn.execute("PRAGMA wal_autocheckpoint=0")  # see _checkpoint_loop
        return conn

    def writer_apply(self, conn: sqlite3.Connection, w: Work) -> None:
        try:
            conn.execute("BEGIN")
            if w.inserts:
                conn.executemany(_INSERT_TASK, w.inserts)
            if w.requests:  # in the same transaction as their tasks: a create is recorded whole or not at all
                conn.executemany(_INSERT_REQUEST, w.requests)
            if w.updates:
                conn.executemany(_UPDATE_TASK, [row + (tid,) for tid, row in w.updates.items()])
            if w.logs:
                conn.executemany(_INSERT_LOG, w.logs)
            if w.cursors:
                conn.executemany("UPDATE tasks SET log_cursor=? WHERE id=?", w.cursors)
            self.apply_ops(conn, w.ops)
            conn.execute("COMMIT")
        except BaseException:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            raise

    def writer_threads(self) -> list[threading.Thread]:
        return [threading.Thread(target=self._checkpoint_loop, name="taskhub-checkpoint", daemon=True)]

    def writer_stopped(self) -> None:
        self._stop.set()
        for t in self.writer._helpers:
            if t.is_alive():
                t.join(timeout=30)

    def _checkpoint_loop(self) -> None:
        """Move the WAL into the database off the commit path.

        SQLite's automatic checkpoint runs inside a commit and fsyncs there (a 15-20 ms stall
        every few thousand rows); the writer turns it off and this thread checkpoints instead.
        Under sustained load a PASSIVE checkpoint never lets the WAL start over (a commit always
        follows), so the file would only grow: the writer itself truncates it when it is large
        (see writer_after); the pages are mostly copied by these PASSIVE checkpoints by then, so
        that only waits for readers (short) and cuts the file to zero.
        """
        conn = connect(self.path)
        while not self._stop.wait(CHECKPOINT_INTERVAL):
            try:
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
            except sqlite3.Error:
                log.warning("WAL checkpoint failed; will try again", exc_info=True)
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.close()

    def writer_may_inline(self) -> bool:
        """Inline commits (Writer.put) never reach writer_after, and under a steady trickle of
        them the PASSIVE checkpoints never catch up (a commit always follows), so the WAL would
        grow without end: measured, 229 MB after 3,000 no-op round trips. Once it is past
        WAL_TRUNCATE_BYTES, writes go to the thread until writer_after has cut it back."""
        now = time.monotonic()
        if now >= self._wal_checked_at:
            self._wal_checked_at = now + WAL_CHECK_SECONDS
            try:
                self._wal_large = os.path.getsize(self._wal) > WAL_TRUNCATE_BYTES
            except OSError:
                self._wal_large = False
        return not self._wal_large

    def writer_after(self, conn: sqlite3.Connection) -> None:
        """Keep the WAL bounded: past WAL_TRUNCATE_BYTES, checkpoint it and cut it to zero."""
        try:
            if os.path.getsize(self._wal) <= WAL_TRUNCATE_BYTES or time.monotonic() < self._truncate_after:
                return
        except OSError:
            return
        # Never wait here (commits wait behind it): if a reader or the PASSIVE checkpointer is
        # in the way, try again after a later round.
        conn.execute("PRAGMA busy_timeout=0")
        try:
            busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            if busy:
                self._truncate_after = time.monotonic() + 0.02
            else:
                self._wal_large = False
        except sqlite3.Error:
            self._truncate_after = time.monotonic() + 1.0
            log.warning("WAL truncate failed; will try again", exc_info=True)
        finally:
            conn.execute("PRAGMA busy_timeout=10000")

    # ---------------------------------------------------------------- operations (op_<name>)
    def op_delete_tasks(self, conn, ids: list[int]) -> None:
        conn.execute(f"DELETE FROM logs WHERE task_id IN ({_marks(len(ids))})", ids)
        conn.execute(f"DELETE FROM tasks WHERE id IN ({_marks(len(ids))})", ids)

    def op_delete_create_requests(self, conn, keys: list[str]) -> None:
        conn.execute(f"DELETE FROM create_requests WHERE key IN ({_marks(len(keys))})", keys)

    def op_put_kv_if_absent(self, conn, key: str, value: str) -> None:
        conn.execute("INSERT OR IGNORE INTO kv(key, value) VALUES (?, ?)", (key, value))

    def op_put_group_template(self, conn, name: str, text: str, ts: int) -> None:
        conn.execute("INSERT INTO group_templates (name, json, create_time_ms) VALUES (?, ?, ?)", (name, text, ts))

    def op_delete_group_template(self, conn, name: str) -> None:
        conn.execute("DELETE FROM group_templates WHERE name=?", (name,))

    def op_put_group_instance(self, conn, *row) -> None:
        conn.execute("INSERT INTO group_instances (id, template, namespace, task_ids, create_time_ms)"
                     " VALUES (?, ?, ?, ?, ?)", row)

    def op_delete_group_instance(self, conn, instance_id: str) -> None:
        conn.execute("DELETE FROM group_instances WHERE id=?", (instance_id,))

    def op_put_node(self, conn, row: tuple) -> None:
        conn.execute(f"INSERT OR REPLACE INTO nodes ({', '.join(NODE_COLUMNS)}) VALUES ({_marks(len(row))})", row)

    def op_insert_token(self, conn, row: tuple) -> None:
        conn.execute(f"INSERT INTO auth_tokens ({', '.join(TOKEN_COLUMNS)}) VALUES ({_marks(len(row))})", row)

    def op_revoke_token(self, conn, token_id: str, when_ms: int) -> None:
        conn.execute("UPDATE auth_tokens SET revoke_time_ms=? WHERE id=?", (when_ms, token_id))

    def op_append_audit(self, conn, rows: list[tuple]) -> None:
        conn.executemany(f"INSERT INTO auth_audit ({', '.join(AUDIT_COLUMNS)}) VALUES ({_marks(len(AUDIT_COLUMNS))})",
                         rows)

    def op_delete_audit(self, conn, seqs: list[int]) -> None:
        conn.execute(f"DELETE FROM auth_audit WHERE seq IN ({_marks(len(seqs))})", seqs)

    # ---------------------------------------------------------------- tasks
    def next_task_ids(self, n: int) -> list[int]:
        # One process owns the file, so the next ids follow the largest committed one.
        with self._ids_lock:
            first = self._next_id + 1
            self._next_id += n
        return list(range(first, first + n))

    def get_task(self, task_id: int) -> Task | None:
        row = self.conn.execute("SELECT * FROM tasks WHERE id=?", (task_id,)).fetchone()
        return Task.from_row(dict(row)) if row else None

    def get_task_by_uid(self, uid: str) -> Task | None:
        row = self.conn.execute("SELECT * FROM tasks WHERE uid=?", (uid,)).fetchone()
        return Task.from_row(dict(row)) if row else None

    def list_tasks(self, namespace: str | None, statuses: list[int], limit: int, before_id: int,
                   name_contains: str = "") -> list[Task]:
        where, params = ["id < ?"], [before_id]
        if name_contains:
            where.append("instr(name, ?) > 0")
            params.append(name_contains)
        if namespace is not None:
            where.append("namespace = ?")
            params.append(namespace)
        if statuses:
            where.append(f"status IN ({_marks(len(statuses))})")
            params.extend(statuses)
            if Status.SUCCESS not in statuses:
                where.append(NOT_SUCCESS)  # lets the status indexes serve it
        sql = f"SELECT * FROM tasks WHERE {' AND '.join(where)} ORDER BY id DESC LIMIT ?"
        return [Task.from_row(dict(r)) for r in self.conn.execute(sql, (*params, limit))]

    def active_tasks(self) -> list[Task]:
        rows = self.conn.execute(f"SELECT * FROM tasks INDEXED BY tasks_active WHERE {ACTIVE_} ORDER BY id")
        return [Task.from_row(dict(r)) for r in rows]

    def annotated_unfinished(self, annotation: str) -> list[Task]:
        # The key as the spec's JSON spells it narrows the scan; the annotation itself decides.
        needle = json.dumps(annotation)
        rows = self._rows(f"SELECT * FROM tasks INDEXED BY tasks_queue WHERE {QUEUED} AND instr(spec, ?) > 0"
                          f" UNION ALL SELECT * FROM tasks INDEXED BY tasks_active WHERE {ACTIVE_} AND instr(spec, ?) > 0",
                          (needle, needle))
        return [t for t in (Task.from_row(dict(r)) for r in rows) if annotation in t.spec.annotations]

    def queued_tasks(self, after: tuple[int, int] | None, limit: int) -> list[Task]:
        # Two seeks on the queue index: the rest of `after`'s priority, then the lower priorities.
        found = []
        if after is not None:
            found = self._rows(f"SELECT * FROM tasks INDEXED BY tasks_queue WHERE {QUEUED} AND priority = ? AND id > ?"
                               " ORDER BY priority DESC, id LIMIT ?", (after[0], after[1], limit))
        if len(found) < limit:
            lower = "AND priority < ?" if after is not None else ""
            found += self._rows(f"SELECT * FROM tasks INDEXED BY tasks_queue WHERE {QUEUED} {lower} ORDER BY priority DESC, id LIMIT ?",
                                ((after[0],) if after is not None else ()) + (limit - len(found),))
        return [Task.from_row(dict(r)) for r in found]

    def count_unfinished(self) -> int:
        return self.conn.execute(f"SELECT (SELECT COUNT(*) FROM tasks INDEXED BY tasks_queue WHERE {QUEUED})"
                                 f" + (SELECT COUNT(*) FROM tasks INDEXED BY tasks_active WHERE {ACTIVE_})").fetchone()[0]

    def request_keys(self, since_ms: int):
        return (r[0] for r in self.conn.execute("SELECT key FROM create_requests WHERE created_ms>=?", (since_ms,)))

    def tasks_by_ids(self, ids: list[int]) -> list[Task]:
        found = {}
        for i in range(0, len(ids), 500):
            chunk = ids[i:i + 500]
            rows = self.conn.execute(f"SELECT * FROM tasks WHERE id IN ({_marks(len(chunk))})", chunk)
            found.update((r["id"], Task.from_row(dict(r))) for r in rows)
        return [found[i] for i in ids if i in found]

    def task_states(self, ids: list[int]) -> dict[int, tuple[str, int]]:
        found = {}
        for i in range(0, len(ids), 500):
            chunk = ids[i:i + 500]
            found.update((r[0], (r[1], r[2])) for r in self.conn.execute(
                f"SELECT id, namespace, status FROM tasks WHERE id IN ({_marks(len(chunk))})", chunk))
        return found

    def created_by_request(self, key: str, since_ms: int) -> list[int] | None:
        row = self.conn.execute("SELECT task_ids FROM create_requests WHERE key=? AND created_ms>=?",
                                (key, since_ms)).fetchone()
        return [int(i) for i in row[0].split(",")] if row else None

    # ---------------------------------------------------------------- logs
    def log_length(self, task_id: int) -> int:
        row = self.conn.execute("SELECT MAX(seq) FROM logs WHERE task_id=?", (task_id,)).fetchone()
        return 0 if row[0] is None else row[0] + 1

    def log_cursor(self, task_id: int) -> tuple[int, int] | None:
        row = self.conn.execute("SELECT log_cursor FROM tasks WHERE id=?", (task_id,)).fetchone()
        if not row or not row[0]:
            return None
        attempt, _, line = row[0].partition(":")
        return int(attempt), int(line)

    def read_logs(self, task_id: int, offset: int, limit: int) -> list[tuple]:
        return self.conn.execute(
            "SELECT seq, time_ms, stream, text FROM logs WHERE task_id=? AND seq>=? ORDER BY seq LIMIT ?",
            (task_id, offset, limit),
        ).fetchall()

    # ---------------------------------------------------------------- small things
    def get_kv(self, key: str) -> str | None:
        row = self.conn.execute("SELECT value FROM kv WHERE key=?", (key,)).fetchone()
        return row[0] if row else None

    def group_templates(self) -> list[dict]:
        return [dict(r) for r in self._rows("SELECT name, json, create_time_ms FROM group_templates")]

    def group_instances(self) -> list[dict]:
        return [dict(r) for r in self._rows("SELECT * FROM group_instances")]

    def servers(self) -> list[dict]:
        return [dict(r) for r in self._rows("SELECT * FROM servers ORDER BY name")]

    def nodes(self) -> list[dict]:
        return [dict(r) for r in self._rows("SELECT * FROM nodes")]

    def tokens(self) -> list[dict]:
        return [dict(r) for r in self._rows("SELECT * FROM auth_tokens ORDER BY create_time_ms DESC, id")]

    def audit(self, limit: int, token_id: str = "") -> list[dict]:
        where, params = ("WHERE token_id=?", [token_id]) if token_id else ("", [])
        return [dict(r) for r in self._rows(f"SELECT * FROM auth_audit {where} ORDER BY seq DESC LIMIT ?",
                                            params + [limit])]

    # ---------------------------------------------------------------- retention
    def finished_task_ids(self, cutoff_ms: int, limit: int) -> list[int]:
        return [r[0] for r in self._rows(
            f"SELECT id FROM tasks WHERE done_time_ms > 0 AND done_time_ms < ? AND status IN ({_DONE})"
            " ORDER BY done_time_ms LIMIT ?", (cutoff_ms, limit))]

    def old_create_request_keys(self, cutoff_ms: int, limit: int) -> list[str]:
        return [r[0] for r in self._rows(
            "SELECT key FROM create_requests WHERE created_ms < ? ORDER BY created_ms LIMIT ?", (cutoff_ms, limit))]

    def old_audit_seqs(self, cutoff_ms: int, limit: int) -> list[int]:
        return [r[0] for r in self._rows("SELECT seq, time_ms FROM auth_audit ORDER BY seq LIMIT ?", (limit,))
                if r[1] < cutoff_ms]

    # ---------------------------------------------------------------- statistics
    def stats(self) -> dict:
        conn = self.conn
        tables = [r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%'")]
        rows = {t: conn.execute(f'SELECT COUNT(*) FROM "{t}"').fetchone()[0] for t in sorted(tables)}
        oldest = conn.execute("SELECT id, create_time_ms FROM tasks ORDER BY id LIMIT 1").fetchone()
        unfinished = self.count_unfinished()

        def size(p: str) -> int:
            try:
                return os.path.getsize(p)
            except OSError:
                return 0
        return {
            "path": os.path.abspath(self.path),
            "db_bytes": size(self.path), "wal_bytes": size(self.path + "-wal"),
            "rows": rows, "unfinished_tasks": unfinished,
            "oldest_task": {"id": oldest[0], "create_time_ms": oldest[1]} if oldest else None,
        }
