"""Delta tasks on the engine: one coordinator task (the reduce side) and one client task per
data-holding node (the map side), exchanging bytes through the server (DeltaChannel).

- A node holds dataset X when it carries the label `delta.dataset.X=1` (published from its
  `--data-dir`). The coordinator waits PENDING, with the reason, until `min_clients` online
  nodes hold every dataset of the task; after the task's `wait_timeout` it is cancelled.
- Once the coordinator runs it asks for its clients (StartDeltaClients): one trusted Python task
  per chosen holder (at most `max_clients`), pinned to that node, with its own worker.
- A client that fails wakes the coordinator with the reason; a coordinator that fails or is
  cancelled cancels every client still running (one that succeeded has had each client's
  goodbye, so they end by themselves). The channel keeps a run's messages in memory until it ends.
"""
from __future__ import annotations

import asyncio
import base64
import json
import random

from .. import errors
from ..engine import DEDICATED_WORKER, OBSERVER, ON_NODE_NAMED, Engine
from ..model import ANY_NAMESPACE, DEFAULT_NAMESPACE, Status, Task, TaskSpec, TaskType
from .channel import DeltaChannel
from .datasets import dataset_labels
from .header import read_header_isolated

S = Status
RUNTIME = "server.delta.runtime"
OBSERVER_NAME = "delta"
ROLE, RUN = "delta.role", "delta.run"
DATASETS, MIN_CLIENTS, MAX_CLIENTS = "delta.datasets", "delta.min_clients", "delta.max_clients"
ENABLE_HINT = ("Delta tasks are off on this server (it was started with --no-delta);"
               " start it without --no-delta to accept them")


