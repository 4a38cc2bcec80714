"""Creates spread over three servers on one PostgreSQL, against one server (bench/results/cluster.json).

    python -m bench.cluster [--quick] [--repeat N]

Durable creates (64 clients in all, 1 and 100 per call, nothing runs them) on a throwaway
PostgreSQL cluster on this machine (bench/pgcluster.py, fsync on): first one server, then three
servers on one fresh database with the clients split evenly over them (issue 18). Then the
time a follower needs to take over after the scheduler's SIGKILL (a few repetitions).
"""
from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from contextlib import ExitStack

import grpc
from taskhub.v1 import cluster_pb2, cluster_pb2_grpc

from . import workloads
from .pgcluster import PgCluster
from .server import TaskhubServer
from .stats import fmt, percentiles, print_load, summary, table, write_results

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


async def spread(targets: list[str], total: int, clients: int, batch: int) -> float:
    """Creates/s of all `targets` together, each taking its share of the clients and the work."""
    n = len(targets)
    t0 = time.perf_counter()
    await asyncio.gather(*(workloads.creates(t, total // n, clients // n, batch) for t in targets))
    done = (total // n // (clients // n) // batch) * (clients // n) * batch * n
    return done / (time.perf_counter() - t0)


def creates(pg: PgCluster, servers: int, reps: int, total: int) -> dict:
    with ExitStack() as stack:
        db = pg.create_database(f"spread{servers}")
        targets = [stack.enter_context(TaskhubServer("--no-local-node", db=db)).target for _ in range(servers)]
        return {"creates_per_s": summary([asyncio.run(spread(targets, total // 4, 64, 1)) for _ in range(reps)]),
                "creates_batched_per_s": summary([asyncio.run(spread(targets, total * 4, 64, 100))
                                                  for _ in range(reps)])}


def scheduler_of(target: str) -> cluster_pb2.ListServersResponse:
    with grpc.insecure_channel(target) as ch:
        return cluster_pb2_grpc.ClusterServiceStub(ch).ListServers(cluster_pb2.ListServersRequest(), timeout=10)


def failovers(pg: PgCluster, kills: int) -> list[float]:
    """Seconds from the scheduler's SIGKILL until another server holds the lock (its own clock)."""
    db = pg.create_database("failover")
    taken = []
    with ExitStack() as stack:
        servers = [stack.enter_context(TaskhubServer("--no-local-node", db=db)) for _ in range(3)]
        for _ in range(kills):
            by_target = {s.target: s for s in servers}
            leader = scheduler_of(servers[-1].target).scheduler
            survivor = next(t for t in by_target if t != leader)
            killed_at = time.time()
            by_target[leader].proc.kill()
            by_target[leader].proc.wait(10)
            while (now := scheduler_of(survivor)).scheduler in ("", leader):
                time.sleep(0.02)
            taken.append(now.scheduler_since_ms / 1000 - killed_at)
            restarted = stack.enter_context(TaskhubServer("--no-local-node", db=db))
            servers = [s for s in servers if s.target != leader] + [restarted]
    return taken


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench.cluster")
    ap.add_argument("--quick", action="store_true", help="small counts, one repetition")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", default=os.path.join(RESULTS, "cluster.json"))
    a = ap.parse_args(argv)
    reps, scale = (1, 10) if a.quick else (a.repeat, 1)
    total = 32_000 // scale
    res = {"machine": {"cores": os.cpu_count(), "quick": a.quick, "load_average_at_start": os.getloadavg()}}
    with PgCluster(durable=True) as pg:
        res["one_server"] = creates(pg, 1, reps, total)
        res["three_servers"] = creates(pg, 3, reps, total)
        taken = failovers(pg, 3 if a.quick else 5)
    res["failover_seconds"] = {**percentiles(taken), "max": max(taken), "all": taken}
    res["machine"]["load_average_at_end"] = os.getloadavg()
    one, three = res["one_server"], res["three_servers"]
    rows = [[f"durable creates/s, 64 clients, {what}", fmt(one[key]["median"]), fmt(three[key]["median"])]
            for what, key in (("1 per call", "creates_per_s"), ("100 per call", "creates_batched_per_s"))]
    print(table(rows, ["workload (median), PostgreSQL", "1 server", "3 servers"]))
    f = res["failover_seconds"]
    print(f"failover after the scheduler's SIGKILL: p50 {f['p50']:.2f} s, max {f['max']:.2f} s ({len(taken)} kills)")
    print_load(res["machine"])
    write_results(res, a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
