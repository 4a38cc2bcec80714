"""Bounded storage and memory under load (bench/results/storage.json).

    python -m bench.storage                 # 60,000 small tasks at full speed: WAL and server memory
    python -m bench.storage --queued 1000000  # memory of 1 million queued tasks (no node runs them)

Full speed: 8 clients submit no-op Python tasks in CreateTasks batches of 250 and wait for
each batch to end (WaitTasks), as fast as the server goes. A sampler reads the WAL's size
and the server's RSS every 0.2 s.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import threading
import time

import psutil
import grpc
from taskhub.v1 import task_service_pb2 as svc
from taskhub.v1 import task_service_pb2_grpc as svc_grpc

from .server import TaskhubServer
from .workloads import NOOP, TRUE

BATCH = 250


class Sampler(threading.Thread):
    def __init__(self, pid: int, db: str):
        super().__init__(daemon=True)
        self.proc = psutil.Process(pid)
        self.db = db
        self.samples: list[tuple[float, int, int]] = []   # (seconds, wal bytes, rss bytes)
        self.stop = threading.Event()
        self.t0 = time.monotonic()

    def run(self) -> None:
        while not self.stop.wait(0.2):
            try:
                wal = os.path.getsize(self.db + "-wal")
            except OSError:
                wal = 0
            self.samples.append((time.monotonic() - self.t0, wal, self.proc.memory_info().rss))


async def full_speed(target: str, total: int, clients: int = 8, progress=None) -> float:
    channels = [grpc.aio.insecure_channel(target) for _ in range(clients)]
    stubs = [svc_grpc.TaskServiceStub(c) for c in channels]
    per_client = total // clients // BATCH
    done = [0]

    async def client(stub):
        for _ in range(per_client):
            resp = await stub.CreateTasks(svc.CreateTasksRequest(specs=[NOOP] * BATCH))
            async for batch in stub.WaitTasks(svc.WaitTasksRequest(ids=[t.id for t in resp.tasks])):
                done[0] += len(batch.tasks)
            if progress:
                progress(done[0])

    t0 = time.perf_counter()
    await asyncio.gather(*(client(s) for s in stubs))
    elapsed = time.perf_counter() - t0
    await asyncio.gather(*(c.close() for c in channels))
    return per_client * clients * BATCH / elapsed


async def queue_up(target: str, total: int, clients: int = 8) -> float:
    channels = [grpc.aio.insecure_channel(target) for _ in range(clients)]
    stubs = [svc_grpc.TaskServiceStub(c) for c in channels]
    per_client = total // clients // 1000

    async def client(stub):
        for _ in range(per_client):
            await stub.CreateTasks(svc.CreateTasksRequest(specs=[TRUE] * 1000), timeout=120)

    t0 = time.perf_counter()
    await asyncio.gather(*(client(s) for s in stubs))
    elapsed = time.perf_counter() - t0
    await asyncio.gather(*(c.close() for c in channels))
    return per_client * clients * 1000 / elapsed


def mb(n: int) -> float:
    return round(n / 2**20, 1)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", type=int, default=60_000)
    p.add_argument("--queued", type=int, default=0, help="instead: queue this many tasks with no node and measure memory")
    p.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "storage.json"))
    a = p.parse_args()
    result: dict = {}
    if a.queued:
        with TaskhubServer("--no-local-node", "--max-queued", str(a.queued + 1)) as server:
            proc = psutil.Process(server.proc.pid)
            before = proc.memory_info().rss
            rate = asyncio.run(queue_up(server.target, a.queued))
            time.sleep(2)
            after = proc.memory_info().rss
        shutil.rmtree(server.dir, ignore_errors=True)
        result = {"queued_tasks": a.queued, "create_rate_per_s": round(rate), "rss_before_mb": mb(before),
                  "rss_after_mb": mb(after), "bytes_per_queued_task": round((after - before) / a.queued)}
        key = "queued"
    else:
        with TaskhubServer() as server:
            db = os.path.join(server.dir, "bench.db")
            sampler = Sampler(server.proc.pid, db)
            sampler.start()
            marks: dict[int, int] = {}

            def progress(done: int) -> None:
                for step in (10_000, 20_000, 30_000, 40_000, 50_000, 60_000):
                    if done >= step and step not in marks:
                        marks[step] = sampler.proc.memory_info().rss
            rate = asyncio.run(full_speed(server.target, a.tasks, progress=progress))
            time.sleep(1)
            sampler.stop.set()
            sampler.join()
            wal_now = os.path.getsize(db + "-wal") if os.path.exists(db + "-wal") else 0
            db_size = os.path.getsize(db)
        shutil.rmtree(server.dir, ignore_errors=True)
        s = sampler.samples
        result = {
            "tasks": a.tasks, "tasks_per_s": round(rate), "seconds": round(s[-1][0], 1) if s else 0,
            "max_wal_mb": mb(max(w for _, w, _ in s)), "wal_at_end_mb": mb(wal_now), "db_mb": mb(db_size),
            "rss_mb_at": {str(k): mb(v) for k, v in sorted(marks.items())},
            "rss_max_mb": mb(max(r for _, _, r in s)),
        }
        key = "full_speed"
    print(json.dumps(result, indent=2))
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    existing = {}
    if os.path.exists(a.out):
        with open(a.out) as f:
            existing = json.load(f)
    existing[key] = result
    with open(a.out, "w") as f:
        json.dump(existing, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
