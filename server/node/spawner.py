"""Command tasks run from a small spawner process, not from the server itself.

Why: on CPython 3.11 fork/exec holds the GIL while the parent waits for the child's exec,
so spawning from the server's event loop serialises every spawn with every RPC. The spawner
has its own interpreter: it starts commands, reads their pipes, reaps them, enforces
timeouts and kill grace, and sends events back in batches (one write per loop turn).

Protocol (framed pickles, see wire.py). To the spawner:
    ("start", task_id, argv, env, cwd, timeout)   ("stop", task_id, why, grace)   ("close", grace)
From the spawner, a list of events per frame:
    ("running", task_id, pid)  ("logs", task_id, [(stream, text)…])  ("exit", task_id, kind, code, error, result)
"""
from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys

import psutil

from .task_user import TaskUser, clean_env
from .wire import HEADER, die_with_parent, frame, unframe

STDOUT, STDERR, SYSTEM = 1, 2, 3
# Set in every command's environment: lets a restarted server find processes it started earlier.
INSTANCE_ENV = "TASKHUB_INSTANCE"
# Set in a command's environment when it keeps running past its agent's lease (fence.py skips it).
KEEP_ENV = "TASKHUB_KEEP_ON_DISCONNECT"
READ_CHUNK = 1 << 16


class _Command:
    """One running subprocess, read without threads: its pipes and a pidfd on the event loop."""

    def __init__(self, sp: "Spawner", task_id: int, pid: int, out_fd: int, err_fd: int, timeout: float):
        self.sp, self.task_id, self.pid, self.timeout = sp, task_id, pid, timeout
        self.fds = {STDOUT: out_fd, STDERR: err_fd}
        self.partial = {STDOUT: b"", STDERR: b""}
        self.last_stdout = ""
        self.exit_code: int | None = None
        self.killed_for = ""
        loop = sp.loop
        for stream, fd in self.fds.items():
            os.set_blocking(fd, False)
            loop.add_reader(fd, self._readable, stream)
        self.pidfd = os.pidfd_open(pid)
        loop.add_reader(self.pidfd, self._exited)
        self.timer = loop.call_later(timeout, self.stop, "timeout", 0.0) if timeout > 0 else None

    def _readable(self, stream: int) -> None:
        fd = self.fds[stream]
        try:
            data = os.read(fd, READ_CHUNK)
        except BlockingIOError:
            return
        if data:
            *lines, self.partial[stream] = (self.partial[stream] + data).split(b"\n")
            if lines:
                self._emit_lines(stream, [b.decode("utf-8", "replace") for b in lines])
            return
        if self.partial[stream]:
            self._emit_lines(stream, [self.partial[stream].decode("utf-8", "replace")])
        self._close(stream)
        self._maybe_done()

    def _close(self, stream: int) -> None:
        fd = self.fds.pop(stream, None)
        if fd is not None:
            self.sp.loop.remove_reader(fd)
            os.close(fd)

    def _emit_lines(self, stream: int, texts: list[str]) -> None:
        if stream == STDOUT:
            self.last_stdout = texts[-1]
        self.sp.emit(("logs", self.task_id, [(stream, t) for t in texts]))

    def _exited(self) -> None:
        self.sp.loop.remove_reader(self.pidfd)
        os.close(self.pidfd)
        self.exit_code = os.waitstatus_to_exitcode(os.waitpid(self.pid, 0)[1])
        self._maybe_done()

    def _maybe_done(self) -> None:
        # Done when the process is gone and both pipes are closed; after a kill, a grandchild
        # still holding the pipes open does not keep the task alive.
        if self.exit_code is None or (self.fds and not self.killed_for):
            return
        for stream in list(self.fds):
            self._close(stream)
        if self.timer:
            self.timer.cancel()
        code = self.exit_code
        if self.killed_for == "timeout":
            ev = ("exit", self.task_id, "timeout", code, f"timed out after {self.timeout:g}s", None)
        elif self.killed_for:
            ev = ("exit", self.task_id, self.killed_for, code, "cancelled", None)
        elif code == 0:
            ev = ("exit", self.task_id, "success", 0, "", self.last_stdout)
        elif code < 0:
            ev = ("exit", self.task_id, "failed", code, f"killed by signal {signal.Signals(-code).name}", None)
        else:
            ev = ("exit", self.task_id, "failed", code, f"exited with status {code}", None)
        del self.sp.commands[self.task_id]
        self.sp.emit(ev)

    def stop(self, why: str, grace: float) -> None:
        if not self.killed_for:
            self.killed_for = why
        if grace > 0:
            self.signal(signal.SIGTERM)
            self.sp.loop.call_later(grace, self._force)
        else:
            self.signal(signal.SIGKILL)

    def _force(self) -> None:
        if self.sp.commands.get(self.task_id) is self:
            self.signal(signal.SIGKILL)

    def signal(self, sig: int) -> None:
        try:
            os.killpg(self.pid, sig)  # its own session: the whole process group
        except (ProcessLookupError, PermissionError):
            pass


