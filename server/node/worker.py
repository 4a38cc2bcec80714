"""A warm Python worker: runs `module:function` tasks one after another.

Started by `PythonPool` as `python -m server.node.worker`. Speaks framed pickles:
stdin carries ("run", …), ("cancel", task_id), ("drop", task_id) and ("release", running, [ids]);
the original stdout carries events. Jobs run one after another in the order they came; the pool
may send some ahead (held jobs, see SHORT_SECONDS in pool.py): a "drop" removes one before it
starts, a "cancel" ends it as it would start, a "release" hands unstarted ones back.
The main thread reads the pipe between jobs, so a job wakes one thread (not a reader that then
wakes another); a job that runs past READER_AFTER lends it to a reader thread (its cancel, a release).
Whatever the task prints (through sys.stdout/stderr or straight to fds 1 and 2) becomes
log lines of the task. The worker dies with its parent (PR_SET_PDEATHSIG), so a killed
server never leaves a task running behind its back.
"""
from __future__ import annotations

import collections
import importlib
import inspect
import io
import json
import os
import select
import signal
import sys
import threading
import time
import traceback

from client.context import Cancelled, TaskContext, set_current
from server import stages
from server.node.run_env import RunEnv
from server.node.wire import HEADER, die_with_parent, frame, unframe

FLUSH_INTERVAL = 0.01
FLUSH_LINES = 2000
READER_AFTER = 0.01  # a job running this long lends the pipe to the reader thread; shorter ones wake no thread


class Worker:
    def __init__(self) -> None:
        self.out = os.fdopen(os.dup(1), "wb", buffering=0)
        self.out_lock = threading.Lock()
        self.log_lock = threading.Lock()
        self.pending: list[tuple[int, str]] = []
        self.task_id = 0
        self.ctx: TaskContext | None = None
        self.jobs: collections.deque = collections.deque()
        self.queued: set[int] = set()          # ids of the jobs in `jobs`
        self.skip: dict[int, str] = {}         # queued id -> "drop" (say nothing) or "cancel" (end it as cancelled)
        self.job_lock = threading.Lock()       # queued, skip and ctx change together
        self._partial = {1: "", 2: ""}
        self._sigs: dict = {}
        self.env = RunEnv()  # each run's environment, set and taken back without leaking (run_env.py)
        self.pipe = 0                          # stdin: the node's messages
        self._inbox = bytearray()              # what was read of them and not yet handled
        self._pipe_poll = select.poll()
        self._pipe_poll.register(self.pipe, select.POLLIN)
        self.pipe_lock = threading.Lock()      # held by the thread that reads the pipe
        self.job_started = 0.0                 # monotonic start of the running job (0: none)
        self.lent = threading.Event()          # the pipe is lent to the reader thread
        self._wake_r, self._wake_w = os.pipe()  # asks the reader thread to give it back

    # -- output --------------------------------------------------------------
    def emit(self, msg: tuple) -> None:
        data = frame(msg)
        with self.out_lock:
            self.out.write(data)

    def write_text(self, stream: int, text: str) -> None:
        with self.log_lock:
            text = self._partial[stream] + text
            *lines, self._partial[stream] = text.split("\n")
            if lines:
                self.pending.extend((stream, line) for line in lines)
                if len(self.pending) >= FLUSH_LINES:
                    self._flush_locked()

    def flush(self, final: bool = False) -> None:
        with self.log_lock:
            if final:
                for stream in (1, 2):
                    if self._partial[stream]:
                        self.pending.append((stream, self._partial[stream]))
                        self._partial[stream] = ""
            self._flush_locked()

    def _flush_locked(self) -> None:
        if self.pending and self.task_id:
            lines, self.pending = self.pending, []
            self.emit(("logs", self.task_id, lines))
        else:
            self.pending = []

    def _flusher(self) -> None:
        while True:
            time.sleep(FLUSH_INTERVAL)
            if self.pending:
                self.flush()
            started = self.job_started
            if started and time.monotonic() - started >= READER_AFTER and not self.lent.is_set():
                self.lent.set()

    def _fd_pump(self, stream: int, fd: int) -> None:
        """Bytes written straight to fd 1 or 2 (by C code or child processes) become lines too."""
        while True:
            data = os.read(fd, 65536)
            if not data:
                return
            self.write_text(stream, data.decode("utf-8", "replace"))

    # -- input ---------------------------------------------------------------
    def _read(self, wait: bool) -> None:
        """Handles every whole message the pipe holds; `wait`: for some bytes if it holds none."""
        if wait or self._pipe_poll.poll(0):
            data = os.read(self.pipe, 1 << 16)
            if not data:
                os._exit(0)  # the node went away
            self._inbox += data
        buf, at = self._inbox, 0
        while len(buf) - at >= HEADER.size:
            end = at + HEADER.size + HEADER.unpack_from(buf, at)[0]
            if end > len(buf):
                break
            self._handle(unframe(buf[at + HEADER.size:end]))
            at = end
        del buf[:at]

    def _handle(self, msg: tuple) -> None:
        with self.job_lock:
            if msg[0] == "run":
                self.queued.add(msg[1])
                self.jobs.append(msg)
                return
            if msg[0] == "release":
                self._release(*msg[1:])
                return
            ctx = self.ctx
            if ctx is not None and ctx.task_id == msg[1]:
                ctx._cancel.set()
            elif msg[1] in self.queued:
                self.skip[msg[1]] = msg[0]

    def _reader(self) -> None:
        """Reads the pipe while it is lent (a long job runs), until the main thread wants it back."""
        poller = select.poll()
        poller.register(self.pipe, select.POLLIN)
        poller.register(self._wake_r, select.POLLIN)
        while True:
            self.lent.wait()
            with self.pipe_lock:
                while self.lent.is_set():
                    if any(fd == self._wake_r for fd, _ in poller.poll()):
                        os.read(self._wake_r, 512)
                    else:
                        self._read(wait=True)

    def _release(self, running: int, held: list[int]) -> None:
        """The pool takes back jobs held behind `running`, which runs long: those not started
        are skipped and named in one "released" message. Said under job_lock while `running`
        still runs, so the message goes out before its "done" (run() clears ctx under the
        lock, then says "done"): the pool never takes a released job for started."""
        if self.ctx is None or self.ctx.task_id != running:
            return  # it has ended: what it held runs as sent
        released = [t for t in held if t in self.queued and t not in self.skip]
        for t in released:
            self.skip[t] = "drop"
        if released:
            self.emit(("released", released))

    # -- running -------------------------------------------------------------
    def serve(self) -> None:
        for stream in (1, 2):
            r, w = os.pipe()
            os.dup2(w, stream)
            os.close(w)
            threading.Thread(target=self._fd_pump, args=(stream, r), daemon=True).start()
        sys.stdout = _Stream(self, 1)
        sys.stderr = _Stream(self, 2)
        threading.Thread(target=self._reader, daemon=True).start()
        threading.Thread(target=self._flusher, daemon=True).start()
        self.emit(("ready", os.getpid()))
        self.pipe_lock.acquire()
        while True:
            self._read(wait=False)  # all that came first (a drop of the next job)
            while not self.jobs:
                self.env.settle()  # nothing of the last run stays while the worker waits
                self._read(wait=True)
            self.pipe_lock.release()  # the reader thread may take it if the job runs long
            self.job_started = time.monotonic()
            self.run(self.jobs.popleft())
            self.job_started = 0.0
            if self.lent.is_set():
                self.lent.clear()
                os.write(self._wake_w, b"\0")
            self.pipe_lock.acquire()

    def run(self, job: tuple) -> None:
        _, task_id, uid, namespace, name, target, input_json, env = job
        got = stages.now() if stages.ON else 0.0
        with self.job_lock:
            self.queued.discard(task_id)
            skip = self.skip.pop(task_id, None)
            if skip is None:
                ctx = self.ctx = TaskContext(task_id, uid, namespace, name, self.emit)
        if skip == "cancel":
            self.emit(("done", task_id, "cancelled", "cancelled before it started", None, None))
        if skip is not None:
            return
        self.task_id = task_id
        set_current(ctx)
        undo_env = self.env.apply(env)
        kind, error, result = "success", "", None
        began = time.perf_counter()
        try:
            result = call(target, input_json, ctx)
        except Cancelled as e:
            kind, error = "cancelled", str(e)
        except SystemExit as e:
            if e.code not in (0, None):
                kind, error = "failed", f"SystemExit({e.code})"
        except BaseException as e:  # the task's own failure, reported, never fatal to the worker
            traceback.print_exc()
            kind, error = "failed", f"{type(e).__name__}: {e}"
        finally:
            seconds = time.perf_counter() - began
            jobs = self.jobs
            self.env.restore(undo_env, jobs[0][7] if jobs else None)
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except Exception:
            pass
        self.flush(final=True)
        if result is not None and not isinstance(result, str):
            try:
                result = json.dumps(result, separators=(",", ":"), default=str)
            except (TypeError, ValueError):
                result = repr(result)
        if stages.ON:
            self.emit(("stages", task_id, got, stages.now()))
        self.task_id = 0
        with self.job_lock:
            self.ctx = None
        set_current(None)
        self.emit(("done", task_id, kind, error, result, seconds))


