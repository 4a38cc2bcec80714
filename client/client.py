"""The typed gRPC client: a method for every TaskService RPC, typed sub-clients for the other
services (client/typed.py), and helpers that build specs."""
from __future__ import annotations

import itertools
import json
import time
import uuid
from typing import Any, Iterable, Iterator

import grpc
from google.protobuf import json_format
from taskhub.v1 import task_pb2 as pb
from taskhub.v1 import task_service_pb2 as svc
from taskhub.v1 import task_service_pb2_grpc as svc_grpc

from .coalesce import Coalescer
from .credentials import BearerToken, auth_metadata, env_token, open_channel
from .failover import FailoverChannel
from .typed import Auth, Cluster, Delta, Flow, Groups, Nodes

# A create that failed with one of these may or may not have happened: retried with the same request_id.
RETRYABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
DEFAULT_TARGET = "127.0.0.1:50051"


def status_name(status: int) -> str:
    """TASK_STATUS_RUNNING -> 'RUNNING'."""
    return pb.TaskStatus.Name(status).removeprefix("TASK_STATUS_")


def status_value(name: str) -> int:
    """'running' / 'RUNNING' / 'TASK_STATUS_RUNNING' -> enum value; ValueError for others."""
    key = name.strip().upper()
    key = key if key.startswith("TASK_STATUS_") else "TASK_STATUS_" + key
    try:
        return pb.TaskStatus.Value(key)
    except ValueError:
        names = ", ".join(status_name(v) for v in pb.TaskStatus.values() if v)
        raise ValueError(f"unknown status {name!r}; one of {names}") from None


def make_spec(*, argv: Iterable[str] = (), callable: str = "", input: Any = None, name: str = "",
              namespace: str = "", priority: int = 0, timeout: float = 0, max_retries: int = 0,
              retry_backoff: float = 0, env: dict | None = None, cwd: str = "",
              node_selector: dict | None = None, slots: int = 0, annotations: dict | None = None) -> pb.TaskSpec:
    """A TaskSpec: give argv for a command task or callable (+ input) for a Python task."""
    argv = list(argv)
    if bool(argv) == bool(callable):
        raise ValueError("give exactly one of argv (command task) or callable (Python task)")
    return pb.TaskSpec(
        type=pb.TASK_TYPE_COMMAND if argv else pb.TASK_TYPE_PYTHON,
        argv=argv, callable=callable, input_json="" if input is None else json.dumps(input),
        name=name or (argv[0] if argv else callable), namespace=namespace, priority=priority,
        timeout_seconds=timeout, max_retries=max_retries, retry_backoff_seconds=retry_backoff,
        env=env or {}, cwd=cwd, node_selector=node_selector or {},
        resources=pb.Resources(slots=slots), annotations=annotations or {},
    )


def to_dict(message) -> dict:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


class _Opened:
    """A stream whose first message has been read (so the server is streaming), given back first;
    the call's own methods (cancel, code, ...) pass through."""

    def __init__(self, call):
        self._call = call
        self._first = [next(call)]

    def __iter__(self):
        return self

    def __next__(self):
        return self._first.pop() if self._first else next(self._call)

    def __getattr__(self, name):
        return getattr(self._call, name)


