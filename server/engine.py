"""The engine: owns every live task, schedules them onto nodes, and records what happens.

Runs on one asyncio loop. Every status change goes through `_move`, which applies the
transition table (server/model.py) and marks the task dirty; dirty tasks are written in
one batch per loop turn. A terminal status is announced to waiters only after it is
committed, so nobody is told "done" about a task a crash could bring back.

The queue lives in the store. In memory are the tasks on nodes (and those ending) plus a
window of the queue's head (server/scheduler.py), read from the store in scheduling order
and refilled as it drains; a task outside it is read from the store, and is taken into
memory to be changed (a cancel), so every change still goes through `_move`.
"""
from __future__ import annotations

import asyncio
import collections
import copy
import json
import logging
import os
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import AsyncIterator, Callable


from . import errors, metrics, stages
from .broadcast import Broadcaster
from .logbus import LogBus
from .model import (ANY_NAMESPACE, COLOCATE, DEDICATED_WORKER, DEFAULT_NAMESPACE, OBSERVER, ON_DISCONNECT, ON_NODE,
                    ON_NODE_NAMED, SCHEDULABLE, TERMINAL, IllegalTransition, Resources, Status, Task, TaskSpec,
                    TaskType, module_allowed, now_ms)
from .node.base import Node
from .node.executor import Outcome, Run
from .node.spawner import kill_orphans
from .request_keys import RequestKeys
from .scheduler import Scheduler, queue_key
from .storage import Store

log = logging.getLogger(__name__)
S = Status

MAX_BATCH = 10_000
ENDED_KEPT = 20_000  # final snapshots of tasks ended lately (see Engine._ended), at most
SCHEDULER_ANSWER_SECONDS = 10.0  # a follower's cancel/delete waits this long for the scheduler to apply it
# At most this many unfinished tasks: the store may commit small writes on the loop (Writer.quiet).
QUIET_TASKS = 2
# A task that ExecuteTask runs on a quiet server has its row written at its end, or after this long
# if it runs longer (Engine._unwritten): a short task then costs one commit, not two.
UNWRITTEN_SECONDS = 0.02
# A follower's creates reach the scheduler's count through a NOTIFY and a read: those committed this
# long before the count it published are counted again on top of it (on the safe side).
COUNT_SLACK_SECONDS = 1.0
NO_NODE = "waiting for a node to join"
REFILL_RETRY_SECONDS = 1.0  # after a failed read of the queue (the database is away)
FIRST_READ = 1_000          # at start (or take-over) scheduling resumes after this much of the window is read
# The annotations the engine acts on are defined with the task model (server/model.py: HINTS).
__all__ = ["COLOCATE", "DEDICATED_WORKER", "OBSERVER", "ON_DISCONNECT", "ON_NODE_NAMED", "Engine", "EngineConfig"]
_CALLABLE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")
_NAMESPACE = re.compile(r"^[^*\s][^\s]{0,199}$")


@dataclass
class EngineConfig:
    allowed_modules: list[str] = field(default_factory=lambda: ["starter"])
    kill_grace: float = 5.0
    max_retries_limit: int = 100
    max_queued: int = 1_000_000           # unfinished tasks; creates beyond answer RESOURCE_EXHAUSTED
    request_window_seconds: float = 86_400.0  # how long a create's request_id is remembered
    max_log_lines: int = 1_000_000        # per task; beyond, one marker line and the rest is dropped
    queue_window: int = 10_000            # queued tasks held in memory (the queue's head); the rest stay in the store
    ended_kept_seconds: float = 10.0      # an ended task's last snapshot answers WaitTasks from memory this long


