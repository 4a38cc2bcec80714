"""A standalone, in-process implementation of the component contract (components/base.py).

Every party of a job runs in its own thread of this process; tables and models live in memory;
the federation is a thread-safe mailbox keyed by (name, tag, source party, destination party), and
objects cross it pickled, as they would cross the wire. It runs whole DSL v2 jobs (`run_job`) or
one component (`run_component`), for tests and for dry runs of a job without a server.
"""
from __future__ import annotations

import copy
import csv
import json
import os
import pickle
import threading
import traceback
from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Sequence

from server.flow import registry
from server.flow.components.base import Component, ComponentError

PartyKey = tuple[str, int]          # (role, index of the party in conf["role"][role])


class JobAborted(Exception):
    """A peer party failed (or the job was cancelled) while this party waited on it."""


# -- tables ---------------------------------------------------------------------------------------
class MemoryTable:
    def __init__(self, namespace: str, name: str, schema: dict, rows: Iterable[Sequence[Any]],
                 source: str | None = None):
        self.namespace, self.name, self.schema = namespace, name, dict(schema)
        self.source = source          # the component that wrote it (Evaluation names metrics after it)
        self._rows = [[str(v) for v in r] for r in rows]
        self.count = len(self._rows)

    @property
    def header(self) -> list[str]:
        return list(self.schema.get("header", []))

    def rows(self) -> Iterator[list[str]]:
        return (list(r) for r in self._rows)

    @classmethod
    def from_csv(cls, path: str, namespace: str = "experiment", name: str | None = None) -> "MemoryTable":
        """A Reader-shaped table from an uploaded CSV: first column the id, header from the first line."""
        with open(path, newline="") as f:
            reader = csv.reader(f)
            head = next(reader)
            rows = [r for r in reader if r]
        name = name or os.path.splitext(os.path.basename(path))[0]
        return cls(namespace, name, {"sid": head[0], "header": head[1:]}, rows)


# -- federation -----------------------------------------------------------------------------------
class Mailbox:
    """Everything in flight between the parties of one job."""

    def __init__(self, timeout: float = 600.0, traffic: list | None = None):
        self.cond = threading.Condition()
        self.queues: dict[tuple, deque] = defaultdict(deque)
        self.failure: str | None = None
        self.timeout = timeout
        self.traffic = traffic      # when a list: every message, as (name, tag, src, dst, pickled bytes)

    def put(self, key: tuple, payload: bytes) -> None:
        with self.cond:
            if self.traffic is not None:
                self.traffic.append((key[0], key[1], key[2:4], key[4:6], payload))
            self.queues[key].append(payload)
            self.cond.notify_all()

    def take(self, key: tuple) -> bytes:
        with self.cond:
            self.cond.wait_for(lambda: self.failure is not None or self.queues[key], timeout=self.timeout)
            if self.queues[key]:
                return self.queues[key].popleft()
            if self.failure is not None:
                raise JobAborted(self.failure)
            raise JobAborted(f"no object {key[0]}/{key[1]} from {key[2]}:{key[3]} within {self.timeout:.0f} s")

    def fail(self, reason: str) -> None:
        with self.cond:
            if self.failure is None:
                self.failure = reason
            self.cond.notify_all()


class MemoryFederation:
    def __init__(self, mailbox: Mailbox, roles: dict[str, list[int]], role: str, index: int):
        self.mailbox, self.roles, self.role, self.index = mailbox, roles, role, index

    def _indexes(self, role: str, idx: int) -> list[int]:
        count = len(self.roles.get(role, []))
        if count == 0:
            raise ComponentError(f"federation: the job has no party with role {role!r}")
        if idx == -1:
            return list(range(count))
        if not 0 <= idx < count:
            raise ComponentError(f"federation: role {role!r} has {count} parties, no index {idx}")
        return [idx]

    def remote(self, obj: Any, name: str, tag: str, role: str, idx: int = -1) -> None:
        payload = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
        for dst in self._indexes(role, idx):
            self.mailbox.put((name, tag, self.role, self.index, role, dst), payload)

    def get(self, name: str, tag: str, role: str, idx: int = -1) -> list[Any]:
        return [pickle.loads(self.mailbox.take((name, tag, role, src, self.role, self.index)))
                for src in self._indexes(role, idx)]