class Spawner:
    """The spawner process's main object."""

    def __init__(self, instance: str, work_dir: str):
        self.loop = asyncio.new_event_loop()
        self.commands: dict[int, _Command] = {}
        self.out = os.fdopen(os.dup(1), "wb", buffering=0)
        self._events: list[tuple] = []
        self._env = {**os.environ, INSTANCE_ENV: instance}
        self._env.pop("TASKHUB_SPAWNER_INSTANCE", None)
        self.work_dir = os.path.abspath(work_dir)
        os.chdir(self.work_dir)  # commands without a cwd of their own start here

    def emit(self, event: tuple) -> None:
        if not self._events:
            self.loop.call_soon(self._flush)
        self._events.append(event)

    def _flush(self) -> None:
        events, self._events = self._events, []
        if events:
            self.out.write(frame(events))

    def start(self, task_id: int, argv: list[str], env: dict, cwd: str, timeout: float) -> None:
        full_env = {**self._env, **env, "TASKHUB_TASK_ID": str(task_id)} if env else \
            {**self._env, "TASKHUB_TASK_ID": str(task_id)}
        try:
            pid, out_fd, err_fd = self._spawn(argv, full_env, cwd)
        except (OSError, ValueError, subprocess.SubprocessError) as e:
            self.emit(("logs", task_id, [(SYSTEM, f"cannot start {argv[0]!r}: {e}")]))
            self.emit(("exit", task_id, "failed", 127, f"cannot start: {e}", None))
            return
        self.commands[task_id] = _Command(self, task_id, pid, out_fd, err_fd, timeout)
        self.emit(("running", task_id, pid))

    def _spawn(self, argv: list[str], env: dict, cwd: str) -> tuple[int, int, int]:
        """(pid, stdout fd, stderr fd) of a new process in its own session, stdin from /dev/null."""
        if cwd and os.path.abspath(cwd) != self.work_dir:
            # posix_spawn cannot change directory on this Python: the slower, general path.
            p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 env=env, cwd=cwd, start_new_session=True)
            out_fd, err_fd = os.dup(p.stdout.fileno()), os.dup(p.stderr.fileno())
            p.stdout.close()
            p.stderr.close()
            p.returncode = 0  # reaped by _Command, not by Popen's finaliser
            return p.pid, out_fd, err_fd
        program = argv[0] if "/" in argv[0] else shutil.which(argv[0], path=env.get("PATH"))
        if program is None:
            raise FileNotFoundError(2, f"No such file or directory: {argv[0]!r}")
        out_r, out_w = os.pipe()  # close-on-exec, like every other fd of this process
        err_r, err_w = os.pipe()
        try:
            pid = os.posix_spawn(program, argv, env, setsid=True, file_actions=[
                (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                (os.POSIX_SPAWN_DUP2, out_w, 1),
                (os.POSIX_SPAWN_DUP2, err_w, 2),
            ])
        except BaseException:
            os.close(out_r)
            os.close(err_r)
            raise
        finally:
            os.close(out_w)
            os.close(err_w)
        return pid, out_r, err_r

    def stop(self, task_id: int, why: str, grace: float) -> None:
        cmd = self.commands.get(task_id)
        if cmd is not None:
            cmd.stop(why, grace)

    async def close(self, grace: float) -> None:
        for cmd in list(self.commands.values()):
            cmd.signal(signal.SIGTERM)
        deadline = self.loop.time() + grace
        while self.commands and self.loop.time() < deadline:
            await asyncio.sleep(0.02)
        for cmd in list(self.commands.values()):
            cmd.signal(signal.SIGKILL)
        while self.commands and self.loop.time() < deadline + 5:
            await asyncio.sleep(0.02)
        self._flush()

    async def serve(self) -> None:
        reader = asyncio.StreamReader(limit=1 << 24)
        await self.loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(0, "rb", 0))
        while True:
            try:
                head = await reader.readexactly(HEADER.size)
                msg = unframe(await reader.readexactly(HEADER.unpack(head)[0]))
            except asyncio.IncompleteReadError:
                await self.close(0.0)  # the server is gone: nothing of ours may outlive it
                return
            kind = msg[0]
            if kind == "start":
                self.start(*msg[1:])
            elif kind == "stop":
                self.stop(*msg[1:])
            elif kind == "close":
                await self.close(msg[1])
                return


