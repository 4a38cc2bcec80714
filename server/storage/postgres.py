"""PostgreSQL: the store several servers can share (`--db postgresql://user:pass@host:port/dbname`).

All of its SQL (the FATE part in postgres_flow.py) and its ordered migration list. Reads take a
connection from a psycopg_pool pool (autocommit); the writer has its own connection and applies
each round in one transaction, like SQLite's. Task ids come from a sequence, fetched a block at a time.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import threading
import time
from typing import Callable
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from ..errors import Unavailable
from ..model import ACTIVE, MUTABLE_FIELDS, SCHEDULABLE, TERMINAL, Status, Task
from .base import AUDIT_COLUMNS, NODE_COLUMNS, NOT_SUCCESS, TOKEN_COLUMNS, Store, StoreError, Work, Writer
from .postgres_flow import PostgresFlow

log = logging.getLogger(__name__)

_DONE = ", ".join(str(int(s)) for s in sorted(TERMINAL))
ACTIVE_ = "status IN (" + ", ".join(str(int(s)) for s in sorted(ACTIVE)) + ")"
QUEUED = "status IN (" + ", ".join(str(int(s)) for s in sorted(SCHEDULABLE)) + ")"
_MIGRATION_LOCK = 0x7461736B  # pg_advisory_xact_lock key: one server migrates at a time
_OWNER_LOCK = 0x74617368     # pg_try_advisory_lock key: the scheduler's (see SchedulerLock)
FENCED = "TH001"               # SQLSTATE taskhub_fence raises: a deposed scheduler's write
IDLE_SESSION_MS = 5_000         # see SchedulerLock
SERVER_FORGET_MS = 86_400_000  # a server row not renewed for a day is removed
DOWN_SECONDS = 1.0
ID_BLOCK = 64                  # task ids fetched from the sequence per round trip


# ---------------------------------------------------------------- migrations
def _tasks(cur) -> None:
    cur.execute("""CREATE TABLE tasks (
        id BIGINT PRIMARY KEY, uid TEXT, namespace TEXT, name TEXT, spec TEXT, create_time_ms BIGINT,
        status BIGINT, progress BIGINT, result TEXT, response_json TEXT, retries BIGINT, node TEXT, pid BIGINT,
        ppid BIGINT, exit_code BIGINT, error TEXT, update_time_ms BIGINT, start_time_ms BIGINT,
        done_time_ms BIGINT, queue_reason TEXT, cancel_requested BIGINT, cancelled_from BIGINT)""")
    cur.execute("CREATE UNIQUE INDEX idx_tasks_uid ON tasks (uid)")
    cur.execute("CREATE INDEX idx_tasks_namespace_id ON tasks (namespace, id)")
    cur.execute("CREATE INDEX idx_tasks_namespace_status_id ON tasks (namespace, status, id)")
    cur.execute("CREATE INDEX idx_tasks_status ON tasks (status)")
    cur.execute("CREATE SEQUENCE task_ids")
    cur.execute("CREATE TABLE logs (task_id BIGINT NOT NULL, seq BIGINT NOT NULL, time_ms BIGINT NOT NULL,"
                " stream BIGINT NOT NULL, text TEXT NOT NULL, PRIMARY KEY (task_id, seq))")
    cur.execute("CREATE TABLE kv (key TEXT PRIMARY KEY, value TEXT)")


def _attempts_and_requests(cur) -> None:
    cur.execute("ALTER TABLE tasks ADD COLUMN attempt BIGINT NOT NULL DEFAULT 0")
    cur.execute("ALTER TABLE tasks ADD COLUMN log_cursor TEXT NOT NULL DEFAULT ''")
    cur.execute("CREATE INDEX tasks_done ON tasks (done_time_ms) WHERE done_time_ms > 0")
    cur.execute("CREATE TABLE create_requests (key TEXT PRIMARY KEY, task_ids TEXT NOT NULL,"
                " created_ms BIGINT NOT NULL)")
    cur.execute("CREATE INDEX create_requests_time ON create_requests (created_ms)")


def _groups(cur) -> None:
    cur.execute("CREATE TABLE group_templates (name TEXT PRIMARY KEY, json TEXT, create_time_ms BIGINT)")
    cur.execute("CREATE TABLE group_instances (id TEXT PRIMARY KEY, template TEXT, namespace TEXT, task_ids TEXT,"
                " create_time_ms BIGINT)")


def _nodes(cur) -> None:
    cur.execute("CREATE TABLE nodes (name TEXT PRIMARY KEY, address TEXT, slots BIGINT, labels TEXT,"
                " cpu_count BIGINT, memory_mb BIGINT, session TEXT, draining BIGINT, last_heartbeat_ms BIGINT)")


def _auth(cur) -> None:
    cur.execute("CREATE TABLE auth_tokens (id TEXT PRIMARY KEY, name TEXT NOT NULL, role TEXT NOT NULL,"
                " namespaces TEXT NOT NULL, hash TEXT NOT NULL UNIQUE, create_time_ms BIGINT NOT NULL,"
                " expire_time_ms BIGINT NOT NULL, revoke_time_ms BIGINT NOT NULL)")
    cur.execute("CREATE TABLE auth_audit (seq BIGSERIAL PRIMARY KEY, time_ms BIGINT NOT NULL,"
                " token_id TEXT NOT NULL, token_name TEXT NOT NULL, method TEXT NOT NULL, namespace TEXT NOT NULL,"
                " tasks TEXT NOT NULL, allowed BIGINT NOT NULL, reason TEXT NOT NULL, peer TEXT NOT NULL)")
    cur.execute("CREATE INDEX auth_audit_token ON auth_audit (token_id, seq)")


def _flow(cur) -> None:
    """FATE Flow's jobs, tasks, tracking, tables, uploads and federation messages (server/flow/)."""
    cur.execute("""CREATE TABLE flow_jobs (
        job_id TEXT PRIMARY KEY, namespace TEXT NOT NULL, job_type TEXT NOT NULL, status BIGINT NOT NULL,
        dsl_json TEXT NOT NULL, conf_json TEXT NOT NULL, initiator_role TEXT NOT NULL, initiator_party BIGINT NOT NULL,
        parties_json TEXT NOT NULL, model_id TEXT NOT NULL, model_version TEXT NOT NULL,
        timeout_seconds DOUBLE PRECISION NOT NULL, description TEXT NOT NULL, error TEXT NOT NULL,
        progress BIGINT NOT NULL, create_time_ms BIGINT NOT NULL, start_time_ms BIGINT NOT NULL,
        end_time_ms BIGINT NOT NULL, update_time_ms BIGINT NOT NULL)""")
    cur.execute("CREATE INDEX flow_jobs_status ON flow_jobs (status)")
    cur.execute("""CREATE TABLE flow_tasks (
        job_id TEXT NOT NULL, component TEXT NOT NULL, role TEXT NOT NULL, party_id BIGINT NOT NULL,
        module TEXT NOT NULL, status BIGINT NOT NULL, taskhub_task_id BIGINT NOT NULL, task_version BIGINT NOT NULL,
        run_pid BIGINT NOT NULL, node TEXT NOT NULL, error TEXT NOT NULL, retries BIGINT NOT NULL,
        create_time_ms BIGINT NOT NULL, start_time_ms BIGINT NOT NULL, end_time_ms BIGINT NOT NULL,
        parameters_json TEXT NOT NULL DEFAULT '{}', summary_json TEXT NOT NULL DEFAULT '{}',
        model_json TEXT NOT NULL DEFAULT '', model_meta_json TEXT NOT NULL DEFAULT '',
        PRIMARY KEY (job_id, component, role, party_id))""")
    cur.execute("CREATE INDEX flow_tasks_taskhub ON flow_tasks (taskhub_task_id)")
    cur.execute("""CREATE TABLE flow_metrics (
        job_id TEXT NOT NULL, component TEXT NOT NULL, role TEXT NOT NULL, party_id BIGINT NOT NULL,
        namespace TEXT NOT NULL, name TEXT NOT NULL, data_json TEXT NOT NULL, meta_json TEXT NOT NULL,
        PRIMARY KEY (job_id, component, role, party_id, namespace, name))""")
    cur.execute("""CREATE TABLE flow_tables (
        namespace TEXT NOT NULL, name TEXT NOT NULL, count BIGINT NOT NULL, partitions BIGINT NOT NULL,
        schema_json TEXT NOT NULL, job_id TEXT NOT NULL, component TEXT NOT NULL, role TEXT NOT NULL,
        party_id BIGINT NOT NULL, output_name TEXT NOT NULL, create_time_ms BIGINT NOT NULL,
        PRIMARY KEY (namespace, name))""")
    cur.execute("CREATE INDEX flow_tables_output ON flow_tables (job_id, component, role, party_id)")
    cur.execute("""CREATE TABLE flow_table_chunks (
        namespace TEXT NOT NULL, name TEXT NOT NULL, seq BIGINT NOT NULL, rows BIGINT NOT NULL, data TEXT NOT NULL,
        PRIMARY KEY (namespace, name, seq))""")
    cur.execute("""CREATE TABLE flow_uploads (
        job_id TEXT PRIMARY KEY, namespace TEXT NOT NULL, name TEXT NOT NULL, conf_json TEXT NOT NULL,
        upload_count BIGINT NOT NULL, create_time_ms BIGINT NOT NULL)""")
    cur.execute("""CREATE TABLE flow_messages (
        job_id TEXT NOT NULL, name TEXT NOT NULL, tag TEXT NOT NULL, src_role TEXT NOT NULL, src_party BIGINT NOT NULL,
        dst_role TEXT NOT NULL, dst_party BIGINT NOT NULL, payload BYTEA NOT NULL,
        PRIMARY KEY (job_id, name, tag, src_role, src_party, dst_role, dst_party))""")


