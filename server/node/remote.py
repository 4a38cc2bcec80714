"""Node agents: a `RemoteNode` per agent, and the registry that connects, watches and loses them.

An agent (`taskhub node`, server/node/agent.py) keeps one NodeService.Connect stream open. The
server sends runs to start and cancel down it; the agent sends heartbeats and what happens
to its runs up it. Both directions gather what one loop turn produced into one message.

Failure rules (why a task is never lost, and never runs on two nodes at once):
- A broken stream only marks the node offline; its tasks stay assigned to it. If the agent
  reconnects before the heartbeat timeout, it reports the runs it still has and those that
  ended meanwhile, and everything carries on.
- Leases and fencing (README, Leases): the agent holds a lease of `node_timeout` seconds,
  renewed by each heartbeat the server answers, counted from when the agent sent it. An agent
  that cannot renew stops its runs when the lease ends (its fence process does it even if the
  agent itself is frozen or dead). The server waits lease + grace after the last message it
  got before it gives up on the node, so the old run has been stopped before a new one starts.
  Every placement carries an attempt number; events of another attempt are refused and that
  run is killed.
- After lease + grace the engine's `node_lost` restores the node's tasks elsewhere.
  If that agent comes back later, every run it still has is "abandoned": killed, and its
  events ignored. Events are only ever applied for tasks the engine placed on that node.
- Known agents are kept in the `nodes` table. After a server restart they are loaded
  (offline) before the engine recovers, so tasks running on them are kept, not re-run, and
  the agents have one heartbeat timeout to come back and claim them.

This module speaks the wire messages of node_service.proto: it is the transport of a node.
"""
from __future__ import annotations

import asyncio
import json
import logging
import re
from typing import AsyncIterator

from taskhub.v1 import node_service_pb2 as pb

from .. import errors
from ..model import Status, TaskType, now_ms
from .base import Node
from .executor import Outcome, Run

log = logging.getLogger(__name__)
S = Status
_NAME = re.compile(r"^[\w.:@-]{1,200}$")


