"""FATE models on taskhub: FATE's published hetero LR trained as written, deployed, and FATE's published
predict job run on it; deploy latency, predict wall time, archive size and export/import time, and
how far the predict job's scores are from the train job's own.

    python -m bench.fate_models [--max-iter N]

Writes bench/results/fate_models.json.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import grpc
from taskhub.v1 import flow_service_pb2 as pb
from taskhub.v1 import flow_service_pb2_grpc as pb_grpc

from server.flow.components.base import decode_row

from .server import TaskhubServer

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data", "fate")
CPNS = ["reader_0", "data_transform_0", "intersection_0", "hetero_lr_0", "evaluation_0"]


def read(name: str) -> dict:
    with open(os.path.join(DATA, f"{name}.json")) as f:
        return json.load(f)


def run_job(stub, dsl: dict, conf: dict) -> tuple[str, float]:
    t0 = time.perf_counter()
    job = stub.SubmitJob(pb.SubmitJobRequest(dsl_json=json.dumps(dsl), conf_json=json.dumps(conf)))
    for _ in stub.WatchJob(pb.WatchJobRequest(job_id=job.job_id)):
        pass
    done = stub.GetJob(pb.GetJobRequest(job_id=job.job_id))
    if done.status != pb.FLOW_JOB_STATUS_SUCCESS:
        raise SystemExit(f"job {job.job_id} ended {pb.FlowJobStatus.Name(done.status)}: {done.error}")
    return job.job_id, time.perf_counter() - t0


def scores(stub, job_id: str) -> dict[str, float]:
    out = stub.GetComponentOutput(pb.GetComponentOutputRequest(job_id=job_id, component_name="hetero_lr_0"))
    table = out.output_tables[0]
    at = json.loads(table.schema_json)["header"].index("predict_score")
    found = {}
    for msg in stub.ReadTable(pb.ReadTableRequest(namespace=table.namespace, name=table.name)):
        for line in msg.lines:
            cells = decode_row(line)
            found[cells[0]] = float(cells[1 + at])
    return found


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="bench.fate_models")
    ap.add_argument("--max-iter", type=int, default=30, help="hetero LR iterations (published: 30)")
    a = ap.parse_args(argv)
    with TaskhubServer() as srv, TaskhubServer() as other:
        stub = pb_grpc.FlowServiceStub(grpc.insecure_channel(srv.target))
        for role in ("guest", "host"):
            with open(os.path.join(DATA, f"breast_hetero_{role}.csv"), "rb") as f:
                content = f.read()
            stub.UploadData(iter([pb.UploadDataRequest(conf_json=json.dumps({
                "namespace": "experiment", "table_name": f"breast_hetero_{role}", "head": 1, "partition": 4,
                "drop": 1})), pb.UploadDataRequest(chunk=content)]))
        conf = read("hetero_lr_normal_conf")
        conf["component_parameters"]["common"]["hetero_lr_0"]["max_iter"] = a.max_iter
        train_id, train_s = run_job(stub, read("hetero_lr_normal_dsl"), conf)
        model_id = stub.GetJob(pb.GetJobRequest(job_id=train_id)).model_id

        t0 = time.perf_counter()
        deployed = stub.DeployModel(pb.DeployModelRequest(model_id=model_id, model_version=train_id, cpn_list=CPNS))
        deploy_ms = (time.perf_counter() - t0) * 1000
        predict_dsl = json.loads(stub.GetPredictDsl(pb.ModelRef(model_id=model_id,
                                                                model_version=deployed.model_version)).dsl_json)
        pconf = read("hetero_lr_normal_predict_conf")
        pconf["initiator"], pconf["role"] = conf["initiator"], conf["role"]
        pconf["job_parameters"]["common"].update(model_id=model_id, model_version=deployed.model_version)
        predict_id, predict_s = run_job(stub, predict_dsl, pconf)
        own, predicted = scores(stub, train_id), scores(stub, predict_id)
        diff = max(abs(own[k] - predicted[k]) for k in own)

        ref = pb.PartyModelRef(model_id=model_id, model_version=deployed.model_version, role="guest", party_id=9999)
        t0 = time.perf_counter()
        archive = b"".join(c.chunk for c in stub.ExportModel(ref))
        export_ms = (time.perf_counter() - t0) * 1000
        other_stub = pb_grpc.FlowServiceStub(grpc.insecure_channel(other.target))
        t0 = time.perf_counter()
        other_stub.ImportModel(iter([pb.ImportModelRequest(expect=pb.ImportModelExpect()),
                                     pb.ImportModelRequest(chunk=archive)]))
        import_ms = (time.perf_counter() - t0) * 1000
    res = {"max_iter": a.max_iter, "train_wall_seconds": train_s, "deploy_ms": deploy_ms,
           "predict_wall_seconds": predict_s, "rows_scored": len(predicted), "max_score_difference": diff,
           "archive_bytes": len(archive), "export_ms": export_ms, "import_ms": import_ms,
           "predict_dsl_is_fates": predict_dsl == read("hetero_lr_normal_predict_dsl")}
    print(f"train (hetero LR, {a.max_iter} iterations): {train_s:.1f} s; deploy {deploy_ms:.1f} ms; predict job "
          f"{predict_s:.1f} s for {len(predicted)} rows, max |score - train score| {diff:.1e}; predict DSL is "
          f"FATE's published one: {res['predict_dsl_is_fates']}")
    print(f"guest archive {len(archive):,} bytes: export {export_ms:.1f} ms, import into another server "
          f"{import_ms:.1f} ms")
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, "fate_models.json"), "w") as f:
        json.dump(res, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
