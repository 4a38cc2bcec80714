"""The taskhub side of every workload, with real grpc.aio clients. Shared by run.py and peer.py."""
from __future__ import annotations

import asyncio
import threading
import time

import grpc
from taskhub.v1 import task_pb2 as pb
from taskhub.v1 import task_service_pb2 as svc
from taskhub.v1 import task_service_pb2_grpc as svc_grpc

NOOP = pb.TaskSpec(type=pb.TASK_TYPE_PYTHON, callable="starter.examples:noop")
TRUE = pb.TaskSpec(type=pb.TASK_TYPE_COMMAND, argv=["/bin/true"])
BATCH = 250
ENDED = frozenset({pb.TASK_STATUS_SUCCESS, pb.TASK_STATUS_FAILED, pb.TASK_STATUS_CANCELLED})


def auth(token: str) -> tuple | None:
    """Call metadata carrying a token ('' : none)."""
    return (("authorization", f"Bearer {token}"),) if token else None


def _stubs(target: str, n: int) -> tuple[list, list]:
    channels = [grpc.aio.insecure_channel(target) for _ in range(n)]
    return channels, [svc_grpc.TaskServiceStub(c) for c in channels]


async def _close(channels) -> None:
    await asyncio.gather(*(c.close() for c in channels))


async def creates(target: str, total: int, clients: int = 64, batch: int = 1, token: str = "") -> float:
    """Durable creates/s: each call returns after its tasks are committed."""
    channels, stubs = _stubs(target, min(clients, 16))
    spec = pb.TaskSpec(type=pb.TASK_TYPE_COMMAND, argv=["true"], namespace="bench-creates")
    per_client = total // clients // batch
    md = auth(token)

    async def client(stub):
        for _ in range(per_client):
            if batch == 1:
                await stub.CreateTask(svc.CreateTaskRequest(spec=spec), metadata=md)
            else:
                await stub.CreateTasks(svc.CreateTasksRequest(specs=[spec] * batch), metadata=md)

    t0 = time.perf_counter()
    await asyncio.gather(*(client(stubs[i % len(stubs)]) for i in range(clients)))
    elapsed = time.perf_counter() - t0
    await _close(channels)
    return per_client * clients * batch / elapsed


async def end_to_end(target: str, spec: pb.TaskSpec, total: int, clients: int = 8, token: str = "") -> float:
    """Tasks/s from the first submit until every result is known (WaitTasks stream, no polling)."""
    channels, stubs = _stubs(target, clients)
    per_client = total // clients
    md = auth(token)

    async def client(stub):
        ids = []
        for start in range(0, per_client, BATCH):
            resp = await stub.CreateTasks(svc.CreateTasksRequest(specs=[spec] * min(BATCH, per_client - start)),
                                          metadata=md)
            ids.extend(t.id for t in resp.tasks)
        ok = 0
        async for batch in stub.WaitTasks(svc.WaitTasksRequest(ids=ids), metadata=md):
            ok += sum(t.status == pb.TASK_STATUS_SUCCESS for t in batch.tasks)
        if ok != len(ids):
            raise RuntimeError(f"{len(ids) - ok} of {len(ids)} tasks did not succeed")

    t0 = time.perf_counter()
    await asyncio.gather(*(client(s) for s in stubs))
    elapsed = time.perf_counter() - t0
    await _close(channels)
    return per_client * clients / elapsed


def in_threads(fn, items: list) -> float:
    """Seconds until fn(item) has returned for every item, each in its own thread, all started together."""
    workers = [threading.Thread(target=fn, args=(item,)) for item in items]
    t0 = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return time.perf_counter() - t0


def sdk_one_per_call(target: str, total: int, threads: int = 8, token: str = "", coalesce: bool = True) -> float:
    """Tasks/s with the blocking SDK as most users call it: `threads` threads share one client (as
    Celery's threads share its app) and each creates its share with create_task, one call per
    task, then waits for them on WaitTasks; timed from the first create until every result is
    known. The client coalesces calls that meet in flight into CreateTasks unless `coalesce` is
    False (client/coalesce.py)."""
    from client import TaskhubClient
    per = total // threads
    c = TaskhubClient(target, token=token, coalesce=coalesce)
    c.list_tasks(limit=1)  # connect before the clock starts, as Celery's warm broker connection
    errors: list[str] = []

    def run(_) -> None:
        try:
            ids = [c.create_task(NOOP).id for _ in range(per)]
            ok = sum(t.status == pb.TASK_STATUS_SUCCESS for t in c.wait_tasks(ids))
            if ok != per:
                errors.append(f"{per - ok} of {per} tasks did not succeed")
        except Exception as e:  # reported, not hidden
            errors.append(repr(e))

    elapsed = in_threads(run, list(range(threads)))
    c.close()
    if errors:
        raise RuntimeError(f"SDK workload failed: {errors[0]}")
    return per * threads / elapsed


