"""`make bench` (part of bench.run): where one no-op task's round trip goes, stage by stage.

    python -m bench.stages [--trips N] [--auth]

A real server started with TASKHUB_STAGES (server/stages.py) records monotonic timestamps
along the path; the client records its own (the same clock), one task at a time, each one
ExecuteTask call without a request id: a quiet server starts it before it has a row and
inserts the row with its end, in one commit (Engine._start_while_committing; the SDK's run_task
sends a request id, and the server then commits before it starts the task). Each stage's p50 is
printed with its share of the round trip; the stages follow each other, so they add up to the
round trip (p50s of parts need not add up to the p50 of the whole: the mean column does). For
the stages the server's event loop brackets, "loop CPU" is the loop's own CPU time over the stage (server/stages.py):
where it is the whole stage, the stage is the loop's work; where less, the loop waited.
The instrumented server is only ever used here, never for the other figures.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile

from server.stages import CPU

from . import workloads
from .server import TaskhubServer
from .stats import table

# (name, from, to, why it costs what it costs); "client:*" times are the bench client's.
STAGES = [
    ("client call -> server", "client:submit", "received",
     "the SDK builds and serialises the request; HTTP/2 over loopback; gRPC core hands it to Python"),
    ("interceptors (auth, metrics)", "received", "servicer",
     "gRPC reads the request after its headers; token check (a cached hash lookup), rules, audit; RPC timer"),
    ("engine", "servicer", "queued",
     "proto -> spec, validation, id and uid, the Task built"),
    ("dispatch to worker", "queued", "dispatched",
     "scheduling round, placement (3 status changes), the run's environment, pickled onto the pipe"),
    ("pipe to worker", "dispatched", "worker_got", "the worker's main thread, idle in a read of its pipe, wakes and unpickles the job"),
    ("worker runs the task", "worker_got", "worker_done", "import cache hit, call, result to JSON, flush logs"),
    ("pipe back", "worker_done", "exited", "the 'done' frame read by the event loop"),
    ("result commit", "exited", "announced", "the row inserted as it ended (SUCCESS), one inline commit; waiters told after it"),
    ("waiter notified", "announced", "client:done",
     "the ExecuteTask call (the one that created the task) wakes, Task -> proto, answered, read"),
]


def breakdown(records: dict[int, dict[str, float]], trips: list[tuple]) -> dict:
    """Per stage: p50 and mean in ms over the trips whose every timestamp was recorded."""
    per_stage: dict[str, list[float]] = {name: [] for name, *_ in STAGES}
    per_cpu: dict[str, list[float]] = {name: [] for name, *_ in STAGES}
    totals = []
    for task_id, submitted, done in trips:
        marks = records.get(task_id)
        if not marks:
            continue
        marks = {**marks, "client:submit": submitted, "client:done": done}
        if not all(a in marks and b in marks for _, a, b, _ in STAGES):
            continue
        for name, a, b, _ in STAGES:
            per_stage[name].append((marks[b] - marks[a]) * 1000)
            if a + CPU in marks and b + CPU in marks:
                per_cpu[name].append((marks[b + CPU] - marks[a + CPU]) * 1000)
        totals.append((done - submitted) * 1000)
    if not totals:
        raise RuntimeError("no round trip was fully recorded")
    out = {name: {"p50_ms": statistics.median(v), "mean_ms": statistics.fmean(v)} for name, v in per_stage.items()}
    for name, v in per_cpu.items():
        if len(v) == len(totals):  # bracketed by the loop in every trip
            out[name]["loop_cpu_p50_ms"] = statistics.median(v)
    out["round trip"] = {"p50_ms": statistics.median(totals), "mean_ms": statistics.fmean(totals)}
    out["trips"] = len(totals)
    return out


def measure(trips: int, auth: bool, env: dict[str, str] | None = None) -> dict:
    """`env`: more of the server's environment (bench.server.same_hash_seed, for two measures compared)."""
    with tempfile.TemporaryDirectory(prefix="taskhub-stages-") as d:
        path = os.path.join(d, "stages.jsonl")
        extra = ("--python-workers", "2") + (("--auth",) if auth else ())
        with TaskhubServer(*extra, env={**(env or {}), "TASKHUB_STAGES": path}) as srv:
            seen: list[tuple] = []
            # the first trips warm the workers' import of the callable and the channels
            asyncio.run(workloads.executes(srv.target, workloads.NOOP, 20, srv.token))
            asyncio.run(workloads.executes(srv.target, workloads.NOOP, trips, srv.token, seen))
        records = {}
        with open(path) as f:
            for line in f:
                r = json.loads(line)
                records[r.pop("id")] = r
    return breakdown(records, seen)


def render(result: dict, title: str) -> str:
    total = result["round trip"]["mean_ms"]
    rows = []
    for name, _, _, why in STAGES:
        s = result[name]
        loop = f"{s['loop_cpu_p50_ms']:.3f}" if "loop_cpu_p50_ms" in s else "-"
        rows.append([name, why, f"{s['p50_ms']:.3f}", f"{s['mean_ms']:.3f}", f"{100 * s['mean_ms'] / total:.0f} %", loop])
    s = result["round trip"]
    rows.append(["round trip (client)", f"{result['trips']} sequential no-op Python tasks", f"{s['p50_ms']:.3f}",
                 f"{s['mean_ms']:.3f}", "100 %", ""])
    return f"{title}\n" + table(rows, ["stage", "what it pays for", "p50 ms", "mean ms", "share", "loop CPU p50 ms"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench.stages")
    ap.add_argument("--trips", type=int, default=300)
    ap.add_argument("--auth", action="store_true", help="the server runs with --auth (the client sends a token)")
    a = ap.parse_args(argv)
    result = measure(a.trips, a.auth)
    print(render(result, f"round trip of one no-op task by stage (auth {'on' if a.auth else 'off'})"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
