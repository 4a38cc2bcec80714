"""FATE's published examples run for real on taskhub (guest, host and arbiter as separate tasks talking
through the server's federation channel); cancellation and scoping of that channel."""
from __future__ import annotations

import json

import grpc
import psutil
import pytest
from taskhub.v1 import flow_service_pb2 as pb

from conftest import wait_for
from test_flow import DATA, J, T, flow, tasks_of, upload, wait_job, with_tables


def published(name: str, **overrides) -> tuple[str, str]:
    """A published FATE example (tests/data/fate), its conf's component parameters overridden."""
    dsl = (DATA / f"{name}_dsl.json").read_text()
    conf = json.loads((DATA / f"{name}_conf.json").read_text())
    for cpn, params in overrides.items():
        conf["component_parameters"]["common"].setdefault(cpn, {}).update(params)
    return dsl, json.dumps(conf)


@pytest.fixture(scope="module")
def fstub(server):
    stub = flow(server)
    with_tables(stub)
    for role in ("guest", "host"):
        upload(stub, "experiment", f"breast_homo_{role}", (DATA / f"breast_homo_{role}.csv").read_bytes())
    return stub


def auc(stub, job_id: str) -> float:
    out = stub.GetComponentOutput(pb.GetComponentOutputRequest(job_id=job_id, component_name="evaluation_0"))
    summary = json.loads(out.summary_json)
    [by_type] = summary.values()
    return by_type["train"]["auc"]


def test_published_hetero_lr_learns_across_three_parties(fstub):
    # As published (rsa intersection, Paillier 1024, rmsprop, batch 320), fewer iterations for the suite.
    dsl, conf = published("hetero_lr_normal", hetero_lr_0={"max_iter": 10})
    job = fstub.SubmitJob(pb.SubmitJobRequest(dsl_json=dsl, conf_json=conf))
    done = wait_job(fstub, job.job_id, timeout=600)
    assert done.status == J.FLOW_JOB_STATUS_SUCCESS, done.error
    tasks = {(t.component_name, t.party.role): t for t in tasks_of(fstub, job.job_id)}
    assert tasks[("hetero_lr_0", "arbiter")].status == T.FLOW_TASK_STATUS_SUCCESS
    assert tasks[("reader_0", "arbiter")].status == T.FLOW_TASK_STATUS_PASS
    assert auc(fstub, job.job_id) >= 0.95
    inter = fstub.GetComponentOutput(pb.GetComponentOutputRequest(job_id=job.job_id, component_name="intersection_0"))
    assert inter.output_tables[0].count == 569
    guest = fstub.GetComponentOutput(pb.GetComponentOutputRequest(job_id=job.job_id, component_name="hetero_lr_0"))
    header = json.loads(guest.output_tables[0].schema_json)["header"]
    assert header[:3] == ["label", "predict_result", "predict_score"]
    model = json.loads(guest.model_json)
    assert set(model["weight"]) == {f"x{i}" for i in range(10)}          # guest's own features only
    host = fstub.GetComponentOutput(pb.GetComponentOutputRequest(job_id=job.job_id, component_name="hetero_lr_0",
                                                                  role="host", party_id=10000))
    assert set(json.loads(host.model_json)["weight"]) == {f"x{i}" for i in range(20)}
    losses = [m for role in ("guest", "arbiter") for m in fstub.GetComponentOutput(pb.GetComponentOutputRequest(
        job_id=job.job_id, component_name="hetero_lr_0", role=role,
        party_id=9999 if role == "guest" else 10000)).metrics if m.name == "loss"]
    assert losses and len(json.loads(losses[0].data_json)) >= 2


def test_published_homo_lr_runs(fstub):
    dsl, conf = published("homo_lr_train", homo_lr_0={"max_iter": 5})
    job = fstub.SubmitJob(pb.SubmitJobRequest(dsl_json=dsl, conf_json=conf))
    done = wait_job(fstub, job.job_id, timeout=600)
    assert done.status == J.FLOW_JOB_STATUS_SUCCESS, done.error
    assert auc(fstub, job.job_id) >= 0.9


