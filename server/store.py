"""SQLite store: schema and migrations, reads, and the one writer.

All writes go through `Writer`, a thread that takes every pending operation, applies
them in one transaction and commits (group commit). Callers that need durability
(task creation) await the commit; the rest (status changes, log lines) are fire and
forget and coalesce: many changes to one task in one batch become one UPDATE.
"""
from __future__ import annotations

import asyncio
import logging
import os
import queue
import sqlite3
import threading
import time
from typing import Callable, Iterable

import sqlite_utils

from . import metrics
from .errors import Unavailable
from .model import MUTABLE_FIELDS, Task

log = logging.getLogger(__name__)


def _v1(db: sqlite_utils.Database) -> None:
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


def _v2(db: sqlite_utils.Database) -> None:
    """Attempt numbers (fencing), idempotent creates, and an index for the retention purge."""
    db.execute("ALTER TABLE tasks ADD COLUMN attempt INTEGER NOT NULL DEFAULT 0")
    # "attempt:next line" of the lines an agent sent: committed with them, so re-sent lines are kept once.
    db.execute("ALTER TABLE tasks ADD COLUMN log_cursor TEXT NOT NULL DEFAULT ''")
    db.execute("CREATE INDEX tasks_done ON tasks(done_time_ms) WHERE done_time_ms > 0")
    db.execute("CREATE TABLE create_requests (key TEXT PRIMARY KEY, task_ids TEXT NOT NULL,"
               " created_ms INTEGER NOT NULL)")
    db.execute("CREATE INDEX create_requests_time ON create_requests(created_ms)")


# Append only. Each entry moves the schema from version i to i+1.
MIGRATIONS: list[Callable[[sqlite_utils.Database], None]] = [_v1, _v2]
# Other parts of taskhub (groups, nodes) register their tables here at import time.
EXTRA_MIGRATIONS: dict[str, list[Callable[[sqlite_utils.Database], None]]] = {}

# Retention: each step, given (store, cutoff_ms, limit), returns the statements that delete at
# most `limit` of its records that ended before cutoff_ms ([] when none are left). The purge
# (server/retention.py) runs every step in small batches through the writer, off the hot path.
# Other parts of taskhub (e.g. flow jobs) register theirs here at import time, like migrations.
PurgeStep = Callable[["Store", int, int], list[tuple[str, tuple]]]
PURGE_STEPS: dict[str, PurgeStep] = {}


