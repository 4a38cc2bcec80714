"""Several servers on one PostgreSQL: which one schedules, and what the others hear from the store.

Every server on a database answers every call. One of them, the scheduler (leader), holds the
scheduler lock (storage/postgres.py SchedulerLock) and is the only one whose engine holds and
places unfinished tasks. The others (followers) try the lock every POLL_SECONDS and take over
when it frees: PostgreSQL drops it with the dead scheduler's connection (SIGKILL: at once; a frozen
process: after its idle session timeout). Each take-over increments the epoch that fences the
scheduler's writes, so a deposed scheduler's writes are refused by the database; it then stops.

What travels through the database (NOTIFY, delivered on commit, in commit order):
- taskhub_created: ids a follower committed; the scheduler reads them and places them at once.
- taskhub_command: a follower's cancel or delete, applied by the scheduler.
- taskhub_changed / taskhub_logs: tasks changed and log lines committed by any server, per writer
  round; followers read back the ones their streams wait on (WaitTask, WaitTasks, WatchTasks,
  TraceTask) and publish them in the engine's broadcasters (server/broadcast.py), where the
  streams wait as they do on the scheduler: a stream can go on from any server.

And each beat, the scheduler writes its count of unfinished tasks (kv 'unfinished'); followers read
it, add their own creates since, and refuse creates past --max-queued against that figure.

A SQLite file has one server, always the scheduler: this module then only answers ListServers.
"""
from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
import time
from dataclasses import dataclass

from .background import spawn
from .model import ANY_NAMESPACE, now_ms
from . import errors

log = logging.getLogger(__name__)

POLL_SECONDS = 0.5    # a follower tries the scheduler lock this often (also the scheduler's self-check)
BEAT_SECONDS = 1.0    # each server renews its `servers` row this often
ALIVE_MS = 5_000      # a server whose row is older is shown as gone
LEADER_CHANNELS = ("taskhub_created", "taskhub_command")
FOLLOWER_CHANNELS = ("taskhub_changed", "taskhub_logs")


@dataclass
class ServerRow:
    name: str
    address: str
    started_ms: int
    heartbeat_ms: int
    alive: bool
    scheduler: bool