# -- the context ----------------------------------------------------------------------------------
@dataclass
class PartyOutputs:
    tables: dict[str, MemoryTable] = field(default_factory=dict)
    models: dict[str, dict] = field(default_factory=dict)        # name -> {"model", "meta", "component"}
    metrics: dict[str, dict[str, dict]] = field(default_factory=dict)  # namespace -> name -> {data, meta}
    summary: dict = field(default_factory=dict)
    logs: list[str] = field(default_factory=list)
    progress: int = 0


class StandaloneContext:
    def __init__(self, *, job_id: str, component_name: str, module: str, role: str, party_index: int,
                 roles: dict[str, list[int]], params: dict, job_parameters: dict, mailbox: Mailbox,
                 inputs: dict[str, list[MemoryTable]] | None = None, models: dict[str, list[dict]] | None = None):
        self.job_id, self.component_name, self.module = job_id, component_name, module
        self.role, self._index, self.roles = role, party_index, roles
        self.party_id = roles[role][party_index]
        self.params, self.job_parameters = params, job_parameters
        self.mailbox = mailbox
        self.federation = MemoryFederation(mailbox, roles, role, party_index)
        self._inputs, self._models = inputs or {}, models or {}
        self.out = PartyOutputs()

    @property
    def party_index(self) -> int:
        return self._index

    def input_tables(self, key: str = "data") -> list[MemoryTable]:
        return list(self._inputs.get(key, []))

    def input_model(self, key: str = "model") -> list[dict]:
        return copy.deepcopy(self._models.get(key, []))

    def write_table(self, rows, schema: dict, name: str = "data") -> MemoryTable:
        table = MemoryTable(f"output_data_{self.job_id}", f"{self.component_name}_{self.role}_{self.party_id}_{name}",
                            schema, rows, source=self.component_name)
        self.out.tables[name] = table
        return table

    def save_model(self, model: dict, meta: dict, name: str = "model") -> None:
        # a JSON round trip, as a store would do: what a component saves must be JSON-able
        self.out.models[name] = json.loads(json.dumps({"model": model, "meta": meta,
                                                       "component": self.component_name}))

    def metric(self, namespace: str, name: str, data, meta: dict | None = None) -> None:
        entry = self.out.metrics.setdefault(namespace, {}).setdefault(name, {"data": [], "meta": {}})
        entry["data"].extend([list(p) for p in data])
        if meta is not None:
            entry["meta"] = dict(meta)

    def summary(self, values: dict) -> None:
        self.out.summary.update(values)

    def log(self, message: str) -> None:
        self.out.logs.append(message)

    def progress(self, percent: int) -> None:
        self.out.progress = max(0, min(100, int(percent)))

    @property
    def cancelled(self) -> bool:
        return self.mailbox.failure is not None

    def check_cancelled(self) -> None:
        if self.cancelled:
            raise JobAborted(self.mailbox.failure)


# -- running --------------------------------------------------------------------------------------
@dataclass
class PartySpec:
    role: str
    index: int
    params: dict
    inputs: dict[str, list[MemoryTable]] = field(default_factory=dict)
    models: dict[str, list[dict]] = field(default_factory=dict)


