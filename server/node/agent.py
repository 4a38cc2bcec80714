"""`taskhub node`: the node agent. Runs tasks for a taskhub server on this machine.

It keeps one NodeService.Connect stream open, runs what the server sends with the same
Executor as the server's local node, and streams what happens back, gathered per loop
turn (log lines in batches). Heartbeats carry live cpu/memory usage.

When the server is unreachable the agent keeps its runs going for as long as its lease
lasts and buffers their events (logs and outcomes; log lines beyond a cap are dropped and
counted). It reconnects with backoff and re-registers with the runs it still has and those
that ended meanwhile, then sends the buffered events. An outcome is kept until the server
acknowledges it, so a stream that breaks mid-send loses none.

The lease (README, Leases): each heartbeat the server answers extends it to the heartbeat's
send time + lease_seconds. When it runs out, the agent stops its runs (except command tasks
that opted in with on_disconnect=keep) and reports them lost. A fence process
(server/node/fence.py) reads the same deadline from a file and kills the runs if the agent
itself cannot (frozen with SIGSTOP, or dead).
"""
from __future__ import annotations

import asyncio
import enum
import itertools
import logging
import os
import shutil
import signal
import socket
import sys
import time
import uuid
from dataclasses import dataclass, field

import grpc
import psutil
from taskhub.v1 import node_service_pb2 as pb
from taskhub.v1 import node_service_pb2_grpc as svc_grpc

from client.credentials import auth_metadata, open_aio_channel
from client.cli_support import quiet_when_unread
from client.failover import Addresses
from client.servers import leader_hint, parse_servers

from .. import event_loop
from ..delta.datasets import node_labels
from . import task_user as task_users
from .executor import Executor, Outcome, Run
from .fence import FenceClient
from .pool import worker_paths
from .remote import run_from_start
from .spawner import kill_orphans
from .workdir import claim_slot, dead_slots

log = logging.getLogger("taskhub.agent")


@dataclass
class AgentConfig:
    server: str = "127.0.0.1:50051"  # or a list h1:50051,h2:50051 of servers on one database
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
    max_buffered_lines: int = 100_000  # log lines kept while disconnected; more are dropped and counted
    task_user: str = "nobody"       # with a token: tasks run as this user (the agent must be root)
    trust_tasks: bool = False       # with a token, not root: run tasks as the agent's own user anyway
    event_loop: str = "auto"        # server/event_loop.py: auto (uvloop if installed), uvloop, asyncio


class RecentLines:
    """A run's most recent log lines, re-sent after a reconnect: the server may have lost the
    last ones it got before it crashed (it keeps each numbered line once)."""

    KEEP = 10_000

    def __init__(self) -> None:
        self.first = 0                      # the run's number of lines[0]
        self.lines: list[tuple[int, str]] = []

    @property
    def next(self) -> int:
        return self.first + len(self.lines)

    def add(self, lines: list[tuple[int, str]]) -> int:
        """Keep them; returns the number of the first."""
        start = self.next
        self.lines.extend(lines)
        if len(self.lines) > 2 * self.KEEP:
            drop = len(self.lines) - self.KEEP
            del self.lines[:drop]
            self.first += drop
        return start


class RunState(enum.Enum):
    RUNNING = "running"      # the executor runs it for the server
    FENCED = "fenced"        # stopped by this agent when the lease ran out: its exit is reported as lost
    ABANDONED = "abandoned"  # disowned by the server: killed, nothing more reported
    EXITED = "exited"        # ended: its exit waits for the server's acknowledgement


@dataclass
class AgentRun:
    """One task's run on this agent, from its start until the server acknowledged its exit."""

    task_id: int
    attempt: int                       # the attempt (epoch) the server placed
    keep: bool = False                 # runs on past the lease (taskhub.on_disconnect=keep)
    state: RunState = RunState.RUNNING
    pid: int = 0
    ppid: int = 0
    tail: RecentLines = field(default_factory=RecentLines)  # re-sent after a reconnect
    exit: pb.TaskEvent | None = None   # EXITED: the exit event, until acknowledged
    follow: Run | None = None          # ABANDONED: a newer attempt, started once this one ended

    @property
    def live(self) -> bool:
        """The executor still has it."""
        return self.state is not RunState.EXITED

    @property
    def silenced(self) -> bool:
        return self.state is RunState.ABANDONED


