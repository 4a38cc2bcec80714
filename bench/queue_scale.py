"""The queue lives in the database: server memory and restart time with millions of queued tasks
(bench/results/queue_scale.json).

    python -m bench.queue_scale                     # 1,000,000 queued: restart on SQLite and PostgreSQL
    python -m bench.queue_scale --rss-tasks 10000000  # and 10,000,000 queued: the server's RSS (SQLite)
    python -m bench.queue_scale --quick             # 100,000 queued, both backends (a minute)

Each measurement fills a fresh database through the store itself (Batch.insert_tasks, 50,000 rows a
commit: no server, no RPC), then starts `taskhub serve` on it and measures
- restart: from starting the process to the first placement of a task created after it started
  (priority above the queue, so it is next in line; placed = it left NEW), and to its answering;
- RSS of the server process: its peak over those first seconds of scheduling, and at rest.
Goals (issue 18): back to scheduling in under 5 s with 1,000,000 queued, on both backends; RSS under
1 GB with 10,000,000 queued (before the queue moved to the database: ~1.45 KB per queued task,
35-67 s to restart with 1,000,000).
"""
from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import psutil

from client import TaskhubClient, status_name

from .pgcluster import PgCluster
from .stats import print_load, table, write_results

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
FILL_BATCH = 50_000


def fill(db: str, n: int) -> float:
    """Queue n command tasks (`true`, priority 0) in the database at db, directly through the store;
    returns rows per second."""
    from server.model import Task, TaskSpec, TaskType
    from server.storage import open_store

    class SameSpec(TaskSpec):
        """Every queued task has this spec: encoded once, not once per row."""
        def to_json(self) -> str:
            return encoded

    store = open_store(db)
    spec = SameSpec(type=TaskType.COMMAND, name="queued", argv=["true"])
    encoded = TaskSpec.to_json(spec)

    async def insert() -> None:
        store.writer.start(asyncio.get_running_loop())
        pending = []
        for start in range(0, n, FILL_BATCH):
            ids = store.next_task_ids(min(FILL_BATCH, n - start))
            uids = os.urandom(16 * len(ids)).hex()
            b = store.batch()
            b.insert_tasks([Task(i, spec, uids[32 * k:32 * k + 32]) for k, i in enumerate(ids)])
            pending.append(b.submit(wait=True))
            if len(pending) >= 2:  # one batch committing while the next is built
                await pending.pop(0)
        await asyncio.gather(*pending)

    t0 = time.perf_counter()
    try:
        asyncio.run(insert())
    finally:
        store.close()
    return n / (time.perf_counter() - t0)


