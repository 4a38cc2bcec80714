"""A lock a process holds for its whole life: an flock on a small file that names its holder.

Used where two processes must not share a thing: the SQLite database of a server
(server/db_target.py) and an agent's files in its work directory (server/node/workdir.py).
The kernel drops the lock when the holder exits, however it exits (SIGKILL included), so a
stale file never blocks a restart. The file's text (pid and host) is only for messages.
"""
from __future__ import annotations

import fcntl
import os
import socket


def try_hold(path: str) -> int | None:
    """The open, locked descriptor (keep it open for as long as the lock is needed), or None if
    another process holds it. The descriptor is close-on-exec: child processes never inherit it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
    return fd


def holder(path: str) -> str:
    """Who holds the lock at path, for a message: 'pid 123 on host box'."""
    try:
        with open(path) as f:
            pid, host = f.read().split()[:2]
        return f"pid {pid} on host {host}"
    except (OSError, ValueError):
        return "another process (it has not written its pid yet)"
