"""Repetition, summaries and the table every bench prints."""
from __future__ import annotations

import json
import os
import statistics
import time

import psutil


def summary(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "runs": len(values)}


def percentiles(samples_ms: list[float]) -> dict:
    xs = sorted(samples_ms)
    pick = lambda q: xs[min(len(xs) - 1, int(len(xs) * q))]  # noqa: E731
    return {"p50": pick(0.50), "p99": pick(0.99), "n": len(xs)}


def fmt(x: float) -> str:
    return f"{x:,.0f}" if x >= 100 else f"{x:,.2f}"


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    line = lambda r: "  ".join(str(c).ljust(w) if i < 2 else str(c).rjust(w) for i, (c, w) in enumerate(zip(r, widths)))  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in rows])


def print_load(machine: dict) -> None:
    print(f"\nload average at start {machine['load_average_at_start'][0]:.2f}, at end "
          f"{machine['load_average_at_end'][0]:.2f} (other work on the machine skews every figure)")


def write_results(res: dict, out: str) -> None:
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        json.dump(res, f, indent=2)
    print(f"\nwritten to {os.path.relpath(out)}")


def settle(pids: list[int], window: float = 0.2, quiet_cpu: float = 0.01, limit: float = 10.0) -> float:
    """Wait until these processes and their children use next to no CPU (less than `quiet_cpu`
    seconds in a `window`): what the last workload left them doing (the writer's last commits, a
    WAL checkpoint, a broker's bookkeeping) must not land in the next system's figure. Gives up
    after `limit` seconds. Returns the seconds waited."""
    procs = []
    for pid in pids:
        try:
            procs.append(psutil.Process(pid))
        except psutil.NoSuchProcess:
            pass

    def cpu() -> float:
        total = 0.0
        for p in procs:
            try:
                for q in (p, *p.children(recursive=True)):
                    t = q.cpu_times()
                    total += t.user + t.system
            except psutil.NoSuchProcess:
                pass
        return total

    start = time.monotonic()
    while time.monotonic() - start < limit:
        before = cpu()
        time.sleep(window)
        if cpu() - before < quiet_cpu:
            break
    return time.monotonic() - start
