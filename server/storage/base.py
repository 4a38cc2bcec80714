"""The store's interface: domain reads, and writes as units of work applied by one writer.

Domain code never writes SQL. It reads through the Store's methods and writes through a batch:

    async with store.batch() as b:          # waits until the batch is committed
        b.put_group_template(name, text, ts)
    with store.batch() as b:                # fire and forget (still in order, still durable soon)
        b.append_audit(entries)

Every batch goes to the one `Writer` thread, which takes all pending batches, applies them in one
transaction and commits (group commit). Many status changes to one task in one round become one
UPDATE. Each backend (sqlite.py with sqlite_flow.py, postgres.py with postgres_flow.py) holds all of its
SQL and one ordered migration list.
"""
from __future__ import annotations

import asyncio
import json
import logging
import queue
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from .. import metrics
from ..errors import Unavailable
from ..model import MUTABLE_FIELDS, Status, Task
from .flow import FlowBatch, FlowReads

log = logging.getLogger(__name__)


class StoreError(Exception):
    """The database cannot be used (unknown scheme, unreachable, a schema from a newer taskhub)."""


@dataclass
class Work:
    """What one writer round applies in one transaction."""
    inserts: list[tuple] = field(default_factory=list)     # task rows, see Store.task_row
    requests: list[tuple] = field(default_factory=list)    # (key, "id,id,...", created_ms)
    updates: dict[int, tuple] = field(default_factory=dict)  # task id -> mutable_row (last one wins)
    logs: list[tuple] = field(default_factory=list)        # (task_id, seq, time_ms, stream, text)
    cursors: list[tuple] = field(default_factory=list)     # ("attempt:line", task_id)
    ops: list[tuple[str, tuple]] = field(default_factory=list)  # named domain operations, in order


# The condition of the two status indexes (both backends' migration "_status_indexes"). Successes,
# the bulk of a store, are left out of them: a list of successes walks the id order, where they are
# dense, and a success's row costs two index entries fewer. A query that names this condition
# (spelled the same) may use them.
NOT_SUCCESS = f"status <> {int(Status.SUCCESS)}"

_MUTABLE = slice(6, 6 + len(MUTABLE_FIELDS))  # where a task row (Batch.insert_tasks) holds mutable_row()


def _fold_updates(w: Work) -> None:
    """A task inserted and changed in the same round is written once, as it is now: a create's
    first placement (or parking) usually lands in its insert's round, which halves the rows."""
    at = {row[0]: i for i, row in enumerate(w.inserts)}
    for task_id in [t for t in w.updates if t in at]:
        i = at[task_id]
        row = w.inserts[i]
        w.inserts[i] = row[:_MUTABLE.start] + w.updates.pop(task_id) + row[_MUTABLE.stop:]