def _flow_models(cur) -> None:
    """FATE models (one row per party, and its component models) and the tags that name them."""
    cur.execute("""CREATE TABLE flow_models (
        model_id TEXT NOT NULL, model_version TEXT NOT NULL, role TEXT NOT NULL, party_id BIGINT NOT NULL,
        job_id TEXT NOT NULL, parent_version TEXT NOT NULL, initiator_role TEXT NOT NULL,
        initiator_party BIGINT NOT NULL, roles_json TEXT NOT NULL, train_dsl_json TEXT NOT NULL,
        train_conf_json TEXT NOT NULL, inference_dsl_json TEXT NOT NULL, imported BIGINT NOT NULL,
        loaded_times BIGINT NOT NULL, service_ids_json TEXT NOT NULL, create_time_ms BIGINT NOT NULL,
        update_time_ms BIGINT NOT NULL,
        PRIMARY KEY (model_id, model_version, role, party_id))""")
    cur.execute("CREATE INDEX flow_models_version ON flow_models (model_version)")
    cur.execute("""CREATE TABLE flow_model_components (
        model_id TEXT NOT NULL, model_version TEXT NOT NULL, role TEXT NOT NULL, party_id BIGINT NOT NULL,
        component TEXT NOT NULL, module TEXT NOT NULL, model_json TEXT NOT NULL, meta_json TEXT NOT NULL,
        PRIMARY KEY (model_id, model_version, role, party_id, component))""")
    cur.execute("""CREATE TABLE flow_tags (
        name TEXT PRIMARY KEY, description TEXT NOT NULL, create_time_ms BIGINT NOT NULL)""")
    cur.execute("""CREATE TABLE flow_model_tags (
        tag TEXT NOT NULL, model_version TEXT NOT NULL, PRIMARY KEY (tag, model_version))""")


