"""FATE 1.11's published LR test suites (tests/data/fate/*_logistic_regression), unchanged and at their
published parameters, run by the suite runner (client/fate_suite.py) against a real server; each job's
AUC (accuracy for the multi-class vehicle jobs) beside scikit-learn's LogisticRegression fitted on the
same data joined in one place (FATE's benchmark-quality examples compare FATE with exactly that).

    .venv/bin/python -m bench.fate_suites [--suite hetero|homo] [--parallel N] [--quick]

--quick: HeteroLR's Paillier keys of 512 bits instead of the published 2048 (every other parameter as
published): the same fixed-point arithmetic, so the same figures, in a fraction of the time; its wall
times are not the published configuration's.

Prints one table per suite with the wall time of each job and of the suite; writes
bench/results/fate_suites.json.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import time

from bench.server import TaskhubServer
from client import fate_suite
from client.flow import FlowClient

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "..", "tests", "data", "fate")
SUITES = {"hetero": "hetero_logistic_regression", "homo": "homo_logistic_regression"}


def read_csv(name: str) -> tuple[list[str], dict[str, list[str]]]:
    with open(os.path.join(DATA, f"{name}.csv")) as f:
        rows = list(csv.reader(f))
    return rows[0], {r[0]: r[1:] for r in rows[1:]}


def reference(conf: dict) -> tuple[str, float] | None:
    """scikit-learn on the job's guest and host tables joined (hetero: by id; homo: rows together)."""
    try:
        import numpy as np
        from sklearn.linear_model import LogisticRegression
        from sklearn.metrics import accuracy_score, roc_auc_score
    except ImportError:
        return None
    tables = {}
    for role in ("guest", "host"):
        params = (conf["component_parameters"].get("role", {}).get(role) or {})
        for key, by_cpn in params.items():
            if "reader_0" in by_cpn and key in ("0", "0|1"):
                tables[role] = by_cpn["reader_0"]["table"]["name"]
    if set(tables) != {"guest", "host"}:
        return None
    (gh, g), (hh, h) = read_csv(tables["guest"]), read_csv(tables["host"])
    if "y" in hh:                      # homo: the same columns, different rows
        rows = list(g.values()) + list(h.values())
        y = np.array([float(r[0]) for r in rows])
        X = np.array([[float(v) for v in r[1:]] for r in rows])
    else:                              # hetero: the same ids, different columns
        ids = [i for i in g if i in h]
        y = np.array([float(g[i][0]) for i in ids])
        X = np.array([[float(v) for v in g[i][1:] + h[i]] for i in ids])
    model = LogisticRegression(max_iter=1000).fit(X, y)
    if len(set(y.tolist())) > 2:
        return "accuracy", float(accuracy_score(y, model.predict(X)))
    return "auc", float(roc_auc_score(y, model.predict_proba(X)[:, 1]))


QUICK = {"HeteroLR": {"encrypt_param": {"key_length": 512}}}


def run_suite(client, name: str, parallel: int, overrides: dict | None = None) -> dict:
    path = os.path.join(DATA, name, f"{name}_testsuite.json")
    suite = fate_suite.load(path)
    refs = {}
    for job, spec in suite["tasks"].items():
        with open(os.path.join(DATA, name, spec["conf"])) as f:
            ref = reference(json.load(f))
        if ref:
            refs[job] = ref[1]
    started = time.monotonic()
    results = fate_suite.run(client, path, data_dir=DATA, parallel=parallel, timeout=7200, overrides=overrides)
    wall = time.monotonic() - started
    print(fate_suite.table(results, refs))
    print(f"{name}: {wall:.0f} s wall for {len(results)} jobs (parallel {parallel})")
    return {"suite": name, "wall_seconds": wall, "parallel": parallel, "overrides": overrides or {},
            "jobs": [{**r.__dict__, "sklearn": refs.get(r.name)} for r in results]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--suite", choices=sorted(SUITES), action="append")
    p.add_argument("--parallel", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="512-bit Paillier keys (same figures, not the published time)")
    a = p.parse_args()
    out = []
    with TaskhubServer() as server, FlowClient(server.target) as client:
        for key in a.suite or ["homo", "hetero"]:
            out.append(run_suite(client, SUITES[key], a.parallel, QUICK if a.quick else None))
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    with open(os.path.join(HERE, "results", "fate_suites_quick.json" if a.quick else "fate_suites.json"), "w") as f:
        json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