async def round_trips(target: str, spec: pb.TaskSpec, count: int, token: str = "") -> dict[str, list[float]]:
    """Sequential tasks, one at a time, each one RunTask call (the SDK's run_task_stream): ms
    from submit until the client sees RUNNING and until it sees the task's end (its last message;
    the stream's status follows on its own, and is not waited for), and the server's own
    create->start interval."""
    channels, [stub] = _stubs(target, 1)
    md = auth(token)
    to_running, to_done, server_start = [], [], []
    finishing: set = set()  # calls whose status is still on its way (dropping one would cancel it)
    for _ in range(count):
        t0 = time.monotonic()
        running_at = None
        call = stub.RunTask(svc.CreateTaskRequest(spec=spec), metadata=md)
        async for snap in call:
            if running_at is None and snap.status >= pb.TASK_STATUS_RUNNING:
                running_at = time.monotonic()
            last = snap
            if snap.status in ENDED:  # the answer is here; the stream's status follows by itself
                finishing.add(call)
                call.add_done_callback(finishing.discard)
                break
        done_at = time.monotonic()
        to_running.append((running_at - t0) * 1000)
        to_done.append((done_at - t0) * 1000)
        server_start.append(last.start_time_ms - last.create_time_ms)
    for call in list(finishing):
        await call.code()
    await _close(channels)
    return {"submit_to_running": to_running, "submit_to_done": to_done, "server_create_to_start": server_start}


async def executes(target: str, spec: pb.TaskSpec, count: int, token: str = "",
                   trips: list | None = None, warm: int = 3) -> dict[str, list[float]]:
    """Sequential tasks, one at a time, each one ExecuteTask call without a request id (the SDK's
    run_task makes the same call with one, and waits for the commit before the start):
    ms from submit until the answer (the task as it ended), and the server's create->start
    interval. `trips` (if given) receives (task id, submitted, answered) per task, in
    time.monotonic() seconds (bench/stages.py). The first `warm` trips (the channel's
    connection) are not counted."""
    channels, [stub] = _stubs(target, 1)
    md = auth(token)
    for _ in range(warm):
        await stub.ExecuteTask(svc.CreateTaskRequest(spec=spec), metadata=md)
    to_done, server_start = [], []
    for _ in range(count):
        t0 = time.monotonic()
        task = await stub.ExecuteTask(svc.CreateTaskRequest(spec=spec), metadata=md)
        done_at = time.monotonic()
        if task.status not in ENDED:
            raise RuntimeError(f"ExecuteTask answered before the task ended: {task}")
        to_done.append((done_at - t0) * 1000)
        server_start.append(task.start_time_ms - task.create_time_ms)
        if trips is not None:
            trips.append((task.id, t0, done_at))
    await _close(channels)
    return {"submit_to_done": to_done, "server_create_to_start": server_start}


async def trace(target: str, spec: pb.TaskSpec) -> tuple[float, int]:
    """Lines/s reaching one reader, from the first line to the last."""
    channels, [stub] = _stubs(target, 1)
    task = await stub.CreateTask(svc.CreateTaskRequest(spec=spec))
    lines, t0 = 0, None
    async for batch in stub.TraceTask(svc.TraceTaskRequest(id=task.id)):
        if batch.lines and t0 is None:
            t0 = time.perf_counter()
        lines += len(batch.lines)
    elapsed = time.perf_counter() - t0
    await _close(channels)
    return lines / elapsed, lines


def chatty(lines: int) -> pb.TaskSpec:
    return pb.TaskSpec(type=pb.TASK_TYPE_PYTHON, callable="starter.examples:chatty", input_json=f'{{"lines": {lines}}}')


def seq(lines: int) -> pb.TaskSpec:
    return pb.TaskSpec(type=pb.TASK_TYPE_COMMAND, argv=["seq", str(lines)])
