"""FATE across sites (issue 19): FATE's published hetero LR job on one server against the same job
with each party on its own server (guest 9999; host and arbiter 10000), talking over mutual TLS;
and server-to-server federation throughput (Probe's guest -> host exchange, timed by the host).
Time per iteration is the arbiter's HeteroLR task time over its iterations. The published job
shuffles its batches, so AUCs differ a little from run to run.

    python -m bench.fate_sites [--max-iter N] [--quick] [--federation-only]

Writes bench/results/fate_sites.json.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import tempfile
import time

import grpc
from taskhub.v1 import flow_service_pb2 as pb
from taskhub.v1 import flow_service_pb2_grpc as pb_grpc

from server.sites.certs import write_site_pki

from .server import TaskhubServer

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "..", "tests", "data", "fate")
RESULTS = os.path.join(HERE, "results")
OPTIONS = [("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", 64 << 20)]
GUEST, HOST = 9999, 10000


def _stub(target: str) -> pb_grpc.FlowServiceStub:
    return pb_grpc.FlowServiceStub(grpc.insecure_channel(target, options=OPTIONS))


def _upload(stub, role: str) -> None:
    with open(os.path.join(DATA, f"breast_hetero_{role}.csv"), "rb") as f:
        content = f.read()

    def requests():
        yield pb.UploadDataRequest(conf_json=json.dumps({"namespace": "experiment", "head": 1, "partition": 4,
                                                         "table_name": f"breast_hetero_{role}", "drop": 1}))
        yield pb.UploadDataRequest(chunk=content)
    stub.UploadData(requests(), timeout=600)


def _run(guest, dsl: str, conf: str) -> tuple[str, float]:
    t0 = time.perf_counter()
    job = guest.SubmitJob(pb.SubmitJobRequest(dsl_json=dsl, conf_json=conf))
    for _ in guest.WatchJob(pb.WatchJobRequest(job_id=job.job_id)):
        pass
    return job.job_id, time.perf_counter() - t0


def hetero_lr(guest, host, max_iter: int) -> dict:
    """The published job (max_iter as given), submitted at the guest's server; the arbiter's summary from its own."""
    with open(os.path.join(DATA, "hetero_lr_normal_dsl.json")) as f:
        dsl = f.read()
    with open(os.path.join(DATA, "hetero_lr_normal_conf.json")) as f:
        conf = json.load(f)
    conf["component_parameters"]["common"]["hetero_lr_0"]["max_iter"] = max_iter
    job_id, wall = _run(guest, dsl, json.dumps(conf))
    done = guest.GetJob(pb.GetJobRequest(job_id=job_id))
    arb = host.GetComponentOutput(pb.GetComponentOutputRequest(job_id=job_id, component_name="hetero_lr_0",
                                                               role="arbiter", party_id=HOST))
    ev = guest.GetComponentOutput(pb.GetComponentOutputRequest(job_id=job_id, component_name="evaluation_0"))
    iters = json.loads(arb.summary_json or "{}").get("iters") or 0
    task = next(t for t in host.ListFlowTasks(pb.ListFlowTasksRequest(job_id=job_id)).tasks
                if t.component_name == "hetero_lr_0" and t.party.role == "arbiter")
    lr_seconds = (task.end_time_ms - task.start_time_ms) / 1000
    return {"status": pb.FlowJobStatus.Name(done.status), "wall_seconds": wall, "iterations": iters,
            "hetero_lr_seconds": lr_seconds, "seconds_per_iteration": lr_seconds / iters if iters else None,
            "auc": json.loads(ev.summary_json or "{}").get("hetero_lr_0", {}).get("train", {}).get("auc")}


def federation(guest, host, messages: int, size: int) -> dict:
    dsl = {"components": {"probe_0": {"module": "Probe", "output": {"data": ["data"]}}}}
    conf = {"dsl_version": 2, "initiator": {"role": "guest", "party_id": GUEST},
            "role": {"guest": [GUEST], "host": [HOST]},
            "component_parameters": {"common": {"probe_0": {"federation_messages": messages,
                                                            "federation_bytes": size}}}}
    job_id, _ = _run(guest, json.dumps(dsl), json.dumps(conf))
    out = host.GetComponentOutput(pb.GetComponentOutputRequest(job_id=job_id, component_name="probe_0",
                                                              role="host", party_id=HOST))
    return json.loads(out.summary_json or "{}").get("federation", {})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def measure(guest, host, a) -> dict:
    out = {"federation_small": federation(guest, host, a.small, 100),
           "federation_large": federation(guest, host, a.large, 1 << 20)}
    if a.federation_only:
        return out
    for stub, role in ((guest, "guest"), (host, "host")):
        _upload(stub, role)
    runs = [hetero_lr(guest, host, a.max_iter) for _ in range(a.runs)]
    return {"hetero_lr": sorted(runs, key=lambda r: r["wall_seconds"])[len(runs) // 2], "hetero_lr_runs": runs,
            **out}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="bench.fate_sites")
    ap.add_argument("--max-iter", type=int, default=30, help="HeteroLR max_iter (the published job: 30)")
    ap.add_argument("--quick", action="store_true", help="max_iter 3 and fewer federation objects")
    ap.add_argument("--federation-only", action="store_true", help="only the federation throughput")
    a = ap.parse_args(argv)
    a.small, a.large, a.runs = (300, 8, 1) if a.quick else (2000, 50, 3)
    if a.quick:
        a.max_iter = 3
    res: dict = {"max_iter": a.max_iter}
    with TaskhubServer() as one:
        stub = _stub(one.target)
        res["one_server"] = measure(stub, stub, a)
    res["load_average"] = os.getloadavg()
    pki = tempfile.mkdtemp(prefix="taskhub-bench-pki-")
    ports = {GUEST: _free_port(), HOST: _free_port()}
    tables = write_site_pki(pki, {p: ("127.0.0.1", port) for p, port in ports.items()})
    with TaskhubServer("--fate-party-id", str(GUEST), "--fate-route-table", tables[GUEST]) as g, \
            TaskhubServer("--fate-party-id", str(HOST), "--fate-route-table", tables[HOST]) as h:
        res["across_sites"] = measure(_stub(g.target), _stub(h.target), a)
    res["load_average"] = [round((x + y) / 2, 1) for x, y in zip(res["load_average"], os.getloadavg())]
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, "fate_sites_federation.json" if a.federation_only else "fate_sites.json"),
              "w") as f:
        json.dump(res, f, indent=1)
    for where in ("one_server", "across_sites"):
        r = res[where]
        small, large = r["federation_small"], r["federation_large"]
        lr = "" if a.federation_only else (
            f" published hetero LR (max_iter {a.max_iter}, median of {a.runs}) {r['hetero_lr']['status']},"
            f" {r['hetero_lr']['wall_seconds']:.1f} s wall, {r['hetero_lr']['iterations']} iterations at"
            f" {r['hetero_lr']['seconds_per_iteration'] or 0:.2f} s, AUC {r['hetero_lr']['auc']};")
        print(f"{where:>12}:{lr} federation {small.get('messages_per_s', 0):,.0f} objects/s (100 B),"
              f" {large.get('mb_per_s', 0):,.1f} MB/s (1 MiB)")
    print(f"load average (1, 5, 15 min, mean of start and end): {res['load_average']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
