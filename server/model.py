"""The task model: statuses, the one table of allowed transitions, and the Task record.

Nothing here knows about gRPC, SQLite or processes.
"""
from __future__ import annotations

import enum
import json
import logging
import time
import uuid
from dataclasses import MISSING, dataclass, field, fields

log = logging.getLogger(__name__)


class Status(enum.IntEnum):
    """Values equal the proto enum `taskhub.v1.TaskStatus`."""

    UNKNOWN = 1
    NEW = 2
    SCHEDULING = 3
    SCHEDULED = 4
    QUEUED = 5
    PENDING = 6
    RESTORING = 7
    RUNNING = 8
    SUCCESS = 9
    CANCELLING = 10
    CANCELLED = 11
    FAILED = 12

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


S = Status
TERMINAL = frozenset({S.SUCCESS, S.CANCELLED, S.FAILED})
# Waiting for the scheduler to place it: the queue, kept in the store (the engine holds a window of it).
SCHEDULABLE = frozenset({S.NEW, S.PENDING, S.RESTORING})
# Handed to a node (the engine holds these in memory while they live).
ON_NODE = frozenset({S.SCHEDULED, S.QUEUED, S.RUNNING, S.CANCELLING})
# Unfinished and not waiting in the queue: what the engine reads back whole at start (bounded by the nodes' slots).
ACTIVE = frozenset(S) - TERMINAL - SCHEDULABLE

# The only place that says which status may follow which.
# Cancelling a task that is not running ends it at once (-> CANCELLED); a running one
# goes through CANCELLING while its process is told and, after the grace period, killed.
TRANSITIONS: dict[Status, frozenset[Status]] = {
    S.NEW: frozenset({S.SCHEDULING, S.PENDING, S.CANCELLED, S.FAILED}),
    S.SCHEDULING: frozenset({S.SCHEDULED, S.PENDING, S.CANCELLED, S.FAILED}),
    S.SCHEDULED: frozenset({S.QUEUED, S.RUNNING, S.RESTORING, S.CANCELLED, S.FAILED}),
    S.QUEUED: frozenset({S.RUNNING, S.RESTORING, S.CANCELLED, S.FAILED}),
    S.PENDING: frozenset({S.SCHEDULING, S.RESTORING, S.CANCELLED, S.FAILED}),
    S.RESTORING: frozenset({S.SCHEDULING, S.PENDING, S.CANCELLED, S.FAILED}),
    S.RUNNING: frozenset({S.SUCCESS, S.FAILED, S.CANCELLING, S.PENDING, S.RESTORING, S.UNKNOWN}),
    S.CANCELLING: frozenset({S.CANCELLED, S.FAILED, S.RESTORING}),
    S.UNKNOWN: frozenset({S.RESTORING, S.FAILED, S.CANCELLED}),
    S.SUCCESS: frozenset(),
    S.CANCELLED: frozenset(),
    S.FAILED: frozenset(),
}


class IllegalTransition(RuntimeError):
    """A bug in taskhub: some code tried a transition the table does not allow."""


def check_transition(old: Status, new: Status) -> None:
    if new not in TRANSITIONS[old]:
        raise IllegalTransition(f"illegal task status transition {old.name} -> {new.name}")


class TaskType(enum.IntEnum):
    """Values equal the proto enum `taskhub.v1.TaskType`."""

    COMMAND = 1
    PYTHON = 2


class LogStream(enum.IntEnum):
    """Values equal the proto enum `taskhub.v1.LogStream`."""

    STDOUT = 1
    STDERR = 2
    SYSTEM = 3


def module_allowed(module: str, prefixes: list[str]) -> bool:
    """Whether Python code may be imported from `module`: it is, or is under, an allowed prefix."""
    return any(module == p or module.startswith(p + ".") for p in prefixes)


DEFAULT_NAMESPACE = "default"
ANY_NAMESPACE = "*"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass
class Resources:
    slots: int = 1
    cpu: float = 0.0
    memory_mb: int = 0


# Annotations the server acts on itself (TaskSpec.hints); any other annotation is only kept and shown.
# Unfinished tasks with the same value run on the same node (a task group's tasks).
COLOCATE = "taskhub.colocate"
# The name of the one node the task may run on (a Delta task's client on a data holder).
ON_NODE_NAMED = "taskhub.node"
# "1": a Python task that must not wait for a busy worker (PythonPool.submit).
DEDICATED_WORKER = "taskhub.dedicated_worker"
# Status changes of the task are published in `engine.observers` under its value (a layer built on
# tasks, such as FATE jobs, subscribes with call=): each change as it happens, a terminal one once committed.
OBSERVER = "taskhub.observer"
# "keep" lets a command task go on running on an agent that lost the server (README, Leases).
ON_DISCONNECT = "taskhub.on_disconnect"
HINTS = (COLOCATE, ON_NODE_NAMED, DEDICATED_WORKER, OBSERVER, ON_DISCONNECT)

# json.dumps with any option builds a new encoder per call (1.5 us of a spec's 6.8 us).
_COMPACT = json.JSONEncoder(separators=(",", ":"))


