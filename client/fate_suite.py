"""Run a FATE test-suite file (`*_testsuite.json`) against a FATE Flow server, as `fate_test suite` does:
upload the suite's data, submit every job in turn and wait for it, and for a job with `deps` deploy
the model of the job it depends on (with its own DSL as the predict DSL), name that model in its
conf and submit it; then print one row per job: status, its evaluation figure and the time taken.

`client` is anything with FATE's flow_sdk API (flow_sdk.client.FlowClient over HTTP, or taskhub's
client.flow.FlowClient over gRPC). The figure of a job is, from its first Evaluation component's
summary, the AUC (binary) or accuracy (multi) of the first model component's train data (its
validate data if that is all there is); for a cross-validation job, the mean over the folds of the
held-out AUC/accuracy; for a predict job, what its Evaluation reports if it has one.

    taskhub flow suite run examples/dsl/v2/hetero_logistic_regression/hetero_logistic_regression_testsuite.json \\
        --data-dir FATE_ROOT [--override HeteroLR.max_iter=3] [--namespace-suffix _x]
"""
from __future__ import annotations

import copy
import json
import os
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass
from typing import Callable

from .fate_args import deep_merge
from .flow import FlowClient

TERMINAL = {"success", "failed", "canceled", "timeout"}
MODEL_MODULES = ("HeteroLR", "HomoLR")
FIGURES = ("auc", "accuracy")


@dataclass
class JobResult:
    name: str
    job_id: str = ""
    status: str = "not submitted"
    metric: str = ""
    value: float | None = None
    seconds: float = 0.0
    error: str = ""


def load(path: str) -> dict:
    with open(path) as f:
        suite = json.load(f)
    if not isinstance(suite, dict) or not isinstance(suite.get("tasks"), dict):
        raise ValueError(f"{path} is not a FATE test suite (no \"tasks\" object)")
    return suite


def data_file(entry: dict, suite_dir: str, data_dir: str) -> str:
    """A data entry's file: under data_dir (FATE's root) as written, else by its name there or by the suite."""
    name = entry.get("file") or ""
    for candidate in (os.path.join(data_dir, name), os.path.join(data_dir, os.path.basename(name)),
                      os.path.join(suite_dir, name)):
        if os.path.isfile(candidate):
            return os.path.abspath(candidate)       # FATE's client resolves relative paths elsewhere
    raise FileNotFoundError(f"data file {name!r} of the suite is not under {data_dir!r}")


def parse_overrides(items: list[str]) -> dict[str, dict]:
    """["HeteroLR.max_iter=3", "HomoLR.cv_param.n_splits=2"] -> {module: nested parameters}."""
    out: dict[str, dict] = {}
    for item in items:
        key, sep, value = item.partition("=")
        module, _, path = key.partition(".")
        if not sep or not module or not path:
            raise ValueError(f"--override {item!r}: expected MODULE.parameter=value, e.g. HeteroLR.max_iter=3")
        try:
            parsed = json.loads(value)
        except ValueError:
            parsed = value
        node = out.setdefault(module, {})
        *parents, leaf = path.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = parsed
    return out


def apply_overrides(dsl: dict, conf: dict, overrides: dict[str, dict]) -> dict:
    """The conf with each override merged into the common parameters of every component of its module."""
    conf = copy.deepcopy(conf)
    if not overrides:
        return conf
    common = conf.setdefault("component_parameters", {}).setdefault("common", {})
    for name, body in (dsl.get("components") or {}).items():
        wanted = overrides.get(body.get("module"))
        if wanted:
            deep_merge(common.setdefault(name, {}), wanted)
    return conf