class TaskhubClient:
    """Blocking client. `namespace` is the default for every call ("*" reads any).

    Task calls are methods; `groups` (TaskGroupService), `nodes` (NodeService), `auth`
    (AuthService), `delta` (DeltaService), `cluster` (ClusterService) and `flow` (FlowService; FATE-shaped calls in
    client.flow.FlowClient) are typed sub-clients of the other services on the same channel:
    snake_case methods (`c.nodes.list_nodes()`) on top of the generated stub (`c.nodes.ListNodes`).
    """

    def __init__(self, target: str = DEFAULT_TARGET, *, namespace: str = "", timeout: float | None = 60,
                 channel: grpc.Channel | None = None, token: str | None = None, tls_ca: str | None = None,
                 tls_cert: str = "", tls_key: str = "", create_retries: int = 5, coalesce: bool = True):
        # token / tls_ca default to TASKHUB_TOKEN / TASKHUB_TLS_CA; the token goes on every call
        # of every stub (tasks, groups, nodes). tls_cert/tls_key: a client certificate (mutual TLS).
        # create_retries: creates retried (same request_id) after UNAVAILABLE / DEADLINE_EXCEEDED; with a
        # list of servers, the turns over the list any call may take (README: Lists of servers).
        # target: host:port, or a list of servers h1:50051,h2:50051 (one database): calls fail over by
        # themselves and streams resume on the next server (client/failover.py).
        # coalesce: create_task calls from several threads that arrive while one is in flight go
        # together as one CreateTasks (client/coalesce.py); False sends every one as CreateTask.
        token = env_token() if token is None else token
        if channel is None:
            # Task calls carry the token as call metadata: a client interceptor costs more per call
            # than the call's own Python work. The other stubs get it from an intercepted channel.
            raw = open_channel(target, token="", tls_ca=tls_ca, tls_cert=tls_cert, tls_key=tls_key,
                               turns=create_retries)
            self._auth = auth_metadata(token)
            channel = grpc.intercept_channel(raw, BearerToken(token)) if token else raw
        else:
            raw, self._auth = channel, ()
        self.channel = channel
        self.stub = svc_grpc.TaskServiceStub(channel)  # public: the token comes with the channel
        self._stub = svc_grpc.TaskServiceStub(raw)     # this client's own calls add it (see _kw)
        self.groups = Groups(self.channel, timeout)
        self.nodes = Nodes(self.channel, timeout)
        self.auth = Auth(self.channel, timeout)
        self.delta = Delta(self.channel, timeout)
        self.flow = Flow(self.channel, timeout)
        self.cluster = Cluster(self.channel, timeout)
        self.namespace = namespace
        self.timeout = timeout
        self.metadata = None  # per-call metadata (the token is added to it)
        self.create_retries = create_retries
        self.servers = raw.addresses if isinstance(raw, FailoverChannel) else [target]
        # A list's channel retries by itself (the same request_id on the next server).
        self._create_attempts = 1 if isinstance(raw, FailoverChannel) else create_retries + 1
        # request_ids: a random prefix and a count (unique like uuid4 each, without a syscall per create)
        self._request_prefix, self._request_count = uuid.uuid4().hex, itertools.count()
        self.coalescer = Coalescer(lambda r: self._retrying(self._stub.CreateTask, r),
                                   lambda r: self._retrying(self._stub.CreateTasks, r),
                                   self._request_id) if coalesce else None

    def __enter__(self) -> "TaskhubClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.channel.close()

    def _ns(self, namespace: str | None) -> str:
        return self.namespace if namespace is None else namespace

    def _kw(self, stream: bool = False) -> dict:
        kw: dict = {"metadata": (*self._auth, *self.metadata) if self.metadata else (self._auth or None)}
        if not stream:
            kw["timeout"] = self.timeout
        return kw

    # -- create ---------------------------------------------------------------
    def create_task(self, spec: pb.TaskSpec | None = None, *, request_id: str = "", **kw) -> pb.Task:
        """create_task(spec) or create_task(argv=[...]) / create_task(callable="m:f", input={...}).

        Idempotent: the request carries a request_id (a new random one unless given), and a
        call that fails with UNAVAILABLE or DEADLINE_EXCEEDED is retried with the same id
        (up to `create_retries` times, with backoff; with a list of servers, on the next one),
        so it never makes a second task.

        Called from several threads at once, the calls that arrive while one is in flight go
        together as one CreateTasks when it returns (client/coalesce.py; README: Performance),
        unless the client was made with coalesce=False or the caller gives its own request_id.
        """
        request = svc.CreateTaskRequest(spec=self._namespaced(spec, kw), request_id=request_id or self._request_id())
        if self.coalescer is not None and not request_id:
            return self.coalescer.create(request)
        return self._retrying(self._stub.CreateTask, request)

    def run_task(self, spec: pb.TaskSpec | None = None, *, request_id: str = "", **kw) -> pb.Task:
        """Create a task and block until it ended; returns it as it ended. Takes what create_task
        takes, and is idempotent the same way: a retry after a broken connection waits for the
        task made the first time. One call (ExecuteTask) where create_task + wait take two."""
        request = svc.CreateTaskRequest(spec=self._namespaced(spec, kw), request_id=request_id or self._request_id())
        return self._retrying(self._stub.ExecuteTask, request, stream=True)  # (no deadline: it waits for the end)

    def run_task_stream(self, spec: pb.TaskSpec | None = None, *, request_id: str = "", **kw) -> Iterator[pb.Task]:
        """Create a task and follow it: the task once committed, then at each status change, the
        last one terminal (RunTask). For a caller that shows progress; run_task costs less."""
        request = svc.CreateTaskRequest(spec=self._namespaced(spec, kw), request_id=request_id or self._request_id())
        return self._stub.RunTask(request, **self._kw(stream=True))

    def _namespaced(self, spec: pb.TaskSpec | None, kw: dict) -> pb.TaskSpec:
        spec = spec if spec is not None else make_spec(**kw)
        if not spec.namespace and self.namespace not in ("", "*"):
            spec.namespace = self.namespace
        return spec

    def create_tasks(self, specs: Iterable[pb.TaskSpec], *, request_id: str = "") -> list[pb.Task]:
        """Many tasks in one commit; idempotent like create_task."""
        specs = list(specs)
        for s in specs:
            if not s.namespace and self.namespace not in ("", "*"):
                s.namespace = self.namespace
        request = svc.CreateTasksRequest(specs=specs, request_id=request_id or self._request_id())
        return list(self._retrying(self._stub.CreateTasks, request).tasks)

    def _request_id(self) -> str:
        return f"{self._request_prefix}-{next(self._request_count)}"

    def _retrying(self, call, request, stream: bool = False):
        last = self._create_attempts - 1
        for attempt in range(last + 1):
            try:
                return call(request, **self._kw(stream))
            except grpc.RpcError as e:
                if e.code() not in RETRYABLE or attempt == last:
                    raise
                time.sleep(min(5.0, 0.2 * 2 ** attempt))

    # -- read -----------------------------------------------------------------
    def get_task(self, task_id: int = 0, *, uid: str = "", namespace: str | None = None) -> pb.Task:
        return self._stub.GetTask(svc.GetTaskRequest(namespace=self._ns(namespace), id=task_id, uid=uid), **self._kw())

    def list_tasks(self, statuses: Iterable[int | str] = (), limit: int = 100, page_token: str = "",
                   namespace: str | None = None) -> svc.ListTasksResponse:
        values = [status_value(s) if isinstance(s, str) else s for s in statuses]
        return self._stub.ListTasks(svc.ListTasksRequest(namespace=self._ns(namespace), statuses=values, limit=limit,
                                                        page_token=page_token), **self._kw())

    # -- change ---------------------------------------------------------------
    def cancel_task(self, task_id: int, reason: str = "", namespace: str | None = None) -> svc.CancelTaskResponse:
        return self._stub.CancelTask(svc.CancelTaskRequest(namespace=self._ns(namespace), id=task_id, reason=reason),
                                    **self._kw())

    def delete_task(self, task_id: int, force: bool = False, namespace: str | None = None) -> None:
        self._stub.DeleteTask(svc.DeleteTaskRequest(namespace=self._ns(namespace), id=task_id, force=force), **self._kw())

    # -- follow ---------------------------------------------------------------
    def trace(self, task_id: int, offset: int = 0, follow: bool = True, namespace: str | None = None) -> Iterator[pb.LogLine]:
        """Log lines from `offset`; with follow, until the task ended. See `trace_batches` for the end status."""
        for batch in self.trace_batches(task_id, offset, follow, namespace):
            yield from batch.lines

    def trace_batches(self, task_id: int, offset: int = 0, follow: bool = True,
                      namespace: str | None = None) -> Iterator[svc.TraceTaskResponse]:
        req = svc.TraceTaskRequest(namespace=self._ns(namespace), id=task_id, offset=offset, follow=follow)
        return self._stub.TraceTask(req, **self._kw(stream=True))

    def watch(self, task_id: int, namespace: str | None = None) -> Iterator[pb.Task]:
        """The task now and at each status change, ending with its terminal status."""
        return self._stub.WaitTask(svc.WaitTaskRequest(namespace=self._ns(namespace), id=task_id), **self._kw(stream=True))

    def wait(self, task_id: int, namespace: str | None = None) -> pb.Task:
        """Block until the task ended; returns it."""
        last = None
        for last in self.watch(task_id, namespace):
            pass
        return last

    def wait_tasks(self, ids: Iterable[int], namespace: str | None = None) -> Iterator[pb.Task]:
        """Each task once it ended, in the order they end."""
        for batch in self._stub.WaitTasks(svc.WaitTasksRequest(namespace=self._ns(namespace), ids=list(ids)),
                                         **self._kw(stream=True)):
            yield from batch.tasks

    def watch_tasks(self, namespace: str | None = None) -> Iterator[svc.WatchTasksResponse]:
        """The namespace's task changes as they happen, in batches (tasks as they are now, deleted
        ids, `overflow` when this reader fell behind and should list again). Runs until closed.
        Returns once the server has the watch in place (its first, empty message has come), so a
        change made after the call returns is seen; that first message is still the first yielded."""
        return _Opened(self._stub.WatchTasks(svc.WatchTasksRequest(namespace=self._ns(namespace)),
                                             **self._kw(stream=True)))

    # -- modules --------------------------------------------------------------
    def describe_module(self, module: str) -> svc.DescribeModuleResponse:
        """An allowed task module's entries and their parameters (read in a subprocess on the server)."""
        return self._stub.DescribeModule(svc.DescribeModuleRequest(module=module), **self._kw())
