"""A run's environment in a warm Python worker: set for the task, taken back after it.

`os.environ[k] = v` calls libc setenv(), and glibc keeps every distinct "name=value" string it
was ever given, for good (a getenv() caller may still hold one). A value that differs per task
therefore leaks: with --auth every task has its own TASKHUB_TOKEN, and each worker grew by
110 bytes per task (measured: +4.3 MB per 40,000 tokens, never given back).

So each name a run sets gets one buffer of this module's, handed to libc putenv(), which puts
the buffer itself into `environ` (no copy); later values are written into the same buffer, a
larger one only when a value outgrows it. Buffers are never freed, so a pointer a task's
library kept from getenv() stays valid. Python's view (`os.environ`) is updated beside it
without a second setenv. A value the worker already has (the server's address, the data
directory: the same for every task) is left alone, which also spares two libc calls per name
and task. A name the next run sets again (the token, under --auth: runs follow back to back in a
busy worker) stays placed between the two runs, only its buffer rewritten by the next: it is taken
back when the worker has no run to go on with (`settle`), and no task code of the worker runs in
between but what the last run left behind, which saw that value while it ran. Where libc putenv
is not to be had, os.environ is used as before.
"""
from __future__ import annotations

import ctypes
import os


def _libc_environ_calls():
    try:
        libc = ctypes.CDLL(None)
        return libc.putenv, libc.unsetenv  # bytes and buffers pass as char *; int back
    except (OSError, AttributeError):
        return None


class RunEnv:
    def __init__(self) -> None:
        self.environ = os.environ
        self._data = getattr(os.environ, "_data", None)  # CPython's bytes -> bytes view (POSIX)
        self._calls = _libc_environ_calls() if self._data is not None else None
        self._keys: dict[str, bytes] = {}               # name -> its encoded form
        self._buffers: dict[bytes, ctypes.Array] = {}   # encoded name -> its buffer
        self._outgrown: list[ctypes.Array] = []         # buffers a longer value replaced (kept for good)
        self._placed: set[bytes] = set()                # names whose buffer is in libc's environ now
        self._carried: dict[bytes, tuple[str, bytes | None]] = {}  # left set for the next run: name, value before

    def apply(self, env: dict[str, str]) -> list[tuple[str, bytes, bytes | None, bytes]]:
        """Set `env`; returns what `restore` needs to put back."""
        if self._calls is None:
            return self._apply_plain(env)
        undo, data, encode, carried = [], self._data, self.environ.encodevalue, self._carried
        for name, value in env.items():
            key = self._keys.get(name) or self._key(name)
            ours = encode(value)
            now = data.get(key)
            before = carried[key][1] if carried and key in carried else now
            if now != ours:
                self._set(name, key, ours)
            if before != ours:
                undo.append((name, key, before, ours))
            if carried:
                carried.pop(key, None)  # now this run's, to put back after it
        if carried:
            self.settle()  # left for a run that sets them, and this one does not
        return undo

    def restore(self, undo: list, following: dict[str, str] | None = None) -> None:
        """Put back what `apply` set. `following`: the environment of the run that comes next; a
        name it sets again is left as it is until then (`settle` takes it back if no run comes)."""
        if self._calls is None:
            return self._restore_plain(undo)
        data = self._data
        for name, key, before, ours in reversed(undo):
            if data.get(key) != ours:
                self._placed.discard(key)  # the task set or removed it itself: libc holds its own copy
            elif following is not None and name in following and key in self._placed:
                self._carried[key] = (name, before)
                continue
            self._put_back(name, key, before)

    def settle(self) -> None:
        """Take back what the last run left set for a run that did not come."""
        while self._carried:
            key, (name, before) = self._carried.popitem()
            self._put_back(name, key, before)

    def _put_back(self, name: str, key: bytes, before: bytes | None) -> None:
        if before is None:
            self._unset(name, key)
        else:
            self._set(name, key, before)

    def _key(self, name: str) -> bytes:
        key = self.environ.encodekey(name)
        if not key or b"=" in key or b"\0" in key:
            raise ValueError(f"illegal environment variable name {name!r}")
        self._keys[name] = key
        return key

    def _set(self, name: str, key: bytes, value: bytes) -> None:
        if b"\0" in value:
            raise ValueError(f"the value of environment variable {name} holds a NUL byte")
        entry = key + b"=" + value
        buf = self._buffers.get(key)
        if buf is None or len(buf) <= len(entry):
            if buf is not None:
                self._outgrown.append(buf)
            buf = self._buffers[key] = ctypes.create_string_buffer(max(64, 2 * len(entry)))
            self._placed.discard(key)
        buf.value = entry  # NUL-terminated: the buffer is longer
        if key not in self._placed:
            if self._calls[0](buf) != 0:
                raise MemoryError(f"putenv({name}) failed")
            self._placed.add(key)
        self._data[key] = value  # Python's view, without a second (copying) setenv

    def _unset(self, name: str, key: bytes) -> None:
        if key in self._placed:
            self._calls[1](key)
            self._placed.discard(key)
            self._data.pop(key, None)
        else:
            self.environ.pop(name, None)

    # Without libc putenv (or CPython's POSIX os.environ): os.environ as before.
    def _apply_plain(self, env: dict[str, str]) -> list:
        undo = [(name, self.environ.get(name)) for name in env]
        self.environ.update(env)
        return undo

    def _restore_plain(self, undo: list) -> None:
        for name, before in reversed(undo):
            if before is None:
                self.environ.pop(name, None)
            else:
                self.environ[name] = before