def run(client, suite_path: str, *, data_dir: str, overrides: dict[str, dict] | None = None,
        namespace_suffix: str = "", timeout: float = 3600.0, poll: float = 1.0, parallel: int = 1,
        echo: Callable[[str], None] = print) -> list[JobResult]:
    """Every job of the suite, `parallel` at a time (1, as fate_test: one after the other); a job with
    `deps` starts once that job has ended."""
    suite = load(suite_path)
    base = os.path.dirname(os.path.abspath(suite_path))
    upload(client, suite, base, data_dir, namespace_suffix, echo)
    jobs = suite["tasks"]
    unknown = {n: j["deps"] for n, j in jobs.items() if j.get("deps") and j["deps"] not in jobs}
    results: dict[str, JobResult] = {n: JobResult(n, error=f"its deps job {d} is not in the suite")
                                     for n, d in unknown.items()}
    trained: dict[str, dict] = {}          # job name -> its model_info
    lock = threading.Lock()

    def one(name: str) -> None:
        result = run_job(client, name, jobs[name], base, results, trained, overrides or {}, namespace_suffix,
                         timeout, poll, lock)
        with lock:
            results[name] = result
        echo(f"{name}: {result.status} {result.metric} {'' if result.value is None else result.value} "
             f"({result.seconds:.0f} s){'  ' + result.error if result.error else ''}")

    pending = [n for n in jobs if n not in results]
    with ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
        running: dict = {}
        while pending or running:
            for name in [n for n in pending if not jobs[n].get("deps") or jobs[n]["deps"] in results]:
                if len(running) >= max(1, parallel):
                    break
                pending.remove(name)
                running[pool.submit(one, name)] = name
            done, _ = wait_futures(running, return_when=FIRST_COMPLETED)
            for f in done:
                running.pop(f)
                f.result()
    return [results[name] for name in jobs]


def upload(client, suite: dict, base: str, data_dir: str, suffix: str, echo) -> None:
    done = set()
    for entry in suite.get("data") or []:
        key = (entry["namespace"] + suffix, entry["table_name"])
        if key in done:          # one server holds every party's tables: guest_0 and host_1 share one upload
            continue
        conf = {"file": data_file(entry, base, data_dir), "head": entry.get("head", 1),
                "partition": entry.get("partition", 4), "namespace": key[0], "table_name": key[1]}
        answer = client.data.upload(conf, drop=1)
        if answer.get("retcode") != 0:
            raise RuntimeError(f"upload of {key[0]}.{key[1]} failed: {answer.get('retmsg')}")
        done.add(key)
        echo(f"uploaded {key[0]}.{key[1]}")


def with_namespace_suffix(conf: dict, suffix: str) -> dict:
    """Every Reader table's namespace with the suffix (fate_test's namespace mangling)."""
    if not suffix:
        return conf

    def visit(node):
        if isinstance(node, dict):
            table = node.get("table")
            if isinstance(table, dict) and "namespace" in table:
                table["namespace"] = table["namespace"] + suffix
            for v in node.values():
                visit(v)
    visit(conf.get("component_parameters") or {})
    return conf


def run_job(client, name: str, job: dict, base: str, results: dict, trained: dict, overrides: dict,
            suffix: str, timeout: float, poll: float, lock: threading.Lock) -> JobResult:
    result = JobResult(name)
    started = time.monotonic()
    with open(os.path.join(base, job["dsl"])) as f:
        dsl = json.load(f)
    with open(os.path.join(base, job["conf"])) as f:
        conf = with_namespace_suffix(apply_overrides(dsl, json.load(f), overrides), suffix)
    dep = job.get("deps")
    if dep:
        if results[dep].status != "success" or dep not in trained:
            result.error = f"skipped: {dep} did not succeed"
            return result
        info = trained[dep]
        deployed = client.model.deploy(info["model_id"], info["model_version"], predict_dsl=dsl)
        if deployed.get("retcode") != 0:
            result.status, result.error = "failed", f"deploy: {deployed.get('retmsg')}"
            return result
        common = conf.setdefault("job_parameters", {}).setdefault("common", {})
        common.update(model_id=deployed["data"]["model_id"], model_version=deployed["data"]["model_version"],
                      job_type="predict")
    answer = client.job.submit(conf, dsl)
    if answer.get("retcode") != 0:
        result.status, result.error = "failed", f"submit: {answer.get('retmsg')}"
        result.seconds = time.monotonic() - started
        return result
    result.job_id = answer["jobId"]
    with lock:
        trained[name] = answer["data"]["model_info"]
    result.status = wait(client, result.job_id, timeout, poll)
    result.seconds = time.monotonic() - started
    if result.status == "success":
        result.metric, result.value = figure(client, result.job_id, dsl, conf)
    else:
        result.error = failure(client, result.job_id)
    return result


def wait(client, job_id: str, timeout: float, poll: float) -> str:
    deadline = time.monotonic() + timeout
    while True:
        rows = client.job.query(job_id=job_id).get("data") or []
        status = rows[0]["f_status"] if rows else ""
        if status in TERMINAL:
            return status
        if time.monotonic() > deadline:
            client.job.stop(job_id)
            return "timeout"
        time.sleep(poll)