def _flow_tenants(cur) -> None:
    """The namespace each table, model and tag belongs to (server/flow/tenants.py)."""
    for table in ("flow_tables", "flow_models", "flow_tags"):
        cur.execute(f"ALTER TABLE {table} ADD COLUMN tenant TEXT NOT NULL DEFAULT 'fate'")
    for table in ("flow_tables", "flow_models"):  # rows from before: their job's namespace
        cur.execute(f"UPDATE {table} SET tenant = COALESCE((SELECT namespace FROM flow_jobs j"
                    f" WHERE j.job_id = {table}.job_id), 'fate')")


def _queue(cur) -> None:
    """The queue lives in the database (see sqlite._queue): priority as a column, two partial indexes."""
    cur.execute("ALTER TABLE tasks ADD COLUMN priority BIGINT NOT NULL DEFAULT 0")
    cur.execute(f"UPDATE tasks SET priority = (spec::jsonb->>'priority')::bigint"
                f" WHERE {QUEUED} AND (spec::jsonb->>'priority')::bigint <> 0")
    cur.execute(f"CREATE INDEX tasks_queue ON tasks (priority DESC, id) WHERE {QUEUED}")
    cur.execute(f"CREATE INDEX tasks_active ON tasks (id) WHERE {ACTIVE_}")


def _cluster(cur) -> None:
    """Several servers on one database (server/cluster.py): who is up, and the scheduler's fence."""
    cur.execute("ALTER TABLE tasks ADD COLUMN epoch BIGINT NOT NULL DEFAULT 0")
    cur.execute("CREATE TABLE servers (name TEXT PRIMARY KEY, address TEXT NOT NULL, started_ms BIGINT NOT NULL,"
                " heartbeat_ms BIGINT NOT NULL)")
    # Run first in each transaction of the scheduler's writer. FOR SHARE: a take-over (which updates
    # the epoch) waits for a transaction of the old scheduler in flight, and every later one is refused.
    cur.execute(f"""CREATE FUNCTION taskhub_fence(mine BIGINT) RETURNS void AS $$
        DECLARE now_epoch BIGINT;
        BEGIN
            SELECT value::bigint INTO now_epoch FROM kv WHERE key = 'epoch' FOR SHARE;
            IF now_epoch IS DISTINCT FROM mine THEN
                RAISE EXCEPTION 'taskhub: this server is no longer the scheduler (its epoch %, the current epoch %)',
                    mine, now_epoch USING ERRCODE = '{FENCED}';
            END IF;
        END $$ LANGUAGE plpgsql""")


def _status_indexes(cur) -> None:
    """Successes leave the status indexes (see base.NOT_SUCCESS and sqlite._status_indexes)."""
    cur.execute("DROP INDEX idx_tasks_status")
    cur.execute("DROP INDEX idx_tasks_namespace_status_id")
    cur.execute(f"CREATE INDEX tasks_status ON tasks (status) WHERE {NOT_SUCCESS}")
    cur.execute(f"CREATE INDEX tasks_namespace_status ON tasks (namespace, status, id) WHERE {NOT_SUCCESS}")


# The one ordered list, the same steps as SQLite's (server/storage/sqlite.py): append only.
MIGRATIONS: list[Callable] = [
    _tasks, _attempts_and_requests, _groups, _nodes, _auth, _flow, _flow_models, _flow_tenants, _queue, _cluster,
    _status_indexes,
]


def migrate(conn: psycopg.Connection) -> int:
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
        conn.execute("CREATE TABLE IF NOT EXISTS taskhub_schema (version BIGINT NOT NULL)")
        row = conn.execute("SELECT version FROM taskhub_schema").fetchone()
        if row is None:
            conn.execute("INSERT INTO taskhub_schema (version) VALUES (0)")
        version = row[0] if row else 0
        if version > len(MIGRATIONS):
            raise StoreError(f"the database has schema v{version}, newer than this taskhub's v{len(MIGRATIONS)};"
                             " run a newer taskhub or give another --db")
        cur = conn.cursor()
        for i in range(version, len(MIGRATIONS)):
            MIGRATIONS[i](cur)
            conn.execute("UPDATE taskhub_schema SET version=%s", (i + 1,))
            log.info("migrated schema to v%d", i + 1)
    return len(MIGRATIONS)