class SpawnerClient:
    """The server side: starts the spawner and turns its events into NodeEvents calls."""

    def __init__(self, instance: str, work_dir: str, on_running, on_log, on_exit):
        self.instance, self.work_dir = instance, work_dir
        self.as_user: TaskUser | None = None  # the spawner, so every command, runs as this user
        self.on_running, self.on_log, self.on_exit = on_running, on_log, on_exit
        self.proc: asyncio.subprocess.Process | None = None
        self._reader_task: asyncio.Task | None = None

    async def start(self) -> None:
        env = {**clean_env(dict(os.environ)), "TASKHUB_SPAWNER_INSTANCE": self.instance}
        argv = [sys.executable, "-m", "server.node.spawner", self.instance, self.work_dir]
        if self.as_user is not None:
            argv = self.as_user.command(argv)
        self.proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, env=env, limit=1 << 24,
            cwd=self.work_dir if self.as_user else None)
        self._reader_task = asyncio.get_running_loop().create_task(self._read())

    def send(self, msg: tuple) -> None:
        if self.proc.stdin.is_closing():  # dead: _read sees EOF (uvloop raises on a closed pipe)
            return
        self.proc.stdin.write(frame(msg))

    async def _read(self) -> None:
        reader = self.proc.stdout
        try:
            while True:
                head = await reader.readexactly(HEADER.size)
                for ev in unframe(await reader.readexactly(HEADER.unpack(head)[0])):
                    kind = ev[0]
                    if kind == "logs":
                        self.on_log(ev[1], ev[2])
                    elif kind == "running":
                        self.on_running(ev[1], ev[2], self.proc.pid)
                    elif kind == "exit":
                        self.on_exit(*ev[1:])
        except (asyncio.IncompleteReadError, ConnectionResetError):
            pass

    async def close(self, grace: float) -> None:
        if self.proc and self.proc.returncode is None:
            try:
                self.send(("close", grace))
                await self.proc.stdin.drain()
            except (BrokenPipeError, ConnectionResetError):
                pass
            try:
                await asyncio.wait_for(self.proc.wait(), grace + 10)
            except asyncio.TimeoutError:
                self.proc.kill()
        if self._reader_task:
            await asyncio.wait([self._reader_task], timeout=5)


def kill_orphans(instance: str) -> int:
    """Kill process groups a previous run of this server started (found by their env marker)."""
    marker = f"{INSTANCE_ENV}={instance}"
    killed = 0
    for p in psutil.process_iter(["pid"]):
        try:
            if p.pid == os.getpid():
                continue
            with open(f"/proc/{p.pid}/environ", "rb") as f:
                if marker.encode() not in f.read().split(b"\0"):
                    continue
            os.killpg(os.getpgid(p.pid), signal.SIGKILL)
            killed += 1
        except (OSError, psutil.Error):
            continue
    return killed


def main() -> None:
    die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # Ctrl-C belongs to the server
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the server says "close" when it is time
    sp = Spawner(sys.argv[1], sys.argv[2])
    asyncio.set_event_loop(sp.loop)
    sp.loop.run_until_complete(sp.serve())


if __name__ == "__main__":
    main()
