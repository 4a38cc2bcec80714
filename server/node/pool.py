"""A pool of warm Python workers (server/node/worker.py), driven from asyncio."""
from __future__ import annotations

import asyncio
import collections
import logging
import os
import signal
import sys
import time
from typing import Callable

from .. import stages
from ..background import spawn
from .task_user import TaskUser, clean_env
from .wire import HEADER, frame, unframe

log = logging.getLogger(__name__)

EXAMPLES_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")


def worker_paths(task_paths: list[str]) -> list[str]:
    """What a worker imports from (then PYTHONPATH): the examples, the starting directory, the task paths."""
    return [EXAMPLES_DIR, os.getcwd(), *task_paths]


# Prefetch: a busy worker may hold jobs beyond the one it runs, sent in one write, so a stream of
# short tasks costs a pipe write (and a worker wake-up) per batch instead of per task. Only jobs of
# a callable seen to run under SHORT_SECONDS are held, only behind such jobs, and only as many as
# make about HOLD_SECONDS of their expected work: no job waits long while another worker is free.
SHORT_SECONDS = 0.01
HOLD_SECONDS = 0.02
MAX_HELD = 64
# A job that runs past RELEASE_SECONDS after all (it waits on another task, say, which may be held
# behind it) gives what it holds back to the line, so it goes to the next free worker instead.
RELEASE_SECONDS = 0.1
KNOWN_CALLABLES = 4096  # runtime estimates kept (one per callable; forgotten all at once past this)


def _held_limit(seconds: float) -> int:
    return max(1, min(MAX_HELD, int(HOLD_SECONDS / max(seconds, HOLD_SECONDS / MAX_HELD))))


