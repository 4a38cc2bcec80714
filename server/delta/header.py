"""Reads the header of an uploaded Delta task (name, datasets, client counts) without loading it.

The server calls `read_header_isolated`, which does the reading below in a short-lived
subprocess (`python -m server.delta.header`, like DescribeModule's), so not even this inert
walk of the upload happens in the server process.

An upload is delta.serialize.dump_task's output: a cloudpickle of a `delta.core.task.Task`. Loading
it would run code, so the server never does. This reader walks the pickle with every global
replaced by an inert placeholder: no name is imported, nothing in the upload is called, and
only plain values (str, int, float, list, dict) are read back. The task itself is loaded only
in the workers that run it (server/delta/runtime.py).
"""
from __future__ import annotations

import asyncio
import io
import json
import pickle
import sys
from dataclasses import dataclass

from .. import errors

TASK_CLASS = ("delta.core.task", "Task")
KINDS = {"analytics": "analytics"}  # any other strategy name is a learning task


def _absorb(target, state) -> None:
    if isinstance(state, tuple) and len(state) == 2:  # (dict state, slot state)
        state = {**(state[0] or {}), **(state[1] or {})}
    if isinstance(state, dict):
        target._state = {**getattr(target, "_state", {}), **state}


def _ignore(*args) -> None:
    pass


class _InertType(type):
    """Placeholder classes. Calling one gives another placeholder class, as cloudpickle's class
    skeletons are then instantiated (NEWOBJ needs a type); the properties below are data
    descriptors, so they win over the instance methods of _Inert when the pickle acts on a class."""

    def __call__(cls, *args, **kwargs):
        return _InertType("inert", (_Inert,), {"origin": ("", "")})

    @property
    def __setstate__(cls):
        return lambda state: _absorb(cls, state)

    @property
    def append(cls):
        return _ignore

    extend = __setitem__ = append


class _Inert(metaclass=_InertType):
    """Stands for any object of the upload; keeps only the state the pickle gives it."""
    origin: tuple[str, str] = ("", "")

    def __new__(cls, *args, **kwargs):
        return object.__new__(cls)

    def __setstate__(self, state):
        _absorb(self, state)

    def append(self, item):
        pass

    def extend(self, items):
        pass

    def __setitem__(self, key, value):
        pass


def _state(obj) -> dict:
    return getattr(obj, "_state", {}) if isinstance(obj, (_Inert, _InertType)) else {}


class _Reader(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        return _InertType(name, (_Inert,), {"origin": (module, name)})

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("persistent ids are not allowed")


@dataclass
class DeltaHeader:
    name: str
    datasets: list[str]
    kind: str                 # "analytics" or "learning"
    min_clients: int
    max_clients: int
    wait_timeout: float


def _number(value, what: str, low: float) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value < low:
        raise errors.InvalidArgument(f"the Delta task's {what} must be a number >= {low:g}, not {value!r}")
    return value


def read_header(data: bytes) -> DeltaHeader:
    if not data:
        raise errors.InvalidArgument("the uploaded task file is empty")
    try:
        task = _Reader(io.BytesIO(data)).load()
    except Exception as e:  # any malformed stream: the reader itself runs nothing of the upload
        raise errors.InvalidArgument(f"the uploaded file is not a Delta task (delta.serialize.dump_task): {e}") \
            from None
    if not isinstance(task, _Inert) or task.origin != TASK_CLASS:
        raise errors.InvalidArgument("the uploaded file is not a Delta task: it holds no delta.core.task.Task "
                                     "(build it with YourTask().build())")
    state = _state(task)
    name, datasets, strategy = state.get("name"), state.get("dataset"), _state(state.get("strategy"))
    if not isinstance(name, str) or not isinstance(datasets, list) or not strategy:
        raise errors.InvalidArgument("the uploaded Delta task lacks its name, dataset list or strategy")
    for d in datasets:
        if not isinstance(d, str) or not d or "/" in d or "\\" in d or d.startswith("."):
            raise errors.InvalidArgument(f"dataset {d!r}: a Delta dataset is a file or directory name in the "
                                         "nodes' data directory (no path)")
    counts = _state(strategy.get("select_strategy"))
    low = int(_number(counts.get("min_clients"), "min_clients", 1))
    high = int(_number(counts.get("max_clients"), "max_clients", low))
    wait = float(_number(strategy.get("wait_timeout", 60), "wait_timeout", 0))
    kind = KINDS.get(strategy.get("name"), "learning")
    return DeltaHeader(name=name, datasets=list(dict.fromkeys(datasets)), kind=kind, min_clients=low,
                       max_clients=high, wait_timeout=wait)


READ_TIMEOUT = 20.0


async def read_header_isolated(data: bytes) -> DeltaHeader:
    """read_header, run in a subprocess that is killed if it takes longer than READ_TIMEOUT."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "server.delta.header", stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
    try:
        out, _ = await asyncio.wait_for(proc.communicate(data), READ_TIMEOUT)
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()
        raise errors.InvalidArgument(f"reading the uploaded Delta task took longer than {READ_TIMEOUT:g}s") from None
    try:
        answer = json.loads(out)
    except ValueError:
        raise errors.InvalidArgument("the uploaded file could not be read as a Delta task") from None
    if "error" in answer:
        raise errors.InvalidArgument(answer["error"])
    return DeltaHeader(**answer)


def _main() -> None:
    try:
        header = read_header(sys.stdin.buffer.read())
        print(json.dumps(header.__dict__))
    except errors.TaskhubError as e:
        print(json.dumps({"error": str(e)}))


if __name__ == "__main__":
    _main()
