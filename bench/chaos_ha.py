"""Chaos with several servers: three servers on one PostgreSQL and three agents under steady load;
the scheduler is SIGKILLed most often, the other servers and the agents now and then.

    make chaos CHAOS_HA=1                   # 10 minutes (bench/results/chaos-ha.json)
    python -m bench.chaos --ha --seconds 60

The agents are given all three servers (`taskhub node --server a,b,c`) and follow the scheduler;
the load sends each create to one server and, unanswered, to the next with the same request id.
Every invariant of bench/chaos.py is checked the same way (0 lost, 0 overlapping runs, 0 log gaps,
no request id made twice); also measured: the time from each scheduler's SIGKILL until another
server holds the scheduler lock (failover p50 and max).
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import grpc
from taskhub.v1 import cluster_pb2, cluster_pb2_grpc

from .chaos import BENCH, Chaos, Proc, free_port, run
from .pgcluster import PgCluster
from .stats import percentiles

SERVERS = 3


class Servers:
    """The servers as one (what bench/chaos.py does to "the server" it does to all of them)."""

    def __init__(self, procs: list[Proc]):
        self.procs = procs
        self.name = "servers"

    @property
    def proc(self):  # the first one's process: its memory is sampled
        return self.procs[0].proc

    def start(self) -> None:
        for p in self.procs:
            if p.proc is None or p.proc.poll() is not None:
                p.start()

    def kill(self) -> None:
        for p in self.procs:
            p.kill()

    def signal(self, sig: int) -> None:
        for p in self.procs:
            p.signal(sig)

    def stop(self, timeout: float = 30) -> int | None:
        codes = [p.stop(timeout) for p in self.procs]
        return next((c for c in codes if c != 0), 0)


class HaChaos(Chaos):
    def __init__(self, seconds: float, agents: int, seed: int, workdir: Path, pg: PgCluster, **kw):
        super().__init__(seconds, agents, seed, workdir, **kw)
        db = pg.create_database("chaos")
        self.targets = [f"127.0.0.1:{free_port()}" for _ in range(SERVERS)]
        self.target = self.targets[0]
        py = sys.executable
        self.procs = [Proc(f"server-{i}", [
            py, "-m", "server.cli", "serve", "--db", db, "--grpc-port", t.rsplit(":", 1)[1], "--http-port", "-1",
            "--no-local-node", "--node-timeout", str(self.lease), "--lease-grace", str(self.grace), "--kill-grace", "1",
            "--allow-module", "chaos_tasks", "--task-path", str(BENCH)], workdir / f"server-{i}.log")
            for i, t in enumerate(self.targets)]
        self.server = Servers(self.procs)
        for a in self.agents:
            a.args[a.args.index("--server") + 1] = ",".join(self.targets)
        self.failovers: list[float] = []

    def processes(self) -> list[Proc]:
        return [*self.procs, *self.agents]

    def wait_server(self, timeout: float = 90) -> None:
        for t in self.targets:
            self.target = t
            super().wait_server(timeout)
        self.target = self.targets[0]

    def cluster(self, target: str) -> cluster_pb2.ListServersResponse | None:
        try:
            with grpc.insecure_channel(target) as ch:
                return cluster_pb2_grpc.ClusterServiceStub(ch).ListServers(cluster_pb2.ListServersRequest(), timeout=5)
        except grpc.RpcError:
            return None

    def monkey(self, until: float) -> None:
        while time.monotonic() < until:
            time.sleep(self.rng.uniform(*self.pace))
            if time.monotonic() >= until:
                break
            action = self.rng.choices(["scheduler", "server", "agent", "freeze"], weights=[5, 1, 2, 2])[0]
            if action in ("agent", "freeze"):
                self.agent_action(action)
                continue
            live = [t for t, p in zip(self.targets, self.procs) if p.proc.poll() is None]
            answer = next((a for a in map(self.cluster, live) if a is not None and a.scheduler), None)
            victim = answer.scheduler if action == "scheduler" and answer else self.rng.choice(live)
            proc = self.procs[self.targets.index(victim)]
            killed_at = time.time()
            proc.kill()
            if answer is not None and victim == answer.scheduler:
                self._time_failover(victim, answer.epoch, killed_at)
            time.sleep(self.rng.uniform(0.1, 2.0))
            proc.start()
            self.target = victim
            super().wait_server()
            self.counts[f"{action}_sigkill"] += 1

    def _time_failover(self, dead: str, epoch: int, killed_at: float) -> None:
        others = [t for t in self.targets if t != dead]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            for t in others:
                a = self.cluster(t)
                if a is not None and a.epoch > epoch and a.scheduler not in ("", dead):
                    self.failovers.append(max(0.0, a.scheduler_since_ms / 1000 - killed_at))
                    return
            time.sleep(0.02)
        self.violations.append(f"no server took over within 60 s of {dead}'s SIGKILL")

    def check(self) -> dict:
        report = super().check()
        report["servers"] = SERVERS
        if self.failovers:
            report["failover_seconds"] = {**percentiles(self.failovers), "max": max(self.failovers)}
        return report


def run_ha(seconds: float, agents: int = 3, seed: int | None = None, workdir: Path | None = None,
           pace: tuple[float, float] = (2.0, 6.0)) -> dict:
    with PgCluster(durable=False) as pg:
        return run(seconds, agents, seed, workdir, pace,
                   make=lambda *a, **kw: HaChaos(*a, pg=pg, **kw))