class Batch(FlowBatch):
    """A unit of work: domain operations collected here, committed together by the writer.

    Each method names an operation the backend implements as `op_<name>(conn, *args)`; the FATE
    ones are FlowBatch's (flow.py).
    """

    __slots__ = ("_writer", "_items", "committed")

    def __init__(self, writer: "Writer"):
        self._writer = writer
        self._items: list[tuple] = []
        self.committed: asyncio.Future | None = None

    # -- tasks (the hot path has its own kinds, coalesced by the writer)
    def insert_tasks(self, tasks: list[Task], request_key: str = "") -> None:
        """Insert tasks; with an idempotency key, record it in the same transaction."""
        rows, spec, text = [], None, ""
        for t in tasks:
            if t.spec is not spec:  # tasks that share a spec (a fan-out's) share its JSON
                spec, text = t.spec, t.spec.to_json()
            rows.append((t.id, t.uid, spec.namespace, spec.name, text, t.create_time_ms) + t.mutable_row()
                        + (spec.priority,))
        request = [(request_key, ",".join(str(t.id) for t in tasks), tasks[0].create_time_ms)] if request_key else []
        self._items.append(("insert", (rows, request)))

    def update_tasks(self, rows: list[tuple]) -> None:
        """rows: (id, mutable_row) pairs, already snapshotted on the caller's thread."""
        self._items.append(("update", rows))

    def append_logs(self, rows: list[tuple], cursors: list[tuple] = ()) -> None:
        """rows: (task_id, seq, time_ms, stream, text); cursors: ("attempt:line", task_id)."""
        self._items.append(("logs", (rows, list(cursors))))

    def _op(self, name: str, *args: Any) -> None:
        self._items.append(("op", (name, args)))

    def delete_tasks(self, task_ids: list[int]) -> None:
        """Tasks and their logs."""
        self._op("delete_tasks", list(task_ids))

    def delete_create_requests(self, keys: list[str]) -> None:
        self._op("delete_create_requests", list(keys))

    def put_kv_if_absent(self, key: str, value: str) -> None:
        self._op("put_kv_if_absent", key, value)

    # -- groups (server/groups.py)
    def put_group_template(self, name: str, text: str, create_time_ms: int) -> None:
        self._op("put_group_template", name, text, create_time_ms)

    def delete_group_template(self, name: str) -> None:
        self._op("delete_group_template", name)

    def put_group_instance(self, instance_id: str, template: str, namespace: str, task_ids: list[int],
                           create_time_ms: int) -> None:
        self._op("put_group_instance", instance_id, template, namespace, json.dumps(task_ids), create_time_ms)

    def delete_group_instance(self, instance_id: str) -> None:
        self._op("delete_group_instance", instance_id)

    # -- nodes (server/node/remote.py)
    def put_node(self, row: dict) -> None:
        """row: the columns of NODE_COLUMNS."""
        self._op("put_node", tuple(row[c] for c in NODE_COLUMNS))

    # -- auth (server/auth_store.py)
    def insert_token(self, row: tuple) -> None:
        """row: the columns of TOKEN_COLUMNS."""
        self._op("insert_token", row)

    def revoke_token(self, token_id: str, when_ms: int) -> None:
        self._op("revoke_token", token_id, when_ms)

    def append_audit(self, rows: list[tuple]) -> None:
        """rows: the columns of AUDIT_COLUMNS."""
        self._op("append_audit", rows)

    def delete_audit(self, seqs: list[int]) -> None:
        self._op("delete_audit", list(seqs))

    # -- committing
    def submit(self, wait: bool) -> asyncio.Future | None:
        if not self._items:
            if not wait:
                return None
            fut = self._writer.loop.create_future()
            fut.set_result(None)
            return fut
        self.committed = self._writer.put(self._items, wait)
        self._items = []
        return self.committed

    def __enter__(self) -> "Batch":
        return self

    def __exit__(self, kind, *exc) -> None:
        if kind is None:
            self.submit(wait=False)

    async def __aenter__(self) -> "Batch":
        return self

    async def __aexit__(self, kind, *exc) -> None:
        if kind is None:
            await self.submit(wait=True)


NODE_COLUMNS = ("name", "address", "slots", "labels", "cpu_count", "memory_mb", "session", "draining",
                "last_heartbeat_ms")
TOKEN_COLUMNS = ("id", "name", "role", "namespaces", "hash", "create_time_ms", "expire_time_ms", "revoke_time_ms")
AUDIT_COLUMNS = ("time_ms", "token_id", "token_name", "method", "namespace", "tasks", "allowed", "reason", "peer")