def test_cancel_mid_training_leaves_no_process(server, fstub):
    dsl, conf = published("hetero_lr_normal", hetero_lr_0={"max_iter": 1000, "early_stop": "weight_diff",
                                                           "tol": 1e-12})
    job = fstub.SubmitJob(pb.SubmitJobRequest(dsl_json=dsl, conf_json=conf))
    wait_for(lambda: all(t.status == T.FLOW_TASK_STATUS_RUNNING for t in tasks_of(fstub, job.job_id)
                         if t.component_name == "hetero_lr_0"), 300, what="hetero LR running on every party")
    api = server.client()
    pids = [api.get_task(t.taskhub_task_id, namespace="*").pid for t in tasks_of(fstub, job.job_id)
            if t.component_name == "hetero_lr_0"]
    assert len(pids) == 3 and all(pids)
    fstub.StopJob(pb.StopJobRequest(job_id=job.job_id))
    wait_for(lambda: {t.status for t in tasks_of(fstub, job.job_id) if t.component_name == "hetero_lr_0"} ==
             {T.FLOW_TASK_STATUS_CANCELED}, 60, what="every party's task cancelled")
    # Each party's worker either stopped the task itself (cooperative cancel, waiting for a peer) or was
    # killed; no worker still runs a task of this job.
    for t in tasks_of(fstub, job.job_id):
        if t.taskhub_task_id:
            assert api.get_task(t.taskhub_task_id, namespace="*").status != 8  # not RUNNING
    for pid in pids:
        if psutil.pid_exists(pid):
            assert all(job.job_id not in " ".join(c.cmdline()) for c in psutil.Process(pid).children(recursive=True))


def test_component_callbacks_are_scoped_to_running_component_tasks(server, fstub):
    api = server.client()
    plain = api.create_task(argv=["true"])
    for call in (lambda: fstub.FederationSend(pb.FederationSendRequest(task_uid=plain.uid, name="x", tag="0",
                                                                       dst_role="guest", dst_party_id=9999)),
                 lambda: fstub.FederationReceive(pb.FederationReceiveRequest(task_uid="f" * 32, name="x", tag="0",
                                                                             src_role="host", src_party_id=10000)),
                 lambda: fstub.PutTracking(pb.PutTrackingRequest(task_uid=plain.uid, summary_json="{}"))):
        with pytest.raises(grpc.RpcError) as e:
            call()
        assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "running FATE component" in e.value.details()


def test_two_concurrent_jobs_do_not_read_each_others_messages(fstub):
    # Same parties, same exchange names and tags; job b's host holds only half the ids. Each job's
    # intersection must see only its own host's ids.
    rows = (DATA / "breast_hetero_host.csv").read_bytes().splitlines(keepends=True)
    upload(fstub, "experiment", "breast_hetero_host_half", b"".join(rows[:1 + (len(rows) - 1) // 2]))
    dsl, conf = published("hetero_lr_normal", hetero_lr_0={"max_iter": 2})
    half = json.loads(conf)
    half["component_parameters"]["role"]["host"]["0"]["reader_0"]["table"]["name"] = "breast_hetero_host_half"
    a = fstub.SubmitJob(pb.SubmitJobRequest(dsl_json=dsl, conf_json=conf))
    b = fstub.SubmitJob(pb.SubmitJobRequest(dsl_json=dsl, conf_json=json.dumps(half)))
    for job in (a, b):
        done = wait_job(fstub, job.job_id, timeout=600)
        assert done.status == J.FLOW_JOB_STATUS_SUCCESS, done.error
    counts = [fstub.GetComponentOutput(pb.GetComponentOutputRequest(
        job_id=j.job_id, component_name="intersection_0", role=role, party_id=party)).output_tables[0].count
        for j in (a, b) for role, party in (("guest", 9999), ("host", 10000))]
    assert counts == [569, 569, 284, 284]
