"""The machine's own limits, measured in the same run: fork/exec and SQLite group commit."""
from __future__ import annotations

import multiprocessing
import os
import sqlite3
import subprocess
import tempfile
import time


def _spawn_loop(n: int) -> None:
    for _ in range(n):
        subprocess.run(["/bin/true"], stdin=subprocess.DEVNULL)


def fork_exec_rate(count: int = 2000, processes: int = 1) -> float:
    """/bin/true spawned and reaped per second by `processes` loops in parallel."""
    t0 = time.perf_counter()
    if processes == 1:
        _spawn_loop(count)
    else:
        ctx = multiprocessing.get_context("fork")
        procs = [ctx.Process(target=_spawn_loop, args=(count // processes,)) for _ in range(processes)]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        count = count // processes * processes
    return count / (time.perf_counter() - t0)


def sqlite_group_commit_rate(rows: int = 100_000, per_txn: int = 100) -> float:
    """Rows/s inserted in `per_txn`-row transactions, WAL, synchronous=NORMAL (taskhub's settings)."""
    with tempfile.TemporaryDirectory() as d:
        conn = sqlite3.connect(os.path.join(d, "bare.db"), isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, a TEXT, b INTEGER)")
        batch = [("x" * 40, i) for i in range(per_txn)]
        t0 = time.perf_counter()
        for _ in range(rows // per_txn):
            conn.execute("BEGIN")
            conn.executemany("INSERT INTO t (a, b) VALUES (?, ?)", batch)
            conn.execute("COMMIT")
        elapsed = time.perf_counter() - t0
        conn.close()
    return rows // per_txn * per_txn / elapsed