class DeltaTasks:
    def __init__(self, engine: Engine, allowed: bool):
        self.engine = engine
        self.allowed = allowed
        self.channel = DeltaChannel()
        self.clients: dict[int, list[int]] = {}   # coordinator id -> its client task ids
        engine.observers[OBSERVER_NAME] = self._on_change
        engine.gates.append(self._gate)

    # ---------------------------------------------------------------- create
    async def create(self, blob: bytes, namespace: str, creator: str) -> Task:
        if not self.allowed:
            raise errors.FailedPrecondition(ENABLE_HINT)
        header = await read_header_isolated(blob)
        spec = TaskSpec(
            type=TaskType.PYTHON, namespace=namespace or DEFAULT_NAMESPACE, name=header.name,
            callable=f"{RUNTIME}:coordinate",
            input_json=json.dumps({"task": base64.b64encode(blob).decode(), "kind": header.kind}),
            annotations={OBSERVER: OBSERVER_NAME, DEDICATED_WORKER: "1", ROLE: "coordinator", "creator": creator,
                         DATASETS: json.dumps(header.datasets), MIN_CLIENTS: str(header.min_clients),
                         MAX_CLIENTS: str(header.max_clients)})
        [task] = await self.engine.create([spec], trusted=True)
        asyncio.get_running_loop().call_later(header.wait_timeout, self._expire, task.id, header.wait_timeout)
        return task

    def _holders(self, datasets: list[str]) -> list[str]:
        want = dataset_labels(datasets)
        return sorted(n.name for n in self.engine.nodes.values()
                      if n.online and not n.draining and all(n.labels.get(k) == v for k, v in want.items()))

    def _gate(self, task: Task) -> str:
        a = task.spec.annotations
        if not a or a.get(ROLE) != "coordinator" or task.id in self.clients:
            return ""
        datasets, need = json.loads(a[DATASETS]), int(a[MIN_CLIENTS])
        have = len(self._holders(datasets))
        if have >= need:
            return ""
        return (f"waiting for {need} nodes holding dataset {', '.join(datasets)}: {have} online "
                f"node{'' if have == 1 else 's'} {'has' if have == 1 else 'have'} it")

    def _expire(self, task_id: int, waited: float) -> None:
        task = self.engine.find(task_id)  # queued: it may be in the store only
        if task is not None and task.status in (S.NEW, S.PENDING, S.SCHEDULING):
            self.engine.cancel(ANY_NAMESPACE, task_id, f"{task.queue_reason} after wait_timeout {waited:g}s")

    # ---------------------------------------------------------------- clients
    def _caller(self, uid: str) -> Task:
        task = self.engine.get(ANY_NAMESPACE, uid=uid)
        # QUEUED too: a node's "started" report travels apart from its worker's first call, which
        # can overtake it
        if task.status not in (S.QUEUED, S.RUNNING) or not task.spec.annotations or task.spec.annotations.get(ROLE) is None:
            raise errors.PermissionDenied(f"task uid {uid!r} is not a running part of a Delta task")
        return task

    async def start_clients(self, uid: str) -> list[str]:
        coordinator = self._caller(uid)
        a = coordinator.spec.annotations
        if a[ROLE] != "coordinator":
            raise errors.PermissionDenied("only a Delta task's coordinator starts its clients")
        if coordinator.id in self.clients:
            clients = (self.engine.find(i) for i in self.clients[coordinator.id])
            return [t.spec.annotations[ON_NODE_NAMED] for t in clients if t is not None and not t.terminal]
        datasets = json.loads(a[DATASETS])
        holders = self._holders(datasets)
        if len(holders) < int(a[MIN_CLIENTS]):
            raise errors.FailedPrecondition(self._gate(coordinator) or "too few nodes hold the datasets")
        chosen = random.sample(holders, int(a[MAX_CLIENTS])) if len(holders) > int(a[MAX_CLIENTS]) else holders
        task_input = json.loads(coordinator.spec.input_json)
        specs = [TaskSpec(
            type=TaskType.PYTHON, namespace=coordinator.spec.namespace, name=f"{coordinator.spec.name}-client-{i}",
            callable=f"{RUNTIME}:client", input_json=json.dumps({"task": task_input["task"], "index": i}),
            annotations={OBSERVER: OBSERVER_NAME, DEDICATED_WORKER: "1", ROLE: "client", RUN: str(coordinator.id),
                         ON_NODE_NAMED: node}) for i, node in enumerate(chosen)]
        self.clients[coordinator.id] = []  # before the await: a second call waits for nothing twice
        created = await self.engine.create(specs, trusted=True)
        self.clients[coordinator.id] = [t.id for t in created]
        return chosen

    # ---------------------------------------------------------------- exchange
    def _run_of(self, uid: str) -> int:
        task = self._caller(uid)
        return task.id if task.spec.annotations[ROLE] == "coordinator" else int(task.spec.annotations[RUN])

    async def send(self, uid: str, key: str, payload: bytes) -> None:
        self.channel.send(self._run_of(uid), key, payload)

    async def receive(self, uid: str, key: str, timeout: float) -> bytes | None:
        return await self.channel.receive(self._run_of(uid), key, timeout)

    # ---------------------------------------------------------------- lifecycle
    def _on_change(self, task: Task) -> None:
        if not task.terminal:
            return
        a = task.spec.annotations
        if a.get(ROLE) == "coordinator":
            self.channel.close(task.id, f"the Delta task ended ({task.status.name})")
            client_ids = self.clients.pop(task.id, [])
            if task.status == S.SUCCESS:
                return  # its clients said goodbye and end by themselves
            for client_id in client_ids:
                client = self.engine.find(client_id)
                if client is not None and not client.terminal:
                    asyncio.get_running_loop().call_soon(
                        self.engine.cancel, ANY_NAMESPACE, client_id, f"Delta task {task.id} ended")
        elif a.get(ROLE) == "client" and task.status != S.SUCCESS:
            self.channel.close(int(a[RUN]), f"client {task.spec.name} on node {task.node} ended "
                                            f"{task.status.name}: {task.error}")