def failure(client, job_id: str) -> str:
    tasks = client.task.query(job_id=job_id).get("data") or []
    for t in tasks:
        if t.get("f_status") == "failed":
            return f"{t.get('f_component_name')} ({t.get('f_role')}) failed"
    return ""


def figure(client, job_id: str, dsl: dict, conf: dict) -> tuple[str, float | None]:
    guest = conf["role"]["guest"][0] if conf.get("role", {}).get("guest") else None
    if guest is None:
        return "", None
    components = dsl.get("components") or {}
    evaluations = [n for n, b in components.items() if b.get("module") == "Evaluation"]
    models = [n for n, b in components.items() if b.get("module") in MODEL_MODULES]
    if evaluations:
        summary = client.component.get_summary(job_id, "guest", guest, evaluations[0]).get("data") or {}
        for model in models + list(summary):
            by_type = summary.get(model)
            if by_type:
                values = by_type.get("train") or by_type.get("validate") or next(iter(by_type.values()))
                for metric in FIGURES:
                    if metric in values:
                        return metric, values[metric]
    for model in models:      # cross-validation: the mean held-out figure over the folds
        summary = client.component.get_summary(job_id, "guest", guest, model).get("data") or {}
        held_out = summary.get("validate") if isinstance(summary, dict) else None
        if isinstance(held_out, dict):
            for metric in FIGURES:
                if isinstance(held_out.get(metric), dict):
                    return f"cv mean {metric}", held_out[metric]["mean"]
    return "", None


def table(results: list[JobResult], reference: dict[str, float] | None = None) -> str:
    """The results as a text table (with a reference figure column when given)."""
    head = ["job", "status", "metric", "value", "seconds", "job id"] + (["reference"] if reference else [])
    rows = [[r.name, r.status, r.metric, "" if r.value is None else f"{r.value:.4f}", f"{r.seconds:.0f}", r.job_id]
            + ([f"{reference[r.name]:.4f}" if r.name in reference else ""] if reference else []) for r in results]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    line = lambda cells: "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"   # noqa: E731
    out = [line(head), "|" + "|".join("-" * (w + 2) for w in widths) + "|"] + [line(r) for r in rows]
    failed = [r for r in results if r.status != "success"]
    out.append(f"{len(results) - len(failed)} of {len(results)} jobs succeeded")
    out += [f"  {r.name}: {r.status} {r.error}" for r in failed]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    """python -m client.fate_suite SUITE.json --http http://127.0.0.1:8080 (flow_sdk) | --server HOST:PORT (gRPC)"""
    import argparse
    p = argparse.ArgumentParser(prog="python -m client.fate_suite", description=__doc__.splitlines()[0])
    p.add_argument("suite")
    p.add_argument("--http", help="FATE Flow HTTP address for FATE's own flow_sdk client, e.g. http://127.0.0.1:8080")
    p.add_argument("--server", help="taskhub gRPC address (taskhub's FlowClient)")
    add_suite_flags(p)
    a = p.parse_args(argv)
    if bool(a.http) == bool(a.server):
        p.error("give one of --http or --server")
    if a.http:
        from urllib.parse import urlparse
        from flow_sdk.client import FlowClient as SdkClient
        url = urlparse(a.http)
        return run_and_print(SdkClient(url.hostname, url.port, "v1"), a)
    with FlowClient(a.server) as client:
        return run_and_print(client, a)


def add_suite_flags(p) -> None:
    p.add_argument("--data-dir", default=".", help="where the suite's data files are (FATE's root; default .)")
    p.add_argument("--override", action="append", default=[], metavar="MODULE.param=value",
                   help="set a parameter of every component of a module, e.g. HeteroLR.max_iter=3 (repeatable)")
    p.add_argument("--namespace-suffix", default="", help="appended to every table namespace")
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds per job (default 3600)")
    p.add_argument("--parallel", type=int, default=1, metavar="N",
                   help="run up to N jobs at once (default 1: one after the other, as fate_test)")


def run_and_print(client, a) -> int:
    try:
        overrides = parse_overrides(a.override)
        results = run(client, a.suite, data_dir=a.data_dir, overrides=overrides,
                      namespace_suffix=a.namespace_suffix, timeout=a.timeout, parallel=a.parallel)
    except (OSError, ValueError, RuntimeError) as e:
        print(f"suite failed: {e}")
        return 1
    print(table(results))
    return 0 if all(r.status == "success" for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
