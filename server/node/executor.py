"""Runs tasks on this machine: commands as subprocesses, Python callables in warm workers.

The same Executor serves the server's local node and the remote node agent; both hand it
`Run`s and receive what happens through a `NodeEvents` object:

    on_running(task_id, pid, ppid)      on_log(task_id, [(stream, text), ...])
    on_progress(task_id, percent)       on_result(task_id, text)
    on_response(task_id, json_text)     on_exit(task_id, Outcome)

Commands run from a spawner process (spawner.py), Python callables in a pool of warm
workers (pool.py). Cancellation is cooperative first (SIGTERM to a command's process
group, a flag a Python task can read), then forced (SIGKILL) after the grace period.
"""
from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass, field

from ..model import TaskType
from .pool import PythonPool
from .spawner import KEEP_ENV, SpawnerClient
from .task_user import TaskUser

log = logging.getLogger(__name__)



@dataclass
class Run:
    """Everything a node needs to run one attempt of a task."""

    task_id: int
    uid: str
    namespace: str
    name: str
    type: TaskType
    argv: list[str] = field(default_factory=list)
    callable: str = ""
    input_json: str = ""
    env: dict[str, str] = field(default_factory=dict)
    cwd: str = ""
    timeout_seconds: float = 0.0
    slots: int = 1
    attempt: int = 0                   # the epoch of this run (engine._place); TASKHUB_ATTEMPT in its env
    keep_on_disconnect: bool = False   # an agent that loses the server lets it run on (README, Leases)
    dedicated_worker: bool = False   # PYTHON: never wait for a busy worker (see PythonPool.submit)


@dataclass
class Outcome:
    """How a run ended. kind: success | failed | cancelled | timeout | lost."""

    kind: str
    exit_code: int = 0
    error: str = ""
    result: str | None = None


class Executor:
    def __init__(self, events, *, python_workers: int, work_dir: str, instance: str,
                 kill_grace: float = 5.0, task_paths: list[str] = (), task_user: TaskUser | None = None):
        self.events = events
        self.work_dir = work_dir
        self.instance = instance
        self.kill_grace = kill_grace
        self.loop: asyncio.AbstractEventLoop | None = None
        self.commands: dict[int, Run] = {}
        self.python: dict[int, Run] = {}
        self.pool = PythonPool(python_workers, events, self._python_started, task_paths, instance)
        self.pool.on_done = self._python_done
        self.spawner = SpawnerClient(instance, work_dir, events.on_running, events.on_log, self._command_done)
        if task_user is not None:  # commands and Python workers run as this user, in work_dir
            self.pool.as_user = self.spawner.as_user = task_user
            self.pool.cwd = work_dir
        self._timers: dict[int, asyncio.TimerHandle] = {}
        self.server_target = ""   # gRPC address tasks use to call back (TASKHUB_SERVER), set by the owner
        self.server_env: dict[str, str] = {}   # and how to dial it (TASKHUB_TLS_CA, ...), set by the owner
        self.data_dir = ""        # this node's Delta datasets (TASKHUB_DATA_DIR), set by the owner
        os.makedirs(work_dir, exist_ok=True)

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.pool.env = self._standing_env()
        await asyncio.gather(self.pool.start(), self.spawner.start())

    def _standing_env(self) -> dict[str, str]:
        """What every run on this node gets beneath its own environment (which may name other
        values): how to call the server back, the data directory. Python workers have it from their
        start, so a job carries only the run's own (its spec's, its attempt, its token)."""
        env = {**self.server_env, "TASKHUB_SERVER": self.server_target} if self.server_target else {}
        if self.data_dir:
            env["TASKHUB_DATA_DIR"] = self.data_dir
        return env

    @property
    def running(self) -> int:
        return len(self.commands) + len(self.python)

    def start_run(self, run: Run) -> None:
        """Start (or, for Python with every worker busy, queue) a run."""
        env = run.env
        if run.attempt:
            env = {**env, "TASKHUB_ATTEMPT": str(run.attempt)}
        if run.type == TaskType.COMMAND:
            self.commands[run.task_id] = run
            if self.pool.env:
                env = {**self.pool.env, **env}
            if run.keep_on_disconnect:  # the agent's fence (fence.py) leaves it alone
                env = {**env, KEEP_ENV: "1"}
            self.spawner.send(("start", run.task_id, run.argv, env, run.cwd, run.timeout_seconds))
        else:
            self.python[run.task_id] = run
            self.pool.submit(("run", run.task_id, run.uid, run.namespace, run.name,
                              run.callable, run.input_json, env), dedicated=run.dedicated_worker)

    def _command_done(self, task_id: int, kind: str, code: int, error: str, result: str | None) -> None:
        if task_id in self.commands:
            self._finished(task_id, Outcome(kind, code, error, result))

    def _python_started(self, task_id: int, pid: int) -> None:
        run = self.python.get(task_id)
        if run is None:
            return
        self.events.on_running(task_id, pid, os.getpid())
        if run.timeout_seconds > 0:
            self._timers[task_id] = self.loop.call_later(run.timeout_seconds, self._stop, task_id, "timeout", 0.0)

    def _python_done(self, task_id: int, kind: str, error: str, result: str | None) -> None:
        run = self.python.get(task_id)
        if run is None:
            return
        if kind == "timeout":
            error = self._kill_reason(kind, run)
        elif kind == "cancelled":
            error = error or "cancelled"
        self._finished(task_id, Outcome(kind, 0 if kind == "success" else 1, error, result))

    def _finished(self, task_id: int, outcome: Outcome) -> None:
        self.commands.pop(task_id, None)
        self.python.pop(task_id, None)
        t = self._timers.pop(task_id, None)
        if t:
            t.cancel()
        self.events.on_exit(task_id, outcome)

    def _kill_reason(self, why: str, run: Run) -> str:
        if why == "timeout":
            return f"timed out after {run.timeout_seconds:g}s"
        return "cancelled"

    def cancel(self, task_id: int, grace: float | None = None) -> bool:
        """Ask a run to stop; force it after `grace` seconds. False if this node does not have it."""
        return self._stop(task_id, "cancelled", self.kill_grace if grace is None else grace)

    def _stop(self, task_id: int, why: str, grace: float) -> bool:
        if task_id in self.commands:
            self.spawner.send(("stop", task_id, why, grace))
            return True
        if task_id not in self.python:
            return False
        state = self.pool.cancel(task_id)
        if state == "dropped":  # never started
            self._finished(task_id, Outcome(why, 0, self._kill_reason(why, self.python[task_id])))
        elif state == "told":
            if grace > 0:
                self.loop.call_later(grace, self.pool.kill, task_id, why)
            else:
                self.pool.kill(task_id, why)
        return True

    async def close(self, grace: float = 1.0) -> list[int]:
        """Stop everything (SIGTERM, then SIGKILL after `grace`); returns the ids that were running."""
        ids = list(self.commands) + list(self.python)
        await asyncio.gather(self.spawner.close(grace), self.pool.close())
        return ids
