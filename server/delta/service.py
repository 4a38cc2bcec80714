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
- What else is held in memory, the coordinator-client links and the wait_timeout timers, is rebuilt
  from the stored tasks at start (load): their annotations say each part's role and run, and a
  coordinator's absolute wait deadline, so a restart neither forgets a link nor extends a wait.
"""
from __future__ import annotations

import asyncio
import base64
import json
import logging
import random

from .. import errors
from ..engine import DEDICATED_WORKER, OBSERVER, ON_NODE_NAMED, Engine
from ..model import ANY_NAMESPACE, DEFAULT_NAMESPACE, SCHEDULABLE, Status, Task, TaskSpec, TaskType, now_ms
from .channel import DeltaChannel
from .datasets import dataset_labels
from .header import read_header_isolated

log = logging.getLogger(__name__)
S = Status
RUNTIME = "server.delta.runtime"
OBSERVER_NAME = "delta"
ROLE, RUN = "delta.role", "delta.run"
DATASETS, MIN_CLIENTS, MAX_CLIENTS = "delta.datasets", "delta.min_clients", "delta.max_clients"
# A coordinator's wait for data holders: the task's wait_timeout (seconds, as given) and the absolute
# deadline (ms since the epoch) it ends at, whatever restarts happen meanwhile.
WAIT_TIMEOUT, WAIT_UNTIL = "delta.wait_timeout", "delta.wait_until_ms"
ENABLE_HINT = ("Delta tasks are off on this server (it was started with --no-delta);"
               " start it without --no-delta to accept them")


class DeltaTasks:
    def __init__(self, engine: Engine, allowed: bool):
        self.engine = engine
        self.allowed = allowed
        self.channel = DeltaChannel()
        self.clients: dict[int, list[int]] = {}   # coordinator id -> its client task ids
        self._timers: dict[int, asyncio.TimerHandle] = {}  # coordinator id -> its wait_timeout
        self._loaded = asyncio.Event()
        engine.observers.subscribe(OBSERVER_NAME, call=self._on_change)
        engine.gates.append(self._gate)

    # ---------------------------------------------------------------- life
    async def load(self) -> None:
        """After the engine recovered its tasks (and when this server takes over scheduling): the
        links and timers of every unfinished Delta task, from the store."""
        loop = asyncio.get_running_loop()
        try:
            parts = await loop.run_in_executor(None, self.engine.store.annotated_unfinished, ROLE)
        except Exception as e:  # the database is away: what is in memory is all there is
            log.error("delta: could not read the unfinished Delta tasks (%s); their links and timers are lost", e)
            return
        finally:
            self._loaded.set()  # calls waiting for this go on
        runs: dict[int, list[int]] = {}
        for t in parts:
            a = t.spec.annotations
            if a.get(ROLE) == "coordinator" and t.status in SCHEDULABLE and WAIT_UNTIL in a:
                self._arm(t.id, int(a[WAIT_UNTIL]), float(a.get(WAIT_TIMEOUT, "0")))
            elif a.get(ROLE) == "client" and RUN in a:
                runs.setdefault(int(a[RUN]), []).append(t.id)
        for run, client_ids in runs.items():
            known = self.clients.get(run)
            self.clients[run] = sorted(set(client_ids) | set(known or ()))
            coordinator = self.engine.find(run)
            if coordinator is None or coordinator.terminal:  # it ended while the server was away
                self._on_change(coordinator or _gone(run))
        log.info("delta: %d unfinished parts, %d runs with clients", len(parts), len(runs))

    def close(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()

    def _arm(self, task_id: int, deadline_ms: int, waited: float) -> None:
        delay = max(0.0, (deadline_ms - now_ms()) / 1000)
        old = self._timers.pop(task_id, None)
        if old is not None:  # loaded again (a second take-over): one timer per coordinator
            old.cancel()
        self._timers[task_id] = asyncio.get_running_loop().call_later(delay, self._expire, task_id, waited)

    # ---------------------------------------------------------------- create
    async def create(self, blob: bytes, namespace: str, creator: str) -> Task:
        if not self.allowed:
            raise errors.FailedPrecondition(ENABLE_HINT)
        header = await read_header_isolated(blob)
        deadline_ms = now_ms() + int(header.wait_timeout * 1000)
        spec = TaskSpec(
            type=TaskType.PYTHON, namespace=namespace or DEFAULT_NAMESPACE, name=header.name,
            callable=f"{RUNTIME}:coordinate",
            input_json=json.dumps({"task": base64.b64encode(blob).decode(), "kind": header.kind}),
            annotations={OBSERVER: OBSERVER_NAME, DEDICATED_WORKER: "1", ROLE: "coordinator", "creator": creator,
                         DATASETS: json.dumps(header.datasets), MIN_CLIENTS: str(header.min_clients),
                         MAX_CLIENTS: str(header.max_clients), WAIT_TIMEOUT: f"{header.wait_timeout:g}",
                         WAIT_UNTIL: str(deadline_ms)})
        [task] = await self.engine.create([spec], trusted=True)
        self._arm(task.id, deadline_ms, header.wait_timeout)
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
        self._timers.pop(task_id, None)
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
        await self._loaded.wait()  # the links first: a coordinator run again after a restart gets its clients back
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
            timer = self._timers.pop(task.id, None)
            if timer is not None:
                timer.cancel()
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


def _gone(task_id: int) -> Task:
    """A coordinator deleted while its clients ran: treated as cancelled."""
    t = Task(task_id, TaskSpec(type=TaskType.PYTHON, annotations={ROLE: "coordinator"}), "", 0)
    t.status = S.CANCELLED
    return t
