"""`taskhub node`: the node agent. Runs tasks for a taskhub server on this machine.

It keeps one NodeService.Connect stream open, runs what the server sends with the same
Executor as the server's local node, and streams what happens back, gathered per loop
turn (log lines in batches). Heartbeats carry live cpu/memory usage.

When the server is unreachable the agent keeps its runs going and buffers their events
(logs and outcomes). It reconnects with backoff and re-registers with the runs it still
has and those that ended meanwhile, then sends the buffered events. An outcome is kept
until the server acknowledges it, so a stream that breaks mid-send loses none.
"""
from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys
import uuid
from dataclasses import dataclass, field

import grpc
import psutil
from taskhub.v1 import node_service_pb2 as pb
from taskhub.v1 import node_service_pb2_grpc as svc_grpc

from .delta.datasets import node_labels
from .node.executor import Executor, Outcome, Run
from .node.remote import run_from_start

log = logging.getLogger("taskhub.agent")
INSTANCE_FILE = ".taskhub-agent-instance"


@dataclass
class AgentConfig:
    server: str = "127.0.0.1:50051"
    name: str = ""                  # default: the host name
    address: str = ""               # default: the address the server sees
    slots: int = 0                  # 0: 8 x cores
    labels: dict[str, str] = field(default_factory=dict)
    python_workers: int = 1
    work_dir: str = "var/agent"
    data_dir: str = "var/data"      # Delta datasets this node holds (published as labels)
    task_paths: list[str] = field(default_factory=list)
    kill_grace: float = 5.0
    heartbeat: float = 0.0          # 0: as the server asks
    max_backoff: float = 5.0        # longest wait between reconnect attempts
    token: str = ""                 # a `node` token, when the server has --auth
    tls_ca: str = ""                # CA of the server's certificate: TLS on
    tls_cert: str = ""              # this agent's certificate and key, for mutual TLS
    tls_key: str = ""


