"""`make bench` (part of bench.run): the raw parts a no-op task is made of, measured bare on this
machine, and the limit they put on no-op tasks/s.

    python -m bench.ceiling [--quick]

- a grpc.aio unary call (an empty request and answer) from 8 blocking client threads, as the
  SDK makes them: calls/s;
- a SQLite commit of a batch of task-sized rows (WAL, synchronous=NORMAL, as the store) of 1 and
  of 250 rows: commits/s;
- a round trip of a framed pickle through pipes to a warm Python process (server/node/wire.py's
  framing, as a job to a worker and its "done" back): round trips/s, one at a time;
- a grpc.aio unary call of ExecuteTask's shape (~200 bytes each way), one at a time: p50 ms.

The round trip of one no-op task (bench.peer's C: one ExecuteTask call without a request id, on a
quiet server) costs at least that call, one pipe round trip and one one-row commit (the row,
inserted with the task's end), one after the other: its floor.

A no-op task costs at least one create (a unary call, or 1/250 of one when batched), a row inserted
and a row updated, and one pipe round trip; the event loop is one thread, so the costs add up:
    limit = 1 / (call + 2 rows + pipe round trip)
This is a ceiling, not a target: taskhub also keeps statuses, logs, metrics and auth.
"""
from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import sqlite3
import subprocess
import sys
import tempfile
import time

import grpc

from .workloads import in_threads

ECHO = b"""
import os, sys
sys.path[:0] = [%r]
from server.node.wire import HEADER, frame, unframe
inp, out = os.fdopen(0, "rb", buffering=0), os.fdopen(1, "wb", buffering=0)
while True:
    head = inp.read(HEADER.size)
    if not head:
        break
    msg = unframe(inp.read(HEADER.unpack(head)[0]))
    out.write(frame(("done", msg[1], "success", "", None)))
"""


def _grpc_server(port_out, ready) -> None:
    async def main() -> None:
        server = grpc.aio.server()
        handler = grpc.method_handlers_generic_handler("bench.Echo", {
            "Call": grpc.unary_unary_rpc_method_handler(_echo)})
        server.add_generic_rpc_handlers((handler,))
        port_out.value = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        ready.set()
        await server.wait_for_termination()
    asyncio.run(main())


async def _echo(request: bytes, context) -> bytes:
    return request


class EchoServer:
    """The bare grpc.aio server, in its own process (as taskhub's is)."""

    def __enter__(self) -> str:
        ctx = multiprocessing.get_context("spawn")
        port, ready = ctx.Value("i", 0), ctx.Event()
        self.proc = ctx.Process(target=_grpc_server, args=(port, ready), daemon=True)
        self.proc.start()
        if not ready.wait(60):
            self.__exit__()
            raise RuntimeError("the bare gRPC server did not start")
        return f"127.0.0.1:{port.value}"

    def __exit__(self, *exc) -> None:
        self.proc.terminate()
        self.proc.join(10)