def run_component(module: str, roles: dict[str, list[int]], parties: list[PartySpec], *,
                  job_id: str = "standalone", component_name: str | None = None,
                  job_parameters: dict | None = None, timeout: float = 600.0,
                  traffic: list | None = None) -> dict[PartyKey, PartyOutputs]:
    """Run one component for the given parties, one thread each; raise the first party's failure.
    With `traffic` (a list), every federation message is appended to it (see Mailbox)."""
    cls = registry.component_class(module)
    name = component_name or f"{module.lower()}_0"
    mailbox = Mailbox(timeout, traffic)
    contexts, errors = {}, {}
    instances: dict[PartyKey, Component] = {}
    for spec in parties:           # parameters are checked before anything runs
        instances[(spec.role, spec.index)] = cls(spec.params)
        contexts[(spec.role, spec.index)] = StandaloneContext(
            job_id=job_id, component_name=name, module=module, role=spec.role, party_index=spec.index,
            roles=roles, params=instances[(spec.role, spec.index)].params, job_parameters=job_parameters or {},
            mailbox=mailbox, inputs=spec.inputs, models=spec.models)

    def party(key: PartyKey) -> None:
        try:
            instances[key].run(contexts[key])
        except BaseException as e:  # noqa: BLE001 - a party's failure fails the job, whatever it is
            errors[key] = e
            contexts[key].log(traceback.format_exc())
            mailbox.fail(f"{name} failed at {key[0]}:{roles[key[0]][key[1]]}: {e}")

    threads = [threading.Thread(target=party, args=(k,), name=f"{name}-{k[0]}-{k[1]}", daemon=True) for k in contexts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:   # the root cause, not a peer's JobAborted
        first = next((e for e in errors.values() if not isinstance(e, JobAborted)), next(iter(errors.values())))
        raise first
    return {k: c.out for k, c in contexts.items()}


def merge_params(base: dict, override: dict) -> dict:
    """FATE's conf merge: nested objects merge key by key, anything else is replaced."""
    out = copy.deepcopy(base)
    for k, v in override.items():
        out[k] = merge_params(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def component_params(conf: dict, component: str, role: str, index: int) -> dict:
    cp = conf.get("component_parameters", {})
    params = copy.deepcopy(cp.get("common", {}).get(component, {}))
    by_role = cp.get("role", {}).get(role, {})
    for key, settings in by_role.items():
        if key == "all" or str(index) in [s.strip() for s in str(key).split("|")]:
            params = merge_params(params, settings.get(component, {}))
    return params


@dataclass
class JobResult:
    outputs: dict[str, dict[PartyKey, PartyOutputs]]     # component -> party -> outputs

    def table(self, component: str, role: str, index: int = 0, name: str = "data") -> MemoryTable:
        return self.outputs[component][(role, index)].tables[name]

    def models(self) -> dict[str, dict[PartyKey, dict]]:
        """Every component's saved model per party: what a predict job's `pipeline.<cpn>.model` names."""
        return {c: {k: o.models["model"] for k, o in parties.items() if "model" in o.models}
                for c, parties in self.outputs.items()}


def _refs(dsl_input: dict) -> list[str]:
    refs = [r for v in (dsl_input.get("data") or {}).values() for r in v]
    for key in ("model", "isometric_model"):
        refs += dsl_input.get(key) or []
    return refs


def _read(tables: dict[tuple[str, str], MemoryTable], params: dict) -> MemoryTable:
    key = (params["table"].get("namespace"), params["table"].get("name"))
    if key not in tables:
        raise ComponentError(f"Reader: no table {key[0]}.{key[1]}")
    return tables[key]


def _input_tables(dsl_input: dict, outputs: dict, party: PartyKey) -> dict[str, list[MemoryTable]]:
    """DSL data inputs ("cpn.data") resolved for one party; an upstream that wrote nothing there is skipped."""
    resolved = {}
    for key, refs in (dsl_input.get("data") or {}).items():
        resolved[key] = []
        for ref in refs:
            upstream, output = ref.split(".", 1)
            table = outputs.get(upstream, {}).get(party, PartyOutputs()).tables.get(output)
            if table is not None:
                resolved[key].append(table)
    return resolved


def _input_models(dsl_input: dict, outputs: dict, pipeline_models: dict | None, party: PartyKey) -> dict[str, list]:
    """DSL model inputs: "cpn.model" from this job, "pipeline.cpn.model" from the deployed (train) job."""
    resolved: dict[str, list] = {}
    for key in ("model", "isometric_model"):
        for ref in dsl_input.get(key) or []:
            parts = ref.split(".")
            if parts[0] == "pipeline":
                found = (pipeline_models or {}).get(parts[1], {}).get(party)
            else:
                found = outputs.get(parts[0], {}).get(party, PartyOutputs()).models.get(parts[1])
            if found:
                resolved.setdefault(key, []).append(found)
    return resolved


def run_job(dsl: dict, conf: dict, tables: dict[tuple[str, str], MemoryTable], *,
            pipeline_models: dict[str, dict[PartyKey, dict]] | None = None, job_id: str = "standalone",
            timeout: float = 600.0, traffic: dict[str, list] | None = None) -> JobResult:
    """Run a DSL v2 job in this process. `tables` maps (namespace, name) to what Reader reads;
    `pipeline_models` (JobResult.models() of a train job) answers `pipeline.<cpn>.model` in a predict DSL;
    `traffic` (a dict) receives each component's federation messages under its name."""
    components = dsl.get("components") or {}
    roles = {r: list(p) for r, p in conf["role"].items()}
    job_parameters = conf.get("job_parameters", {}).get("common", {})
    order, seen = [], set()

    def visit(name: str, stack: tuple = ()) -> None:
        if name in seen:
            return
        if name in stack:
            raise ComponentError(f"DSL: dependency cycle through {name}")
        for ref in _refs(components[name].get("input") or {}):
            upstream = ref.split(".")[0]
            if upstream != "pipeline":
                if upstream not in components:
                    raise ComponentError(f"DSL: {name} refers to unknown component {upstream!r}")
                visit(upstream, stack + (name,))
        seen.add(name)
        order.append(name)

    for name in components:
        visit(name)

    outputs: dict[str, dict[PartyKey, PartyOutputs]] = {}
    for name in order:
        module, dsl_input = components[name]["module"], components[name].get("input") or {}
        parties = []
        for role, ids in roles.items():
            for idx in range(len(ids)):
                params = component_params(conf, name, role, idx)
                if module == "Reader":
                    if "table" in params:     # the arbiter (no table configured) reads nothing
                        outputs.setdefault(name, {})[(role, idx)] = PartyOutputs(tables={"data": _read(tables, params)})
                elif role in registry.component_class(module).roles:
                    parties.append(PartySpec(role, idx, params, _input_tables(dsl_input, outputs, (role, idx)),
                                             _input_models(dsl_input, outputs, pipeline_models, (role, idx))))
        if module != "Reader":
            outputs[name] = run_component(module, roles, parties, job_id=job_id, component_name=name,
                                          job_parameters=job_parameters, timeout=timeout,
                                          traffic=traffic.setdefault(name, []) if traffic is not None else None)
    return JobResult(outputs)


# -- a dry run from the command line ----------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    """python -m server.flow.standalone --dsl job_dsl.json --conf job_conf.json \\
           --table experiment.breast_hetero_guest=breast_hetero_guest.csv ...
    Runs the job in this process and prints, per component and party, its summary, metric names and
    output table sizes as JSON."""
    import argparse
    import sys
    parser = argparse.ArgumentParser(prog="python -m server.flow.standalone", description=main.__doc__.splitlines()[0])
    parser.add_argument("--dsl", required=True)
    parser.add_argument("--conf", required=True)
    parser.add_argument("--table", action="append", default=[], metavar="NAMESPACE.NAME=CSV",
                        help="a table Reader can read (CSV with a header line, the id first)")
    args = parser.parse_args(argv)
    tables = {}
    for spec in args.table:
        key, _, path = spec.partition("=")
        namespace, _, name = key.partition(".")
        if not (namespace and name and path):
            parser.error(f"--table {spec!r}: expected NAMESPACE.NAME=path.csv")
        tables[(namespace, name)] = MemoryTable.from_csv(path, namespace, name)
    with open(args.dsl) as f:
        dsl = json.load(f)
    with open(args.conf) as f:
        conf = json.load(f)
    try:
        job = run_job(dsl, conf, tables)
    except (ComponentError, JobAborted) as e:
        print(f"job failed: {e}", file=sys.stderr)
        return 1
    report = {cpn: {f"{role}:{conf['role'][role][idx]}": {
        "summary": out.summary,
        "metrics": {ns: sorted(names) for ns, names in out.metrics.items()},
        "tables": {name: t.count for name, t in out.tables.items()},
    } for (role, idx), out in parties.items()} for cpn, parties in job.outputs.items()}
    print(json.dumps(report, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
