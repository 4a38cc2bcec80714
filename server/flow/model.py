"""FATE Flow's job and task statuses, the one table of allowed transitions each, and the records.

Nothing here knows about gRPC, SQLite or taskhub's engine. Values equal the proto enums
`taskhub.v1.FlowJobStatus` / `FlowTaskStatus`; names are FATE's (lowercase on FATE's wire).
"""
from __future__ import annotations

import enum
import logging
from dataclasses import dataclass, field

log = logging.getLogger(__name__)


class JobStatus(enum.IntEnum):
    WAITING = 1
    READY = 2
    RUNNING = 3
    CANCELED = 4
    TIMEOUT = 5
    FAILED = 6
    SUCCESS = 7

    @property
    def terminal(self) -> bool:
        return self in JOB_TERMINAL

    @property
    def fate(self) -> str:
        return self.name.lower()


class TaskStatus(enum.IntEnum):
    WAITING = 1
    RUNNING = 2
    CANCELED = 3
    TIMEOUT = 4
    FAILED = 5
    PASS = 6
    SUCCESS = 7

    @property
    def terminal(self) -> bool:
        return self in TASK_TERMINAL

    @property
    def fate(self) -> str:
        return self.name.lower()


J, T = JobStatus, TaskStatus
JOB_TERMINAL = frozenset({J.CANCELED, J.TIMEOUT, J.FAILED, J.SUCCESS})
TASK_TERMINAL = frozenset({T.CANCELED, T.TIMEOUT, T.FAILED, T.PASS, T.SUCCESS})
# A component is "done" for its dependents when every task of it is one of these.
TASK_DONE = frozenset({T.SUCCESS, T.PASS})

# The only places that say which status may follow which. An ended job (and its ended tasks) go
# back to waiting only through a rerun (job/rerun: FlowJobs.rerun), which runs them again as new
# task versions; nothing else leaves an end status.
JOB_TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    J.WAITING: frozenset({J.READY, J.CANCELED, J.TIMEOUT, J.FAILED}),
    J.READY: frozenset({J.RUNNING, J.CANCELED, J.TIMEOUT, J.FAILED}),
    J.RUNNING: frozenset({J.SUCCESS, J.FAILED, J.CANCELED, J.TIMEOUT}),
    **{end: frozenset({J.WAITING}) for end in (J.CANCELED, J.TIMEOUT, J.FAILED, J.SUCCESS)},
}
# A task may be seen ending without having been seen running (a fast task), and goes back to
# waiting while taskhub retries it (FATE's auto_retries) or restores it after a restart.
TASK_TRANSITIONS: dict[TaskStatus, frozenset[TaskStatus]] = {
    T.WAITING: frozenset({T.RUNNING, T.SUCCESS, T.FAILED, T.CANCELED, T.TIMEOUT, T.PASS}),
    T.RUNNING: frozenset({T.WAITING, T.SUCCESS, T.FAILED, T.CANCELED, T.TIMEOUT}),
    **{end: frozenset({T.WAITING}) for end in (T.CANCELED, T.TIMEOUT, T.FAILED, T.SUCCESS)},
    T.PASS: frozenset(),
}
# The job statuses a rerun starts from.
RERUNNABLE = frozenset({J.CANCELED, J.TIMEOUT, J.FAILED, J.SUCCESS})


class IllegalFlowTransition(RuntimeError):
    """A bug in taskhub: some code tried a transition the tables do not allow."""


def check_job_transition(old: JobStatus, new: JobStatus) -> None:
    if new not in JOB_TRANSITIONS[old]:
        raise IllegalFlowTransition(f"illegal flow job status transition {old.name} -> {new.name}")


def check_task_transition(old: TaskStatus, new: TaskStatus) -> None:
    if new not in TASK_TRANSITIONS[old]:
        raise IllegalFlowTransition(f"illegal flow task status transition {old.name} -> {new.name}")


def job_status_of(name: str) -> JobStatus:
    """FATE's wire name (any case) -> JobStatus; ValueError names the valid ones."""
    try:
        return JobStatus[name.upper()]
    except KeyError:
        raise ValueError(f"unknown job status {name!r}; one of {', '.join(s.fate for s in JobStatus)}") from None


def task_status_of(name: str) -> TaskStatus:
    try:
        return TaskStatus[name.upper()]
    except KeyError:
        raise ValueError(f"unknown task status {name!r}; one of {', '.join(s.fate for s in TaskStatus)}") from None


@dataclass
class FlowTask:
    """One component for one (role, party). Only the StatusWriter (server/flow/status.py) changes one."""

    job_id: str
    component: str
    module: str
    role: str
    party_id: int
    status: TaskStatus = T.WAITING
    taskhub_task_id: int = 0
    task_version: int = 0
    run_pid: int = 0
    node: str = ""
    error: str = ""
    retries: int = 0
    create_time_ms: int = 0
    start_time_ms: int = 0
    end_time_ms: int = 0

    @property
    def key(self) -> tuple[str, str, int]:
        return self.component, self.role, self.party_id

    @property
    def task_id(self) -> str:
        return f"{self.job_id}_{self.component}"


@dataclass
class FlowJob:
    """A job. Only the StatusWriter (server/flow/status.py) changes one."""

    job_id: str
    namespace: str
    job_type: str                       # train | predict | upload | download
    dsl_json: str
    conf_json: str
    initiator: tuple[str, int]
    parties: list[tuple[str, int]]
    status: JobStatus = J.WAITING
    model_id: str = ""
    model_version: str = ""
    timeout_seconds: float = 0.0
    description: str = ""
    error: str = ""
    progress: int = 0
    create_time_ms: int = 0
    start_time_ms: int = 0
    end_time_ms: int = 0
    update_time_ms: int = 0
    tasks: dict[tuple[str, str, int], FlowTask] = field(default_factory=dict)

    @property
    def terminal(self) -> bool:
        return self.status in JOB_TERMINAL