@dataclass
class TaskSpec:
    """What a client submitted; immutable once the task exists."""

    type: TaskType
    namespace: str = DEFAULT_NAMESPACE
    name: str = ""
    argv: list[str] = field(default_factory=list)
    callable: str = ""
    input_json: str = ""
    env: dict[str, str] = field(default_factory=dict)
    cwd: str = ""
    priority: int = 0
    timeout_seconds: float = 0.0
    max_retries: int = 0
    retry_backoff_seconds: float = 0.0
    node_selector: dict[str, str] = field(default_factory=dict)
    resources: Resources = field(default_factory=Resources)
    annotations: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # The annotations among HINTS, or None: what the scheduler and the engine test on every
        # task's way, instead of `annotations`, which most specs carry for a stamp alone (the
        # creating token, with --auth: every test went on to a dict lookup, a dozen per task).
        # Not a field: never stored, compared or shown.
        a = self.annotations
        self.hints: dict[str, str] | None = ({k: a[k] for k in HINTS if k in a} or None) if a else None

    def to_json(self) -> str:
        """The spec as stored: fields left at their defaults are left out (from_json fills them
        in), so a no-op task's row holds a third of the bytes and reads back in half the time."""
        d = {k: v for k, v in self.__dict__.items() if _SPEC_DEFAULTS.get(k, _KEEP) != v}
        del d["hints"]
        if "resources" in d:
            d["resources"] = self.resources.__dict__  # flat; asdict() deep-copies and is 5x slower
        return _COMPACT.encode(d)

    @classmethod
    def from_json(cls, text: str) -> "TaskSpec":
        d = json.loads(text)
        d["type"] = TaskType(d["type"])
        d["resources"] = Resources(**d.get("resources") or {})
        return cls(**d)


_KEEP = object()  # never equal to a value: the field is always written
# Defaults left out of a spec's JSON; type and namespace are always written (a row stays readable).
_SPEC_DEFAULTS = {f.name: f.default if f.default is not MISSING else f.default_factory()
                  for f in fields(TaskSpec) if f.name not in ("type", "namespace")}


# Columns that change while a task lives; the store updates exactly these.
MUTABLE_FIELDS = (
    "status", "progress", "result", "response_json", "retries", "node", "pid", "ppid",
    "exit_code", "error", "update_time_ms", "start_time_ms", "done_time_ms",
    "queue_reason", "cancel_requested", "cancelled_from", "attempt",
)


class Task:
    """A task and its live state. Only the engine changes one, through `move`."""

    __slots__ = ("id", "uid", "spec", "create_time_ms") + MUTABLE_FIELDS

    def __init__(self, id: int, spec: TaskSpec, uid: str | None = None, create_time_ms: int | None = None):
        self.id = id
        self.uid = uid or uuid.uuid4().hex
        self.spec = spec
        self.create_time_ms = create_time_ms or now_ms()
        self.status = S.NEW
        self.progress = 0
        self.result = ""
        self.response_json = "{}"
        self.retries = 0
        self.node = ""
        self.pid = 0
        self.ppid = 0
        self.exit_code = 0
        self.error = ""
        self.update_time_ms = self.create_time_ms
        self.start_time_ms = 0
        self.done_time_ms = 0
        self.queue_reason = ""
        self.cancel_requested = False
        self.cancelled_from = 0
        self.attempt = 0  # placements so far: the epoch that fences a stale run (see engine._place)

    @property
    def namespace(self) -> str:
        return self.spec.namespace

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    def move(self, new: Status) -> None:
        """Apply a transition allowed by TRANSITIONS, or raise IllegalTransition."""
        check_transition(self.status, new)
        self.status = new
        self.update_time_ms = now_ms()
        if new in TERMINAL:
            self.done_time_ms = self.update_time_ms

    def __copy__(self) -> "Task":
        """A snapshot (the spec shared, as copy.copy would): the slots one by one, 2x faster than
        copy's generic __reduce_ex__ path, and the engine takes one of every task that ends."""
        snap = Task.__new__(Task)
        for name in Task.__slots__:
            setattr(snap, name, getattr(self, name))
        return snap

    def mutable_row(self) -> tuple:
        """Values of MUTABLE_FIELDS, in that order, as SQLite takes them. On the hot path."""
        return (int(self.status), self.progress, self.result, self.response_json, self.retries, self.node,
                self.pid, self.ppid, self.exit_code, self.error, self.update_time_ms, self.start_time_ms,
                self.done_time_ms, self.queue_reason, int(self.cancel_requested), int(self.cancelled_from),
                self.attempt)

    @classmethod
    def from_row(cls, row: dict) -> "Task":
        t = cls(row["id"], TaskSpec.from_json(row["spec"]), row["uid"], row["create_time_ms"])
        for f in MUTABLE_FIELDS:
            setattr(t, f, row[f])
        t.status = Status(t.status)
        t.cancel_requested = bool(t.cancel_requested)
        return t

    def __repr__(self) -> str:
        return f"<Task {self.id} {self.spec.name!r} {self.status.name}>"