_COPY_TASKS = ("COPY tasks (id, uid, namespace, name, spec, create_time_ms, " + ", ".join(MUTABLE_FIELDS)
               + ", priority, epoch) FROM STDIN")
# `epoch`: the scheduler epoch that wrote the row last (a placement carries it: the fencing token).
_UPDATE_TASK = "UPDATE tasks SET " + ", ".join(f"{f}=%s" for f in MUTABLE_FIELDS) + ", epoch=%s WHERE id=%s"
_INSERT_REQUEST = "INSERT INTO create_requests (key, task_ids, created_ms) VALUES (%s, %s, %s)"
_INSERT_LOG = ("INSERT INTO logs (task_id, seq, time_ms, stream, text) VALUES (%s, %s, %s, %s, %s)"
               " ON CONFLICT DO NOTHING")

# PostgreSQL text cannot hold NUL. Request keys hold one (namespace NUL request id): escaped
# reversibly. A NUL a task prints (or returns) becomes U+FFFD, rather than failing its batch.
NUL_STAND_IN = "\ufffd"
_TASK_TEXTS = tuple(6 + MUTABLE_FIELDS.index(f) for f in ("result", "response_json", "error", "queue_reason"))
_MUTABLE_TEXTS = tuple(MUTABLE_FIELDS.index(f) for f in ("result", "response_json", "error", "queue_reason"))


def _no_nul(row: tuple, texts: tuple[int, ...]) -> tuple:
    if not any("\0" in (row[i] or "") for i in texts):
        return row
    return tuple(v.replace("\0", NUL_STAND_IN) if i in texts and v else v for i, v in enumerate(row))


def _key(key: str) -> str:
    return key.replace("\\", "\\\\").replace("\0", "\\0")


def _unkey(stored: str) -> str:
    return re.sub(r"\\(.)", lambda m: "\0" if m.group(1) == "0" else m.group(1), stored)


def _safe_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        host = parts.hostname or ""
        netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
        parts = parts._replace(netloc=netloc)
    return urlunsplit(parts)


NOTIFY_BYTES = 7_900  # PostgreSQL takes payloads below 8000 bytes


def id_ranges(ids: list[int]) -> list[str]:
    """Sorted ids as 'a-b' runs (ids come from the sequence in blocks, so creates compress well)."""
    out: list[str] = []
    start = prev = None
    for i in ids:
        if prev is not None and i == prev + 1:
            prev = i
            continue
        if start is not None:
            out.append(str(start) if start == prev else f"{start}-{prev}")
        start = prev = i
    if start is not None:
        out.append(str(start) if start == prev else f"{start}-{prev}")
    return out


def parse_ids(payload: str) -> list[int]:
    ids: list[int] = []
    for part in payload.split(","):
        a, _, b = part.partition("-")
        ids.extend(range(int(a), int(b or a) + 1))
    return ids


def _payloads(parts: list[str]) -> list[str]:
    """Comma-joined parts, cut into payloads PostgreSQL accepts."""
    out, cur, size = [], [], 0
    for p in parts:
        if cur and size + len(p) + 1 > NOTIFY_BYTES:
            out.append(",".join(cur))
            cur, size = [], 0
        cur.append(p)
        size += len(p) + 1
    if cur:
        out.append(",".join(cur))
    return out


