"""FATE Flow on taskhub: table upload and read rates, and submit -> first component task running.

    python -m bench.fate_flow [--rows N] [--jobs N]

Writes bench/results/fate_flow.json.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time

import grpc
from taskhub.v1 import flow_service_pb2 as pb
from taskhub.v1 import flow_service_pb2_grpc as pb_grpc

from .server import TaskhubServer

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
OPTIONS = [("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", 64 << 20)]


def csv_bytes(rows: int, features: int = 10) -> bytes:
    rnd = random.Random(7)
    header = ",".join(["id", "y"] + [f"x{i}" for i in range(features)])
    lines = [header]
    for i in range(rows):
        lines.append(f"{i},{i & 1}," + ",".join(f"{rnd.random():.6f}" for _ in range(features)))
    return ("\n".join(lines) + "\n").encode()


def upload(stub, data: bytes, name: str) -> float:
    def requests():
        yield pb.UploadDataRequest(conf_json=json.dumps({"namespace": "bench", "table_name": name, "head": 1,
                                                         "partition": 4, "drop": 1}))
        for i in range(0, len(data), 1 << 20):
            yield pb.UploadDataRequest(chunk=data[i:i + (1 << 20)])
    t0 = time.perf_counter()
    stub.UploadData(requests(), timeout=600)
    return time.perf_counter() - t0


def read_all(stub, name: str) -> tuple[float, int]:
    t0 = time.perf_counter()
    n = sum(len(m.lines) for m in stub.ReadTable(pb.ReadTableRequest(namespace="bench", name=name), timeout=600))
    return time.perf_counter() - t0, n


def first_task_running_ms(stub) -> float:
    dsl = {"components": {"probe_0": {"module": "Probe", "output": {"data": ["data"]}}}}
    conf = {"dsl_version": 2, "initiator": {"role": "local", "party_id": 0}, "role": {"local": [0]}}
    t0 = time.perf_counter()
    job = stub.SubmitJob(pb.SubmitJobRequest(dsl_json=json.dumps(dsl), conf_json=json.dumps(conf)))
    for ev in stub.WatchJob(pb.WatchJobRequest(job_id=job.job_id)):
        if ev.HasField("task") and ev.task.status in (pb.FLOW_TASK_STATUS_RUNNING, pb.FLOW_TASK_STATUS_SUCCESS):
            ms = (time.perf_counter() - t0) * 1000
            break
    for ev in stub.WatchJob(pb.WatchJobRequest(job_id=job.job_id)):  # let it end before the next one
        pass
    return ms


def published_hetero_lr(stub) -> dict:
    """FATE's published hetero LR job exactly as written (max_iter 30, RSA and Paillier keys of 1024 bits)."""
    data = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data", "fate")
    for role in ("guest", "host"):
        with open(os.path.join(data, f"breast_hetero_{role}.csv"), "rb") as f:
            content = f.read()

        def requests(content=content, role=role):
            yield pb.UploadDataRequest(conf_json=json.dumps({"namespace": "experiment", "head": 1, "partition": 4,
                                                             "table_name": f"breast_hetero_{role}", "drop": 1}))
            yield pb.UploadDataRequest(chunk=content)
        stub.UploadData(requests())
    with open(os.path.join(data, "hetero_lr_normal_dsl.json")) as f:
        dsl = f.read()
    with open(os.path.join(data, "hetero_lr_normal_conf.json")) as f:
        conf = f.read()
    t0 = time.perf_counter()
    job = stub.SubmitJob(pb.SubmitJobRequest(dsl_json=dsl, conf_json=conf))
    for ev in stub.WatchJob(pb.WatchJobRequest(job_id=job.job_id)):
        pass
    wall = time.perf_counter() - t0
    done = stub.GetJob(pb.GetJobRequest(job_id=job.job_id))
    tasks = stub.ListFlowTasks(pb.ListFlowTasksRequest(job_id=job.job_id)).tasks
    per = {f"{t.component_name}/{t.party.role}": (t.end_time_ms - t.start_time_ms) / 1000 for t in tasks
           if t.start_time_ms}
    ev = stub.GetComponentOutput(pb.GetComponentOutputRequest(job_id=job.job_id, component_name="evaluation_0"))
    arb = stub.GetComponentOutput(pb.GetComponentOutputRequest(job_id=job.job_id, component_name="hetero_lr_0",
                                                              role="arbiter", party_id=10000))
    summary = json.loads(arb.summary_json or "{}")
    return {"status": pb.FlowJobStatus.Name(done.status), "wall_seconds": wall, "task_seconds": per,
            "evaluation": json.loads(ev.summary_json or "{}"), "iterations": summary.get("iters"),
            "seconds_per_iteration": summary.get("seconds_per_iteration")}