class Link:
    """One open agent stream, server side: outgoing messages gathered per loop turn."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue = asyncio.Queue()
        self._pending: pb.ServerMessage | None = None
        self.closed = False

    def message(self) -> pb.ServerMessage:
        """The message being gathered this loop turn; it is sent when the turn ends."""
        if self._pending is None:
            self._pending = pb.ServerMessage()
            asyncio.get_running_loop().call_soon(self._flush)
        return self._pending

    def _flush(self) -> None:
        msg, self._pending = self._pending, None
        if msg is not None and not self.closed:
            self.queue.put_nowait(msg)

    def close(self) -> None:
        if not self.closed:
            self._flush()
            self.closed = True
            self.queue.put_nowait(None)


class RemoteNode(Node):
    """A node run by an agent process somewhere, reached through its Link."""

    outlives_server = True

    def __init__(self, registry: "NodeRegistry", name: str, session: str = ""):
        super().__init__(name=name, address="", slots=1, online=False)
        self.registry = registry
        self.session = session
        self.link: Link | None = None
        self.lost = False  # given up on (lease + grace passed); cleared when the agent registers again

    # -- engine -> agent
    def start(self, run: Run) -> None:
        if self.link is None:
            return  # disconnected: the agent's next registration tells what it lacks (see reconcile)
        self.link.message().start.append(pb.StartRun(
            task_id=run.task_id, uid=run.uid, namespace=run.namespace, name=run.name, type=int(run.type),
            argv=run.argv, callable=run.callable, input_json=run.input_json, env=run.env, cwd=run.cwd,
            timeout_seconds=run.timeout_seconds, slots=run.slots, attempt=run.attempt,
            keep_on_disconnect=run.keep_on_disconnect, dedicated_worker=run.dedicated_worker))

    def cancel(self, task_id: int, grace: float | None = None, abandon: bool = False, attempt: int = 0) -> None:
        if self.link is not None:
            self.link.message().cancel.append(pb.CancelRun(
                task_id=task_id, grace=-1.0 if grace is None else grace, abandon=abandon, attempt=attempt))

    # -- agent -> engine
    def handle(self, msg: pb.AgentMessage) -> None:
        if msg.HasField("heartbeat"):
            self.record_usage(msg.heartbeat.cpu_percent, msg.heartbeat.memory_percent)
            if self.link is not None:  # renews the agent's lease from when it sent this heartbeat
                self.link.message().lease.seq = msg.heartbeat.seq
        self.last_heartbeat_ms = now_ms()  # any message proves the agent is alive
        if msg.events:
            self._apply(msg.events)

    def _apply(self, events) -> None:
        engine = self.registry.engine
        acked = []
        for ev in events:
            task_id = ev.task_id
            kind = ev.WhichOneof("kind")
            if kind == "exit":
                acked.append(task_id)
            if task_id not in self.assigned:
                continue  # not (or no longer) this node's task: a cancelled or abandoned run
            task = engine.tasks.get(task_id)
            if task is not None and ev.attempt and ev.attempt != task.attempt:
                # A stale attempt (fencing): refused, and its run killed if it still goes on.
                log.warning("node %s: refused %s of task %d attempt %d (current attempt %d)",
                            self.name, kind, task_id, ev.attempt, task.attempt)
                if kind != "exit":
                    self.cancel(task_id, 0.0, abandon=True, attempt=ev.attempt)
                continue
            if kind == "logs":
                engine.on_log(task_id, list(zip(ev.logs.streams, ev.logs.texts)),
                              (ev.attempt, ev.first_line) if ev.attempt else None)
            elif kind == "running":
                engine.on_running(task_id, ev.running.pid, ev.running.ppid)
            elif kind == "progress":
                engine.on_progress(task_id, ev.progress)
            elif kind == "result":
                engine.on_result(task_id, ev.result)
            elif kind == "response_json":
                engine.on_response(task_id, ev.response_json)
            elif kind == "exit":
                x = ev.exit
                engine.on_exit(task_id, Outcome(x.kind, x.exit_code, x.error,
                                                x.result if x.HasField("result") else None))
        if acked and self.link is not None:
            self.link.message().acked.extend(acked)


class NodeRegistry:
    """Every remote node: registration, heartbeat watch, persistence, drain."""

    def __init__(self, engine, store, node_timeout: float = 10.0, lease_grace: float = 2.0):
        self.engine = engine
        self.store = store
        self.node_timeout = node_timeout  # also the agents' lease
        self.lease_grace = lease_grace
        self._monitor: asyncio.Task | None = None

    @property
    def heartbeat_seconds(self) -> float:
        return min(5.0, max(0.2, self.node_timeout / 4))

    # -- life
    def preload(self) -> None:
        """Before the engine recovers: known agents come back offline, so tasks on them are kept for them."""
        started = now_ms()
        for row in self.store.nodes():
            node = RemoteNode(self, row["name"], row["session"])
            self._fill(node, row["address"], row["slots"], json.loads(row["labels"]), row["cpu_count"],
                       row["memory_mb"])
            node.draining = bool(row["draining"])
            node.last_heartbeat_ms = started  # the timeout counts from this start
            self.engine.nodes[node.name] = node  # engine not started yet: add_node would schedule

    async def start(self) -> None:
        self._monitor = asyncio.get_running_loop().create_task(self._watch())

    async def stop(self) -> None:
        if self._monitor:
            self._monitor.cancel()
        for node in self.remote_nodes():
            if node.link:
                node.link.close()

    def remote_nodes(self) -> list[RemoteNode]:
        return [n for n in self.engine.nodes.values() if isinstance(n, RemoteNode)]

    async def _watch(self) -> None:
        interval = min(1.0, self.node_timeout / 4)
        wait = self.node_timeout + self.lease_grace  # the agent has stopped its runs by then
        while True:
            await asyncio.sleep(interval)
            limit = now_ms() - int(wait * 1000)
            for node in self.remote_nodes():
                if not node.lost and (node.online or node.assigned or node.link) and node.last_heartbeat_ms < limit:
                    self._lose(node, f"no heartbeat for {wait:g}s (lease {self.node_timeout:g}s + grace {self.lease_grace:g}s)")

    def _lose(self, node: RemoteNode, reason: str, process_gone: bool = False) -> None:
        print(f"taskhub: node {node.name} lost ({reason})", flush=True)
        node.lost = True
        if node.link:
            node.link.close()  # a half-dead stream: the agent reconnects and is told to abandon its runs
            node.link = None
        self.engine.node_lost(node, reason, process_gone)
        self._save(node)

    # -- the stream
    async def connect(self, messages: AsyncIterator[pb.AgentMessage], peer: str) -> AsyncIterator[pb.ServerMessage]:
        """Serve one agent stream: register, reconcile, then relay both ways until either side ends."""
        try:
            first = await messages.__anext__()
        except StopAsyncIteration:
            return
        if not first.HasField("register"):
            raise errors.InvalidArgument("the first message on a node stream must carry `register`")
        node = self._register(first.register, peer)
        link = node.link = Link()
        link.message().registered.CopyFrom(pb.Registered(name=node.name, heartbeat_seconds=self.heartbeat_seconds,
                                                         lease_seconds=self.node_timeout))
        self._reconcile(node, first.register)
        self.engine.add_node(node)  # (again): wakes tasks waiting for a node like this one
        node.handle(first)
        print(f"taskhub: node {node.name} registered from {node.address} "
              f"({node.slots} slots, {len(first.register.running)} running)", flush=True)
        reader = asyncio.get_running_loop().create_task(self._read(node, link, messages))
        try:
            while True:
                msg = await link.queue.get()
                if msg is None:
                    return
                yield msg
        finally:
            reader.cancel()
            link.close()
            if node.link is link:  # not replaced by a newer stream of the same agent
                node.link = None
                node.online = False
                log.info("node %s disconnected; waiting up to %gs for it to return", node.name, self.node_timeout)

    async def _read(self, node: RemoteNode, link: Link, messages) -> None:
        try:
            async for msg in messages:
                if node.link is not link:
                    return
                node.handle(msg)
        except Exception as e:  # the agent went away mid-message
            log.info("node %s stream ended: %s", node.name, e)
        finally:
            link.close()

    def _register(self, reg: pb.Register, peer: str) -> RemoteNode:
        if not _NAME.match(reg.name):
            raise errors.InvalidArgument(f"node name {reg.name!r} must be 1-200 letters, digits or ._:@-")
        if reg.slots < 1:
            raise errors.InvalidArgument("a node needs at least 1 slot")
        if not reg.session:
            raise errors.InvalidArgument("register.session is required (a random id of the agent process)")
        node = self.engine.nodes.get(reg.name)
        if node is not None and not isinstance(node, RemoteNode):
            raise errors.AlreadyExists(f"node name {reg.name!r} is the server's local node; give the agent another --name")
        if node is None:
            node = RemoteNode(self, reg.name, reg.session)
        elif node.session != reg.session:
            if node.link is not None:
                raise errors.AlreadyExists(
                    f"node {reg.name!r} is connected from another agent process; give this one another --name")
            if node.assigned:  # that agent process is gone, and its runs with it
                self._lose(node, "its agent restarted", process_gone=True)
            node.session = reg.session
        elif node.link is not None:  # the same agent reconnecting before we noticed its old stream broke
            node.link.close()
            node.link = None
        address = reg.address or _peer_ip(peer)
        self._fill(node, address, reg.slots, dict(reg.labels), reg.cpu_count, reg.memory_mb)
        node.online = True
        node.lost = False
        node.last_heartbeat_ms = now_ms()
        self._save(node)
        return node

    def _reconcile(self, node: RemoteNode, reg: pb.Register) -> None:
        """Match what the agent still has against what the engine placed on it."""
        engine = self.engine
        current = set()  # runs of the attempt the engine placed here
        for r in reg.running:
            task = engine.tasks.get(r.task_id)
            if r.task_id not in node.assigned or task is None or task.node != node.name or \
                    (r.attempt and r.attempt != task.attempt):
                node.cancel(r.task_id, 0.0, abandon=True, attempt=r.attempt)  # restored elsewhere, or ended, meanwhile
                continue
            current.add(r.task_id)
            if task.status in (S.SCHEDULED, S.QUEUED) and r.pid:
                engine.on_running(r.task_id, r.pid, r.ppid)
            elif task.status == S.CANCELLING:
                node.cancel(r.task_id, None)  # the cancel may not have reached it
        # Ended runs whose exit is on its way; the attempt tells whether it is the current one.
        ended = {r.task_id: r.attempt for r in reg.ended} or {t: 0 for t in reg.finished}
        for task_id in list(node.assigned):
            if task_id in current:
                continue
            task = engine.tasks.get(task_id)
            if task is None or task.terminal:
                node.give_back(task_id)
            elif task_id in ended and ended[task_id] in (0, task.attempt):
                continue  # this attempt ended there; its exit follows
            elif task.status in (S.SCHEDULED, S.QUEUED):
                node.start(engine.run_of(task))  # the start never reached it (a duplicate is ignored)
            else:
                engine.on_exit(task_id, Outcome("lost", 0, f"node {node.name} no longer had this run when it reconnected"))

    # -- operator actions
    def drain(self, name: str, resume: bool) -> Node:
        node = self.get(name)
        node.draining = not resume
        if isinstance(node, RemoteNode):
            self._save(node)
        if resume:
            self.engine.add_node(node)
        return node

    def get(self, name: str) -> Node:
        node = self.engine.nodes.get(name)
        if node is None:
            raise errors.NotFound(f"node {name!r} does not exist")
        return node

    def list(self) -> list[Node]:
        return sorted(self.engine.nodes.values(), key=lambda n: n.name)

    # -- persistence
    @staticmethod
    def _fill(node: Node, address: str, slots: int, labels: dict, cpu_count: int, memory_mb: int) -> None:
        node.address, node.slots, node.labels = address, slots, labels
        node.cpu_count, node.memory_mb = cpu_count, memory_mb

    def _save(self, node: RemoteNode) -> None:
        with self.store.batch() as b:
            b.put_node({"name": node.name, "address": node.address, "slots": node.slots,
                        "labels": json.dumps(node.labels), "cpu_count": node.cpu_count, "memory_mb": node.memory_mb,
                        "session": node.session, "draining": int(node.draining),
                        "last_heartbeat_ms": node.last_heartbeat_ms})


def _peer_ip(peer: str) -> str:
    """'ipv4:127.0.0.1:5555' -> '127.0.0.1'; 'ipv6:[::1]:5555' -> '::1'."""
    kind, _, rest = peer.partition(":")
    if kind == "ipv6":
        return rest.rpartition(":")[0].strip("[]")
    if kind == "ipv4":
        return rest.rpartition(":")[0]
    return peer


def run_from_start(m: pb.StartRun) -> Run:
    """A StartRun message as the Executor's Run (used by the agent)."""
    return Run(m.task_id, m.uid, m.namespace, m.name, TaskType(m.type), list(m.argv), m.callable, m.input_json,
               dict(m.env), m.cwd, m.timeout_seconds, m.slots, m.attempt, m.keep_on_disconnect, m.dedicated_worker)