class Store(FlowReads, ABC):
    """Reads from any thread; writes only through batches (see the module docstring).

    `url` is what --db said; `local_dir` is where files that belong beside the database go
    (the admin token, FATE data and models, work directories).
    """

    url: str
    local_dir: str
    writer: "Writer | None"

    def batch(self) -> Batch:
        return Batch(self.writer)

    def describe(self) -> str:
        """The database, for people (no password)."""
        return self.url

    # -- the writer's side, run on its thread ---------------------------------
    @abstractmethod
    def writer_connect(self) -> Any: ...

    @abstractmethod
    def writer_apply(self, conn: Any, work: Work) -> None:
        """Apply `work` in one transaction, or raise (having rolled back)."""

    def writer_after(self, conn: Any) -> None:
        """Between rounds (SQLite keeps its WAL bounded here)."""

    def writer_may_inline(self) -> bool:
        """Whether a small write may commit inline now (Writer.put). False sends it to the thread,
        whose writer_after then runs (SQLite: while its WAL is too large)."""
        return True

    def writer_close(self, conn: Any) -> None:
        conn.close()

    def writer_threads(self) -> list[threading.Thread]:
        """Helpers that run beside the writer (SQLite's checkpointer)."""
        return []

    # Whether a small write may commit on the caller's thread when the writer is idle: worth it
    # where a commit costs less than two thread hand-offs (an embedded file, not a network
    # round trip). See Writer.put.
    INLINE_COMMITS = False

    def writer_stopped(self) -> None:
        """The writer has stopped: stop its helpers."""

    def apply_ops(self, conn: Any, ops: list[tuple[str, tuple]]) -> None:
        for name, args in ops:
            getattr(self, "op_" + name)(conn, *args)

    def close(self) -> None:
        """Stop the writer (if any) and close every connection."""
        if self.writer is not None:
            self.writer.stop()

    # -- tasks ------------------------------------------------------------------
    @abstractmethod
    def next_task_ids(self, n: int) -> list[int]:
        """n new task ids, increasing, never given out before (by this or any server)."""

    @abstractmethod
    def get_task(self, task_id: int) -> Task | None: ...

    @abstractmethod
    def get_task_by_uid(self, uid: str) -> Task | None: ...

    @abstractmethod
    def list_tasks(self, namespace: str | None, statuses: list[int], limit: int, before_id: int,
                   name_contains: str = "") -> list[Task]: ...

    @abstractmethod
    def active_tasks(self) -> list[Task]:
        """Unfinished tasks that are not waiting in the queue (placed, running, being cancelled: model.ACTIVE)."""

    @abstractmethod
    def annotated_unfinished(self, annotation: str) -> list[Task]:
        """Unfinished tasks whose spec carries this annotation (a layer on tasks, such as Delta,
        rebuilds its memory from them at start). Reads the queue's and the active tasks' indexes."""

    @abstractmethod
    def queued_tasks(self, after: tuple[int, int] | None, limit: int) -> list[Task]:
        """Up to `limit` tasks waiting in the queue (model.SCHEDULABLE), in scheduling order: higher
        priority first, then lower id; only those after `after` = (priority, id) in that order.
        An index seek (the queue index), so a window of a queue of millions costs its own size."""

    @abstractmethod
    def count_unfinished(self) -> int: ...

    @abstractmethod
    def tasks_by_ids(self, ids: list[int]) -> list[Task]: ...

    @abstractmethod
    def task_states(self, ids: list[int]) -> dict[int, tuple[str, int]]:
        """id -> (namespace, status) of those of `ids` that exist: what a waiter needs to know of a
        task that is not in memory, without reading (and parsing) whole rows."""

    @abstractmethod
    def request_keys(self, since_ms: int) -> Iterable[str]:
        """Every idempotency key recorded since since_ms (read once at start)."""

    @abstractmethod
    def created_by_request(self, key: str, since_ms: int) -> list[int] | None:
        """The task ids a create with this idempotency key made (within the window), or None."""

    # -- logs -------------------------------------------------------------------
    @abstractmethod
    def log_length(self, task_id: int) -> int: ...

    @abstractmethod
    def log_cursor(self, task_id: int) -> tuple[int, int] | None:
        """(attempt, next line) of the lines an agent sent, committed with them; None if none."""

    @abstractmethod
    def read_logs(self, task_id: int, offset: int, limit: int) -> list[tuple]:
        """(seq, time_ms, stream, text) rows from seq `offset` on."""

    # -- small things -------------------------------------------------------------
    @abstractmethod
    def get_kv(self, key: str) -> str | None: ...

    @abstractmethod
    def servers(self) -> list[dict]:
        """The servers sharing this database (server/cluster.py): name, address, started_ms, heartbeat_ms."""

    @abstractmethod
    def group_templates(self) -> list[dict]: ...

    @abstractmethod
    def group_instances(self) -> list[dict]: ...

    @abstractmethod
    def nodes(self) -> list[dict]: ...

    @abstractmethod
    def tokens(self) -> list[dict]:
        """Newest first."""

    @abstractmethod
    def audit(self, limit: int, token_id: str = "") -> list[dict]:
        """Newest first."""

    # -- retention: what a purge round may delete -----------------------------------
    @abstractmethod
    def finished_task_ids(self, cutoff_ms: int, limit: int) -> list[int]:
        """Up to `limit` tasks that ended before cutoff_ms, oldest end first."""

    @abstractmethod
    def old_create_request_keys(self, cutoff_ms: int, limit: int) -> list[str]: ...

    @abstractmethod
    def old_audit_seqs(self, cutoff_ms: int, limit: int) -> list[int]:
        """Audit rows written before cutoff_ms among the oldest `limit` (rows are appended in time
        order, so the first by seq are the oldest: no index on time_ms needed)."""

    @abstractmethod
    def stats(self) -> dict:
        """Rows per table, sizes, the oldest task: `taskhub store stats`."""


