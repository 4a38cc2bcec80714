"""A pool of warm Python workers (server/node/worker.py), driven from asyncio."""
from __future__ import annotations

import asyncio
import collections
import logging
import os
import signal
import sys
from typing import Callable

from .. import stages
from ..background import spawn
from .task_user import clean_env
from .wire import HEADER, frame, unframe

log = logging.getLogger(__name__)

EXAMPLES_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")


def worker_paths(task_paths: list[str]) -> list[str]:
    """What a worker imports from (then PYTHONPATH): the examples, the starting directory, the task paths."""
    return [EXAMPLES_DIR, os.getcwd(), *task_paths]


class WorkerProcess:
    def __init__(self, pool: "PythonPool"):
        self.pool = pool
        self.proc: asyncio.subprocess.Process | None = None
        self.pid = 0
        self.job: tuple | None = None  # the job it runs now
        self.retired = False           # an extra worker that leaves once its job is done
        self.killed_for: str = ""      # "cancelled" / "timeout" when we killed it on purpose
        self.ready = asyncio.get_running_loop().create_future()

    async def start(self) -> None:
        env = clean_env(dict(os.environ))
        paths = worker_paths(self.pool.task_paths)
        if env.get("PYTHONPATH"):
            paths.append(env["PYTHONPATH"])
        env["PYTHONPATH"] = os.pathsep.join(paths)
        env["PYTHONUNBUFFERED"] = "1"
        if self.pool.instance:
            env["TASKHUB_WORKER_OF"] = self.pool.instance  # how an agent's fence finds it (fence.py)
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "server.node.worker",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, env=env,
            limit=1 << 24, cwd=self.pool.cwd, **self.pool.as_user,
        )
        self.pid = self.proc.pid
        spawn(self._read(), f"worker {self.pid} reader")

    def send(self, msg: tuple) -> None:
        try:
            self.proc.stdin.write(frame(msg))
        except (BrokenPipeError, ConnectionResetError, AttributeError):
            pass  # it died; _read sees EOF and reports

    def kill(self, why: str) -> None:
        self.killed_for = why
        try:
            self.proc.send_signal(signal.SIGKILL)
        except ProcessLookupError:
            pass

    async def _read(self) -> None:
        reader = self.proc.stdout
        events = self.pool.events
        try:
            while True:
                head = await reader.readexactly(HEADER.size)
                msg = unframe(await reader.readexactly(HEADER.unpack(head)[0]))
                kind = msg[0]
                if kind == "logs":
                    events.on_log(msg[1], msg[2])
                elif kind == "done":
                    _, task_id, outcome, error, result = msg
                    self.job = None
                    self.pool.finished(self, task_id, outcome, error, result)
                elif kind == "progress":
                    events.on_progress(msg[1], msg[2])
                elif kind == "result":
                    events.on_result(msg[1], msg[2])
                elif kind == "response":
                    events.on_response(msg[1], msg[2])
                elif kind == "ready":
                    self.ready.set_result(True)
                elif kind == "stages":  # only from a worker of a server started with TASKHUB_STAGES
                    stages.mark(msg[1], "worker_got", msg[2])
                    stages.mark(msg[1], "worker_done", msg[3])
        except (asyncio.IncompleteReadError, ConnectionResetError):
            pass
        code = await self.proc.wait()
        if not self.ready.done():
            self.ready.set_result(False)
        self.pool.died(self, code)


class PythonPool:
    """Runs jobs on `size` warm workers; jobs beyond that wait in FIFO order."""

    def __init__(self, size: int, events, on_start: Callable[[int, int], None], task_paths: list[str] = (),
                 instance: str = ""):
        self.size = size
        self.instance = instance
        self.events = events  # NodeEvents: on_log/on_progress/on_result/on_response
        self.on_start = on_start  # (task_id, pid) when a worker takes a job
        self.on_done: Callable[[int, str, str, str | None], None] | None = None
        self.task_paths = list(task_paths)
        self.as_user: dict = {}          # TaskUser.spawn_kwargs() when workers run as the task user
        self.cwd: str | None = None      # their working directory (None: this process's)
        self.idle: list[WorkerProcess] = []
        self.busy: dict[int, WorkerProcess] = {}  # task_id -> worker
        self.waiting: collections.OrderedDict[int, tuple] = collections.OrderedDict()
        self.closing = False

    async def start(self) -> None:
        workers = [WorkerProcess(self) for _ in range(self.size)]
        await asyncio.gather(*(w.start() for w in workers))
        await asyncio.gather(*(w.ready for w in workers))
        self.idle.extend(workers)

    def submit(self, job: tuple, dedicated: bool = False) -> bool:
        """Queue a job ("run", task_id, …). Returns True when it started at once.

        `dedicated`: the job must not wait for a busy worker (it may wait on other running jobs, as
        the parties of a FATE job wait on each other): when none is idle, an extra worker is started,
        and the pool shrinks back to its size as workers become idle.
        """
        self.waiting[job[1]] = job
        if dedicated and not self.idle:
            spawn(self._replace(), "worker replacement")
        return self._pump_one(job[1])

    def _pump_one(self, task_id: int) -> bool:
        self._pump()
        return task_id in self.busy

    def _pump(self) -> None:
        while self.idle and self.waiting:
            task_id, job = self.waiting.popitem(last=False)
            w = self.idle.pop()
            w.job = job
            w.killed_for = ""
            self.busy[task_id] = w
            w.send(job)
            if stages.ON:
                stages.mark(task_id, "dispatched")
            self.on_start(task_id, w.pid)

    def cancel(self, task_id: int) -> str:
        """'dropped' if it was still waiting, 'told' if running, '' if unknown."""
        if self.waiting.pop(task_id, None) is not None:
            return "dropped"
        w = self.busy.get(task_id)
        if w is None:
            return ""
        w.send(("cancel", task_id))
        return "told"

    def kill(self, task_id: int, why: str) -> None:
        w = self.busy.get(task_id)
        if w is not None:
            w.kill(why)

    def finished(self, w: WorkerProcess, task_id: int, outcome: str, error: str, result: str | None) -> None:
        if self.busy.get(task_id) is w:
            del self.busy[task_id]
        if w.killed_for:  # a kill raced with the task's own end: our decision stands
            outcome = w.killed_for
        if len(self.idle) + len(self.busy) + 1 > self.size and not self.waiting:
            w.retired = True   # an extra worker (see submit): the pool goes back to its size
            w.proc.stdin.close()
        else:
            self.idle.append(w)
        self.on_done(task_id, outcome, error, result)
        self._pump()

    def died(self, w: WorkerProcess, code: int) -> None:
        if w in self.idle:
            self.idle.remove(w)
        task_id = next((t for t, x in self.busy.items() if x is w), None)
        if task_id is not None:
            del self.busy[task_id]
            why = w.killed_for or "failed"
            error = {"cancelled": "cancelled; killed after the grace period",
                     "timeout": "timed out"}.get(why, f"the Python worker process died (exit status {code})")
            self.on_done(task_id, why, error, None)
        if not self.closing and not w.retired:
            spawn(self._replace(), "worker replacement")

    async def _replace(self) -> None:
        w = WorkerProcess(self)
        await w.start()
        if await w.ready:
            self.idle.append(w)
            self._pump()

    async def close(self) -> None:
        self.closing = True
        for w in list(self.idle) + list(self.busy.values()):
            if w.proc and w.proc.returncode is None:
                w.proc.kill()
        for w in list(self.idle) + list(self.busy.values()):
            if w.proc:
                await w.proc.wait()
