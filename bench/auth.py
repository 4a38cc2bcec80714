"""`make bench` (part 2): what authentication adds to one call, p50 / p99.

    python -m bench.auth [--calls N] [--out PATH]

Two real servers, one without auth and one with --auth, each with one task; a blocking client
makes N sequential GetTask calls (unary) and N CreateTask calls to each, interleaved in rounds
so both see the same machine. Writes bench/results/auth.json.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

from client import TaskhubClient

from .server import TaskhubServer, same_hash_seed
from .stats import percentiles, write_results

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def timed(fn, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench.auth")
    ap.add_argument("--calls", type=int, default=2000, help="calls per kind, per server, per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", default=os.path.join(RESULTS, "auth.json"))
    a = ap.parse_args(argv)
    samples: dict[str, list[float]] = {k: [] for k in ("get_off", "get_on", "create_off", "create_on")}
    seed = same_hash_seed()
    with TaskhubServer("--no-local-node", env=seed) as off, TaskhubServer("--no-local-node", "--auth", env=seed) as on:
        with open(os.path.join(on.dir, "admin.token")) as f:
            token = f.read().strip()
        clients = {"off": TaskhubClient(off.target, token=""), "on": TaskhubClient(on.target, token=token)}
        ids = {k: c.create_task(argv=["true"]).id for k, c in clients.items()}
        for c in clients.values():   # warm up channels and code paths
            timed(lambda: c.get_task(ids["off"] if c is clients["off"] else ids["on"]), 200)
        for _ in range(a.rounds):
            for k, c in clients.items():
                samples[f"get_{k}"] += timed(lambda: c.get_task(ids[k]), a.calls)
                samples[f"create_{k}"] += timed(lambda: c.create_task(argv=["true"]), a.calls // 4)
        for c in clients.values():
            c.close()
    res = {k: percentiles(v) for k, v in samples.items()}
    res["added_p50_ms"] = {kind: res[f"{kind}_on"]["p50"] - res[f"{kind}_off"]["p50"] for kind in ("get", "create")}
    print(f"{'call':<12} {'auth off p50/p99 ms':>22} {'auth on p50/p99 ms':>22} {'added p50 ms':>14}")
    for kind, label in (("get", "GetTask"), ("create", "CreateTask")):
        off_, on_ = res[f"{kind}_off"], res[f"{kind}_on"]
        print(f"{label:<12} {off_['p50']:>12.3f} / {off_['p99']:<7.3f} {on_['p50']:>12.3f} / {on_['p99']:<7.3f}"
              f" {res['added_p50_ms'][kind]:>14.3f}")
    write_results(res, a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
