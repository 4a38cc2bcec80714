"""Runs tasks on this machine: commands as subprocesses, Python callables in warm workers.

The same Executor serves the server's local node and the remote node agent; both hand it
`Run`s and receive what happens through a `NodeEvents` object:

    on_running(task_id, pid, ppid)      on_log(task_id, [(stream, text), ...])
    on_progress(task_id, percent)       on_result(task_id, text)
    on_response(task_id, json_text)     on_exit(task_id, Outcome)

Cancellation is cooperative first (SIGTERM to a command's process group, a flag a Python
task can read), then forced (SIGKILL) after the grace period.
"""
from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
from dataclasses import dataclass, field

from ..model import LogStream, TaskType
from .pool import PythonPool

log = logging.getLogger(__name__)

READ_CHUNK = 1 << 16
# Environment marker that lets a restarted server find processes it started earlier.
INSTANCE_ENV = "TASKHUB_INSTANCE"


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


@dataclass
class Outcome:
    """How a run ended. kind: success | failed | cancelled | timeout | lost."""

    kind: str
    exit_code: int = 0
    error: str = ""
    result: str | None = None


class _Command:
    """One running subprocess, read without threads: pipes and a pidfd on the event loop."""

    def __init__(self, ex: "Executor", run: Run, proc: subprocess.Popen):
        self.ex, self.run, self.proc = ex, run, proc
        self.open_fds = 0
        self.partial = {LogStream.STDOUT: b"", LogStream.STDERR: b""}
        self.last_stdout = ""
        self.exit_code: int | None = None
        self.killed_for = ""
        self.timer: asyncio.TimerHandle | None = None
        loop = ex.loop
        for stream, pipe in ((LogStream.STDOUT, proc.stdout), (LogStream.STDERR, proc.stderr)):
            fd = pipe.fileno()
            os.set_blocking(fd, False)
            loop.add_reader(fd, self._readable, stream, pipe)
            self.open_fds += 1
        self.pidfd = os.pidfd_open(proc.pid)
        loop.add_reader(self.pidfd, self._exited)

    def _readable(self, stream: LogStream, pipe) -> None:
        try:
            data = os.read(pipe.fileno(), READ_CHUNK)
        except BlockingIOError:
            return
        if data:
            data = self.partial[stream] + data
            *lines, self.partial[stream] = data.split(b"\n")
            if lines:
                texts = [(int(stream), b.decode("utf-8", "replace")) for b in lines]
                if stream is LogStream.STDOUT:
                    self.last_stdout = texts[-1][1]
                self.ex.events.on_log(self.run.task_id, texts)
            return
        self.ex.loop.remove_reader(pipe.fileno())
        if self.partial[stream]:
            text = self.partial[stream].decode("utf-8", "replace")
            if stream is LogStream.STDOUT:
                self.last_stdout = text
            self.ex.events.on_log(self.run.task_id, [(int(stream), text)])
        pipe.close()
        self.open_fds -= 1
        self._maybe_done()

    def _exited(self) -> None:
        self.ex.loop.remove_reader(self.pidfd)
        os.close(self.pidfd)
        self.exit_code = self.proc.wait()
        self._maybe_done()

    def _maybe_done(self) -> None:
        # Done when the process is gone and both pipes closed (a grandchild holding
        # them open after a kill is cut off: the process group got the signal too).
        if self.exit_code is None or (self.open_fds and not self.killed_for):
            return
        for pipe in (self.proc.stdout, self.proc.stderr):
            if not pipe.closed:
                self.ex.loop.remove_reader(pipe.fileno())
                pipe.close()
        self.open_fds = 0
        if self.timer:
            self.timer.cancel()
        code = self.exit_code
        if self.killed_for:
            outcome = Outcome(self.killed_for, code, self.ex._kill_reason(self.killed_for, self.run))
        elif code == 0:
            outcome = Outcome("success", 0, "", self.last_stdout)
        elif code < 0:
            outcome = Outcome("failed", code, f"killed by signal {signal.Signals(-code).name}")
        else:
            outcome = Outcome("failed", code, f"exited with status {code}")
        self.ex._finished(self.run.task_id, outcome)

    def signal(self, sig: int) -> None:
        try:
            os.killpg(self.proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


class Executor:
    def __init__(self, events, *, python_workers: int, work_dir: str, instance: str,
                 kill_grace: float = 5.0, task_paths: list[str] = ()):
        self.events = events
        self.work_dir = work_dir
        self.instance = instance
        self.kill_grace = kill_grace
        self.loop: asyncio.AbstractEventLoop | None = None
        self.commands: dict[int, _Command] = {}
        self.python: dict[int, Run] = {}
        self.pool = PythonPool(python_workers, events, self._python_started, task_paths)
        self.pool.on_done = self._python_done
        self._timers: dict[int, asyncio.TimerHandle] = {}
        self._base_env = dict(os.environ)
        self._base_env[INSTANCE_ENV] = instance
        os.makedirs(work_dir, exist_ok=True)

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        await self.pool.start()

    @property
    def running(self) -> int:
        return len(self.commands) + len(self.python)

    def start_run(self, run: Run) -> None:
        """Start (or, for Python with every worker busy, queue) a run."""
        if run.type == TaskType.COMMAND:
            self._start_command(run)
        else:
            self.python[run.task_id] = run
            self.pool.submit(("run", run.task_id, run.uid, run.namespace, run.name,
                              run.callable, run.input_json, run.env))

    def _start_command(self, run: Run) -> None:
        env = self._base_env
        if run.env:
            env = {**env, **run.env}
        env = {**env, "TASKHUB_TASK_ID": str(run.task_id)}
        try:
            proc = subprocess.Popen(
                run.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                env=env, cwd=run.cwd or self.work_dir, start_new_session=True,
            )
        except (OSError, ValueError) as e:
            self.events.on_log(run.task_id, [(int(LogStream.SYSTEM), f"cannot start {run.argv[0]!r}: {e}")])
            self.loop.call_soon(self.events.on_exit, run.task_id, Outcome("failed", 127, f"cannot start: {e}"))
            return
        cmd = self.commands[run.task_id] = _Command(self, run, proc)
        self.events.on_running(run.task_id, proc.pid, os.getpid())
        if run.timeout_seconds > 0:
            cmd.timer = self.loop.call_later(run.timeout_seconds, self._stop, run.task_id, "timeout", 0.0)

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
        cmd = self.commands.get(task_id)
        if cmd is not None:
            if not cmd.killed_for:
                cmd.killed_for = why
            if grace > 0:
                cmd.signal(signal.SIGTERM)
                self.loop.call_later(grace, self._force, task_id, cmd)
            else:
                cmd.signal(signal.SIGKILL)
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

    def _force(self, task_id: int, cmd: _Command) -> None:
        if self.commands.get(task_id) is cmd:
            cmd.signal(signal.SIGKILL)

    async def close(self, grace: float = 1.0) -> list[int]:
        """Stop everything (SIGTERM, then SIGKILL after `grace`); returns the ids that were running."""
        ids = list(self.commands) + list(self.python)
        for cmd in list(self.commands.values()):
            cmd.signal(signal.SIGTERM)
        deadline = self.loop.time() + grace
        while self.commands and self.loop.time() < deadline:
            await asyncio.sleep(0.02)
        for cmd in list(self.commands.values()):
            cmd.signal(signal.SIGKILL)
        await self.pool.close()
        return ids