class WorkerProcess:
    def __init__(self, pool: "PythonPool"):
        self.pool = pool
        self.proc: asyncio.subprocess.Process | None = None
        self.pid = 0
        # The jobs it holds, in the order it runs them: the first runs (since head_since), the rest wait.
        self.jobs: collections.OrderedDict[int, tuple] = collections.OrderedDict()
        self.head_since = 0.0
        self.releasing = False         # asked to give back what it holds (RELEASE_SECONDS)
        self.started = 0               # the task id on_start was last told for
        self.retired = False           # an extra worker that leaves once its job is done
        self.killed_for: str = ""      # "cancelled" / "timeout" when we killed it on purpose
        self.ready = asyncio.get_running_loop().create_future()

    async def start(self) -> None:
        env = {**clean_env(dict(os.environ)), **self.pool.env}
        paths = worker_paths(self.pool.task_paths)
        if env.get("PYTHONPATH"):
            paths.append(env["PYTHONPATH"])
        env["PYTHONPATH"] = os.pathsep.join(paths)
        env["PYTHONUNBUFFERED"] = "1"
        if self.pool.instance:
            env["TASKHUB_WORKER_OF"] = self.pool.instance  # how an agent's fence finds it (fence.py)
        argv = [sys.executable, "-m", "server.node.worker"]
        if self.pool.as_user is not None:
            argv = self.pool.as_user.command(argv)
        self.proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, env=env,
            limit=1 << 24, cwd=self.pool.cwd,
        )
        self.pid = self.proc.pid
        spawn(self._read(), f"worker {self.pid} reader")

    def send(self, msg: tuple) -> None:
        self.write(frame(msg))

    def write(self, data: bytes) -> None:
        stdin = self.proc.stdin if self.proc is not None else None
        # Dead: _read sees EOF and reports. (Writing to a closed pipe raises under uvloop, where
        # asyncio's own loop drops the write.)
        if stdin is None or stdin.is_closing():
            return
        try:
            stdin.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass

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
                    _, task_id, outcome, error, result, seconds = msg
                    self.pool.finished(self, task_id, outcome, error, result, seconds)
                elif kind == "progress":
                    events.on_progress(msg[1], msg[2])
                elif kind == "result":
                    events.on_result(msg[1], msg[2])
                elif kind == "response":
                    events.on_response(msg[1], msg[2])
                elif kind == "released":
                    self.pool.released(self, msg[1])
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
    """Runs jobs on `size` warm workers; jobs beyond that wait in FIFO order (a few of them held by
    workers busy with short jobs: see SHORT_SECONDS)."""

    def __init__(self, size: int, events, on_start: Callable[[int, int], None], task_paths: list[str] = (),
                 instance: str = ""):
        self.size = size
        self.instance = instance
        self.events = events  # NodeEvents: on_log/on_progress/on_result/on_response
        self.on_start = on_start  # (task_id, pid) when a worker starts a job
        self.on_done: Callable[[int, str, str, str | None], None] | None = None
        self.task_paths = list(task_paths)
        self.as_user: TaskUser | None = None  # the user workers run as (None: this process's)
        self.cwd: str | None = None      # their working directory (None: this process's)
        self.env: dict[str, str] = {}    # what their environment has beyond this process's (Executor._standing_env)
        self.workers: list[WorkerProcess] = []    # ready and alive
        self.busy: dict[int, WorkerProcess] = {}  # task_id -> the worker holding it (running or held)
        self.waiting: collections.OrderedDict[int, tuple] = collections.OrderedDict()
        self.runtime: dict[str, float] = {}       # callable -> its recent runtime (s), for holding jobs
        self.dedicated: set[int] = set()          # task ids of dedicated jobs (see submit): never held
        self.closing = False
        self._pump_soon = False
        self._sweeping = False  # a check for long-running jobs that hold others is due (_sweep)

    async def start(self) -> None:
        workers = [WorkerProcess(self) for _ in range(self.size)]
        await asyncio.gather(*(w.start() for w in workers))
        await asyncio.gather(*(w.ready for w in workers))
        self.workers.extend(workers)

    def submit(self, job: tuple, dedicated: bool = False) -> bool:
        """Queue a job ("run", task_id, …). Returns True when it started at once.

        `dedicated`: the job must not wait for a busy worker (it may wait on other running jobs, as
        the parties of a FATE job wait on each other): when none is idle, an extra worker is started,
        and the pool shrinks back to its size as workers become idle. It is never held behind another.
        """
        self.waiting[job[1]] = job
        if dedicated:
            self.dedicated.add(job[1])
        if not any(not w.jobs for w in self.workers):
            if dedicated:
                spawn(self._replace(), "worker replacement")
            else:
                self._pump_later()  # every worker is busy: fill held slots once per loop turn, in one write each
            return False
        self._pump()
        return job[1] in self.busy

    def _pump_later(self) -> None:
        if not self._pump_soon:
            self._pump_soon = True
            asyncio.get_running_loop().call_soon(self._pump)

    def _short(self, job: tuple) -> bool:
        """Whether `job` may wait inside a worker: a callable seen to be short, never a dedicated job."""
        return self.runtime.get(job[5], SHORT_SECONDS) < SHORT_SECONDS and job[1] not in self.dedicated

    def held_limit(self, job: tuple) -> int:
        """How many jobs like `job` (a short one) a busy worker may hold: about HOLD_SECONDS of them."""
        return _held_limit(self.runtime[job[5]])

    def spare(self, target: str) -> int:
        """How many more jobs of callable `target` the pool would hold now beyond those it has (0
        unless `target` is seen to be short). The node takes that many tasks beyond its slots
        (LocalNode.holds): with only as many jobs as slots, each end frees one slot, which places one
        task, and a worker is topped up a job or two per write instead of many."""
        seconds = self.runtime.get(target)
        if seconds is None or seconds >= SHORT_SECONDS or self.closing:
            return 0
        limit = _held_limit(seconds)
        room = -len(self.waiting)
        for w in self.workers:
            if not w.retired and not w.jobs:
                room += 1 + limit
            elif self._runs_short(w):
                room += max(0, limit - (len(w.jobs) - 1))
        return room

    def _runs_short(self, w: WorkerProcess) -> bool:
        """Whether `w` is busy with a short job, so short jobs may wait behind it. What it already
        holds was short when held (and is released if the running job turns out long), so the
        running job is the one to check."""
        return not w.retired and bool(w.jobs) and self._short(next(iter(w.jobs.values())))

    def _pump(self) -> None:
        """Idle workers take one job each; then workers running only short jobs are topped up with
        short jobs. Each worker's new jobs go in one write."""
        self._pump_soon = False
        if not self.waiting:
            return
        sent: dict[WorkerProcess, list[tuple]] = {}
        starting = []
        for w in self.workers:
            if not self.waiting:
                break
            if not w.jobs and not w.retired:
                task_id, job = self.waiting.popitem(last=False)
                sent[w] = [job]
                self._hold(w, job)
                starting.append(w)
        while self.waiting:
            job = next(iter(self.waiting.values()))
            if not self._short(job):
                break  # FIFO: what follows waits with it for a free worker
            limit = self.held_limit(job)
            room = [w for w in self.workers if len(w.jobs) - 1 < limit and self._runs_short(w)]
            if not room:
                break
            w = min(room, key=lambda x: len(x.jobs))
            if len(w.jobs) - 1 > limit // 2 and w not in sent:
                break  # refilled when half empty: one write per many jobs, not per job
            del self.waiting[job[1]]
            sent.setdefault(w, []).append(job)
            self._hold(w, job)
        if not self._sweeping and any(len(w.jobs) > 1 for w in sent):
            self._sweeping = True
            asyncio.get_running_loop().call_later(RELEASE_SECONDS / 2, self._sweep)
        for w, jobs in sent.items():
            w.write(b"".join(frame(j) for j in jobs))
            if stages.ON:
                for j in jobs:
                    stages.mark(j[1], "dispatched")
        for w in starting:  # after the writes: what on_start sets off may submit (and pump) again
            if w.jobs and w.started != next(iter(w.jobs)):
                self._started(w)

    def _hold(self, w: WorkerProcess, job: tuple) -> None:
        w.jobs[job[1]] = job
        self.busy[job[1]] = w

    def _started(self, w: WorkerProcess) -> None:
        """`w`'s first job runs now (it runs its jobs in order, each after the last one's end)."""
        w.killed_for = ""
        w.head_since = time.monotonic()
        w.releasing = False
        w.started = next(iter(w.jobs))
        self.on_start(w.started, w.pid)

    def cancel(self, task_id: int) -> str:
        """'dropped' if it had not started (waiting here or held by a worker), 'told' if running, '' if unknown."""
        if self.waiting.pop(task_id, None) is not None:
            self.dedicated.discard(task_id)
            return "dropped"
        w = self.busy.get(task_id)
        if w is None:
            return ""
        if next(iter(w.jobs)) != task_id:  # held, not started: the worker skips it
            del w.jobs[task_id]
            del self.busy[task_id]
            self.dedicated.discard(task_id)
            w.send(("drop", task_id))
            return "dropped"
        w.send(("cancel", task_id))
        return "told"

    def kill(self, task_id: int, why: str) -> None:
        w = self.busy.get(task_id)
        if w is not None and next(iter(w.jobs)) == task_id:
            w.kill(why)

    def finished(self, w: WorkerProcess, task_id: int, outcome: str, error: str, result: str | None,
                 seconds: float | None) -> None:
        """`w` ended `task_id`, whose call took `seconds` (the worker's own clock: what a job held
        behind it waits, whatever the load on the pipe and this loop)."""
        job = w.jobs.pop(task_id, None)
        if job is None:
            return  # dropped (cancel) while the worker was already running it: the run was told it ended
        if self.busy.get(task_id) is w:
            del self.busy[task_id]
        self.dedicated.discard(task_id)
        if seconds is not None:  # None: cancelled before it started
            self._learn(job[5], seconds)
        if w.killed_for:  # a kill raced with the task's own end: our decision stands
            outcome = w.killed_for
            self._take_back(w)  # and the worker is on its way out
            if w in self.workers:
                self.workers.remove(w)
        if not w.jobs and len(self.workers) > self.size and not self.waiting and w in self.workers:
            w.retired = True   # an extra worker (see submit): the pool goes back to its size
            self.workers.remove(w)
            w.proc.stdin.close()
        self.on_done(task_id, outcome, error, result)
        if w.jobs and w.started != next(iter(w.jobs)):
            self._started(w)
        if self.waiting:
            if w.jobs:
                self._pump_later()
            else:
                self._pump()

    def _sweep(self) -> None:
        """Workers whose job runs past RELEASE_SECONDS are asked for what they hold behind it."""
        self._sweeping = False
        now = time.monotonic()
        holding = False
        for w in self.workers:
            if len(w.jobs) < 2:
                continue
            holding = True
            if not w.releasing and now - w.head_since > RELEASE_SECONDS:
                w.releasing = True
                running, *held = w.jobs
                self._learn(w.jobs[running][5], now - w.head_since)  # it is not short: hold nothing behind it
                w.send(("release", running, held))
        if holding and not self.closing:
            self._sweeping = True
            asyncio.get_running_loop().call_later(RELEASE_SECONDS / 2, self._sweep)

    def released(self, w: WorkerProcess, task_ids: list[int]) -> None:
        """`w` skipped these held jobs (never started them)."""
        back = [(t, w.jobs.pop(t)) for t in task_ids if t in w.jobs and t != w.started]
        self._to_front(w, back)
        if back:
            self._pump()

    def _take_back(self, w: WorkerProcess) -> None:
        """What `w` held and never started (it is on its way out)."""
        back = list(w.jobs.items())
        w.jobs.clear()
        self._to_front(w, back)

    def _to_front(self, w: WorkerProcess, back: list[tuple[int, tuple]]) -> None:
        """Jobs `w` gave back go to the front of the line, in their order."""
        for task_id, job in reversed(back):
            if self.busy.get(task_id) is w:
                del self.busy[task_id]
            self.waiting[task_id] = job
            self.waiting.move_to_end(task_id, last=False)

    def _learn(self, target: str, seconds: float) -> None:
        if len(self.runtime) >= KNOWN_CALLABLES and target not in self.runtime:
            self.runtime.clear()
        before = self.runtime.get(target)
        # One long run makes a callable long at once; it must end short a few times to be held again.
        self.runtime[target] = seconds if before is None or seconds > before else 0.7 * before + 0.3 * seconds

    def died(self, w: WorkerProcess, code: int) -> None:
        if w in self.workers:
            self.workers.remove(w)
        if w.jobs:
            task_id = next(iter(w.jobs))
            del w.jobs[task_id]
            if self.busy.get(task_id) is w:
                del self.busy[task_id]
            self.dedicated.discard(task_id)
            self._take_back(w)
            why = w.killed_for or "failed"
            error = {"cancelled": "cancelled; killed after the grace period",
                     "timeout": "timed out"}.get(why, f"the Python worker process died (exit status {code})")
            self.on_done(task_id, why, error, None)
        if not self.closing and not w.retired:
            spawn(self._replace(), "worker replacement")
        if self.waiting and not self.closing:
            self._pump()

    async def _replace(self) -> None:
        w = WorkerProcess(self)
        await w.start()
        if await w.ready:
            self.workers.append(w)
            self._pump()

    async def close(self) -> None:
        self.closing = True
        for w in list(self.workers):
            if w.proc and w.proc.returncode is None:
                w.proc.kill()
        for w in list(self.workers):
            if w.proc:
                await w.proc.wait()