class SchedulerLock:
    """The scheduler election and the cluster's notifications, on one dedicated connection.

    Every server on the database holds one. `try_lead()` takes a session advisory lock: PostgreSQL
    drops it when this connection ends, however the server ends (SIGKILL included), so a follower
    takes over as soon as the leader's connection is gone. Each take-over increments kv 'epoch';
    the writer's transactions are fenced by it (`taskhub_fence`). The connection also LISTENs
    (`listen`) and writes this server's heartbeat row (`beat`). Used from one thread only.
    """

    def __init__(self, url: str, describe: str):
        self.url, self.describe = url, describe
        self.conn = psycopg.connect(url, autocommit=True, connect_timeout=10)
        # A frozen host must not hold the lock for long: its idle session is dropped after a few seconds.
        # A frozen (SIGSTOPped) or vanished server must not hold the lock for long: PostgreSQL ends its
        # session once idle this long (a live one runs a statement every POLL_SECONDS, server/cluster.py).
        self.conn.execute(f"SET idle_session_timeout = {IDLE_SESSION_MS}")
        self.conn.execute("SET tcp_keepalives_idle = 2")
        self.conn.execute("SET tcp_keepalives_interval = 1")
        self.conn.execute("SET tcp_keepalives_count = 2")
        self.conn.execute(f"SET lock_timeout = {2 * IDLE_SESSION_MS}")  # a take-over never waits for ever

    def try_lead(self, name: str) -> tuple[int, int, str] | None:
        """(epoch, since_ms, the previous scheduler's name) if this server is now the scheduler; None if
        another one holds the lock."""
        if not self.conn.execute("SELECT pg_try_advisory_lock(%s)", (_OWNER_LOCK,)).fetchone()[0]:
            return None
        with self.conn.transaction():
            row = self.conn.execute("SELECT value FROM kv WHERE key = 'scheduler'").fetchone()
            epoch = int(self.conn.execute(
                "INSERT INTO kv (key, value) VALUES ('epoch', '1') ON CONFLICT (key)"
                " DO UPDATE SET value = (kv.value::bigint + 1)::text RETURNING value").fetchone()[0])
            since = int(time.time() * 1000)
            self.conn.execute("INSERT INTO kv (key, value) VALUES ('scheduler', %s), ('scheduler_since_ms', %s)"
                              " ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value", (name, str(since)))
        return epoch, since, row[0] if row else ""

    def retake(self, epoch: int) -> bool:
        """After this connection broke (a database restart): the lock again, if nobody took over meanwhile."""
        if not self.conn.execute("SELECT pg_try_advisory_lock(%s)", (_OWNER_LOCK,)).fetchone()[0]:
            return False
        if self.still_leads(epoch):
            return True
        self.conn.execute("SELECT pg_advisory_unlock(%s)", (_OWNER_LOCK,))
        return False

    def still_leads(self, epoch: int) -> bool:
        """The lock is ours and nobody took over since (raises psycopg.Error if the connection broke)."""
        row = self.conn.execute("SELECT value FROM kv WHERE key = 'epoch'").fetchone()
        return row is not None and int(row[0]) == epoch

    def listen(self, channels: list[str]) -> None:
        for ch in channels:
            self.conn.execute(f"LISTEN {ch}")

    def unlisten(self, channels: list[str]) -> None:
        for ch in channels:
            self.conn.execute(f"UNLISTEN {ch}")

    def notifications(self, timeout: float):
        """(channel, payload) pairs received within `timeout` seconds."""
        return ((n.channel, n.payload) for n in self.conn.notifies(timeout=timeout))

    def beat(self, name: str, address: str, started_ms: int, alive_ms: int) -> int:
        """Renew this server's row; returns how many other servers are up (renewed within alive_ms)."""
        now = int(time.time() * 1000)
        self.conn.execute("INSERT INTO servers (name, address, started_ms, heartbeat_ms) VALUES (%s, %s, %s, %s)"
                          " ON CONFLICT (name) DO UPDATE SET address = EXCLUDED.address,"
                          " started_ms = EXCLUDED.started_ms, heartbeat_ms = EXCLUDED.heartbeat_ms",
                          (name, address, started_ms, now))
        self.conn.execute("DELETE FROM servers WHERE heartbeat_ms < %s", (now - SERVER_FORGET_MS,))
        return self.conn.execute("SELECT COUNT(*) FROM servers WHERE name <> %s AND heartbeat_ms >= %s",
                                 (name, now - alive_ms)).fetchone()[0]

    def publish_unfinished(self, count: int) -> None:
        """The scheduler's count of unfinished tasks, stamped with the database's clock (followers
        check --max-queued against it)."""
        self.conn.execute("INSERT INTO kv (key, value) VALUES ('unfinished', %s || ':' ||"
                          " (extract(epoch FROM clock_timestamp()) * 1000)::bigint) ON CONFLICT (key)"
                          " DO UPDATE SET value = EXCLUDED.value", (str(count),))

    def published_unfinished(self) -> tuple[int, float] | None:
        """(the scheduler's last published count, its age in seconds by the database's clock: no skew
        between hosts), or None if none was published."""
        row = self.conn.execute("SELECT split_part(value, ':', 1)::bigint, (extract(epoch FROM clock_timestamp())"
                                " * 1000 - split_part(value, ':', 2)::bigint) / 1000.0 FROM kv"
                                " WHERE key = 'unfinished'").fetchone()
        return (int(row[0]), max(0.0, float(row[1]))) if row else None

    def close(self) -> None:
        try:
            self.conn.close()
        except psycopg.Error:
            pass


