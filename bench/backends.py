"""SQLite beside PostgreSQL, the same workloads in the same run (bench/results/backends.json).

    python -m bench.backends [--quick] [--repeat N]

Durable creates (64 clients, 1 and 100 per call, nothing runs them) and the idle no-op round
trip (submit -> done, one at a time), first on a SQLite file, then on a throwaway PostgreSQL
cluster on this machine (bench/pgcluster.py, fsync on). Goals (issue 18): PostgreSQL single-call
creates >= 70 % of SQLite's, batched creates >= 5,000/s.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import sys

from . import workloads
from .pgcluster import PgCluster
from .server import TaskhubServer
from .stats import fmt, percentiles, print_load, summary, table, write_results

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def measure(new_db, reps: int, n_create: int, n_lat: int) -> dict:
    """new_db(): a fresh --db for each server (the round trip must not queue behind the creates)."""
    run = asyncio.run
    fig = {}
    with TaskhubServer("--no-local-node", db=new_db()) as srv:
        fig["creates_per_s"] = summary([run(workloads.creates(srv.target, n_create // 4, 64, 1)) for _ in range(reps)])
        fig["creates_batched_per_s"] = summary([run(workloads.creates(srv.target, n_create * 4, 64, 100))
                                                for _ in range(reps)])
    with TaskhubServer(db=new_db()) as srv:
        lat = run(workloads.round_trips(srv.target, workloads.NOOP, n_lat))
        fig["round_trip_ms"] = percentiles(lat["submit_to_done"])
    return fig


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench.backends")
    ap.add_argument("--quick", action="store_true", help="small counts, one repetition")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", default=os.path.join(RESULTS, "backends.json"))
    a = ap.parse_args(argv)
    reps, scale = (1, 10) if a.quick else (a.repeat, 1)
    n_create, n_lat = 32_000 // scale, 300 // scale
    res = {"machine": {"cores": os.cpu_count(), "quick": a.quick, "load_average_at_start": os.getloadavg()}}
    res["sqlite"] = measure(lambda: "", reps, n_create, n_lat)  # "": a file in a fresh temporary directory
    with PgCluster(durable=True) as pg:
        names = iter(("creates", "round_trip"))
        res["postgresql"] = measure(lambda: pg.create_database(next(names)), reps, n_create, n_lat)
    res["machine"]["load_average_at_end"] = os.getloadavg()
    s, p = res["sqlite"], res["postgresql"]
    ratio = p["creates_per_s"]["median"] / s["creates_per_s"]["median"]
    res["postgresql_vs_sqlite_single"] = ratio
    rows = [
        ["durable creates/s, 64 clients, 1 per call", fmt(s["creates_per_s"]["median"]),
         fmt(p["creates_per_s"]["median"]), f"PG >= 70 % of SQLite: {ratio:.0%}"],
        ["durable creates/s, 64 clients, 100 per call", fmt(s["creates_batched_per_s"]["median"]),
         fmt(p["creates_batched_per_s"]["median"]), "PG >= 5,000"],
        [f"idle no-op round trip ({n_lat}), ms p50 / p99",
         f"{s['round_trip_ms']['p50']:.2f} / {s['round_trip_ms']['p99']:.2f}",
         f"{p['round_trip_ms']['p50']:.2f} / {p['round_trip_ms']['p99']:.2f}", ""],
    ]
    print(table(rows, ["workload (median)", "SQLite", "PostgreSQL", "goal"]))
    print_load(res["machine"])
    write_results(res, a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
