"""The Delta Node face (seed 000): task classes that .build(), and DeltaNode.

    class Count(PythonTask):
        def __init__(self, n=3):
            self.n = n
        def run(self, ctx):
            for i in range(self.n):
                ctx.log(f"step {i}")
            return self.n

    node = DeltaNode("127.0.0.1:50051")      # gRPC; or DeltaNode("http://127.0.0.1:8080"): the
    task_id = node.create_task(Count(5).build())
    node.trace(task_id)          # prints "YYYY-MM-DD HH:MM:SS  message" lines, True on success

With an http:// address DeltaNode speaks the Delta Node HTTP API that taskhub's gateway
serves (POST /v1/task with the built task as the multipart field `file`, written by
`dump_task`; then /v1/task/logs and /v1/task/metadata); with "host:port" it uses gRPC.

A PythonTask's instance attributes are its input: the worker restores them onto a new
instance (without calling __init__) and calls run(). Its module must be importable by
the server's workers and allowed by --allow-module.
"""
from __future__ import annotations

import base64
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from typing import Iterable

from taskhub.v1 import task_pb2 as pb

from .client import TaskhubClient, make_spec
from .servers import TERMINAL


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


def dump_task(spec: pb.TaskSpec) -> bytes:
    """A built task as the bytes POST /v1/task takes: the TaskSpec in protobuf binary form."""
    return spec.SerializeToString()


def load_task(data: bytes) -> pb.TaskSpec:
    return pb.TaskSpec.FromString(data)


def _stamp(time_ms: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(time_ms / 1000))


class DeltaError(RuntimeError):
    """The Delta Node HTTP API refused a request; the message is the server's."""


class DeltaNode:
    def __init__(self, target: str, namespace: str = "*"):
        self.http = _HttpNode(target) if target.startswith(("http://", "https://")) else None
        self.client = None if self.http else TaskhubClient(target, namespace=namespace)

    def create_task(self, task: pb.TaskSpec | Task) -> int:
        spec = task.build() if isinstance(task, Task) else task
        if not spec.namespace:
            spec.namespace = "default"
        if self.http:
            return self.http.create_task(spec)
        return self.client.create_task(spec).id

    def trace(self, task_id: int, out=None) -> bool:
        """Print the task's log until it ends; True when it succeeded."""
        out = out or sys.stdout
        if self.http:
            return self.http.trace(task_id, out)
        status = 0
        for batch in self.client.trace_batches(task_id):
            for line in batch.lines:
                out.write(f"{_stamp(line.time_ms)}  {line.text}\n")
            out.flush()
            if batch.end:
                status = batch.status
        if status not in TERMINAL:
            status = self.client.get_task(task_id).status
        return status == pb.TASK_STATUS_SUCCESS

    def wait(self, task_id: int) -> bool:
        """Block until the task ends; True when it succeeded."""
        if self.http:
            return self.http.wait(task_id)
        return self.client.wait(task_id).status == pb.TASK_STATUS_SUCCESS


class _HttpNode:
    """The Delta Node HTTP API, as the seed's SDK uses it: the log and the status are polled."""

    ENDED = ("FINISHED", "ERROR")
    PAGE = 1000

    def __init__(self, url: str, timeout: float = 60):
        # http://user:TOKEN@host:port: the credentials go as HTTP Basic (the token is the password),
        # else TASKHUB_TOKEN as a bearer token, if set.
        parts = urllib.parse.urlsplit(url)
        self.auth = {}
        if parts.password is not None or parts.username:
            pair = f"{urllib.parse.unquote(parts.username or '')}:{urllib.parse.unquote(parts.password or '')}"
            self.auth = {"Authorization": "Basic " + base64.b64encode(pair.encode()).decode()}
            parts = parts._replace(netloc=parts.hostname + (f":{parts.port}" if parts.port else ""))
        elif os.environ.get("TASKHUB_TOKEN"):
            self.auth = {"Authorization": "Bearer " + os.environ["TASKHUB_TOKEN"].strip()}
        self.url = urllib.parse.urlunsplit(parts).rstrip("/")
        self.timeout = timeout

    def _open(self, method: str, path: str, params: dict | None = None, body: bytes | None = None,
              headers: dict | None = None):
        url = self.url + path + ("?" + urllib.parse.urlencode(params) if params else "")
        req = urllib.request.Request(url, data=body, method=method, headers={**self.auth, **(headers or {})})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as e:
            text = e.read().decode(errors="replace")
            try:
                text = json.loads(text).get("detail", text)
            except (ValueError, AttributeError):
                pass
            raise DeltaError(f"{method} {path}: HTTP {e.code}: {text}") from None

    def create_task(self, spec: pb.TaskSpec) -> int:
        boundary = uuid.uuid4().hex
        body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"task\"\r\n"
                "Content-Type: application/octet-stream\r\n\r\n").encode() + dump_task(spec) + \
            f"\r\n--{boundary}--\r\n".encode()
        answer = self._open("POST", "/v1/task", body=body,
                            headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
        return int(answer["task_id"])

    def status(self, task_id: int) -> str:
        return self._open("GET", "/v1/task/metadata", {"task_id": task_id})["status"]

    def trace(self, task_id: int, out) -> bool:
        start, pause, status = 0, 0.02, ""
        while True:
            lines = self._open("GET", "/v1/task/logs", {"task_id": task_id, "start": start, "limit": self.PAGE})
            for line in lines:
                out.write(f"{_stamp(line['created_at'])}  {line['message']}\n")
            out.flush()
            if lines:
                start = lines[-1]["id"] + 1
                pause = 0.02
                if len(lines) == self.PAGE:
                    continue
            if status in self.ENDED and not lines:
                return status == "FINISHED"   # ended, and the log read after that was complete
            status = self.status(task_id)
            if status not in self.ENDED:
                time.sleep(pause)
                pause = min(pause * 2, 0.5)

    def wait(self, task_id: int) -> bool:
        pause = 0.02
        while (status := self.status(task_id)) not in self.ENDED:
            time.sleep(pause)
            pause = min(pause * 2, 0.5)
        return status == "FINISHED"