class _Stream(io.TextIOBase):
    def __init__(self, worker: Worker, stream: int):
        self._w, self._s = worker, stream

    def write(self, s: str) -> int:
        self._w.write_text(self._s, s)
        return len(s)

    def writable(self) -> bool:
        return True


_targets: dict[str, tuple] = {}


def resolve(target: str):
    """'pkg.mod:func' or 'pkg.mod:Class' -> (callable, takes_ctx, is_class)."""
    hit = _targets.get(target)
    if hit is None:
        module_name, _, attr = target.partition(":")
        obj = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
        is_class = inspect.isclass(obj)
        fn = obj.run if is_class else obj
        try:
            takes_ctx = "ctx" in inspect.signature(fn).parameters
        except (TypeError, ValueError):
            takes_ctx = False
        hit = _targets[target] = (obj, takes_ctx, is_class)
    return hit


def call(target: str, input_json: str, ctx: TaskContext):
    obj, takes_ctx, is_class = resolve(target)
    data = json.loads(input_json) if input_json else None
    if is_class:  # a built task class (client.delta): its attributes restored, then run()
        instance = obj.__new__(obj)
        if isinstance(data, dict):
            instance.__dict__.update(data)
        return instance.run(ctx) if takes_ctx else instance.run()
    kwargs = {"ctx": ctx} if takes_ctx else {}
    if isinstance(data, dict):
        return obj(**data, **kwargs)
    if data is None:
        return obj(**kwargs)
    return obj(data, **kwargs)


if __name__ == "__main__":
    die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C on `taskhub serve` is the server's to handle
    Worker().serve()