class Cluster:
    """This server's place among the servers on its database."""

    def __init__(self, store, engine, nodes, shared: bool):
        self.store, self.engine, self.nodes = store, engine, nodes
        self.name = self.address = ""     # this server's gRPC address (host:port), known once it listens
        self.shared = shared              # PostgreSQL: other servers may use the same database
        self.leading = not shared
        self.epoch = 0
        self.since_ms = self.started_ms = now_ms()
        self.on_lead: list = []           # coroutine functions run when this server becomes the scheduler
        self._lock = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.previous = ""                # the scheduler before this one
        self.taking_over = False          # reading what is unfinished: agents wait until it is done
        self._heard: dict[str, list[str]] = {}
        self._leader, self._leader_read = "", -POLL_SECONDS
        self._wake = asyncio.Event()
        self._dispatcher: asyncio.Task | None = None

    # ------------------------------------------------------------------ life
    def prepare(self, address: str) -> None:
        """Before the engine starts: one try for the lock, so the engine knows whether to take over."""
        self.name = self.address = address
        if not self.shared:
            return
        self.engine.server_name = self.name
        self.engine.logs.committed_only = True
        self.store.on_fenced = self._step_down
        self._lock = self._connect()
        got = self._lock.try_lead(self.name)
        if got:
            self._became_leader(*got)
            self.leading = True
        else:
            self._lock.listen(list(FOLLOWER_CHANNELS))
            self.engine.leading = False
            self.store.tell_creates = True
            self.engine.tell_scheduler = self._tell_scheduler
        peers = self._lock.beat(self.name, self.address, self.started_ms, ALIVE_MS)
        self.engine.shared_store = peers > 0
        published = None if self.leading else self._lock.published_unfinished()
        if published:  # none yet: this server's own creates count, until the scheduler publishes one
            self.engine.heard_unfinished(*published)

    async def start(self) -> None:
        if not self.shared:
            return
        self._loop = asyncio.get_running_loop()
        self._dispatcher = self._loop.create_task(self._dispatch())
        self._thread = threading.Thread(target=self._run, name="taskhub-cluster", daemon=True)
        self._thread.start()
        print(f"taskhub: {'the scheduler' if self.leading else 'a follower'} among the servers on"
              f" {self.store.describe()} (epoch {self.epoch or self.store.get_kv('epoch')})", flush=True)

    async def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._thread.join, 5)
        if self._dispatcher is not None:
            self._dispatcher.cancel()
        if self._lock is not None:
            self._lock.close()

    def _connect(self):
        from .storage.postgres import SchedulerLock  # psycopg loads only for PostgreSQL
        return SchedulerLock(self.store.url, self.store.describe())

    def _became_leader(self, epoch: int, since_ms: int, previous: str) -> None:
        """On the cluster thread (or before start): this server holds the lock now."""
        self.epoch, self.since_ms, self.previous = epoch, since_ms, previous
        self.engine.previous_scheduler = previous
        self.store.epoch = epoch          # from now on each writer round is fenced by it
        self.store.tell_creates = False
        self._lock.unlisten(list(FOLLOWER_CHANNELS))
        self._lock.listen(list(LEADER_CHANNELS))  # before reading what is unfinished: nothing falls between

    # ------------------------------------------------------------------ the cluster thread
    def _run(self) -> None:
        next_beat = time.monotonic() + BEAT_SECONDS
        leads = self.leading
        while not self._stop.is_set():
            try:
                if self._lock is None:  # the connection broke (a database restart?): a new one
                    self._lock = self._connect()
                    if leads and not self._lock.retake(self.epoch):
                        self._step_down(f"another server took over while the database was away (epoch {self.epoch})")
                        return
                    self._lock.listen(list(LEADER_CHANNELS if leads else FOLLOWER_CHANNELS))
                    if leads:
                        log.warning("the database connection is back; still the scheduler (epoch %d)", self.epoch)
                for channel, payload in self._lock.notifications(POLL_SECONDS):
                    self._loop.call_soon_threadsafe(self._hear, channel, payload)
                if self._stop.is_set():
                    return
                if time.monotonic() >= next_beat:
                    peers = self._lock.beat(self.name, self.address, self.started_ms, ALIVE_MS)
                    self._loop.call_soon_threadsafe(setattr, self.engine, "shared_store", peers > 0)
                    if leads and self.engine.unfinished_counted:  # (an int read across threads: atomic)
                        self._lock.publish_unfinished(self.engine.unfinished())
                    elif not leads and (published := self._lock.published_unfinished()):
                        self._loop.call_soon_threadsafe(self.engine.heard_unfinished, *published)
                    next_beat = time.monotonic() + BEAT_SECONDS
                if leads:
                    if not self._lock.still_leads(self.epoch):
                        self._step_down(f"another server took over (the epoch is no longer {self.epoch})")
                        return
                    continue
                got = self._lock.try_lead(self.name)
                if got:
                    self._became_leader(*got)
                    leads = True
                    self._loop.call_soon_threadsafe(lambda: spawn(self._take_over(), "take-over"))
            except Exception as e:  # psycopg.Error: the database connection broke
                if self._stop.is_set():
                    return
                # The scheduler keeps scheduling meanwhile: its writes are fenced, and it stops if
                # another server took over when the database is back (retake above).
                log.warning("cluster connection lost (%s); reconnecting", e)
                if self._lock is not None:
                    self._lock.close()
                    self._lock = None
                self._stop.wait(POLL_SECONDS)

    def _step_down(self, why: str) -> None:
        """A deposed scheduler stops (any thread): its writes are refused already; a supervisor or
        operator starts it again, as a follower."""
        if self._stop.is_set():
            return
        self._stop.set()
        print(f"taskhub: no longer the scheduler: {why}; stopping", flush=True)
        log.critical("no longer the scheduler: %s; stopping", why)
        os.kill(os.getpid(), signal.SIGTERM)

    # ------------------------------------------------------------------ on the event loop
    async def _take_over(self) -> None:
        started = time.monotonic()
        self.taking_over = True
        self.leading = True
        self.engine.tell_scheduler = None
        previous = self.previous
        try:  # agents wait until this is done: one registering before its tasks are loaded would lose them
            self.nodes.preload()  # agents the previous scheduler knew: their tasks wait for them to come back
            await self.engine.lead(previous)
        finally:
            self.taking_over = False
        for hook in self.on_lead:
            await hook()
        print(f"taskhub: now the scheduler (epoch {self.epoch}; took over from {previous or 'nobody'}"
              f" in {1000 * (time.monotonic() - started):.0f} ms)", flush=True)

    def _tell_scheduler(self, op: str, task_id: int, reason: str) -> None:
        self.store.tell_scheduler(f"{op}:{task_id}:{reason}")

    def _hear(self, channel: str, payload: str) -> None:
        self._heard.setdefault(channel, []).append(payload)
        self._wake.set()

    async def _dispatch(self) -> None:
        """Applies what was heard, in order, a loop turn's worth at a time."""
        from .storage.postgres import parse_ids
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            heard, self._heard = self._heard, {}
            try:
                if self.leading:
                    ids = [i for p in heard.get("taskhub_created", ()) for i in parse_ids(p)]
                    if ids:
                        self.engine.adopt_created(await loop.run_in_executor(None, self.store.tasks_by_ids, ids))
                    for p in heard.get("taskhub_command", ()):
                        await self._command(p)
                    continue
                for p in heard.get("taskhub_logs", ()):
                    for part in p.split(","):
                        self.engine.logs.changed(int(part.partition(":")[0]))
                ids = {i for p in heard.get("taskhub_changed", ()) for i in parse_ids(p)}
                followed = self.engine.followed_ids()
                if followed is not None:
                    ids &= followed
                if ids:
                    found = await loop.run_in_executor(None, self.store.tasks_by_ids, sorted(ids))
                    self.engine.changed_elsewhere(found, sorted(ids - {t.id for t in found}))
            except errors.TaskhubError as e:  # the database is away for a moment: streams re-check later
                log.warning("could not apply notifications: %s", e)

    async def _command(self, payload: str) -> None:
        op, task_id, reason = payload.split(":", 2)
        try:
            if op == "cancel":
                self.engine.cancel(ANY_NAMESPACE, int(task_id), reason)
            elif op == "delete":
                await self.engine.delete(ANY_NAMESPACE, int(task_id), force=True)
        except errors.TaskhubError as e:  # gone meanwhile, or already ended: the follower reads the outcome
            log.info("%s of task %s asked by a follower: %s", op, task_id, e)

    # ------------------------------------------------------------------ answers
    def leader_address(self) -> str:
        """Where the scheduler is (read at most every POLL_SECONDS)."""
        if self.leading:
            return self.address
        now = time.monotonic()
        if now - self._leader_read >= POLL_SECONDS:
            self._leader, self._leader_read = self.store.get_kv("scheduler") or "", now
        return self._leader

    def require_scheduler(self) -> None:
        """Raise NotScheduler (with where the scheduler is) unless this server schedules."""
        if not self.leading or self.taking_over:
            raise errors.NotScheduler(self.leader_address())

    def servers(self) -> tuple[list[ServerRow], str, int, int]:
        """(servers, the scheduler's name, epoch, scheduling since ms)."""
        if not self.shared:
            return [ServerRow(self.name, self.address, self.started_ms, now_ms(), True, True)], self.name, 0, \
                self.since_ms
        now = now_ms()
        scheduler = self.store.get_kv("scheduler") or ""
        epoch = int(self.store.get_kv("epoch") or 0)
        since = int(self.store.get_kv("scheduler_since_ms") or 0)
        rows = [ServerRow(r["name"], r["address"], r["started_ms"], r["heartbeat_ms"],
                          now - r["heartbeat_ms"] <= ALIVE_MS, r["name"] == scheduler) for r in self.store.servers()]
        return rows, scheduler, epoch, since