class Agent:
    def __init__(self, cfg: AgentConfig):
        self.cfg = cfg
        self.name = cfg.name or socket.gethostname()
        self.session = uuid.uuid4().hex
        self.slots = cfg.slots or 8 * (os.cpu_count() or 1)
        self.executor: Executor | None = None
        self.runs: dict[int, tuple[int, int]] = {}   # task id -> (pid, ppid) of runs it has
        self.abandoned: set[int] = set()             # runs the server disowned: killed, silenced
        self.deferred: dict[int, Run] = {}           # a new run of an abandoned one, started once that ends
        self.unacked: dict[int, pb.TaskEvent] = {}   # exits the server has not acknowledged
        self.buffer: list[pb.TaskEvent] = []         # events not yet handed to a stream
        self._gathering: list[pb.TaskEvent] = []
        self._send: asyncio.Queue | None = None      # the open stream's outgoing queue
        self._stopping = asyncio.Event()
        self.heartbeat_seconds = cfg.heartbeat or 2.0
        self.exit_code = 0

    # -------------------------------------------------------------- life
    async def run(self) -> int:
        os.makedirs(self.cfg.work_dir, exist_ok=True)
        instance = self._new_instance()
        self.executor = Executor(self, python_workers=self.cfg.python_workers, work_dir=self.cfg.work_dir,
                                 instance=instance, kill_grace=self.cfg.kill_grace, task_paths=self.cfg.task_paths)
        self.executor.server_target = self.cfg.server  # tasks (FATE components) call back into the server
        self.executor.data_dir = os.path.abspath(self.cfg.data_dir)
        await self.executor.start()
        psutil.cpu_percent(None)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stopping.set)
        print(f"taskhub node: {self.name} ({self.slots} slots) connecting to {self.cfg.server}", flush=True)
        connector = loop.create_task(self._connect_forever())
        await self._stopping.wait()
        connector.cancel()
        print("taskhub node: stopping", flush=True)
        await self.executor.close(grace=min(self.cfg.kill_grace, 5.0))
        return self.exit_code

    def _new_instance(self) -> str:
        """A marker in every command's environment; kill what a previous agent here left behind."""
        from .node.spawner import kill_orphans
        path = os.path.join(self.cfg.work_dir, INSTANCE_FILE)
        try:
            with open(path) as f:
                old = f.read().strip()
            if old and kill_orphans(old):
                print("taskhub node: killed processes a previous agent left running", flush=True)
        except FileNotFoundError:
            pass
        instance = uuid.uuid4().hex
        with open(path, "w") as f:
            f.write(instance)
        return instance

    async def _connect_forever(self) -> None:
        backoff = 0.1
        while True:
            registered = await self._session()
            backoff = 0.1 if registered else min(backoff * 2, self.cfg.max_backoff)
            await asyncio.sleep(backoff)

    async def _session(self) -> bool:
        """One stream, until it breaks. True if the server accepted the registration."""
        registered = False
        send: asyncio.Queue = asyncio.Queue()
        send.put_nowait(pb.AgentMessage(register=self._registration()))
        # What ended or was said while disconnected, then exits sent on a broken stream and never acknowledged.
        buffered = {id(ev) for ev in self.buffer}
        resend = self.buffer + [ev for ev in self.unacked.values() if id(ev) not in buffered]
        self.buffer = []
        if resend:
            send.put_nowait(pb.AgentMessage(events=resend))
        self._send = send

        async def outgoing():
            while True:
                msg = await send.get()
                if msg is None:
                    return
                yield msg

        from client.credentials import auth_metadata, open_aio_channel
        cfg = self.cfg
        channel = open_aio_channel(cfg.server, tls_ca=cfg.tls_ca, tls_cert=cfg.tls_cert, tls_key=cfg.tls_key)
        beat = None
        try:
            call = svc_grpc.NodeServiceStub(channel).Connect(outgoing(), metadata=auth_metadata(cfg.token))
            async for msg in call:
                if msg.HasField("registered"):
                    registered = True
                    self.heartbeat_seconds = self.cfg.heartbeat or msg.registered.heartbeat_seconds or 2.0
                    print(f"taskhub node: registered as {msg.registered.name} with {self.cfg.server}", flush=True)
                    if beat is None:
                        beat = asyncio.get_running_loop().create_task(self._heartbeats(send))
                self._handle(msg)
            print("taskhub node: the server closed the stream; reconnecting", flush=True)
        except grpc.aio.AioRpcError as e:
            if e.code() in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
                # No retry can fix a missing, wrong or revoked token: stop (and kill the runs).
                print(f"taskhub node: refused by the server: {e.details()}", flush=True)
                self.exit_code = 2
                self._stopping.set()
            elif e.code() in (grpc.StatusCode.ALREADY_EXISTS, grpc.StatusCode.INVALID_ARGUMENT):
                print(f"taskhub node: refused: {e.details()}", flush=True)
            elif registered:
                print(f"taskhub node: lost the server ({e.code().name}); runs continue, reconnecting", flush=True)
        finally:
            if beat:
                beat.cancel()
            self._send = None
            # Events the stream never took go back to the buffer, in order (nothing else was
            # buffered meanwhile: while a stream is open, events go to its queue).
            while not send.empty():
                msg = send.get_nowait()
                if msg is not None and msg.events:
                    self.buffer.extend(msg.events)
            await channel.close(grace=None)
        return registered

    def _registration(self) -> pb.Register:
        return pb.Register(
            name=self.name, address=self.cfg.address, slots=self.slots,
            labels=node_labels(self.cfg.data_dir, self.cfg.labels),
            cpu_count=os.cpu_count() or 1, memory_mb=psutil.virtual_memory().total // (1 << 20),
            session=self.session,
            running=[pb.RunningTask(task_id=t, pid=p, ppid=pp) for t, (p, pp) in self.runs.items()
                     if t not in self.abandoned],
            finished=list(self.unacked))

    async def _heartbeats(self, send: asyncio.Queue) -> None:
        while True:
            send.put_nowait(pb.AgentMessage(heartbeat=pb.Heartbeat(
                cpu_percent=psutil.cpu_percent(None), memory_percent=psutil.virtual_memory().percent)))
            await asyncio.sleep(self.heartbeat_seconds)

    # -------------------------------------------------------------- server -> agent
    def _handle(self, msg: pb.ServerMessage) -> None:
        for task_id in msg.acked:
            self.unacked.pop(task_id, None)
        for c in msg.cancel:
            self._cancel(c.task_id, None if c.grace < 0 else c.grace, c.abandon)
        for s in msg.start:
            self._start(run_from_start(s))

    def _start(self, run: Run) -> None:
        if run.task_id in self.runs:
            if run.task_id in self.abandoned:
                self.deferred[run.task_id] = run  # the old run is being killed; this one follows
            return  # a duplicate start of a run it has
        self.runs[run.task_id] = (0, 0)
        self.unacked.pop(run.task_id, None)
        self.executor.start_run(run)

    def _cancel(self, task_id: int, grace: float | None, abandon: bool) -> None:
        self.deferred.pop(task_id, None)
        if task_id not in self.runs:
            if not abandon:  # the server thinks it is here: settle it
                self.on_exit(task_id, Outcome("cancelled", 0, "cancelled (this node did not have the run)"))
            return
        if abandon:
            self.abandoned.add(task_id)
            grace = 0.0
        self.executor.cancel(task_id, grace)

    # -------------------------------------------------------------- executor -> server (NodeEvents)
    def _emit(self, ev: pb.TaskEvent) -> None:
        if not self._gathering:
            asyncio.get_running_loop().call_soon(self._flush)
        self._gathering.append(ev)

    def _flush(self) -> None:
        events, self._gathering = self._gathering, []
        if not events:
            return
        if self._send is not None:
            self._send.put_nowait(pb.AgentMessage(events=events))
        else:
            self.buffer.extend(events)

    def on_running(self, task_id: int, pid: int, ppid: int) -> None:
        if task_id in self.runs:
            self.runs[task_id] = (pid, ppid)
        if task_id not in self.abandoned:
            self._emit(pb.TaskEvent(task_id=task_id, running=pb.RunStarted(pid=pid, ppid=ppid)))

    def on_log(self, task_id: int, lines: list[tuple[int, str]]) -> None:
        if task_id not in self.abandoned:
            self._emit(pb.TaskEvent(task_id=task_id, logs=pb.LogBatch(
                streams=[s for s, _ in lines], texts=[t for _, t in lines])))

    def on_progress(self, task_id: int, percent: int) -> None:
        if task_id not in self.abandoned:
            self._emit(pb.TaskEvent(task_id=task_id, progress=percent))

    def on_result(self, task_id: int, text: str) -> None:
        if task_id not in self.abandoned:
            self._emit(pb.TaskEvent(task_id=task_id, result=text))

    def on_response(self, task_id: int, json_text: str) -> None:
        if task_id not in self.abandoned:
            self._emit(pb.TaskEvent(task_id=task_id, response_json=json_text))

    def on_exit(self, task_id: int, outcome: Outcome) -> None:
        self.runs.pop(task_id, None)
        if task_id in self.abandoned:
            self.abandoned.discard(task_id)
            follow = self.deferred.pop(task_id, None)
            if follow is not None:
                self._start(follow)
            return
        exit_ = pb.RunExit(kind=outcome.kind, exit_code=outcome.exit_code, error=outcome.error)
        if outcome.result is not None:
            exit_.result = outcome.result
        ev = pb.TaskEvent(task_id=task_id, exit=exit_)
        self.unacked[task_id] = ev
        self._emit(ev)


def run(cfg: AgentConfig) -> int:
    logging.basicConfig(level=os.environ.get("TASKHUB_LOG", "WARNING"), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return asyncio.run(Agent(cfg).run())