class Engine:
    def __init__(self, store: Store, config: EngineConfig | None = None):
        self.store = store
        self.config = config or EngineConfig()
        self.logs = LogBus(store, self.config.max_log_lines)
        self.run_env: Callable[[Task], dict[str, str]] | None = None  # extra environment of every run
        # Tasks in memory: on nodes, in the queue's window, parked, waiting for a retry, and finished
        # ones until committed. The rest of the queue is in the store only.
        self.tasks: dict[int, Task] = {}
        self._by_uid: dict[str, int] = {}         # uid -> id of each task in self.tasks (reads by uid see them)
        self.nodes: dict[str, Node] = {}
        self.scheduler = Scheduler(self.config.queue_window)
        self._parked: dict[int, Task] = {}        # PENDING: no node could ever take it now (at most a window's worth)
        self._parked_dropped = False              # more were parked, and left memory: read the queue again at unpark
        self._unfinished = 0                      # unfinished tasks, in memory or not (--max-queued; see _count)
        self.unfinished_counted = False           # _unfinished includes a count of the store (the scheduler publishes it)
        self._created_here: list[tuple[float, int]] = []  # a follower's creates (monotonic time, tasks), see heard_unfinished
        self._counting: asyncio.Task | None = None
        self._reading: asyncio.Task | None = None  # a read of the queue's next part, in flight
        self._gone: set[int] = set()              # tasks that left memory while that read ran
        self._missed: list[Task] = []             # created while it ran, not taken into the window
        self._fresh: list[Task] = []              # pushed since the last scheduling round
        self._dirty: dict[int, Task] = {}
        # Started without a row (create(until_end=True)), with the loop's time then: the next flush that
        # holds one inserts it as it stands, and a timer makes sure one does UNWRITTEN_SECONDS after.
        self._unwritten: dict[int, tuple[Task, float]] = {}
        self._unwritten_timer: asyncio.TimerHandle | None = None
        self._unrecorded: dict[int, str] = {}  # such tasks whose rows could not be written: why (see _written)
        self._flush_scheduled = False
        self._schedule_scheduled = False
        # The fan-outs (server/broadcast.py), each keyed by task id unless said otherwise; on a follower
        # server they are fed from the store's notifications (changed_elsewhere).
        self.watchers = Broadcaster()       # each change of a task (WatchTask), as it happens
        self.enders = Broadcaster()         # a task's end, once committed (WaitTask, WaitTasks)
        self.list_watchers = Broadcaster()  # (changed, deleted ids) batches, keyed by namespace (None: all)
        self.observers = Broadcaster()      # keyed by the task's OBSERVER annotation
        # Gates keep a task PENDING while one answers a reason ('' lets it through); a layer that
        # waits on more than one node's labels (Delta's data holders) sets one.
        self.gates: list[Callable[[Task], str]] = self.scheduler.gates
        self._creating: dict[str, asyncio.Future] = {}  # idempotency key -> the create in flight
        self._request_keys = RequestKeys()  # keys that may be committed already (the rest are surely new)
        self._placed: list[tuple[Task, int, Node]] = []  # placed on an agent, started once committed
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping = False
        self.instance = ""
        # Several servers on one database (server/cluster.py): only the scheduler (leading) holds and
        # places unfinished tasks; a follower commits creates for it and follows changes from the store.
        self.leading = True
        self.shared_store = False       # other servers write the same store (request ids: ask it)
        self.server_name = ""           # among several servers: this one's (its local node's processes carry it)
        self.previous_scheduler = ""    # the server that scheduled before this one took over
        self.tell_scheduler: Callable[[str, int, str], None] | None = None  # a follower's cancel
        # Tasks that ended here lately, their last (committed, final) snapshot: WaitTasks on tasks that
        # have just ended is answered without reading them back. One server only: with others on the
        # same store, one of them may delete a task without this one hearing of it.
        self._ended: collections.OrderedDict[int, tuple[float, Task]] = collections.OrderedDict()

    # ------------------------------------------------------------------ life
    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        # Quiet: few tasks in memory and few unfinished at all (the queue outside the window counts too).
        self.store.writer.quiet = lambda: len(self.tasks) <= QUIET_TASKS and self._unfinished <= QUIET_TASKS
        self.store.writer.start(self._loop)
        self.instance = self.store.get_kv("instance") or uuid.uuid4().hex
        async with self.store.batch() as b:
            b.put_kv_if_absent("instance", self.instance)
        since = now_ms() - int(self.config.request_window_seconds * 1000)
        self._request_keys = await self._loop.run_in_executor(None, lambda: RequestKeys(self.store.request_keys(since)))
        if self.leading:
            await self._recover({self.run_tag, self.run_tag_of(self.previous_scheduler)})
            await self.load_window()
            self._counting = self._loop.create_task(self._count())  # after the first read: not competing with it

    @property
    def run_tag(self) -> str:
        """The marker of this server's local node processes (found and killed after a crash)."""
        return self.run_tag_of(self.server_name)

    def run_tag_of(self, server_name: str) -> str:
        return f"{self.instance}@{server_name}" if server_name else self.instance

    async def lead(self, previous_scheduler: str) -> None:
        """This follower has become the scheduler (server/cluster.py): take over what is unfinished.
        Tasks on agents stay placed for them; those of the previous scheduler's local node (its
        processes on this host are killed, by their marker) follow their retry policy."""
        self.leading = True
        self.previous_scheduler = previous_scheduler
        self._created_here = []  # from now on this server counts every create and end itself
        await self._recover({self.run_tag_of(previous_scheduler)} - {self.run_tag} if previous_scheduler else set())
        await self.load_window()
        self._counting = self._loop.create_task(self._count())  # after the first read: not competing with it

    async def _count(self) -> None:
        """Count the unfinished tasks for --max-queued beside the start, not before it (a scan of an
        index: seconds with ten million queued). Until then the figure is what it was (the changes
        made since the start; after a take-over, the count the previous scheduler published); the
        count replaces it, plus the changes made while it ran (a create committed meanwhile may be
        counted twice: an estimate on the safe side)."""
        before = self._unfinished
        try:
            counted = await self._loop.run_in_executor(None, self.store.count_unfinished)
        except Exception as e:  # the database is away: the limit applies to what this run adds
            log.warning("could not count the unfinished tasks (%s)", e)
            return
        self._unfinished = counted + self._unfinished - before
        self.unfinished_counted = True
        log.info("queue: %d unfinished tasks, %d tasks in memory", self._unfinished, len(self.tasks))

    def unfinished(self) -> int:
        """Unfinished tasks, in memory or not (an estimate: see _count and heard_unfinished)."""
        return self._unfinished

    def heard_unfinished(self, count: int, age_seconds: float) -> None:
        """A follower: the unfinished tasks the scheduler counted `age_seconds` ago (server/cluster.py
        reads it from the store every beat). The follower's own creates since then (and a little
        before: they may not have reached that count yet) are added, so --max-queued holds across
        servers within what creates reach the scheduler in COUNT_SLACK_SECONDS."""
        if self.leading:  # took over meanwhile: counts for itself now
            return
        since = time.monotonic() - age_seconds - COUNT_SLACK_SECONDS
        self._created_here = [c for c in self._created_here if c[0] >= since]
        self._unfinished = count + sum(n for _, n in self._created_here)

    def adopt_created(self, tasks: list[Task]) -> None:
        """The scheduler learns of tasks another server created (committed there)."""
        fresh = [t for t in tasks if t.id not in self.tasks and t.status in SCHEDULABLE]
        self._unfinished += len(fresh)
        window = self.scheduler.window
        for t in fresh:
            if window.admit(t):  # else it waits in the store, where a read of the queue finds it
                self._hold(t)
                self._fresh.append(t)
        if fresh:
            if self._reading is None:
                self._trim_window()
            self._kick()

    def changed_elsewhere(self, tasks: list[Task], gone: list[int]) -> None:
        """A follower: committed changes the store told of (read back), to this server's streams."""
        for t in tasks:
            self._tell(t)
            self.logs.changed(t.id)
        for i in gone:
            self.logs.changed(i)
        if self.list_watchers:
            self._publish_list(tasks, [(None, i) for i in gone])

    def followed_ids(self) -> set[int] | None:
        """Tasks a follower's streams wait on (None: every task, a list watcher is open)."""
        if self.list_watchers:
            return None
        return self.watchers.keys() | self.enders.keys() | self.logs.news.keys()

    async def _recover(self, kill_tags: set[str]) -> None:
        """Bring back what a previous run of the server (or the previous scheduler) left on nodes; the
        queue stays in the store."""
        leftovers = await self._loop.run_in_executor(None, self.store.active_tasks)
        if not leftovers:
            return
        killed = sum(kill_orphans(tag) for tag in kill_tags)
        for task in leftovers:
            if task.id in self.tasks:
                continue  # created here or told of since the take-over began
            self._hold(task)
            st = task.status
            node = self.nodes.get(task.node)
            if node is not None and node.outlives_server and st in ON_NODE:
                # A node agent that may still run it (loaded by the node registry before this):
                # it stays placed there until the agent reconnects or its heartbeat timeout passes.
                node.take(task.id, task.spec.resources.slots)
                continue
            if st in (S.RUNNING, S.UNKNOWN):
                note = f"interrupted: the server stopped while it ran{' (killed its orphaned processes)' if killed else ''}"
                self.logs.system(task.id, note)
                self._move(task, S.RESTORING)
                if task.retries >= task.spec.max_retries:
                    self._fail(task, f"interrupted by a server restart and no retries are left (max_retries={task.spec.max_retries})")
                    continue
                task.retries += 1
                self.logs.system(task.id, f"restoring: retry {task.retries} of {task.spec.max_retries}")
            elif st == S.CANCELLING:
                self._move(task, S.CANCELLED)
                continue
            elif st in (S.SCHEDULING, S.SCHEDULED, S.QUEUED):
                self._move(task, S.RESTORING)
            task.node, task.pid, task.ppid = "", 0, 0
            self._push(task)
        log.info("recovered %d tasks that were on nodes", len(leftovers))
        self._flush()

    async def load_window(self) -> None:
        """Read the head of the queue from the store into memory, and schedule it: at start, and
        when this server takes over scheduling. Returns once the first FIRST_READ tasks are in line;
        the rest of the window follows in the background."""
        self.scheduler.window.rewind()
        if self._reading is not None:
            await asyncio.shield(self._reading)  # it read from the old cursor: read again below
        await self._refill(FIRST_READ)

    def _refill_soon(self) -> None:
        if self._reading is None and not self._stopping and self.scheduler.window.wanted():
            self._reading = self._loop.create_task(self._refill())

    async def _refill(self, first: int = 0) -> None:
        """Read the queue's next part (after the window's cursor) into memory, then schedule.
        `first`: read at most this many, then go on in the background."""
        window = self.scheduler.window
        while (want := min(window.wanted(), first or window.size)) and not self._stopping:
            self._reading = asyncio.current_task()
            self._gone, self._missed = set(), []
            cursor = window.cursor
            try:
                self._flush()
                barrier = self.store.batch()
                barrier.update_tasks([])  # committed after every change made so far: the read below sees them
                await barrier.submit(wait=True)
                after = (-cursor[0], cursor[1]) if cursor is not None else None
                rows = await self._loop.run_in_executor(None, self.store.queued_tasks, after, want)
            except Exception as e:  # the database is away: try again soon (the window keeps what it has)
                log.warning("could not read the queue from the store (%s); trying again", e)
                self._reading = None
                self._loop.call_later(REFILL_RETRY_SECONDS, self._refill_soon)
                return
            finally:
                self._reading = None
            if window.cursor != cursor:  # rewound meanwhile (a take-over, an unpark): read from the top
                continue
            for task in rows:
                if task.id not in self.tasks and task.id not in self._gone:
                    self._hold(task)
                    window.push(task)
            window.read(queue_key(rows[-1]) if rows else None, len(rows), want)
            # Created while the read ran, maybe after the snapshot it read: admitted now against the
            # cursor it moved to (before it: no later read would start before them; past it: the
            # window no longer holds the whole queue, so a later read finds them).
            for task in self._missed:
                if task.id not in self.tasks and task.id not in self._gone and window.admit(task):
                    self._hold(task)
            self._gone, self._missed = set(), []
            self._kick()
            if first:
                self._refill_soon()
                return

    def _hold(self, task: Task) -> None:
        """Keep the task in memory (the engine changes only tasks it holds)."""
        self.tasks[task.id] = task
        self._by_uid[task.uid] = task.id
        self.scheduler.joined(task)

    def _recently_ended(self, task_id: int) -> Task | None:
        """Its final snapshot if it ended here within config.ended_kept_seconds (then shorter than
        --retain, so never a task purged since)."""
        if not self._ended:
            return None
        expired = self._loop.time() - self.config.ended_kept_seconds
        while self._ended and next(iter(self._ended.values()))[0] < expired:
            self._ended.popitem(last=False)
        hit = self._ended.get(task_id)
        return hit[1] if hit is not None else None

    def _let_go(self, task: Task) -> None:
        """Drop the task from memory: it ended (committed), was deleted, or waits in the store."""
        if self.tasks.get(task.id) is task:
            del self.tasks[task.id]
            self._by_uid.pop(task.uid, None)
            self.scheduler.left(task)
            if self._reading is not None:
                self._gone.add(task.id)

    def _held(self, task: Task) -> Task:
        """The task as the engine holds it; one read from the store (waiting in the queue, outside
        the window) is taken into memory, so that it changes through _move like any other."""
        live = self.tasks.get(task.id)
        if live is not None or task.terminal:
            return live or task
        self._hold(task)
        return task

    async def stop(self) -> None:
        """Clean shutdown: running tasks are stopped and left RESTORING, to run again at next start."""
        self._stopping = True
        for task in list(self.tasks.values()):
            node = self.nodes.get(task.node)
            if node is not None and node.outlives_server and task.status in ON_NODE:
                continue  # it keeps running on its agent, which reclaims it after the restart
            if task.status in (S.SCHEDULED, S.QUEUED, S.RUNNING):
                self.logs.system(task.id, "server shutting down: this task will run again when it restarts")
                self._move(task, S.RESTORING)
                task.node = ""
            elif task.status == S.CANCELLING:
                self._move(task, S.CANCELLED)
        self._flush()
        await asyncio.sleep(0)

    # ------------------------------------------------------------------ nodes
    def add_node(self, node: Node) -> None:
        self.nodes[node.name] = node
        self._unpark()
        self._kick()

    def node_lost(self, node: Node, reason: str, process_gone: bool = False) -> None:
        """A node went away with tasks on it: they are restored and run elsewhere (retry budget permitting).

        A running command task annotated on_disconnect=keep stays with its node (the agent lets
        it run past its lease) unless the agent's process is known to be gone.
        """
        node.online = False
        for task_id in list(node.assigned):
            task = self.tasks.get(task_id)
            if (not process_gone and task is not None and task.node == node.name and task.status == S.RUNNING
                    and task.spec.annotations.get(ON_DISCONNECT) == "keep"):
                self.logs.system(task_id, f"node {node.name} lost ({reason}); the task runs on there"
                                          f" ({ON_DISCONNECT}=keep) until the node returns")
                continue
            node.give_back(task_id)
            if task is None or task.node != node.name or task.status not in ON_NODE:
                continue
            self.logs.system(task_id, f"node {node.name} lost ({reason})")
            if task.status == S.CANCELLING:
                self._move(task, S.CANCELLED)
                continue
            running = task.status == S.RUNNING
            self._move(task, S.RESTORING)
            task.node, task.pid, task.ppid = "", 0, 0
            if running:
                if task.retries >= task.spec.max_retries:
                    self._fail(task, f"its node {node.name} was lost and no retries are left (max_retries={task.spec.max_retries})")
                    continue
                task.retries += 1
            self._push(task)
        self._unpark()  # tasks parked for this node (its task group) may go elsewhere now
        self._kick()

    # ------------------------------------------------------------------ create
    def validate(self, spec: TaskSpec, trusted: bool = False) -> TaskSpec:
        """Check and normalise a spec. `trusted`: made by taskhub itself (FATE components), so its
        callable is taskhub's own and not subject to --allow-module."""
        spec.namespace = spec.namespace or DEFAULT_NAMESPACE
        if not _NAMESPACE.match(spec.namespace):
            raise errors.InvalidArgument(f"namespace {spec.namespace!r} must be 1-200 characters, no spaces, not starting with '*'")
        if spec.type == TaskType.COMMAND:
            if not spec.argv or not spec.argv[0]:
                raise errors.InvalidArgument("a command task needs argv, e.g. [\"sh\", \"-c\", \"echo hi\"]")
        elif spec.type == TaskType.PYTHON:
            if not _CALLABLE.match(spec.callable):
                raise errors.InvalidArgument(f"callable {spec.callable!r} must look like 'package.module:function'")
            module = spec.callable.split(":")[0]
            if not trusted and not module_allowed(module, self.config.allowed_modules):
                raise errors.PermissionDenied(
                    f"module {module!r} is not allowed; the server allows {', '.join(self.config.allowed_modules) or 'no modules'}"
                    " (start it with --allow-module PREFIX)")
        else:
            raise errors.InvalidArgument("task type must be COMMAND or PYTHON")
        if spec.input_json:
            try:
                json.loads(spec.input_json)
            except ValueError as e:
                raise errors.InvalidArgument(f"input_json is not valid JSON: {e}") from None
        keep = spec.annotations.get(ON_DISCONNECT) if spec.annotations else None
        if keep not in (None, "", "kill", "keep"):
            raise errors.InvalidArgument(f"annotation {ON_DISCONNECT} must be 'kill' or 'keep', not {keep!r}")
        if keep == "keep" and spec.type != TaskType.COMMAND:
            raise errors.InvalidArgument(f"{ON_DISCONNECT}=keep is for command tasks; a Python task stops with its lease")
        if spec.timeout_seconds < 0 or spec.retry_backoff_seconds < 0:
            raise errors.InvalidArgument("timeout_seconds and retry_backoff_seconds must not be negative")
        if not 0 <= spec.max_retries <= self.config.max_retries_limit:
            raise errors.InvalidArgument(f"max_retries must be between 0 and {self.config.max_retries_limit}")
        if len(spec.name) > 1000:
            raise errors.InvalidArgument("name is longer than 1000 characters")
        spec.resources = spec.resources or Resources()
        spec.resources.slots = max(1, spec.resources.slots)
        return spec

    async def create(self, specs: list[TaskSpec], request_id: str = "", trusted: bool = False,
                     until_end: bool = False) -> list[Task]:
        """Validate, commit, then schedule. Returns once the tasks are durable.

        With a request_id, a repeat of a create (a client retrying after a timeout) returns the
        tasks the first one made: the key is committed with them, so this survives a restart.
        `trusted`: specs taskhub made itself (FATE components; see validate).
        `until_end`: the caller tells its client nothing before the tasks' end (ExecuteTask), so a
        create without a request_id may return before they are durable: see _start_while_committing.
        """
        if not specs:
            raise errors.InvalidArgument("no tasks given")
        if len(specs) > MAX_BATCH:
            raise errors.InvalidArgument(f"at most {MAX_BATCH} tasks per batch, got {len(specs)}")
        checked = None
        for i, spec in enumerate(specs):
            if spec is checked:  # one spec shared by a run of tasks (a fan-out's) is checked once
                continue
            checked = spec
            try:
                self.validate(spec, trusted)
            except errors.TaskhubError as e:
                raise type(e)(f"task {i}: {e}" if len(specs) > 1 else str(e)) from None
        if self._stopping:
            raise errors.Unavailable("the server is shutting down")
        if not request_id:
            return await self._create(specs, "", may_start_first=not trusted, until_end=until_end)
        if len(request_id) > 200:
            raise errors.InvalidArgument("request_id is longer than 200 characters")
        key = f"{specs[0].namespace}\0{request_id}"
        while key in self._creating:  # the same request is being committed right now
            try:
                return await asyncio.shield(self._creating[key])
            except errors.TaskhubError:
                continue  # that attempt failed; this one tries for itself
        if self.shared_store or self._request_keys.may_exist(key):  # a retry (or a false positive): the store knows
            since = now_ms() - int(self.config.request_window_seconds * 1000)
            ids = self.store.created_by_request(key, since)
            if ids is not None:
                return self._created_before(request_id, ids)
        self._creating[key] = fut = self._loop.create_future()
        try:
            tasks = await self._create(specs, key)
            fut.set_result(tasks)
            return tasks
        except BaseException as e:
            fut.set_exception(e if isinstance(e, errors.TaskhubError) else errors.Unavailable(str(e)))
            fut.exception()  # retrieved: nobody may be waiting
            raise
        finally:
            del self._creating[key]

    def _created_before(self, request_id: str, ids: list[int]) -> list[Task]:
        tasks = [self.tasks.get(i) for i in ids]
        if not all(tasks):
            tasks = self.store.tasks_by_ids(ids)
            tasks = [self.tasks.get(t.id, t) for t in tasks]
        if len(tasks) != len(ids):
            raise errors.FailedPrecondition(
                f"request_id {request_id!r} already created task(s) {ids}, since deleted; use a new request_id")
        return tasks

    async def _create(self, specs: list[TaskSpec], request_key: str, may_start_first: bool = False,
                      until_end: bool = False) -> list[Task]:
        if self._unfinished + len(specs) > self.config.max_queued:
            raise errors.ResourceExhausted(
                f"{self._unfinished} tasks are unfinished, the server takes at most {self.config.max_queued}"
                " (--max-queued); retry later, with backoff")
        ts = now_ms()
        uids = os.urandom(16 * len(specs)).hex()  # one read of random bytes for the batch's uids
        tasks = [Task(task_id, spec, uids[32 * i:32 * i + 32], ts)
                 for i, (task_id, spec) in enumerate(zip(self.store.next_task_ids(len(specs)), specs))]
        if may_start_first and self.leading and not self._stopping and self.store.writer.would_inline(len(tasks)):
            return await self._start_while_committing(tasks, until_end)
        b = self.store.batch()
        b.insert_tasks(tasks, request_key)
        committed = b.submit(wait=True)
        if stages.ON:
            for t in tasks:
                stages.claim_call(t.id)
                stages.mark(t.id, "queued")
        await committed
        if request_key:
            self._request_keys.add(request_key)
        if stages.ON:
            for t in tasks:
                stages.mark(t.id, "committed")
        metrics.tasks_created(tasks)
        if not self.leading:  # committed with a NOTIFY to the scheduler, which places (and counts) them
            self._unfinished += len(tasks)
            self._created_here.append((time.monotonic(), len(tasks)))
            return tasks
        self._unfinished += len(tasks)
        self._admit(tasks)
        if self.list_watchers.topics:
            self._publish_list([copy.copy(t) for t in tasks], [])
        if not self._stopping:
            # Placed now, before the answer is sent: the round trip waits on the run, not on the reply.
            self._schedule()
        return tasks

    async def _start_while_committing(self, tasks: list[Task], until_end: bool = False) -> list[Task]:
        """A quiet server starts new tasks before their rows commit, and commits them (inline, as
        they stand: placed, running) while the workers start: the round trip pays for the commit
        and the start side by side, not one after the other (a no-op's p50 -15 %: README). The
        answer still waits for the commit. Only for creates without a request id: a crash between
        the start and the commit leaves no row, so a retry would run the task again, which a
        request id promises it will not. And only for clients' creates, not taskhub's own (FATE
        components, Delta): those register the tasks when create returns, and a task that starts
        first may call before then (if the commit goes to the writer thread, create yields).
        If the commit fails, the tasks are cancelled.

        `until_end` (ExecuteTask): the caller answers only at the tasks' end, so no commit is waited
        for here. Tasks started on this server's own node (whose runs end with it) are left
        unwritten: the flush of their end inserts their rows as they end, one commit for a short
        task instead of two, and the loop is free when the worker answers (C's p50 -3 % auth off,
        -10 % with --auth: README); or a timer writes them as they run after UNWRITTEN_SECONDS. A
        crash before then leaves no row; its caller was told nothing, and without a request_id it
        had no promise that the task would not run again."""
        if stages.ON:
            for t in tasks:
                stages.claim_call(t.id)
                stages.mark(t.id, "queued")
        self._unfinished += len(tasks)
        self._admit(tasks)
        self._schedule()
        if until_end and all(self._runs_here(t) for t in tasks):
            now = self._loop.time()
            for t in tasks:
                self._dirty.pop(t.id, None)
                self._unwritten[t.id] = (t, now)
            self._write_unwritten_in(UNWRITTEN_SECONDS)
            metrics.tasks_created(tasks)
            if self.list_watchers.topics:
                self._publish_list([copy.copy(t) for t in tasks], [])
            return tasks
        b = self.store.batch()
        b.insert_tasks(tasks)
        for t in tasks:  # their rows hold what placing them changed: no update of their own
            if not t.terminal:
                self._dirty.pop(t.id, None)
        try:
            await b.submit(wait=True)
        except errors.TaskhubError as e:
            for t in tasks:
                if self.tasks.get(t.id) is t and not t.terminal:
                    self.cancel(t.spec.namespace, t.id, "its row could not be committed", grace=0.0)
            raise errors.Unavailable(f"{e} (the task had started while it was committed: it was cancelled, and"
                                     " may have run in part)") from None
        if stages.ON:
            for t in tasks:
                stages.mark(t.id, "committed")
        metrics.tasks_created(tasks)
        if self.list_watchers.topics:
            self._publish_list([copy.copy(t) for t in tasks], [])
        return tasks

    def _runs_here(self, task: Task) -> bool:
        """Placed on a node whose runs end with this server (not an agent's, which outlive it)."""
        node = self.nodes.get(task.node) if task.status in (S.QUEUED, S.RUNNING) else None
        return node is not None and not node.outlives_server

    def _write_unwritten_in(self, delay: float) -> None:
        if self._unwritten_timer is None:
            self._unwritten_timer = self._loop.call_later(delay, self._write_unwritten)

    def _write_unwritten(self) -> None:
        """Tasks still without rows UNWRITTEN_SECONDS after they started are written as they stand,
        by the next flush; the timer is set again for the next one due."""
        self._unwritten_timer = None
        due = self._loop.time() - UNWRITTEN_SECONDS
        next_since = None
        for task, since in self._unwritten.values():
            if since <= due:
                self._touch(task)
            elif next_since is None or since < next_since:
                next_since = since
        if next_since is not None:
            self._write_unwritten_in(next_since - due)

    def _admit(self, tasks: list[Task]) -> None:
        """New tasks, committed: into the window where they belong; the rest wait in the store,
        where a read of the queue finds them."""
        window = self.scheduler.window
        for t in tasks:
            if window.admit(t):
                self._hold(t)
                self.logs.known_empty(t.id)
                self._fresh.append(t)
            elif self._reading is not None:
                self._missed.append(t)  # the read in flight may have missed it (see _refill)
        if self._reading is None:
            self._trim_window()

    def _trim_window(self) -> None:
        """Keep the window bounded when creates that sort early pile up in it."""
        window = self.scheduler.window
        for task_id in window.overflow():
            task = self.tasks.get(task_id)
            if task is None:
                continue
            if task.status == S.NEW and not task.cancel_requested:
                self._let_go(task)  # committed as it is: it waits in the store
            else:
                window.push(task)  # changed since it was read: it stays (past the cursor, which is fine)

    # ------------------------------------------------------------------ read
    def find(self, task_id: int) -> Task | None:
        """The task, from memory or (queued outside the window, or ended) from the store; None if none."""
        return self.tasks.get(task_id) or self.store.get_task(task_id)

    def status_counts(self) -> dict[Status, int]:
        """Unfinished tasks by status. Those waiting in the store outside the window count as NEW
        (reading each one's status would cost a scan of the queue)."""
        counts: dict[Status, int] = {}
        held = 0
        for t in list(self.tasks.values()):
            if not t.terminal:
                counts[t.status] = counts.get(t.status, 0) + 1
                held += 1
        if self._unfinished > held:
            counts[S.NEW] = counts.get(S.NEW, 0) + self._unfinished - held
        return counts

    def get(self, namespace: str, task_id: int = 0, uid: str = "") -> Task:
        task = self.tasks.get(task_id if task_id else self._by_uid.get(uid, 0))
        if task is None:
            task = self.store.get_task(task_id) if task_id else self.store.get_task_by_uid(uid)
        if task is None or not _in_namespace(task, namespace):
            what = f"task {task_id}" if task_id else f"task uid {uid!r}"
            where = "" if namespace == ANY_NAMESPACE else f" in namespace {namespace or DEFAULT_NAMESPACE!r}"
            raise errors.NotFound(f"{what} does not exist{where}")
        return task

    async def list(self, namespace: str, statuses: list[int], limit: int, page_token: str,
                   name_contains: str = "") -> tuple[list[Task], str]:
        limit = limit or 100
        if not 0 < limit <= 10_000:
            raise errors.InvalidArgument("limit must be between 1 and 10000")
        try:
            before = int(page_token) if page_token else 1 << 62
        except ValueError:
            raise errors.InvalidArgument(f"page_token {page_token!r} is not one this server gave") from None
        ns = None if namespace == ANY_NAMESPACE else (namespace or DEFAULT_NAMESPACE)
        rows = await self._loop.run_in_executor(None, self.store.list_tasks, ns, statuses, limit, before, name_contains)
        tasks = [self.tasks.get(t.id, t) for t in rows]
        token = str(rows[-1].id) if len(rows) == limit else ""
        if statuses:  # the store's status may lag the one in memory (not yet committed): answer what is true now
            tasks = [t for t in tasks if t.status in statuses]
        return tasks, token

    # ------------------------------------------------------------------ cancel / delete
    def cancel(self, namespace: str, task_id: int, reason: str = "", grace: float | None = None) -> tuple[bool, Task]:
        task = self._held(self.get(namespace, task_id))
        if task.terminal or task.status == S.CANCELLING:
            return task.status == S.CANCELLING, task
        task.cancel_requested = True
        task.cancelled_from = int(task.status)
        self.logs.system(task.id, f"cancel requested{': ' + reason if reason else ''}")
        node = self.nodes.get(task.node) if task.status in ON_NODE else None
        if task.status == S.RUNNING:
            self._move(task, S.CANCELLING)
            if node is not None:
                node.cancel(task.id, grace)
                return True, task
        elif node is not None:  # handed to a node, not started: take it back
            node.cancel(task.id, 0.0)
            self._release(task)
        if task.terminal:
            return True, task
        self._finish(task, S.CANCELLED, "cancelled" + (f": {reason}" if reason else ""))
        return True, task

    async def cancel_anywhere(self, namespace: str, task_id: int, reason: str = "") -> tuple[bool, Task]:
        """cancel(), on the scheduler or (from a follower) through it: answered once it took effect."""
        if self.leading:
            return self.cancel(namespace, task_id, reason)
        task = self.get(namespace, task_id)
        if task.terminal or task.status == S.CANCELLING:
            return task.status == S.CANCELLING, task
        task = await self._through_scheduler("cancel", task, reason, lambda t: t is None or t.terminal
                                             or t.status == S.CANCELLING)
        return True, task

    async def _through_scheduler(self, op: str, task: Task, reason: str, took_effect) -> Task | None:
        """A follower asks the scheduler (committed NOTIFY) and waits until the store shows the effect."""
        with self.watchers.subscribe(task.id, limit=1) as changed:
            self.tell_scheduler(op, task.id, reason)
            deadline = self._loop.time() + SCHEDULER_ANSWER_SECONDS
            while True:
                changed.clear()
                now = await self._loop.run_in_executor(None, self.store.get_task, task.id)
                if took_effect(now):
                    return now or task
                if not await changed.wait(max(0.01, min(1.0, deadline - self._loop.time()))) \
                        and self._loop.time() >= deadline:
                    raise errors.Unavailable(
                        f"the scheduler did not {op} task {task.id} within {SCHEDULER_ANSWER_SECONDS:g}s"
                        " (it may be changing over); try again")

    async def delete(self, namespace: str, task_id: int, force: bool) -> None:
        task = self.get(namespace, task_id)
        if not self.leading and not task.terminal:
            if not force:
                raise errors.FailedPrecondition(
                    f"task {task.id} is {task.status.name}; cancel it first, or delete with force=true")
            await self._through_scheduler("delete", task, "deleted with force", lambda t: t is None)
            return
        if not task.terminal:
            if not force:
                raise errors.FailedPrecondition(
                    f"task {task.id} is {task.status.name}; cancel it first, or delete with force=true")
            _, task = self.cancel(namespace, task_id, "deleted with force", grace=0.0)
            if not task.terminal:
                self._finish(task, S.CANCELLED, "deleted with force")
        self._let_go(self.tasks.get(task.id, task))
        self._unwritten.pop(task.id, None)  # no row to write back after its delete
        self._ended.pop(task.id, None)
        self._release(task)
        self.logs.forget(task.id)
        async with self.store.batch() as b:
            b.delete_tasks([task.id])
        if self.list_watchers:
            self._publish_list([], [(task.namespace, task.id)])

    # ------------------------------------------------------------------ follow
    # Every stream reads the broadcasters, on the scheduler (fed by the engine) and on a follower
    # (fed from the store's notifications, changed_elsewhere) alike; what is not in memory is read
    # from the store.
    def trace(self, task: Task, offset: int, follow: bool) -> AsyncIterator[list[tuple]]:
        async def ended() -> bool:
            t = self.tasks.get(task.id)  # outside memory: ended, queued in the store, or run by the scheduler
            if t is None:
                t = await self._loop.run_in_executor(None, self.store.get_task, task.id)
            return t is None or t.terminal
        return self.logs.read(task.id, offset, follow, ended)

    async def watch(self, task: Task) -> AsyncIterator[Task]:
        """The task now, then at each status change, ending with a committed terminal status."""
        with self.watchers.subscribe(task.id) as changes:
            current = self.tasks.get(task.id)
            if current is None:  # finished and committed (`task` was just read back), or queued in the store
                stored = task if task.terminal else self.get(ANY_NAMESPACE, task.id)
                yield stored
                if stored.terminal:
                    return
                # Queued outside the window: its changes come once the engine takes it in.
            elif not current.terminal:  # a terminal one is yielded once committed, below
                yield copy.copy(current)
            while True:
                snap = await changes.get()
                while not snap.terminal and not changes.empty():
                    snap = changes.get_nowait()  # changes made in one go (placement) are sent as the latest
                yield snap
                if snap.terminal:
                    return

    async def ended(self, task: Task) -> Task:
        """The task once its end is committed (ExecuteTask). A task this server holds wakes its
        caller once, at its end, not at each change on the way."""
        if task.id in self.tasks:
            with self.enders.subscribe(task.id) as ends:  # its end is told once committed
                end = await ends.get()
            unrecorded = self._unrecorded.pop(task.id, None)
            if unrecorded:
                raise errors.Unavailable(unrecorded)
            return end
        async for snap in self.watch(task):  # ended and read back, or another server runs it
            pass
        return snap

    async def watch_all(self, namespace: str) -> AsyncIterator[tuple[list[Task], list[int], bool]]:
        """(changed tasks, deleted ids, overflowed) batches for one namespace, from now on;
        the first batch is empty. A reader that falls WATCH_BACKLOG batches behind is told
        (overflowed=True) instead of holding memory without bound."""
        key = None if namespace == ANY_NAMESPACE else (namespace or DEFAULT_NAMESPACE)
        with self.list_watchers.subscribe(key, limit=WATCH_BACKLOG) as batches:
            yield [], [], False
            while True:
                changed, deleted = await batches.get()
                merged = {t.id: t for t in changed}
                gone = list(deleted)
                for more, more_deleted in batches.drain():
                    merged.update((t.id, t) for t in more)
                    gone.extend(more_deleted)
                overflowed, batches.overflowed = batches.overflowed, False
                yield [t for i, t in merged.items() if i not in gone], gone, overflowed

    def _publish_list(self, changed: list[Task], deleted: list[tuple[str | None, int]]) -> None:
        """To the list watchers: of every namespace (key None), and of each namespace named.
        A deletion told without its namespace (None: a follower's) reaches the first only."""
        topics = self.list_watchers.topics
        if None in topics:
            self.list_watchers.publish(None, (changed, [i for _, i in deleted]))
        if len(topics) > (None in topics):
            mine: dict[str, tuple[list, list]] = {}
            for t in changed:
                if t.namespace in topics:
                    mine.setdefault(t.namespace, ([], []))[0].append(t)
            for ns, i in deleted:
                if ns is not None and ns in topics:
                    mine.setdefault(ns, ([], []))[1].append(i)
            for ns, batch in mine.items():
                self.list_watchers.publish(ns, batch)

    async def wait_all(self, namespace: str, ids: list[int]) -> AsyncIterator[list[Task]]:
        """Batches of `ids` that have ended (committed), in the order they end, until all have."""
        with self.enders.subscribe(*ids) as ends:  # before reading: an end told meanwhile is kept
            waiting = set()
            elsewhere = []
            ended = []
            for i in ids:
                t = self.tasks.get(i)
                if t is not None and _in_namespace(t, namespace):
                    waiting.add(i)  # its end is told once committed
                elif t is None and (t := self._recently_ended(i)) is not None and _in_namespace(t, namespace):
                    ended.append(t)
                else:
                    elsewhere.append(i)
            if ended:
                yield ended
            if elsewhere:  # ended (and committed), queued outside the window, or held by the scheduler
                # Most are queued when a batch was just sent: a task's status and namespace decide,
                # and only the ended ones are read whole.
                states = await self._loop.run_in_executor(None, self.store.task_states, elsewhere)
                missing = next((i for i in elsewhere if i not in states or not _named_in(states[i][0], namespace)),
                               None)
                if missing is not None:
                    self.get(namespace, missing)  # raises NotFound, as a single read would
                done = [i for i in elsewhere if states[i][1] in TERMINAL]
                waiting.update(i for i in elsewhere if states[i][1] not in TERMINAL)
                if done:
                    ended = await self._loop.run_in_executor(None, self.store.tasks_by_ids, done)
                    if len(ended) < len(done):  # purged in between
                        read = {t.id for t in ended}
                        self.get(namespace, next(i for i in done if i not in read))
                    yield ended
            ends.ignore(*(ends.keys - waiting))
            while waiting:
                await ends.wait()
                batch = [t for t in ends.drain() if t.id in waiting]  # (told after it was read ended)
                waiting.difference_update(t.id for t in batch)
                if batch:
                    yield batch

    # ------------------------------------------------------------------ scheduling
    def _push(self, task: Task) -> None:
        self.scheduler.window.push(task)
        self._fresh.append(task)
        self._kick()

    def _kick(self) -> None:
        if not self._schedule_scheduled and not self._stopping:
            self._schedule_scheduled = True
            self._loop.call_soon(self._schedule)

    def _schedule(self) -> None:
        self._schedule_scheduled = False
        nodes = [n for n in self.nodes.values() if n.online and not n.draining]
        for decision in self.scheduler.round(self.tasks, nodes):
            if decision.node is not None:
                self._place(decision.task, decision.node, decision.held)
            else:
                self._park(decision.task, decision.reason)
        fresh, self._fresh = self._fresh, []
        if not nodes:
            for t in fresh:
                if t.status in SCHEDULABLE and t.queue_reason != NO_NODE and self.tasks.get(t.id) is t:
                    t.queue_reason = NO_NODE
                    self._touch(t)
        self._refill_soon()

    def _place(self, task: Task, node: Node, held: bool = False) -> None:
        self._move(task, S.SCHEDULING)
        self._move(task, S.SCHEDULED)
        task.node = node.name
        task.queue_reason = ""
        task.attempt += 1  # the epoch: events of any earlier attempt are refused from now on
        node.take(task.id, 0 if held else task.spec.resources.slots)
        self._move(task, S.QUEUED)
        if node.outlives_server:
            # An agent's run outlives a server crash: the attempt number must be committed before
            # it starts, or a restarted server could hand out the same attempt again elsewhere.
            self._placed.append((task, task.attempt, node))
        else:
            node.start(self.run_of(task))

    def _park(self, task: Task, reason: str) -> None:
        if task.status != S.PENDING:
            self._move(task, S.SCHEDULING)
            self._move(task, S.PENDING)
        task.queue_reason = reason
        self._touch(task)
        if len(self._parked) < self.scheduler.window.size:
            self._parked[task.id] = task
        else:  # parked beyond a window's worth: it waits in the store, read again at the next unpark
            self._let_go(task)
            self._parked_dropped = True

    def _unpark(self) -> None:
        for task in self._parked.values():
            if task.status == S.PENDING and self.tasks.get(task.id) is task:
                self._push(task)
        self._parked.clear()
        if self._parked_dropped:
            self._parked_dropped = False
            self.scheduler.window.rewind()
            self._kick()

    def _release(self, task: Task) -> None:
        node = self.nodes.get(task.node)
        if node is not None and node.give_back(task.id):
            self._kick()

    def run_of(self, task: Task) -> Run:
        """What a node needs to run this task's next attempt."""
        s = task.spec
        if self.run_env is None:
            env = dict(s.env)
        else:  # e.g. the task's own token when auth is on (server/auth.py)
            env = self.run_env(task)
            if s.env:
                env = {**s.env, **env}
        return Run(task.id, task.uid, s.namespace, s.name, s.type, list(s.argv), s.callable, s.input_json,
                   env, s.cwd, s.timeout_seconds, s.resources.slots, task.attempt,
                   s.hints is not None and s.hints.get(ON_DISCONNECT) == "keep",
                   s.hints is not None and s.hints.get(DEDICATED_WORKER) == "1")

    # ------------------------------------------------------------------ node events
    def on_running(self, task_id: int, pid: int, ppid: int) -> None:
        task = self.tasks.get(task_id)
        if task is None or task.status not in (S.SCHEDULED, S.QUEUED):
            return
        task.pid, task.ppid = pid, ppid
        task.start_time_ms = now_ms()
        task.error = ""
        self._move(task, S.RUNNING)
        metrics.task_started(task)

    def on_log(self, task_id: int, lines: list[tuple[int, str]], numbered: tuple[int, int] | None = None) -> None:
        if task_id in self.tasks:
            self.logs.append(task_id, lines, numbered)

    def on_progress(self, task_id: int, percent: int) -> None:
        task = self.tasks.get(task_id)
        if task is not None and not task.terminal:
            task.progress = percent
            self._touch(task)

    def on_result(self, task_id: int, text: str) -> None:
        task = self.tasks.get(task_id)
        if task is not None and not task.terminal:
            task.result = text
            self._touch(task)

    def on_response(self, task_id: int, json_text: str) -> None:
        task = self.tasks.get(task_id)
        if task is not None and not task.terminal:
            task.response_json = json_text
            self._touch(task)

    def on_exit(self, task_id: int, outcome: Outcome) -> None:
        if stages.ON:
            stages.mark(task_id, "exited")
        task = self.tasks.get(task_id)
        if task is None:
            return
        self._release(task)
        if task.status not in (S.RUNNING, S.CANCELLING, S.QUEUED, S.SCHEDULED):
            return  # already settled (cancelled while queued, deleted, lost)
        task.exit_code = outcome.exit_code
        if outcome.result is not None:
            task.result = outcome.result
        if task.status in (S.QUEUED, S.SCHEDULED):
            if outcome.kind == "cancelled":
                self._finish(task, S.CANCELLED, outcome.error or "cancelled")
                return
            task.start_time_ms = now_ms()
            self._move(task, S.RUNNING)  # failed to start: it did "run" for this attempt
        if task.cancel_requested:
            self.logs.system(task_id, f"cancelled ({outcome.error or outcome.kind})")
            self._finish(task, S.CANCELLED, "cancelled")
        elif outcome.kind == "success":
            task.progress = 100
            self._finish(task, S.SUCCESS, "")
        else:
            error = outcome.error or outcome.kind
            if task.retries < task.spec.max_retries:
                task.retries += 1
                delay = (task.spec.retry_backoff_seconds or 1.0) * 2 ** (task.retries - 1)
                self.logs.system(task_id, f"{error}; retry {task.retries} of {task.spec.max_retries} in {delay:g}s")
                task.error = error
                task.queue_reason = f"retry {task.retries} in {delay:g}s"
                self._move(task, S.PENDING)
                self._loop.call_later(delay, self._retry, task)
            else:
                self.logs.system(task_id, error)
                self._finish(task, S.FAILED, error)

    def _retry(self, task: Task) -> None:
        if self.tasks.get(task.id) is task and task.status == S.PENDING:
            self._push(task)

    # ------------------------------------------------------------------ state changes
    def _move(self, task: Task, new: Status) -> None:
        try:
            task.move(new)
        except IllegalTransition:
            log.exception("refused: task %d", task.id)
            raise
        self._touch(task)
        if new.terminal:
            metrics.task_finished(task)
            self._unfinished -= 1
            self.scheduler.left(task)
        if not new.terminal:
            if task.id in self.watchers.topics:
                self.watchers.publish(task.id, copy.copy(task))
            if task.spec.hints and OBSERVER in task.spec.hints:
                self._observe(task)

    def _finish(self, task: Task, status: Status, error: str) -> None:
        task.error = error
        self._move(task, status)
        self.logs.end(task.id)

    def _fail(self, task: Task, error: str) -> None:
        self.logs.system(task.id, error)
        self._finish(task, S.FAILED, error)

    def _touch(self, task: Task) -> None:
        task.update_time_ms = now_ms()
        self._dirty[task.id] = task
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if not self._dirty and not self._placed:
            return
        dirty, self._dirty = self._dirty, {}
        if self._unwritten:  # their rows are inserted as they stand (see _start_while_committing)
            unwritten = [t for t in dirty.values() if self._unwritten.pop(t.id, None) is not None]
            inserted = {t.id for t in unwritten}
            rows = [(t.id, t.mutable_row()) for t in dirty.values() if t.id not in inserted]
        else:
            unwritten, rows = [], [(t.id, t.mutable_row()) for t in dirty.values()]
        if self.list_watchers.topics:
            self._publish_list([copy.copy(t) for t in dirty.values()], [])
        ended = [copy.copy(t) for t in dirty.values() if t.terminal]
        if ended:
            self.logs.flush()  # their last lines go first: a reader elsewhere sees the end after them
        placed, self._placed = self._placed, []
        b = self.store.batch()
        if unwritten:
            b.insert_tasks(unwritten)
        b.update_tasks(rows)
        if not ended and not placed and not unwritten:
            b.submit(wait=False)
            return
        fut = b.submit(wait=True)
        # Committed inline (Store.INLINE_COMMITS): go on now, not at the loop's next turn.
        after = (lambda fn: fn(fut)) if fut.done() else fut.add_done_callback
        if unwritten:
            after(lambda f: self._written(unwritten, f))
        if ended:
            after(lambda f: self._announce(ended, f))
        if placed:
            after(lambda f: self._start_placed(placed, f))

    def _written(self, tasks: list[Task], fut: asyncio.Future) -> None:
        """Rows left unwritten (see _start_while_committing) that could not be inserted: as when an
        early start's commit fails, the tasks are stopped and nothing of them is kept; their
        callers (ExecuteTask, waiting in `ended`) are answered UNAVAILABLE."""
        if fut.exception() is None:
            return
        reason = (f"{fut.exception()} (the task had started before its row was committed: it was cancelled,"
                  " and may have run in part)")
        for task in tasks:
            if self.tasks.get(task.id) is not task:
                continue
            if task.id in self.enders.topics:
                self._unrecorded[task.id] = reason
            if task.terminal:  # its end is not committed, so not announced: told here
                self._let_go(task)
                self._tell(copy.copy(task))
            else:  # its end will be (an update of no row), and told then
                self.cancel(task.spec.namespace, task.id, "its row could not be committed", grace=0.0)

    def _start_placed(self, placed: list[tuple[Task, int, Node]], fut: asyncio.Future) -> None:
        if fut.exception() is not None:
            log.error("placements were not committed; starting them anyway")
        for task, attempt, node in placed:
            if self.tasks.get(task.id) is task and task.attempt == attempt and task.node == node.name \
                    and task.status == S.QUEUED:
                node.start(self.run_of(task))

    def _announce(self, ended: list[Task], fut: asyncio.Future) -> None:
        if fut.exception() is not None:
            return  # logged by the writer; the tasks stay in memory as they are
        for snap in ended:
            live = self.tasks.get(snap.id)
            if live is not None and live.terminal and snap.id not in self._dirty:
                self._let_go(live)
            self._tell(snap)
            if not self.shared_store and self.config.ended_kept_seconds > 0:
                self._ended[snap.id] = (self._loop.time(), snap)
                if len(self._ended) > ENDED_KEPT:
                    self._ended.popitem(last=False)
            if stages.ON:
                stages.mark(snap.id, "announced")
            if snap.spec.hints and OBSERVER in snap.spec.hints:
                self._observe(snap)

    def _observe(self, task: Task) -> None:
        key = task.spec.annotations[OBSERVER]
        if key in self.observers.topics:  # (a subscriber's exception is logged there, the engine goes on)
            self.observers.publish(key, copy.copy(task))

    def _tell(self, snap: Task) -> None:
        """A committed change (a snapshot) to the task's watchers, and its end to those waiting for it."""
        if snap.id in self.watchers.topics:
            self.watchers.publish(snap.id, snap)
        if snap.terminal and snap.id in self.enders.topics:
            self.enders.publish_last(snap.id, snap)


WATCH_BACKLOG = 1000


def _in_namespace(task: Task, namespace: str) -> bool:
    return _named_in(task.namespace, namespace)


def _named_in(task_namespace: str, namespace: str) -> bool:
    return namespace == ANY_NAMESPACE or task_namespace == (namespace or DEFAULT_NAMESPACE)