class Agent:
    def __init__(self, cfg: AgentConfig):
        self.cfg = cfg
        self.name = cfg.name or socket.gethostname()
        self.session = uuid.uuid4().hex
        self.slots = cfg.slots or 8 * (os.cpu_count() or 1)
        self.executor: Executor | None = None
        self.runs: dict[int, AgentRun] = {}          # task id -> its run, until its exit is acknowledged
        # (task id, attempt) of recent runs, oldest first: an attempt runs here at most once, even
        # after its record is gone.
        self.started: dict[tuple[int, int], None] = {}
        self.buffer: list[pb.TaskEvent] = []         # events not yet handed to a stream
        self._gathering: list[pb.TaskEvent] = []
        self._send: asyncio.Queue | None = None      # the open stream's outgoing queue
        self._stopping = asyncio.Event()
        self.heartbeat_seconds = cfg.heartbeat or 2.0
        self.exit_code = 0
        self._last_refusal = ""  # why the last session ended before registering (said once, not per retry)
        # The lease: runs may go on until lease_until (time.monotonic()).
        self.lease_seconds = 0.0
        self.lease_until = 0.0
        self._beats_sent: dict[int, float] = {}      # heartbeat seq -> when it was sent
        self._beat_seq = 0
        self.fence: FenceClient | None = None
        self._lease_changed = asyncio.Event()
        self.buffered_lines = 0                      # log lines in self.buffer
        self.dropped_lines: dict[int, int] = {}      # task id -> log lines dropped while disconnected
        # Where to connect: the list in turn; a follower's answer names the scheduler, which is dialled next.
        self.servers = Addresses(parse_servers(cfg.server), dial=lambda address: address)

    # -------------------------------------------------------------- life
    async def run(self) -> int:
        self.slot, busy = claim_slot(self.cfg.work_dir)  # held for life: agents sharing the directory share no file
        if busy:
            print(f"taskhub node: work directory {self.cfg.work_dir} is shared with {len(busy)} other agent(s)"
                  f" ({'; '.join(busy)}); this one uses slot {self.slot.number}", flush=True)
        instance = self._new_instance()
        user = task_users.for_agent(self.cfg.token, self.cfg.task_user, self.cfg.trust_tasks,
                                     worker_paths(self.cfg.task_paths))
        tasks_dir = task_users.work_dir_for(user, "") if user else self.cfg.work_dir
        self.executor = Executor(self, python_workers=self.cfg.python_workers, work_dir=tasks_dir,
                                 instance=instance, kill_grace=self.cfg.kill_grace, task_paths=self.cfg.task_paths,
                                 task_user=user)
        self.executor.server_target = self.cfg.server  # tasks (FATE components) call back into the server
        self.executor.server_env = {k: v for k, v in (("TASKHUB_TLS_CA", self.cfg.tls_ca),
                                                      ("TASKHUB_TLS_CERT", self.cfg.tls_cert),
                                                      ("TASKHUB_TLS_KEY", self.cfg.tls_key)) if v}
        if user is not None:  # tasks (FATE components) dial the server as this agent does: copies they can read
            self.executor.server_env = task_users.hand_over(user, tasks_dir, self.executor.server_env)
        self.executor.data_dir = os.path.abspath(self.cfg.data_dir)
        self.fence = FenceClient(self.slot.lease_file, instance)
        self.fence.start()
        await self.executor.start()
        psutil.cpu_percent(None)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stopping.set)
        print(f"taskhub node: {self.name} ({self.slots} slots) connecting to {', '.join(self.servers.addresses)}",
              flush=True)
        connector = loop.create_task(self._connect_forever())
        lease_watch = loop.create_task(self._watch_lease())
        await self._stopping.wait()
        print("taskhub node: stopping", flush=True)
        for task in (connector, lease_watch):
            task.cancel()
        await asyncio.gather(connector, lease_watch, return_exceptions=True)
        await self.executor.close(grace=min(self.cfg.kill_grace, 5.0))
        if user is not None:
            shutil.rmtree(tasks_dir, ignore_errors=True)
        self.fence.stop()
        return self.exit_code

    def _new_instance(self) -> str:
        """A marker in every command's environment; kill what previous agents here left behind
        (in this slot, and in slots no live agent holds)."""
        path = self.slot.instance_file
        for left in itertools.chain([path], dead_slots(self.cfg.work_dir, self.slot.number)):  # lazily: locked
            try:
                with open(left) as f:
                    old = f.read().strip()
                if old and kill_orphans(old):
                    print("taskhub node: killed processes a previous agent left running", flush=True)
                if left != path:
                    os.remove(left)
            except FileNotFoundError:
                pass
        instance = uuid.uuid4().hex
        with open(path, "w") as f:
            f.write(instance)
        return instance

    async def _connect_forever(self) -> None:
        """Sessions one after the other. Runs go on meanwhile (the lease). A failed session moves to the
        next server of the list at once; the wait grows only when a whole turn of the list failed.
        A follower's answer names the scheduler: dialled next, without a wait (a few hops at most)."""
        backoff, failures, hops = 0.1, 0, 0
        while True:
            try:
                registered, led = await self._session()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # a bug in one session must not end reconnecting
                print(f"taskhub node: session failed ({type(e).__name__}: {e}); reconnecting", flush=True)
                log.debug("session failed", exc_info=True)
                registered, led = False, False
            if registered:
                backoff, failures, hops = 0.1, 0, 0
            elif led and hops < 3:
                hops += 1
                continue
            else:
                hops = 0
                failures += 1
                if failures % len(self.servers.addresses) == 0:
                    backoff = min(backoff * 2, self.cfg.max_backoff)
            await asyncio.sleep(0.1 if failures % len(self.servers.addresses) else backoff)

    async def _session(self) -> tuple[bool, bool]:
        """One stream, until it breaks. (the server accepted the registration, a follower named the
        scheduler: dial it next)."""
        registered = led = False
        index = self.servers.current
        server = self.servers.addresses[index]
        send: asyncio.Queue = asyncio.Queue()
        registering_at = time.monotonic()  # the first lease counts from here
        self._report_dropped()
        self.buffered_lines = 0
        send.put_nowait(pb.AgentMessage(register=self._registration()))
        # What ended or was said while disconnected, then exits sent on a broken stream and never acknowledged.
        buffered = {id(ev) for ev in self.buffer}
        recent = [pb.TaskEvent(task_id=t, attempt=r.attempt, first_line=r.tail.first, logs=pb.LogBatch(
                      streams=[s for s, _ in r.tail.lines], texts=[x for _, x in r.tail.lines]))
                  for t, r in self.runs.items() if r.tail.lines and not r.silenced]
        # Recent lines first (the server keeps each numbered line once), then what waited, then exits.
        held = self.buffer
        resend = recent + held + [r.exit for r in self.runs.values()
                                  if r.state is RunState.EXITED and id(r.exit) not in buffered]
        # All of it, and what happens meanwhile, is sent once registered: nothing may be written while a
        # follower refuses the stream (grpc/grpc#36066), and the order must hold.
        self.buffer = []

        cfg = self.cfg
        channel = open_aio_channel(server, tls_ca=cfg.tls_ca, tls_cert=cfg.tls_cert, tls_key=cfg.tls_key)
        beat = call = writer = None
        try:
            call = svc_grpc.NodeServiceStub(channel).Connect(metadata=auth_metadata(cfg.token))
            writer = asyncio.get_running_loop().create_task(self._write(call, send))
            async for msg in call:
                if msg.HasField("registered"):
                    registered = True
                    self._last_refusal = ""
                    self.heartbeat_seconds = self.cfg.heartbeat or msg.registered.heartbeat_seconds or 2.0
                    self.lease_seconds = msg.registered.lease_seconds
                    self._renew(registering_at)
                    if self._send is None:
                        meanwhile, self.buffer = self.buffer, []
                        if resend or meanwhile:
                            send.put_nowait(pb.AgentMessage(events=resend + meanwhile))
                        self._send = send
                    print(f"taskhub node: registered as {msg.registered.name} with {server}", flush=True)
                    if beat is None:
                        beat = asyncio.get_running_loop().create_task(self._heartbeats(send))
                self._handle(msg)
            print("taskhub node: the server closed the stream; reconnecting", flush=True)
        except asyncio.CancelledError:
            if call is not None:
                call.cancel()
            raise
        except grpc.aio.AioRpcError as e:
            leader = leader_hint(e)
            if leader:
                print(f"taskhub node: {server} is not the scheduler; connecting to the scheduler at {leader}",
                      flush=True)
                self.servers.lead_to(leader)
                led = True
            elif e.code() in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
                # No retry can fix a missing, wrong or revoked token: stop (and kill the runs).
                print(f"taskhub node: refused by the server: {e.details()}", flush=True)
                self.exit_code = 2
                self._stopping.set()
            elif e.code() in (grpc.StatusCode.ALREADY_EXISTS, grpc.StatusCode.INVALID_ARGUMENT):
                print(f"taskhub node: refused: {e.details()}", flush=True)
            elif registered:
                print(f"taskhub node: lost the server {server} ({e.code().name}); runs continue while the lease"
                      " lasts, reconnecting", flush=True)
            else:
                why = f"taskhub node: no session with {server} ({e.code().name}: {e.details()}); trying again"
                if why != self._last_refusal:
                    print(why, flush=True)
                self._last_refusal = why
        finally:
            for task in (beat, writer):
                if task is not None:
                    task.cancel()
            await asyncio.gather(*(t for t in (beat, writer) if t is not None), return_exceptions=True)
            self._send = None
            if not registered:  # what waited waits on, in order (recent lines and exits are recomputed)
                meanwhile, self.buffer, self.buffered_lines = self.buffer, [], 0
                for ev in held + meanwhile:
                    self._buffer(ev)
            # Events the stream never took go back to the buffer, in order (nothing else was
            # buffered meanwhile: while a stream is open, events go to its queue).
            while not send.empty():
                msg = send.get_nowait()
                if msg is not None and msg.events:
                    for ev in msg.events:
                        self._buffer(ev)
            await asyncio.shield(channel.close(grace=None))
        if not led:
            self.servers.failed(index)  # the next session tries the next server of the list
        return registered, led

    @staticmethod
    async def _write(call, send: asyncio.Queue) -> None:
        """Send what is queued for this stream, in order (our own task: stopped with the session)."""
        while True:
            msg = await send.get()
            if msg is None:
                await call.done_writing()
                return
            await call.write(msg)

    def _registration(self) -> pb.Register:
        return pb.Register(
            name=self.name, address=self.cfg.address, slots=self.slots,
            labels=node_labels(self.cfg.data_dir, self.cfg.labels),
            cpu_count=os.cpu_count() or 1, memory_mb=psutil.virtual_memory().total // (1 << 20),
            session=self.session,
            running=[pb.RunningTask(task_id=t, pid=r.pid, ppid=r.ppid, attempt=r.attempt) for t, r in self.runs.items()
                     if r.state is RunState.RUNNING],
            finished=[t for t, r in self.runs.items() if r.state is RunState.EXITED],
            ended=[pb.RunningTask(task_id=t, attempt=r.exit.attempt) for t, r in self.runs.items()
                   if r.state is RunState.EXITED])

    async def _heartbeats(self, send: asyncio.Queue) -> None:
        while True:
            self._beat_seq += 1
            self._beats_sent[self._beat_seq] = time.monotonic()
            send.put_nowait(pb.AgentMessage(heartbeat=pb.Heartbeat(
                cpu_percent=psutil.cpu_percent(None), memory_percent=psutil.virtual_memory().percent,
                seq=self._beat_seq)))
            await asyncio.sleep(self.heartbeat_seconds)

    # -------------------------------------------------------------- the lease
    def _renew(self, sent_at: float) -> None:
        """The server heard from us at or after `sent_at`: runs may go on until sent_at + lease."""
        if not self.lease_seconds:
            return
        until = sent_at + self.lease_seconds
        if until > self.lease_until:
            self.lease_until = until
            self.fence.renew(until)
            self._lease_changed.set()

    def _granted(self, seq: int) -> None:
        sent_at = self._beats_sent.pop(seq, None)
        for old in [s for s in self._beats_sent if s < seq]:
            del self._beats_sent[old]  # answered out of order or lost: never renews later
        if sent_at is not None:
            self._renew(sent_at)

    async def _watch_lease(self) -> None:
        """When the lease runs out, stop every run that did not opt in to keep going."""
        while True:
            self._lease_changed.clear()
            wait = self.lease_until - time.monotonic()
            if wait > 0:
                try:
                    await asyncio.wait_for(self._lease_changed.wait(), wait)
                except asyncio.TimeoutError:
                    pass
                continue
            doomed = [r for r in self.runs.values() if r.state is RunState.RUNNING and not r.keep]
            if doomed:
                print(f"taskhub node: no word from the server for {self.lease_seconds:g}s (the lease):"
                      f" stopping {len(doomed)} runs", flush=True)
            for r in doomed:
                r.state = RunState.FENCED
                self.executor.cancel(r.task_id, 0.0)
            await self._lease_changed.wait()

    # -------------------------------------------------------------- server -> agent
    def _handle(self, msg: pb.ServerMessage) -> None:
        if msg.HasField("lease"):
            self._granted(msg.lease.seq)
        for task_id in msg.acked:
            r = self.runs.get(task_id)
            if r is not None and r.state is RunState.EXITED:
                del self.runs[task_id]
        for c in msg.cancel:
            self._cancel(c.task_id, None if c.grace < 0 else c.grace, c.abandon, c.attempt)
        for s in msg.start:
            self._start(run_from_start(s))

    def _live(self, task_id: int) -> AgentRun | None:
        r = self.runs.get(task_id)
        return r if r is not None and r.live else None

    def _start(self, run: Run) -> None:
        have = self._live(run.task_id)
        if have is not None:
            if have.attempt == run.attempt and not have.silenced:
                return  # a duplicate start of the run it has
            if not have.silenced:  # an older attempt still here: it goes first
                have.state = RunState.ABANDONED
                self.executor.cancel(run.task_id, 0.0)
            have.follow = run  # the old run is being killed; this one follows
            return
        if run.attempt and (run.task_id, run.attempt) in self.started:
            return  # this attempt ran here already: an attempt runs at most once (its exit is on its way)
        self.started[(run.task_id, run.attempt)] = None
        if len(self.started) > 20_000:
            del self.started[next(iter(self.started))]
        self.runs[run.task_id] = AgentRun(run.task_id, run.attempt, run.keep_on_disconnect)  # supersedes an exit
        self.executor.start_run(run)

    def _cancel(self, task_id: int, grace: float | None, abandon: bool, attempt: int = 0) -> None:
        have = self._live(task_id)
        if have is None:
            if not abandon:  # the server thinks it is here: settle it
                self.on_exit(task_id, Outcome("cancelled", 0, "cancelled (this node did not have the run)"))
            return
        if attempt and have.attempt != attempt:
            if have.follow is not None and have.follow.attempt == attempt:
                have.follow = None
            return  # meant for another attempt than the run it has
        have.follow = None
        if abandon:
            have.state = RunState.ABANDONED
            grace = 0.0
        self.executor.cancel(task_id, grace)

    # -------------------------------------------------------------- executor -> server (NodeEvents)
    def _emit(self, ev: pb.TaskEvent) -> None:
        run = self._live(ev.task_id)
        if run is not None:
            ev.attempt = run.attempt
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
            for ev in events:
                self._buffer(ev)

    def _buffer(self, ev: pb.TaskEvent) -> None:
        """Keep an event for the next stream; past the cap, log lines are dropped and counted."""
        if ev.HasField("logs"):
            n = len(ev.logs.texts)
            if self.buffered_lines + n > self.cfg.max_buffered_lines:
                if not self.dropped_lines:
                    print(f"taskhub node: more than {self.cfg.max_buffered_lines} log lines buffered while"
                          " disconnected; dropping further lines (counted, reported as a marker)", flush=True)
                self.dropped_lines[ev.task_id] = self.dropped_lines.get(ev.task_id, 0) + n
                return
            self.buffered_lines += n
        self.buffer.append(ev)

    def _report_dropped(self) -> None:
        """Say what was dropped; the lines still in a run's recent tail are re-sent anyway, and the
        server marks any hole that remains in the task's log."""
        for task_id, n in self.dropped_lines.items():
            print(f"taskhub node: task {task_id}: {n} log lines dropped while the server was unreachable", flush=True)
        self.dropped_lines.clear()

    def _silenced(self, task_id: int) -> bool:
        r = self.runs.get(task_id)
        return r is not None and r.silenced

    def on_running(self, task_id: int, pid: int, ppid: int) -> None:
        run = self._live(task_id)
        if run is not None:
            run.pid, run.ppid = pid, ppid
        if not self._silenced(task_id):
            self._emit(pb.TaskEvent(task_id=task_id, running=pb.RunStarted(pid=pid, ppid=ppid)))

    def on_log(self, task_id: int, lines: list[tuple[int, str]]) -> None:
        if self._silenced(task_id):
            return
        run = self.runs.get(task_id)
        first = run.tail.add(lines) if run else 0
        self._emit(pb.TaskEvent(task_id=task_id, first_line=first, logs=pb.LogBatch(
            streams=[s for s, _ in lines], texts=[t for _, t in lines])))

    def on_progress(self, task_id: int, percent: int) -> None:
        if not self._silenced(task_id):
            self._emit(pb.TaskEvent(task_id=task_id, progress=percent))

    def on_result(self, task_id: int, text: str) -> None:
        if not self._silenced(task_id):
            self._emit(pb.TaskEvent(task_id=task_id, result=text))

    def on_response(self, task_id: int, json_text: str) -> None:
        if not self._silenced(task_id):
            self._emit(pb.TaskEvent(task_id=task_id, response_json=json_text))

    def on_exit(self, task_id: int, outcome: Outcome) -> None:
        run = self._live(task_id)
        if run is not None and run.silenced:
            del self.runs[task_id]
            if run.follow is not None:
                self._start(run.follow)
            return
        if run is not None and run.state is RunState.FENCED:
            outcome = Outcome("lost", outcome.exit_code,
                              f"stopped by its node: no word from the server for longer than the lease"
                              f" ({self.lease_seconds:g}s)")
        exit_ = pb.RunExit(kind=outcome.kind, exit_code=outcome.exit_code, error=outcome.error)
        if outcome.result is not None:
            exit_.result = outcome.result
        ev = pb.TaskEvent(task_id=task_id, exit=exit_, attempt=run.attempt if run else 0)
        record = self.runs.get(task_id) or self.runs.setdefault(task_id, AgentRun(task_id, 0))
        record.state, record.exit = RunState.EXITED, ev
        self._emit(ev)

def run(cfg: AgentConfig) -> int:
    quiet_when_unread()
    logging.basicConfig(level=os.environ.get("TASKHUB_LOG", "WARNING"), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return event_loop.run(Agent(cfg).run(), cfg.event_loop)
