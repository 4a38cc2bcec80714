"""FATE's published hetero LR job (examples/dsl/v2/hetero_logistic_regression/hetero_lr_normal_*.json,
as committed under tests/data/fate/), run unchanged in the standalone context: Reader -> DataTransform ->
Intersection (RSA, 1024-bit) -> HeteroLR (Paillier 1024-bit, max_iter 30) -> Evaluation.

    .venv/bin/python -m bench.fate_hetero_lr [--runs 3]

Prints the AUC, the wall and CPU time (all three parties are threads of this process, so CPU time
is the load-independent figure) of the whole job and of each component, HeteroLR's seconds per
iteration (the arbiter's count) and the bytes the parties exchanged; writes
bench/results/fate_hetero_lr.json.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time

from server.flow import standalone
from server.flow.standalone import MemoryTable, run_job

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "..", "tests", "data", "fate")


def load(name: str) -> dict:
    with open(os.path.join(DATA, name)) as f:
        return json.load(f)


def one_run() -> dict:
    tables = {("experiment", n): MemoryTable.from_csv(os.path.join(DATA, f"{n}.csv"))
              for n in ("breast_hetero_guest", "breast_hetero_host")}
    timings: dict[str, float] = {}
    original = standalone.run_component

    def timed(module, *args, component_name=None, **kw):
        started = time.perf_counter()
        try:
            return original(module, *args, component_name=component_name, **kw)
        finally:
            timings[component_name] = time.perf_counter() - started

    standalone.run_component = timed
    traffic: dict[str, list] = {}
    try:
        started, cpu_started = time.perf_counter(), time.process_time()
        job = run_job(load("hetero_lr_normal_dsl.json"), load("hetero_lr_normal_conf.json"), tables, traffic=traffic)
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    finally:
        standalone.run_component = original
    arbiter = job.outputs["hetero_lr_0"][("arbiter", 0)].summary
    return {"auc": job.outputs["evaluation_0"][("guest", 0)].summary["hetero_lr_0"]["train"]["auc"],
            "ks": job.outputs["evaluation_0"][("guest", 0)].summary["hetero_lr_0"]["train"]["ks"],
            "wall_s": wall, "cpu_s": cpu, "components_s": timings, "iterations": arbiter["iters"],
            "s_per_iteration": arbiter["seconds_per_iteration"], "final_loss": arbiter["loss_history"][-1],
            "federation_bytes": {c: sum(len(m[-1]) for m in msgs) for c, msgs in traffic.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    runs = []
    for i in range(args.runs):
        r = one_run()
        runs.append(r)
        print(f"run {i + 1}: AUC {r['auc']:.4f}  KS {r['ks']:.4f}  wall {r['wall_s']:.1f} s (CPU {r['cpu_s']:.1f} s)  "
              f"HeteroLR {r['components_s']['hetero_lr_0']:.1f} s for {r['iterations']} iterations "
              f"({r['s_per_iteration']:.3f} s/iteration, "
              f"{r['federation_bytes']['hetero_lr_0'] / r['iterations'] / 1e6:.2f} MB exchanged/iteration)  "
              f"intersection {r['components_s']['intersection_0']:.2f} s "
              f"({r['federation_bytes']['intersection_0'] / 1e6:.2f} MB)")
    summary = {"runs": runs, "load_average": os.getloadavg(),
               "median_wall_s": statistics.median(r["wall_s"] for r in runs),
               "median_s_per_iteration": statistics.median(r["s_per_iteration"] for r in runs),
               "auc": [r["auc"] for r in runs]}
    print(f"median: wall {summary['median_wall_s']:.1f} s, {summary['median_s_per_iteration']:.3f} s/iteration, "
          f"load average {summary['load_average'][0]:.1f}")
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    with open(os.path.join(HERE, "results", "fate_hetero_lr.json"), "w") as f:
        json.dump(summary, f, indent=1)


if __name__ == "__main__":
    main()