def federation_rate(stub, messages: int, size: int) -> dict:
    """Guest -> host objects through the server (Probe's exchange), as the host times them."""
    dsl = {"components": {"probe_0": {"module": "Probe", "output": {"data": ["data"]}}}}
    conf = {"dsl_version": 2, "initiator": {"role": "guest", "party_id": 9999},
            "role": {"guest": [9999], "host": [10000]},
            "component_parameters": {"common": {"probe_0": {"federation_messages": messages,
                                                            "federation_bytes": size}}}}
    job = stub.SubmitJob(pb.SubmitJobRequest(dsl_json=json.dumps(dsl), conf_json=json.dumps(conf)))
    for _ in stub.WatchJob(pb.WatchJobRequest(job_id=job.job_id)):
        pass
    out = stub.GetComponentOutput(pb.GetComponentOutputRequest(job_id=job.job_id, component_name="probe_0",
                                                              role="host", party_id=10000))
    return json.loads(out.summary_json or "{}").get("federation", {})


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="bench.fate_flow")
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--jobs", type=int, default=20)
    a = ap.parse_args(argv)
    data = csv_bytes(a.rows)
    res = {"rows": a.rows, "bytes": len(data)}
    with TaskhubServer() as srv:
        stub = pb_grpc.FlowServiceStub(grpc.insecure_channel(srv.target, options=OPTIONS))
        up = [upload(stub, data, f"t{i}") for i in range(3)]
        reads = [read_all(stub, f"t{i}") for i in range(3)]
        assert all(n == a.rows for _, n in reads), reads
        lat = [first_task_running_ms(stub) for _ in range(a.jobs)]
        fed_small = federation_rate(stub, 2000, 100)
        fed_large = federation_rate(stub, 50, 1 << 20)
        lr = published_hetero_lr(stub)
    up_s, read_s = statistics.median(up), statistics.median(t for t, _ in reads)
    res.update(upload_seconds=up, upload_rows_per_s=a.rows / up_s, upload_mb_per_s=len(data) / up_s / 1e6,
               read_seconds=[t for t, _ in reads], read_rows_per_s=a.rows / read_s,
               submit_to_first_task_running_ms={"p50": statistics.median(lat), "max": max(lat), "n": len(lat)})
    res["published_hetero_lr"] = lr
    res["federation_small"], res["federation_large"] = fed_small, fed_large
    print(f"federation guest -> host: {fed_small.get('messages_per_s', 0):,.0f} messages/s (100 B each);"
          f" {fed_large.get('mb_per_s', 0):,.1f} MB/s (1 MiB objects)")
    print(f"FATE's published hetero LR (as written): {lr['status']}, {lr['wall_seconds']:.1f} s wall, "
          f"{lr['iterations']} iterations at {lr['seconds_per_iteration'] or 0:.2f} s each; evaluation {lr['evaluation']}")
    print(f"upload {a.rows:,} rows ({len(data) / 1e6:.0f} MB): median {up_s:.2f} s = {res['upload_rows_per_s']:,.0f} rows/s,"
          f" {res['upload_mb_per_s']:.0f} MB/s")
    print(f"read back: median {read_s:.2f} s = {res['read_rows_per_s']:,.0f} rows/s")
    print(f"submit -> first component task running: p50 {statistics.median(lat):.1f} ms, max {max(lat):.1f} ms"
          f" ({len(lat)} one-component jobs)")
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, "fate_flow.json"), "w") as f:
        json.dump(res, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
