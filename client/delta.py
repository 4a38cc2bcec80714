"""The Delta Node face (seed 000): task classes that .build(), and DeltaNode.

    class Count(PythonTask):
        def __init__(self, n=3):
            self.n = n
        def run(self, ctx):
            for i in range(self.n):
                ctx.log(f"step {i}")
            return self.n

    node = DeltaNode("127.0.0.1:50051")
    task_id = node.create_task(Count(5).build())
    node.trace(task_id)          # prints "YYYY-MM-DD HH:MM:SS  message" lines, True on success

A PythonTask's instance attributes are its input: the worker restores them onto a new
instance (without calling __init__) and calls run(). Its module must be importable by
the server's workers and allowed by --allow-module.
"""
from __future__ import annotations

import json
import sys
import time
from typing import Iterable

from taskhub.v1 import task_pb2 as pb

from .client import TERMINAL, TaskhubClient, make_spec


class Task:
    """Base of task classes. Subclasses set `name`, `namespace`, `priority`, `timeout`, `max_retries` as needed."""

    name: str = ""
    namespace: str = ""
    priority: int = 0
    timeout: float = 0
    max_retries: int = 0

    def _options(self) -> dict:
        return dict(name=self.name or type(self).__name__, namespace=self.namespace, priority=self.priority,
                    timeout=self.timeout, max_retries=self.max_retries)

    def build(self) -> pb.TaskSpec:
        raise NotImplementedError


class PythonTask(Task):
    """Override run(self[, ctx]); its return value becomes the task's result."""

    def run(self, ctx):  # pragma: no cover - runs in a worker
        raise NotImplementedError

    def build(self) -> pb.TaskSpec:
        cls = type(self)
        module = cls.__module__
        if module == "__main__":
            raise ValueError(f"{cls.__name__} is defined in __main__; move it into an importable module "
                             "so the server's workers can import it")
        state = {k: v for k, v in vars(self).items() if not k.startswith("_")}
        try:
            json.dumps(state)
        except TypeError as e:
            raise ValueError(f"{cls.__name__}'s attributes must be JSON values to travel with the task: {e}") from None
        return make_spec(callable=f"{module}:{cls.__qualname__}", input=state, **self._options())


class CommandTask(Task):
    """Set `argv` (class or instance attribute), or override command()."""

    argv: Iterable[str] = ()
    env: dict | None = None

    def command(self) -> list[str]:
        return list(self.argv)

    def build(self) -> pb.TaskSpec:
        return make_spec(argv=self.command(), env=self.env, **self._options())


class DeltaNode:
    def __init__(self, target: str, namespace: str = "*"):
        self.client = TaskhubClient(target, namespace=namespace)

    def create_task(self, task: pb.TaskSpec | Task) -> int:
        spec = task.build() if isinstance(task, Task) else task
        if not spec.namespace:
            spec.namespace = "default"
        return self.client.create_task(spec).id

    def trace(self, task_id: int, out=None) -> bool:
        """Print the task's log until it ends; True when it succeeded."""
        out = out or sys.stdout
        status = 0
        for batch in self.client.trace_batches(task_id):
            for line in batch.lines:
                stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(line.time_ms / 1000))
                out.write(f"{stamp}  {line.text}\n")
            out.flush()
            if batch.end:
                status = batch.status
        if status not in TERMINAL:
            status = self.client.get_task(task_id).status
        return status == pb.TASK_STATUS_SUCCESS

    def wait(self, task_id: int) -> bool:
        """Block until the task ends; True when it succeeded."""
        return self.client.wait(task_id).status == pb.TASK_STATUS_SUCCESS