class PostgresStore(PostgresFlow, Store):
    def __init__(self, url: str, read_only: bool = False, pool_size: int = 8):
        self.url = url
        self.local_dir = os.path.abspath(os.environ.get("TASKHUB_HOME", "var"))
        self._ids: list[int] = []
        self._ids_lock = threading.Lock()
        self._down: tuple[float, str] | None = None  # (until when, why) reads fail at once
        self.writer = None
        try:
            with psycopg.connect(url, connect_timeout=10) as conn:
                if not read_only:
                    migrate(conn)
        except psycopg.OperationalError as e:
            raise StoreError(f"cannot reach the PostgreSQL database {self.describe()}: {str(e).strip()}") from e
        except psycopg.Error as e:
            raise StoreError(f"the PostgreSQL database {self.describe()} cannot be used: {str(e).strip()}") from e
        # Set by server/cluster.py: the scheduler's epoch (its writes are fenced by it), or 0 on a follower,
        # whose creates are told to the scheduler (NOTIFY taskhub_created, in the creating transaction).
        self.epoch = 0
        self.tell_creates = False
        self.on_fenced: Callable[[str], None] | None = None
        self.pool = ConnectionPool(url, min_size=1, max_size=pool_size, timeout=3, open=True,
                                   kwargs={"autocommit": True, "connect_timeout": 10}, name="taskhub-read")
        if not read_only:
            os.makedirs(self.local_dir, exist_ok=True)
            self.writer = Writer(self)

    def describe(self) -> str:
        return _safe_url(self.url)

    def close(self) -> None:
        super().close()
        self.pool.close()

    def _rows(self, sql: str, params=(), dicts: bool = False, by_index: bool = False) -> list:
        """Runs a read; a database that cannot be reached is UNAVAILABLE, with the reason. Once a
        read found it away, reads fail at once for DOWN_SECONDS (reads run on the event loop too:
        each must not wait out the pool's timeout). by_index: never a sequential scan (the planner
        picks one for a partial index's rare rows before the table was first analyzed: seconds
        on millions of rows, where the index answers in milliseconds)."""
        if self._down and time.monotonic() < self._down[0]:
            raise Unavailable(self._down[1])
        try:
            with self.pool.connection() as conn, (conn.transaction() if by_index else contextlib.nullcontext()):
                if by_index:
                    conn.execute("SET LOCAL enable_seqscan = off")
                cur = conn.cursor(row_factory=psycopg.rows.dict_row if dicts else psycopg.rows.tuple_row)
                rows = cur.execute(sql, tuple(params)).fetchall()
        except (psycopg.OperationalError, PoolTimeout) as e:
            why = f"the database {self.describe()} cannot be reached ({str(e).strip()}); try again"
            self._down = (time.monotonic() + DOWN_SECONDS, why)
            raise Unavailable(why)
        self._down = None
        return rows

    def _dicts(self, sql: str, params=(), by_index: bool = False) -> list[dict]:
        return self._rows(sql, params, dicts=True, by_index=by_index)

    def _tasks(self, sql: str, params=(), by_index: bool = False) -> list[Task]:
        return [Task.from_row(d) for d in self._dicts(sql, params, by_index)]

    # ---------------------------------------------------------------- the writer's side
    def writer_connect(self) -> psycopg.Connection:
        conn = psycopg.connect(self.url, connect_timeout=10)
        # A writer frozen inside a transaction (SIGSTOP) would hold the fence's row lock and stall a
        # take-over: PostgreSQL ends such a session after a while (our transactions take milliseconds).
        conn.execute(f"SET idle_in_transaction_session_timeout = {IDLE_SESSION_MS}")
        conn.commit()
        return conn

    def writer_apply(self, conn: psycopg.Connection, w: Work) -> None:
        try:
            with conn.transaction():
                cur = conn.cursor()
                if self.epoch:  # the scheduler: refused (and nothing applied) once another took over
                    cur.execute("SELECT taskhub_fence(%s)", (self.epoch,))
                if w.inserts:  # COPY: one stream for the round's rows (a duplicate id still fails the round)
                    with cur.copy(_COPY_TASKS) as copy:
                        for r in w.inserts:
                            copy.write_row(_no_nul(r, _TASK_TEXTS) + (self.epoch,))
                if w.requests:
                    cur.executemany(_INSERT_REQUEST, [(_key(k), ids, ms) for k, ids, ms in w.requests])
                if w.updates:
                    cur.executemany(_UPDATE_TASK, [_no_nul(row, _MUTABLE_TEXTS) + (self.epoch, tid)
                                                   for tid, row in w.updates.items()])
                if w.logs:
                    cur.executemany(_INSERT_LOG, [r if "\0" not in r[4] else r[:4] + (r[4].replace("\0", NUL_STAND_IN),)
                                                  for r in w.logs])
                if w.cursors:
                    cur.executemany("UPDATE tasks SET log_cursor=%s WHERE id=%s", w.cursors)
                self.apply_ops(cur, w.ops)
                notes = self._notifications(w)
                if notes:  # delivered only if this commits, in commit order (server/cluster.py listens)
                    cur.execute("SELECT pg_notify(c, p) FROM unnest(%s::text[], %s::text[]) AS n(c, p)",
                                ([c for c, _ in notes], [p for _, p in notes]))
        except psycopg.Error as e:
            if e.sqlstate == FENCED and self.on_fenced is not None:
                self.on_fenced(str(e).strip())
            raise

    def _notifications(self, w: Work) -> list[tuple[str, str]]:
        """What this round tells the other servers: tasks changed (created, updated, deleted), log lines
        committed (task:last seq), and, from a follower, the tasks the scheduler must pick up."""
        notes = []
        created = [r[0] for r in w.inserts]
        changed = set(created).union(w.updates)
        for name, args in w.ops:
            if name == "delete_tasks":
                changed.update(args[0])
        notes += [("taskhub_changed", p) for p in _payloads(id_ranges(sorted(changed)))]
        if created and self.tell_creates:
            notes += [("taskhub_created", p) for p in _payloads(id_ranges(created))]
        if w.logs:
            last: dict[int, int] = {}
            for task_id, seq, *_ in w.logs:
                if seq > last.get(task_id, -1):
                    last[task_id] = seq
            notes += [("taskhub_logs", p) for p in _payloads([f"{t}:{q}" for t, q in last.items()])]
        return notes

    # ---------------------------------------------------------------- operations (op_<name>)
    def op_delete_tasks(self, cur, ids: list[int]) -> None:
        cur.execute("DELETE FROM logs WHERE task_id = ANY(%s)", (list(ids),))
        cur.execute("DELETE FROM tasks WHERE id = ANY(%s)", (list(ids),))

    def op_delete_create_requests(self, cur, keys: list[str]) -> None:
        cur.execute("DELETE FROM create_requests WHERE key = ANY(%s)", ([_key(k) for k in keys],))

    def op_put_kv_if_absent(self, cur, key: str, value: str) -> None:
        cur.execute("INSERT INTO kv (key, value) VALUES (%s, %s) ON CONFLICT DO NOTHING", (key, value))

    def op_put_group_template(self, cur, name: str, text: str, ts: int) -> None:
        cur.execute("INSERT INTO group_templates (name, json, create_time_ms) VALUES (%s, %s, %s)", (name, text, ts))

    def op_delete_group_template(self, cur, name: str) -> None:
        cur.execute("DELETE FROM group_templates WHERE name=%s", (name,))

    def op_put_group_instance(self, cur, *row) -> None:
        cur.execute("INSERT INTO group_instances (id, template, namespace, task_ids, create_time_ms)"
                    " VALUES (%s, %s, %s, %s, %s)", row)

    def op_delete_group_instance(self, cur, instance_id: str) -> None:
        cur.execute("DELETE FROM group_instances WHERE id=%s", (instance_id,))

    def op_put_node(self, cur, row: tuple) -> None:
        cur.execute(f"INSERT INTO nodes ({', '.join(NODE_COLUMNS)}) VALUES ({', '.join(['%s'] * len(row))})"
                    " ON CONFLICT (name) DO UPDATE SET "
                    + ", ".join(f"{c}=EXCLUDED.{c}" for c in NODE_COLUMNS[1:]), row)

    def op_insert_token(self, cur, row: tuple) -> None:
        cur.execute(f"INSERT INTO auth_tokens ({', '.join(TOKEN_COLUMNS)}) VALUES ({', '.join(['%s'] * len(row))})",
                    row)

    def op_revoke_token(self, cur, token_id: str, when_ms: int) -> None:
        cur.execute("UPDATE auth_tokens SET revoke_time_ms=%s WHERE id=%s", (when_ms, token_id))

    def op_append_audit(self, cur, rows: list[tuple]) -> None:
        cur.executemany(f"INSERT INTO auth_audit ({', '.join(AUDIT_COLUMNS)})"
                        f" VALUES ({', '.join(['%s'] * len(AUDIT_COLUMNS))})", rows)

    def op_delete_audit(self, cur, seqs: list[int]) -> None:
        cur.execute("DELETE FROM auth_audit WHERE seq = ANY(%s)", (list(seqs),))

    # ---------------------------------------------------------------- tasks
    def next_task_ids(self, n: int) -> list[int]:
        with self._ids_lock:
            if len(self._ids) < n:
                more = self._rows("SELECT nextval('task_ids') FROM generate_series(1, %s)",
                                  (max(ID_BLOCK, n - len(self._ids)),))
                self._ids.extend(r[0] for r in more)
            ids, self._ids = self._ids[:n], self._ids[n:]
        return ids

    def get_task(self, task_id: int) -> Task | None:
        found = self._tasks("SELECT * FROM tasks WHERE id=%s", (task_id,))
        return found[0] if found else None

    def get_task_by_uid(self, uid: str) -> Task | None:
        found = self._tasks("SELECT * FROM tasks WHERE uid=%s", (uid,))
        return found[0] if found else None

    def list_tasks(self, namespace: str | None, statuses: list[int], limit: int, before_id: int,
                   name_contains: str = "") -> list[Task]:
        where, params = ["id < %s"], [before_id]
        if name_contains:
            where.append("strpos(name, %s) > 0")
            params.append(name_contains)
        if namespace is not None:
            where.append("namespace = %s")
            params.append(namespace)
        if statuses:
            where.append("status = ANY(%s)")
            params.append(list(statuses))
            if Status.SUCCESS not in statuses:
                where.append(NOT_SUCCESS)  # lets the status indexes serve it
        return self._tasks(f"SELECT * FROM tasks WHERE {' AND '.join(where)} ORDER BY id DESC LIMIT %s",
                           (*params, limit))

    def active_tasks(self) -> list[Task]:
        return self._tasks(f"SELECT * FROM tasks WHERE {ACTIVE_} ORDER BY id", by_index=True)

    def annotated_unfinished(self, annotation: str) -> list[Task]:
        # The key as the spec's JSON spells it narrows the scan; the annotation itself decides.
        needle = json.dumps(annotation)
        found = self._tasks(f"(SELECT * FROM tasks WHERE {QUEUED} AND strpos(spec, %s) > 0) UNION ALL"
                            f" (SELECT * FROM tasks WHERE {ACTIVE_} AND strpos(spec, %s) > 0)", (needle, needle),
                            by_index=True)
        return [t for t in found if annotation in t.spec.annotations]

    def queued_tasks(self, after: tuple[int, int] | None, limit: int) -> list[Task]:
        if after is None:
            return self._tasks(f"SELECT * FROM tasks WHERE {QUEUED} ORDER BY priority DESC, id LIMIT %s", (limit,),
                               by_index=True)
        # Two seeks on the queue index: the rest of `after`'s priority, then the lower priorities.
        return self._tasks(
            f"(SELECT * FROM tasks WHERE {QUEUED} AND priority = %s AND id > %s ORDER BY priority DESC, id LIMIT %s)"
            f" UNION ALL (SELECT * FROM tasks WHERE {QUEUED} AND priority < %s ORDER BY priority DESC, id LIMIT %s)"
            " ORDER BY priority DESC, id LIMIT %s", (after[0], after[1], limit, after[0], limit, limit), by_index=True)

    def count_unfinished(self) -> int:
        return self._rows(f"SELECT (SELECT COUNT(*) FROM tasks WHERE {QUEUED})"
                          f" + (SELECT COUNT(*) FROM tasks WHERE {ACTIVE_})")[0][0]

    def request_keys(self, since_ms: int):
        return [_unkey(r[0]) for r in self._rows("SELECT key FROM create_requests WHERE created_ms>=%s", (since_ms,))]

    def tasks_by_ids(self, ids: list[int]) -> list[Task]:
        found = {t.id: t for t in self._tasks("SELECT * FROM tasks WHERE id = ANY(%s)", (list(ids),))}
        return [found[i] for i in ids if i in found]

    def task_states(self, ids: list[int]) -> dict[int, tuple[str, int]]:
        return {r[0]: (r[1], r[2]) for r in self._rows("SELECT id, namespace, status FROM tasks WHERE id = ANY(%s)",
                                                        (list(ids),))}

    def created_by_request(self, key: str, since_ms: int) -> list[int] | None:
        rows = self._rows("SELECT task_ids FROM create_requests WHERE key=%s AND created_ms>=%s",
                          (_key(key), since_ms))
        return [int(i) for i in rows[0][0].split(",")] if rows else None

    # ---------------------------------------------------------------- logs
    def log_length(self, task_id: int) -> int:
        row = self._rows("SELECT MAX(seq) FROM logs WHERE task_id=%s", (task_id,))[0]
        return 0 if row[0] is None else row[0] + 1

    def log_cursor(self, task_id: int) -> tuple[int, int] | None:
        rows = self._rows("SELECT log_cursor FROM tasks WHERE id=%s", (task_id,))
        if not rows or not rows[0][0]:
            return None
        attempt, _, line = rows[0][0].partition(":")
        return int(attempt), int(line)

    def read_logs(self, task_id: int, offset: int, limit: int) -> list[tuple]:
        return self._rows("SELECT seq, time_ms, stream, text FROM logs WHERE task_id=%s AND seq>=%s"
                          " ORDER BY seq LIMIT %s", (task_id, offset, limit))

    # ---------------------------------------------------------------- small things
    def get_kv(self, key: str) -> str | None:
        rows = self._rows("SELECT value FROM kv WHERE key=%s", (key,))
        return rows[0][0] if rows else None

    def servers(self) -> list[dict]:
        return self._dicts("SELECT * FROM servers ORDER BY name")

    def tell_scheduler(self, payload: str) -> None:
        """A follower's request to the scheduler (server/cluster.py: cancel, delete)."""
        self._rows("SELECT pg_notify('taskhub_command', %s)", (payload,))

    def group_templates(self) -> list[dict]:
        return self._dicts("SELECT name, json, create_time_ms FROM group_templates")

    def group_instances(self) -> list[dict]:
        return self._dicts("SELECT * FROM group_instances")

    def nodes(self) -> list[dict]:
        return self._dicts("SELECT * FROM nodes")

    def tokens(self) -> list[dict]:
        return self._dicts("SELECT * FROM auth_tokens ORDER BY create_time_ms DESC, id")

    def audit(self, limit: int, token_id: str = "") -> list[dict]:
        where, params = ("WHERE token_id=%s", [token_id]) if token_id else ("", [])
        return self._dicts(f"SELECT * FROM auth_audit {where} ORDER BY seq DESC LIMIT %s", params + [limit])

    # ---------------------------------------------------------------- retention
    def finished_task_ids(self, cutoff_ms: int, limit: int) -> list[int]:
        return [r[0] for r in self._rows(
            f"SELECT id FROM tasks WHERE done_time_ms > 0 AND done_time_ms < %s AND status IN ({_DONE})"
            " ORDER BY done_time_ms LIMIT %s", (cutoff_ms, limit))]

    def old_create_request_keys(self, cutoff_ms: int, limit: int) -> list[str]:
        return [_unkey(r[0]) for r in self._rows(
            "SELECT key FROM create_requests WHERE created_ms < %s ORDER BY created_ms LIMIT %s", (cutoff_ms, limit))]

    def old_audit_seqs(self, cutoff_ms: int, limit: int) -> list[int]:
        return [r[0] for r in self._rows("SELECT seq, time_ms FROM auth_audit ORDER BY seq LIMIT %s", (limit,))
                if r[1] < cutoff_ms]

    # ---------------------------------------------------------------- statistics
    def stats(self) -> dict:
        tables = [r[0] for r in self._rows(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() ORDER BY tablename")]
        rows = {t: self._rows(f'SELECT COUNT(*) FROM "{t}"')[0][0] for t in tables}
        oldest = self._rows("SELECT id, create_time_ms FROM tasks ORDER BY id LIMIT 1")
        unfinished = self.count_unfinished()
        size = self._rows("SELECT pg_database_size(current_database())")[0][0]
        return {
            "path": self.describe(), "db_bytes": size, "wal_bytes": 0, "rows": rows, "unfinished_tasks": unfinished,
            "oldest_task": {"id": oldest[0][0], "create_time_ms": oldest[0][1]} if oldest else None,
        }