WAL_LIMIT_BYTES = 16 << 20     # journal_size_limit: what a reset WAL is truncated to
WAL_TRUNCATE_BYTES = 16 << 20  # above this the writer runs a TRUNCATE checkpoint between batches


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


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the schema to the newest version; returns that version."""
    db = sqlite_utils.Database(conn)
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > len(MIGRATIONS):
        raise RuntimeError(f"database schema v{version} is newer than this taskhub (v{len(MIGRATIONS)})")
    for i in range(version, len(MIGRATIONS)):
        with db.conn:
            conn.execute("BEGIN")
            MIGRATIONS[i](db)
            conn.execute(f"PRAGMA user_version={i + 1}")
        log.info("migrated schema to v%d", i + 1)
    for name, steps in EXTRA_MIGRATIONS.items():
        key = f"schema:{name}"
        row = conn.execute("SELECT value FROM kv WHERE key=?", (key,)).fetchone()
        done = int(row[0]) if row else 0
        for i in range(done, len(steps)):
            conn.execute("BEGIN")
            steps[i](db)
            conn.execute("INSERT OR REPLACE INTO kv(key, value) VALUES (?, ?)", (key, str(i + 1)))
            conn.execute("COMMIT")
    return len(MIGRATIONS)


_INSERT_TASK = (
    "INSERT INTO tasks (id, uid, namespace, name, spec, create_time_ms, "
    + ", ".join(MUTABLE_FIELDS)
    + ") VALUES (" + ", ".join("?" * (6 + len(MUTABLE_FIELDS))) + ")"
)
_UPDATE_TASK = "UPDATE tasks SET " + ", ".join(f"{f}=?" for f in MUTABLE_FIELDS) + " WHERE id=?"
_INSERT_REQUEST = "INSERT INTO create_requests (key, task_ids, created_ms) VALUES (?, ?, ?)"
_INSERT_LOG = "INSERT OR IGNORE INTO logs (task_id, seq, time_ms, stream, text) VALUES (?, ?, ?, ?, ?)"


class Store:
    """Reads from any thread (one connection per thread); writes only via `writer`."""

    def __init__(self, path: str, read_only: bool = False):
        """read_only: only read an existing database (no migration, no writer), e.g. `taskhub store stats`."""
        self.path = path
        self._local = threading.local()
        if read_only:
            self.writer = None
            return
        if path != ":memory:":
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        conn = connect(path)
        migrate(conn)
        conn.close()
        self.writer = Writer(path)

    @property
    def conn(self) -> sqlite3.Connection:
        c = getattr(self._local, "conn", None)
        if c is None:
            c = self._local.conn = connect(self.path)
        return c

    def query(self, sql: str, params: Iterable = ()) -> list[sqlite3.Row]:
        return self.conn.execute(sql, tuple(params)).fetchall()

    # -- tasks -------------------------------------------------------------
    def max_task_id(self) -> int:
        return self.conn.execute("SELECT COALESCE(MAX(id), 0) FROM tasks").fetchone()[0]

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
            where.append(f"status IN ({','.join('?' * len(statuses))})")
            params.extend(statuses)
        sql = f"SELECT * FROM tasks WHERE {' AND '.join(where)} ORDER BY id DESC LIMIT ?"
        return [Task.from_row(dict(r)) for r in self.conn.execute(sql, (*params, limit))]

    def unfinished_tasks(self) -> list[Task]:
        rows = self.conn.execute("SELECT * FROM tasks WHERE status NOT IN (9, 11, 12) ORDER BY id")
        return [Task.from_row(dict(r)) for r in rows]

    # -- logs --------------------------------------------------------------
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

    def get_kv(self, key: str) -> str | None:
        row = self.conn.execute("SELECT value FROM kv WHERE key=?", (key,)).fetchone()
        return row[0] if row else None

    # -- idempotent creates -------------------------------------------------
    def created_by_request(self, key: str, since_ms: int) -> list[int] | None:
        """The task ids a create with this idempotency key made (within the window), or None."""
        row = self.conn.execute("SELECT task_ids FROM create_requests WHERE key=? AND created_ms>=?",
                                (key, since_ms)).fetchone()
        return [int(i) for i in row[0].split(",")] if row else None

    def request_keys(self, since_ms: int) -> Iterable[str]:
        """Every idempotency key recorded since since_ms (read once at start)."""
        return (r[0] for r in self.conn.execute("SELECT key FROM create_requests WHERE created_ms>=?", (since_ms,)))

    def tasks_by_ids(self, ids: list[int]) -> list[Task]:
        found = {}
        for i in range(0, len(ids), 500):
            chunk = ids[i:i + 500]
            rows = self.conn.execute(f"SELECT * FROM tasks WHERE id IN ({','.join('?' * len(chunk))})", chunk)
            found.update((r["id"], Task.from_row(dict(r))) for r in rows)
        return [found[i] for i in ids if i in found]

    # -- retention ------------------------------------------------------------
    def purge_finished_tasks(self, cutoff_ms: int, limit: int) -> list[tuple[str, tuple]]:
        """Statements deleting up to `limit` tasks (and their logs) that ended before cutoff_ms."""
        ids = [r[0] for r in self.conn.execute(
            "SELECT id FROM tasks WHERE done_time_ms > 0 AND done_time_ms < ? AND status IN (9, 11, 12)"
            " ORDER BY done_time_ms LIMIT ?", (cutoff_ms, limit))]
        if not ids:
            return []
        marks = ",".join("?" * len(ids))
        return [(f"DELETE FROM logs WHERE task_id IN ({marks})", tuple(ids)),
                (f"DELETE FROM tasks WHERE id IN ({marks})", tuple(ids))]

    def purge_create_requests(self, cutoff_ms: int, limit: int) -> list[tuple[str, tuple]]:
        keys = tuple(r[0] for r in self.conn.execute(
            "SELECT key FROM create_requests WHERE created_ms < ? ORDER BY created_ms LIMIT ?", (cutoff_ms, limit)))
        if not keys:
            return []
        return [(f"DELETE FROM create_requests WHERE key IN ({','.join('?' * len(keys))})", keys)]

    # -- statistics -------------------------------------------------------------
    def stats(self) -> dict:
        """Rows per table, file sizes, oldest task: `taskhub store stats`."""
        conn = self.conn
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%'")]
        rows = {t: conn.execute(f'SELECT COUNT(*) FROM "{t}"').fetchone()[0] for t in sorted(tables)}
        oldest = conn.execute("SELECT id, create_time_ms FROM tasks ORDER BY id LIMIT 1").fetchone()
        unfinished = conn.execute("SELECT COUNT(*) FROM tasks WHERE status NOT IN (9, 11, 12)").fetchone()[0]

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


CHECKPOINT_INTERVAL = 0.5  # seconds between WAL checkpoints


class Writer:
    """The single writer. Runs in its own thread; see the module docstring."""

    MAX_BATCH = 20_000

    def __init__(self, path: str):
        self._path = path
        self._wal = path + "-wal"
        self._q: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="taskhub-writer", daemon=True)
        self._loop: asyncio.AbstractEventLoop | None = None
        self.on_logs_committed: Callable[[dict[int, int]], None] | None = None
        self._stop = threading.Event()
        self._truncate_after = 0.0  # monotonic time before which no TRUNCATE is tried again
        self._checkpointer = threading.Thread(target=self._checkpoint_loop, name="taskhub-checkpoint", daemon=True)

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._thread.start()
        self._checkpointer.start()

    def _checkpoint_loop(self) -> None:
        """Move the WAL into the database off the commit path.

        SQLite's automatic checkpoint runs inside a commit and fsyncs there (a 15-20 ms stall
        every few thousand rows); the writer turns it off and this thread checkpoints instead.
        Under sustained load a PASSIVE checkpoint never lets the WAL start over (a commit always
        follows), so the file would only grow: the writer itself truncates it when it is large
        (see _truncate_if_large); the pages are mostly copied by these PASSIVE checkpoints by
        then, so that only waits for readers (short) and cuts the file to zero.
        """
        conn = connect(self._path)
        while not self._stop.wait(CHECKPOINT_INTERVAL):
            try:
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
            except sqlite3.Error:
                log.warning("WAL checkpoint failed; will try again", exc_info=True)
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.close()

    # Operations. Each is a tuple whose first item names it.
    def insert_tasks(self, tasks: list[Task], request_key: str = "") -> asyncio.Future:
        """Insert tasks; with an idempotency key, record it in the same transaction."""
        rows = [(t.id, t.uid, t.spec.namespace, t.spec.name, t.spec.to_json(), t.create_time_ms) + t.mutable_row()
                for t in tasks]
        request = [(request_key, ",".join(str(t.id) for t in tasks), tasks[0].create_time_ms)] if request_key else []
        return self._put(("insert", (rows, request)), wait=True)

    def update_tasks(self, rows: list[tuple], wait: bool = False) -> asyncio.Future | None:
        """rows: (id, mutable_row) pairs, already snapshotted on the caller's thread."""
        return self._put(("update", rows), wait)

    def append_logs(self, rows: list[tuple], cursors: list[tuple] = ()) -> None:
        """rows: (task_id, seq, time_ms, stream, text); cursors: ("attempt:line", task_id), same transaction."""
        self._put(("logs", (rows, cursors)), False)

    def delete_task(self, task_id: int) -> asyncio.Future:
        return self._put(("sql", [("DELETE FROM logs WHERE task_id=?", (task_id,)),
                                  ("DELETE FROM tasks WHERE id=?", (task_id,))]), wait=True)

    def execute(self, statements: list[tuple[str, tuple]], wait: bool = True) -> asyncio.Future | None:
        """Arbitrary statements for the other tables (groups, nodes); run in order, in one batch."""
        return self._put(("sql", statements), wait)

    def _put(self, op: tuple, wait: bool) -> asyncio.Future | None:
        fut = self._loop.create_future() if wait else None
        self._q.put((op, fut))
        return fut

    def stop(self) -> None:
        self._q.put(None)
        self._thread.join(timeout=30)
        self._stop.set()
        if self._checkpointer.is_alive():
            self._checkpointer.join(timeout=30)

    def _run(self) -> None:
        conn = connect(self._path)
        conn.execute("PRAGMA wal_autocheckpoint=0")  # see _checkpoint_loop
        stopping = False
        while not stopping:
            item = self._q.get()
            batch = []
            while item is not None and len(batch) < self.MAX_BATCH:
                batch.append(item)
                try:
                    item = self._q.get_nowait()
                except queue.Empty:
                    item = False
                    break
            if item is None:
                stopping = True
            elif item is not False:
                self._q.put(item)  # over MAX_BATCH: keep it for the next round
            if batch:
                self._apply(conn, batch)
                self._truncate_if_large(conn)
        conn.close()

    def _truncate_if_large(self, conn: sqlite3.Connection) -> None:
        """Keep the WAL bounded: past WAL_TRUNCATE_BYTES, checkpoint it and cut it to zero."""
        try:
            if os.path.getsize(self._wal) <= WAL_TRUNCATE_BYTES or time.monotonic() < self._truncate_after:
                return
        except OSError:
            return
        # Never wait here (commits wait behind it): if a reader or the PASSIVE checkpointer is
        # in the way, try again after a later batch.
        conn.execute("PRAGMA busy_timeout=0")
        try:
            busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            if busy:
                self._truncate_after = time.monotonic() + 0.02
        except sqlite3.Error:
            self._truncate_after = time.monotonic() + 1.0
            log.warning("WAL truncate failed; will try again", exc_info=True)
        finally:
            conn.execute("PRAGMA busy_timeout=10000")

    def _apply(self, conn: sqlite3.Connection, batch: list) -> None:
        inserts: list[tuple] = []
        requests: list[tuple] = []
        updates: dict[int, tuple] = {}
        logs: list[tuple] = []
        cursors: list[tuple] = []
        futures = []
        sql: list[tuple] = []
        for (kind, payload), fut in batch:
            if kind == "insert":
                inserts.extend(payload[0])
                requests.extend(payload[1])
            elif kind == "update":
                for task_id, row in payload:
                    updates[task_id] = row
            elif kind == "logs":
                logs.extend(payload[0])
                cursors.extend(payload[1])
            elif kind == "sql":
                sql.append(payload)
            if fut is not None:
                futures.append(fut)
        error: BaseException | None = None
        started = time.perf_counter()
        try:
            conn.execute("BEGIN")
            if inserts:
                conn.executemany(_INSERT_TASK, inserts)
            if requests:  # in the same transaction as their tasks: a create is recorded whole or not at all
                conn.executemany(_INSERT_REQUEST, requests)
            if updates:
                conn.executemany(_UPDATE_TASK, [row + (tid,) for tid, row in updates.items()])
            if logs:
                conn.executemany(_INSERT_LOG, logs)
            if cursors:
                conn.executemany("UPDATE tasks SET log_cursor=? WHERE id=?", cursors)
            for statements in sql:
                for stmt, params in statements:
                    try:
                        conn.execute(stmt, params)
                    except sqlite3.Error:
                        log.error("statement failed: %s %r", stmt[:200], [str(p)[:80] for p in params])
                        raise
            conn.execute("COMMIT")
            metrics.store_committed(time.perf_counter() - started, len(inserts), len(updates), len(logs))
        except BaseException as e:  # a failed batch is reported to every waiter in it
            log.exception("store write failed")
            error = e
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
        committed_logs: dict[int, int] = {}
        if error is None:
            for task_id, seq, *_ in logs:
                if seq >= committed_logs.get(task_id, -1):
                    committed_logs[task_id] = seq
        self._loop.call_soon_threadsafe(self._done, futures, error, committed_logs)

    def _done(self, futures: list, error: BaseException | None, committed_logs: dict[int, int]) -> None:
        if error is not None:
            error = Unavailable(f"the store could not commit ({type(error).__name__}: {error}); nothing was saved, try again")
        for f in futures:
            if not f.done():
                f.set_exception(error) if error else f.set_result(None)
        if committed_logs and self.on_logs_committed:
            self.on_logs_committed(committed_logs)