def grpc_call_round_trip_ms(calls: int) -> float:
    """p50 ms of one ExecuteTask-shaped call (a ~200-byte request and answer), one at a time."""
    async def run(target: str) -> list[float]:
        async with grpc.aio.insecure_channel(target) as channel:
            call = channel.unary_unary("/bench.Echo/Call")
            times = []
            for i in range(calls + 50):  # the first 50 warm the channel
                t0 = time.perf_counter()
                await call(b"x" * 200)
                if i >= 50:
                    times.append((time.perf_counter() - t0) * 1000)
            return sorted(times)
    with EchoServer() as target:
        times = asyncio.run(run(target))
    return times[len(times) // 2]


def grpc_unary_rate(calls: int, threads: int = 8) -> float:
    """Unary calls/s through a grpc.aio server (own process) from blocking client threads."""
    with EchoServer() as target:
        channels = [grpc.insecure_channel(target) for _ in range(threads)]
        stubs = [c.unary_unary("/bench.Echo/Call") for c in channels]
        for s in stubs:
            s(b"warm")
        per = calls // threads

        def run(stub) -> None:
            for _ in range(per):
                stub(b"x" * 64)
        elapsed = in_threads(run, stubs)
        for c in channels:
            c.close()
        return per * threads / elapsed


def sqlite_commit_rate(rows_per_commit: int, commits: int) -> float:
    """Commits/s of `rows_per_commit` task-sized rows each, WAL, synchronous=NORMAL."""
    with tempfile.TemporaryDirectory() as d:
        conn = sqlite3.connect(os.path.join(d, "c.db"), isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, uid TEXT, spec TEXT, status INTEGER, t INTEGER)")
        spec = '{"type":2,"namespace":"default","callable":"starter.examples:noop","resources":{"slots":1}}'
        next_id = 0
        t0 = time.perf_counter()
        for _ in range(commits):
            rows = [(next_id + i, f"{next_id + i:032x}", spec, 0, 0) for i in range(rows_per_commit)]
            next_id += rows_per_commit
            conn.execute("BEGIN")
            conn.executemany("INSERT INTO t VALUES (?, ?, ?, ?, ?)", rows)
            conn.execute("COMMIT")
        elapsed = time.perf_counter() - t0
        conn.close()
    return commits / elapsed


def pipe_round_trip_rate(count: int) -> float:
    """Framed-pickle round trips/s to a warm Python process, one at a time."""
    from server.node.wire import HEADER, frame, unframe
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    p = subprocess.Popen([sys.executable, "-c", ECHO.decode() % repo], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         bufsize=0)
    job = ("run", 1, "0" * 32, "default", "noop", "starter.examples:noop", "", {"TASKHUB_SERVER": "127.0.0.1:1"})

    def one() -> None:
        p.stdin.write(frame(job))
        unframe(p.stdout.read(HEADER.unpack(p.stdout.read(HEADER.size))[0]))
    for _ in range(50):
        one()
    t0 = time.perf_counter()
    for _ in range(count):
        one()
    elapsed = time.perf_counter() - t0
    p.stdin.close()
    p.wait(10)
    return count / elapsed


def measure(quick: bool = False) -> dict:
    scale = 10 if quick else 1
    unary = grpc_unary_rate(8000 // scale)
    commit_1 = sqlite_commit_rate(1, 4000 // scale)
    commit_250 = sqlite_commit_rate(250, 200 // scale)
    pipe = pipe_round_trip_rate(4000 // scale)
    call_ms = grpc_call_round_trip_ms(2000 // scale)
    row_s = 1 / (commit_250 * 250)
    one_call = 1 / (1 / unary + 1 / commit_1 + row_s + 1 / pipe)
    batched = 1 / (1 / unary / 250 + 2 * row_s + 1 / pipe)
    floor_ms = call_ms + 1000 / pipe + 1000 / commit_1
    return {"grpc_unary_calls_per_s": unary, "sqlite_commits_per_s_1_row": commit_1,
            "sqlite_commits_per_s_250_rows": commit_250, "pipe_round_trips_per_s": pipe,
            "grpc_call_round_trip_ms": call_ms, "floor_round_trip_ms": floor_ms,
            "limit_one_call_per_task_per_s": one_call, "limit_batched_per_s": batched}


def render(c: dict) -> str:
    return "\n".join([
        "the raw parts, bare on this machine:",
        f"  grpc.aio unary call, 8 blocking client threads   {c['grpc_unary_calls_per_s']:>10,.0f} calls/s",
        f"  SQLite commit of 1 row                           {c['sqlite_commits_per_s_1_row']:>10,.0f} commits/s",
        f"  SQLite commit of 250 rows                        {c['sqlite_commits_per_s_250_rows']:>10,.0f} commits/s",
        f"  pipe round trip to a warm worker (one at a time) {c['pipe_round_trips_per_s']:>10,.0f} round trips/s",
        f"  grpc.aio unary call, one at a time, p50          {c['grpc_call_round_trip_ms']:>10.3f} ms",
        f"the floor of one no-op round trip (that call + pipe round trip + a one-row commit): "
        f"{c['floor_round_trip_ms']:.3f} ms",
        "estimated limit for no-op tasks/s (one event loop: the parts add up):",
        f"  one call per task: call + 1-row commit + a row update + pipe round trip {c['limit_one_call_per_task_per_s']:>8,.0f}/s",
        f"  batched by 250:    call/250 + 2 rows + pipe round trip                   {c['limit_batched_per_s']:>8,.0f}/s",
    ])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench.ceiling")
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args(argv)
    print(render(measure(a.quick)))
    return 0


if __name__ == "__main__":
    sys.exit(main())


def write_markdown(path: str, result: dict) -> None:
    """bench/results/CEILING.md: the ceiling and how close taskhub came, from one `make bench` run
    (committed, unlike the JSON beside it, so the figures travel with the code that made them)."""
    import datetime
    c, fig, m = result["ceiling"], result["figures"], result["machine"]
    lines = [
        "# The ceiling for no-op tasks on this machine",
        "",
        f"Written by `make bench` (`python -m bench.run`) on {datetime.date.today().isoformat()}: "
        f"{m['cores']} cores, Python {m['python']}, load average {m['load_average_at_start'][0]:.1f} at the start "
        "(the machine is shared: compare figures of one run, not across runs).",
        "",
        "| raw part, bare | measured |",
        "|---|---|",
        f"| grpc.aio unary call, 8 blocking client threads | {c['grpc_unary_calls_per_s']:,.0f} calls/s |",
        f"| SQLite commit of 1 task-sized row (WAL, synchronous=NORMAL) | {c['sqlite_commits_per_s_1_row']:,.0f} commits/s |",
        f"| SQLite commit of 250 rows | {c['sqlite_commits_per_s_250_rows']:,.0f} commits/s |",
        f"| pipe round trip to a warm worker (framed pickle, one at a time) | {c['pipe_round_trips_per_s']:,.0f}/s |",
        f"| grpc.aio unary call of ExecuteTask's shape (~200 bytes each way), one at a time, p50 | "
        f"{c['grpc_call_round_trip_ms']:.3f} ms |",
        "",
        "The server's event loop is one thread, so a no-op task's raw costs add up:",
        "",
        "| shape | limit (no-op tasks/s) | taskhub | fraction |",
        "|---|---|---|---|",
        f"| one CreateTask per task (call + 1-row commit + a row update + pipe round trip) | "
        f"{c['limit_one_call_per_task_per_s']:,.0f} | {fig['sdk_one_call_per_task_per_s']['median']:,.0f} | "
        f"{c['taskhub_one_call_fraction']:.2f} |",
        f"| batched by 250 (call/250 + 2 rows + pipe round trip) | {c['limit_batched_per_s']:,.0f} | "
        f"{fig['python_noop_per_s']['median']:,.0f} | {c['taskhub_batched_fraction']:.2f} |",
        "",
        "The rest of the gap is what a task is besides its raw parts: four status changes kept in memory",
        "and committed in batches, its log stream opened and closed, metrics, the WaitTasks answer,",
        "the worker's own Python work. One no-op round trip by stage (auth on):",
        "",
        "| stage | p50 ms | mean ms | the event loop's CPU, p50 ms |",
        "|---|---|---|---|",
    ]
    from .stages import STAGES
    st = result["stages"]["auth_on"]
    for name, *_ in STAGES:
        loop = f"{st[name]['loop_cpu_p50_ms']:.3f}" if "loop_cpu_p50_ms" in st[name] else ""
        lines.append(f"| {name} | {st[name]['p50_ms']:.3f} | {st[name]['mean_ms']:.3f} | {loop} |")
    lines.append(f"| round trip (client) | {st['round trip']['p50_ms']:.3f} | {st['round trip']['mean_ms']:.3f} | |")
    lines += [
        "",
        f"The floor of that round trip is the ExecuteTask-shaped call, a pipe round trip and a one-row commit"
        f" one after the other: {c['floor_round_trip_ms']:.3f} ms here, so taskhub's round trip is"
        f" {st['round trip']['p50_ms'] / c['floor_round_trip_ms']:.2f}x its floor.",
    ]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