RETRY_SECONDS = 1.0           # between attempts to reach a database that went away
_RETRIED = ("update", "logs")  # entry kinds kept for a retry when the connection is lost


# A write commits inline (Store.INLINE_COMMITS) only when it is small and the server is quiet
# (Writer.quiet, set by the engine: at most a few tasks unfinished). Under load writes go to the
# thread, which commits them together while the loop goes on: always-inline halved batched
# creates in an A/B, and inline task ends cut end-to-end batched throughput; quiet, inline cut a
# no-op round trip from 1.9 to 1.6 ms (bench.stages).
INLINE_MAX_ROWS = 16


def _rows(items: list[tuple]) -> int:
    """Rows a unit of work writes. An operation given a list (the audit's entries, ids to delete)
    counts its length: a flush of the audit, tens of rows at once, goes to the writer's thread
    instead of holding the event loop while it is inserted."""
    return sum(len(p[0]) if k in ("insert", "logs") else len(p) if k == "update" else _op_rows(p) for k, p in items)


def _op_rows(op: tuple) -> int:
    _, args = op
    return len(args[0]) if args and isinstance(args[0], list) else 1


class Writer:
    """The single writer: a thread applying every pending batch in one transaction."""

    MAX_BATCH = 20_000

    def __init__(self, store: Store):
        self._store = store
        self._q: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="taskhub-writer", daemon=True)
        self._helpers = store.writer_threads()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.on_logs_committed: Callable[[dict[int, int]], None] | None = None
        self._carry: list = []  # entries kept for a retry while the database is away (see _lost)
        # The connection and the right to use it: the writer thread's, or put()'s when it commits
        # inline (Store.INLINE_COMMITS).
        self._conn: Any = None
        self._conn_lock = threading.Lock()
        self._inline = store.INLINE_COMMITS
        self.quiet: Callable[[], bool] = lambda: False
        self._loop_thread = 0
        # Entries handed to the thread and entries it finished: each written by one thread only.
        # put() commits inline only when they are equal, so a write never overtakes an earlier one.
        self._queued = self._finished = 0
        self._handing: list = []  # put() on the loop this turn, for the thread (_hand_over)

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Called on the loop's thread, the only one that may commit inline."""
        self.loop = loop
        self._loop_thread = threading.get_ident()
        self._thread.start()
        for t in self._helpers:
            t.start()

    def put(self, items: list[tuple], wait: bool) -> asyncio.Future | None:
        """Queue `items` for the next round, or, when they are few, the server is quiet and nothing
        waits ahead of them (Store.INLINE_COMMITS), commit them now on the event loop's thread: a
        lone write then costs one commit instead of two thread hand-offs around it. The future is
        then already set; its callbacks still run from the loop's next turn."""
        fut = self.loop.create_future() if wait else None
        if self.would_inline(_rows(items)) and self._conn_lock.acquire(blocking=False):
            try:
                if self._queued == self._finished and self._conn is not None:
                    self._conn = self._apply(self._conn, [(items, fut)], inline=True)
                    return fut
            finally:
                self._conn_lock.release()
        self._queued += 1
        if threading.get_ident() == self._loop_thread:
            # Handed to the thread once per loop turn: the writes of one turn wake it (and take the
            # GIL from the loop) once, not once each.
            if not self._handing:
                self.loop.call_soon(self._hand_over)
            self._handing.append((items, fut))
        else:
            self._q.put((items, fut))
        return fut

    def would_inline(self, rows: int) -> bool:
        """Whether put() would commit `rows` rows inline now (unless the thread holds the connection)."""
        return self._inline and self._queued == self._finished and self._conn is not None and self.quiet() \
            and rows <= INLINE_MAX_ROWS and threading.get_ident() == self._loop_thread \
            and self._store.writer_may_inline()

    def _hand_over(self) -> None:
        entries, self._handing = self._handing, []
        if entries:
            self._q.put(entries)

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        self._hand_over()
        self._q.put(None)
        self._thread.join(timeout=30)
        self._store.writer_stopped()

    def _next_round(self) -> tuple[list, bool]:
        """Every pending entry (carried ones first), at most MAX_BATCH; and whether stop() was called."""
        batch, self._carry = self._carry, []
        try:
            item = self._q.get(timeout=RETRY_SECONDS) if batch else self._q.get()
        except queue.Empty:
            return batch, False
        while item is not None and len(batch) < self.MAX_BATCH:
            if isinstance(item, list):  # a loop turn's entries (_hand_over)
                batch.extend(item)
            else:
                batch.append(item)
            try:
                item = self._q.get_nowait()
            except queue.Empty:
                return batch, False
        if item is None:
            return batch, True
        self._q.put(item)  # over MAX_BATCH: keep it for the next round
        return batch, False

    def _run(self) -> None:
        stopping = False
        while not stopping:
            batch, stopping = self._next_round()
            if not batch:
                continue
            with self._conn_lock:
                if self._conn is None:
                    try:
                        self._conn = self._store.writer_connect()
                    except Exception as e:  # the database is away: retried below, or refused now
                        self._lost(batch, e)
                        self._finished += len(batch) - len(self._carry)
                        continue
                self._conn = self._apply(self._conn, batch)
                if self._conn is not None:
                    self._store.writer_after(self._conn)
                self._finished += len(batch) - len(self._carry)
        with self._conn_lock:
            if self._conn is not None:
                self._store.writer_close(self._conn)
                self._conn = None

    def _lost(self, batch: list, error: BaseException) -> None:
        """The connection to the database is gone. Status changes and log lines are whole-row and
        idempotent writes: they (and their waiters) are carried to the next round, retried every
        RETRY_SECONDS until the database is back. Anything else (creates, other operations) is
        refused now with the reason, so its caller can retry (creates with their request_id)."""
        log.warning("the store's connection is lost (%s); status changes and logs are kept for a retry", error)
        refused = []
        for entry in batch:
            (self._carry if all(kind in _RETRIED for kind, _ in entry[0]) else refused).append(entry)
        self.loop.call_soon_threadsafe(self._done, [f for _, f in refused if f], error, {})

    def _apply(self, conn: Any, batch: list, inline: bool = False) -> Any:
        """Returns the connection to go on with (None when it broke)."""
        tell = self.loop.call_soon if inline else self.loop.call_soon_threadsafe
        w = Work()
        futures = []
        for items, fut in batch:
            for kind, payload in items:
                if kind == "insert":
                    w.inserts.extend(payload[0])
                    w.requests.extend(payload[1])
                elif kind == "update":
                    for task_id, row in payload:
                        w.updates[task_id] = row
                elif kind == "logs":
                    w.logs.extend(payload[0])
                    w.cursors.extend(payload[1])
                else:
                    w.ops.append(payload)
            if fut is not None:
                futures.append(fut)
        if w.inserts and w.updates:
            _fold_updates(w)
        started = time.perf_counter()
        try:
            self._store.writer_apply(conn, w)
            metrics.store_committed(time.perf_counter() - started, len(w.inserts), len(w.updates), len(w.logs))
        except BaseException as e:  # a failed batch is reported to every waiter in it
            if getattr(conn, "broken", False) or getattr(conn, "closed", False):
                try:
                    self._store.writer_close(conn)
                except Exception:
                    pass
                if inline:  # the thread reconnects and retries it (or refuses it), in order
                    self._queued += len(batch)
                    for entry in batch:
                        self._q.put(entry)
                    return None
                self._lost(batch, e)
                return None
            log.exception("store write failed")
            tell(self._done, futures, e, {})
            return conn
        committed_logs: dict[int, int] = {}
        for task_id, seq, *_ in w.logs:
            if seq >= committed_logs.get(task_id, -1):
                committed_logs[task_id] = seq
        if inline:  # on the loop's thread: settled now (the futures' callbacks still run later)
            self._done(futures, None, committed_logs)
        else:
            tell(self._done, futures, None, committed_logs)
        return conn

    def _done(self, futures: list, error: BaseException | None, committed_logs: dict[int, int]) -> None:
        if error is not None:
            error = Unavailable(f"the store could not commit ({type(error).__name__}: {error}); nothing was saved,"
                                " try again")
        for f in futures:
            if not f.done():
                f.set_exception(error) if error else f.set_result(None)
        if committed_logs and self.on_logs_committed:
            self.on_logs_committed(committed_logs)