class Sampler(threading.Thread):
    """The peak RSS of a process, sampled every 50 ms."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.proc = psutil.Process(pid)
        self.peak = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.05):
            try:
                self.peak = max(self.peak, self.proc.memory_info().rss)
            except psutil.NoSuchProcess:
                return


def restart(db: str, workdir: str, queued: int, settle: float) -> dict:
    """Start a server on a database holding `queued` tasks: seconds to answering and to placing a new
    task, and its RSS (peak, and after `settle` seconds)."""
    args = [sys.executable, "-m", "server.cli", "serve", "--db", db, "--grpc-port", "0", "--http-port", "-1",
            "--max-queued", str(queued * 2 + 10), "--slots", "4"]
    t0 = time.monotonic()
    proc = subprocess.Popen(args, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    sampler = Sampler(proc.pid)
    sampler.start()
    target = ""
    try:
        for line in proc.stdout:
            if "gRPC listening on" in line:
                target = line.split("gRPC listening on", 1)[1].split()[0]
            if line.startswith("taskhub: database"):
                break
        if not target:
            raise RuntimeError("taskhub serve did not start")
        threading.Thread(target=proc.stdout.read, daemon=True).start()  # keep its pipe drained
        with TaskhubClient(target) as c:
            new = c.create_task(argv=["true"], name="after-restart", priority=1_000)
            answered = time.monotonic() - t0
            while status_name(c.get_task(new.id).status) == "NEW":
                time.sleep(0.005)
            placed = time.monotonic() - t0
            time.sleep(settle)
            rest = psutil.Process(proc.pid).memory_info().rss
            unfinished = c.list_tasks(statuses=["NEW"], limit=1).tasks
    finally:
        sampler.stop.set()
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return {"queued": queued, "seconds_to_answer": round(answered, 2), "seconds_to_first_placement": round(placed, 2),
            "rss_peak_mb": round(sampler.peak / 2**20, 1), "rss_at_rest_mb": round(rest / 2**20, 1),
            "queue_left": bool(unfinished)}


def measure(make_db, queued: int, settle: float) -> dict:
    """The same server on an empty database first (what starting costs without a queue), then on a
    database filled with `queued` tasks."""
    workdir = tempfile.mkdtemp(prefix="taskhub-queue-")
    try:
        empty = restart(make_db(workdir), workdir, 0, 0.0)
        db = make_db(workdir)
        t0 = time.perf_counter()
        rate = fill(db, queued)
        print(f"  filled {queued:,} in {time.perf_counter() - t0:.0f} s ({rate:,.0f} rows/s)", flush=True)
        return {**restart(db, workdir, queued, settle), "fill_rows_per_s": round(rate),
                "empty_seconds_to_first_placement": empty["seconds_to_first_placement"],
                "empty_rss_peak_mb": empty["rss_peak_mb"]}
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench.queue_scale", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="100,000 queued, both backends")
    ap.add_argument("--restart-tasks", type=int, default=1_000_000, help="queued tasks for the restart figure")
    ap.add_argument("--rss-tasks", type=int, default=0, help="also: the server's RSS with this many queued (SQLite)")
    ap.add_argument("--backends", default="sqlite,postgresql")
    ap.add_argument("--out", default=os.path.join(RESULTS, "queue_scale.json"))
    a = ap.parse_args(argv)
    n = 100_000 if a.quick else a.restart_tasks
    backends = a.backends.split(",")
    res: dict = {"machine": {"cores": os.cpu_count(), "quick": a.quick, "load_average_at_start": os.getloadavg()}}
    dbs = iter(range(100))
    sqlite_db = lambda workdir: os.path.join(workdir, f"queue{next(dbs)}.db")  # noqa: E731
    if "sqlite" in backends:
        print(f"SQLite, {n:,} queued", flush=True)
        res["sqlite"] = measure(sqlite_db, n, 3.0)
    if "postgresql" in backends:
        with PgCluster(durable=True) as pg:
            names = iter(f"queue{i}" for i in range(100))
            print(f"PostgreSQL, {n:,} queued", flush=True)
            res["postgresql"] = measure(lambda _: pg.create_database(next(names)), n, 3.0)
    if a.rss_tasks:
        print(f"SQLite, {a.rss_tasks:,} queued (memory)", flush=True)
        res["sqlite_rss"] = measure(sqlite_db, a.rss_tasks, 10.0)
    res["machine"]["load_average_at_end"] = os.getloadavg()
    rows = [[name, f"{r['queued']:,}", f"{r['seconds_to_answer']:.2f}", f"{r['seconds_to_first_placement']:.2f}",
             f"{r['empty_seconds_to_first_placement']:.2f}", f"{r['rss_peak_mb']:.0f}", f"{r['rss_at_rest_mb']:.0f}",
             f"{r['empty_rss_peak_mb']:.0f}"]
            for name, r in res.items() if name != "machine"]
    print(table(rows, ["database", "queued", "s to answer", "s to first placement (< 5)", "same, empty db",
                       "RSS peak MB", "RSS at rest MB (< 1024)", "RSS peak, empty db"]))
    print_load(res["machine"])
    write_results(res, a.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
