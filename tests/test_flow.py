"""FlowService (FATE jobs) through gRPC, against real servers: jobs, queue, stop, failure, restart, tables."""
from __future__ import annotations

import importlib
import json

import grpc
import psutil
import pytest
from taskhub.v1 import flow_service_pb2 as pb
from taskhub.v1 import flow_service_pb2_grpc as pb_grpc
from taskhub.v1 import task_pb2

from conftest import TESTS, wait_for

DATA = TESTS / "data" / "fate"
GUEST, HOST = 9999, 10000
J, T = pb.FlowJobStatus, pb.FlowTaskStatus


def flow(server) -> pb_grpc.FlowServiceStub:
    return pb_grpc.FlowServiceStub(grpc.insecure_channel(server.grpc_target))


def upload(stub, namespace: str, name: str, content: bytes, drop: int = 1, chunk: int = 1000, **conf):
    def requests():
        yield pb.UploadDataRequest(conf_json=json.dumps(
            {"namespace": namespace, "table_name": name, "head": 1, "partition": 4, "drop": drop, **conf}))
        for i in range(0, len(content), chunk):
            yield pb.UploadDataRequest(chunk=content[i:i + chunk])
    return stub.UploadData(requests(), timeout=60)


def two_party_job(third: dict | None = None, third_params: dict | None = None) -> tuple[str, str]:
    """Reader -> DataTransform (-> a third component) for guest 9999 and host 10000."""
    dsl = {"components": {
        "reader_0": {"module": "Reader", "output": {"data": ["data"]}},
        "data_transform_0": {"module": "DataTransform", "input": {"data": {"data": ["reader_0.data"]}},
                             "output": {"data": ["data"], "model": ["model"]}}}}
    if third:
        dsl["components"]["probe_0"] = third
    guest = {"reader_0": {"table": {"name": "breast_hetero_guest", "namespace": "experiment"}},
             "data_transform_0": {"with_label": True, "output_format": "dense"}}
    host = {"reader_0": {"table": {"name": "breast_hetero_host", "namespace": "experiment"}},
            "data_transform_0": {"with_label": False}}
    conf = {"dsl_version": 2, "initiator": {"role": "guest", "party_id": GUEST},
            "role": {"guest": [GUEST], "host": [HOST]},
            "job_parameters": {"common": {"job_type": "train"}},
            "component_parameters": {"role": {"guest": {"0": guest}, "host": {"0": host}}}}
    if third_params:
        conf["component_parameters"]["common"] = {"probe_0": third_params.pop("common", {})}
        for role, params in third_params.items():
            conf["component_parameters"]["role"][role]["0"]["probe_0"] = params
    return json.dumps(dsl), json.dumps(conf)


PROBE = {"module": "Probe", "input": {"data": {"data": ["data_transform_0.data"]}},
         "output": {"data": ["data"], "model": ["model"]}}


def with_tables(stub) -> None:
    for role in ("guest", "host"):
        upload(stub, "experiment", f"breast_hetero_{role}", (DATA / f"breast_hetero_{role}.csv").read_bytes())


def wait_job(stub, job_id: str, statuses=(J.FLOW_JOB_STATUS_SUCCESS, J.FLOW_JOB_STATUS_FAILED,
                                          J.FLOW_JOB_STATUS_CANCELED, J.FLOW_JOB_STATUS_TIMEOUT), timeout=120):
    for ev in stub.WatchJob(pb.WatchJobRequest(job_id=job_id), timeout=timeout):
        if ev.HasField("job") and ev.job.status in statuses:
            return ev.job
    return stub.GetJob(pb.GetJobRequest(job_id=job_id))


def tasks_of(stub, job_id: str) -> list:
    return list(stub.ListFlowTasks(pb.ListFlowTasksRequest(job_id=job_id)).tasks)


@pytest.fixture(scope="module")
def fstub(server):
    stub = flow(server)
    with_tables(stub)
    return stub


def test_registry_matches_component_classes():
    from server.flow.components.base import Component
    from server.flow.registry import BUILTIN
    for module, entry in BUILTIN.items():
        path, _, attr = entry.path.partition(":")
        cls = getattr(importlib.import_module(path), attr)
        assert issubclass(cls, Component) and cls.module == module
        assert tuple(cls.roles) == tuple(entry.roles), module


def test_upload_makes_a_table_and_an_upload_job(fstub):
    info = fstub.GetTable(pb.GetTableRequest(namespace="experiment", name="breast_hetero_guest"))
    assert info.exist and info.count == 569 and info.partitions == 4
    schema = json.loads(info.schema_json)
    assert schema["sid"] == "id" and schema["header"][:2] == ["y", "x0"] and len(schema["header"]) == 11
    rows = [line for msg in fstub.ReadTable(pb.ReadTableRequest(namespace="experiment", name="breast_hetero_guest",
                                                                 limit=3)) for line in msg.lines]
    assert len(rows) == 3 and all(len(r.split(",")) == 12 for r in rows)
    history = fstub.UploadHistory(pb.UploadHistoryRequest(limit=10)).uploads
    assert {u.table.name for u in history} >= {"breast_hetero_guest", "breast_hetero_host"}
    assert all(u.status == J.FLOW_JOB_STATUS_SUCCESS and u.upload_count == 569 for u in history)
    job = fstub.GetJob(pb.GetJobRequest(job_id=history[0].job_id))
    assert job.job_type == "upload" and job.status == J.FLOW_JOB_STATUS_SUCCESS
    assert not fstub.GetTable(pb.GetTableRequest(namespace="experiment", name="nothing")).exist


def test_upload_refuses_broken_csv_and_existing_table(fstub):
    with pytest.raises(grpc.RpcError) as e:
        upload(fstub, "experiment", "broken", b"id,y,x0\n1,0,0.5\n2,1\n3,0,0.1\n")
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "line 3" in e.value.details()
    assert not fstub.GetTable(pb.GetTableRequest(namespace="experiment", name="broken")).exist
    with pytest.raises(grpc.RpcError) as e:
        upload(fstub, "experiment", "breast_hetero_guest", b"id,y\n1,0\n", drop=0)
    assert e.value.code() == grpc.StatusCode.ALREADY_EXISTS and "drop=1" in e.value.details()
    assert fstub.GetTable(pb.GetTableRequest(namespace="experiment", name="breast_hetero_guest")).count == 569
    with pytest.raises(grpc.RpcError) as e:
        upload(fstub, "experiment", "outside", b"", use_local_data=0, file="/etc/passwd")
    assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_two_party_job_runs_each_component_as_a_task_per_party(server, fstub):
    dsl, conf = two_party_job()
    job = fstub.SubmitJob(pb.SubmitJobRequest(dsl_json=dsl, conf_json=conf))
    assert job.job_id.isdigit() and len(job.job_id) == 22
    assert job.model_id == "guest-9999#host-10000#model" and job.model_version == job.job_id
    done = wait_job(fstub, job.job_id)
    assert done.status == J.FLOW_JOB_STATUS_SUCCESS, done.error
    assert done.progress == 100 and done.start_time_ms and done.end_time_ms >= done.start_time_ms
    tasks = tasks_of(fstub, job.job_id)
    assert sorted((t.component_name, t.party.role, t.party.party_id) for t in tasks) == [
        ("data_transform_0", "guest", GUEST), ("data_transform_0", "host", HOST),
        ("reader_0", "guest", GUEST), ("reader_0", "host", HOST)]
    tasks_api = server.client()
    for t in tasks:
        assert t.status == T.FLOW_TASK_STATUS_SUCCESS and t.task_id == f"{job.job_id}_{t.component_name}"
        real = tasks_api.get_task(t.taskhub_task_id, namespace="*")
        assert real.status == task_pb2.TASK_STATUS_SUCCESS and real.spec.namespace == "fate"
    out = fstub.GetComponentOutput(pb.GetComponentOutputRequest(job_id=job.job_id, component_name="data_transform_0"))
    assert out.task.party.role == "guest"  # no role: the initiator
    assert json.loads(out.parameters_json)["with_label"] is True
    [table] = out.output_tables
    assert table.count == 569 and json.loads(table.schema_json)["label_name"] == "y"
    host = fstub.GetComponentOutput(pb.GetComponentOutputRequest(job_id=job.job_id, component_name="data_transform_0",
                                                                  role="host", party_id=HOST))
    assert len(json.loads(host.output_tables[0].schema_json)["features"]) == 20
    comps = fstub.ListComponents(pb.ListComponentsRequest(job_id=job.job_id)).components
    assert [(c.name, list(c.upstream)) for c in comps] == [("reader_0", []), ("data_transform_0", ["reader_0"])]
    lines = [l for msg in fstub.TraceJob(pb.TraceJobRequest(job_id=job.job_id)) for l in msg.lines]
    assert {(l.component_name, l.role) for l in lines} == {(c, r) for c in ("reader_0", "data_transform_0")
                                                          for r in ("guest", "host")}


@pytest.mark.parametrize("mutate, message", [
    (lambda d, c: ("{not json", c), "DSL is not valid JSON"),
    (lambda d, c: (d, c.replace('"initiator"', '"initiatorx"')), "initiator"),
    (lambda d, c: (d, json.dumps({**json.loads(c), "role": {}})), "role"),
    (lambda d, c: (d.replace('"reader_0.data"', '"reader_9.data"'), c), "no component 'reader_9'"),
    (lambda d, c: (d.replace('"reader_0.data"', '"reader_0.model"'), c), "no data output 'model'"),
    (lambda d, c: (d.replace('"Reader"', '"NoSuchModule"'), c), "unknown module 'NoSuchModule'"),
    (lambda d, c: (json.dumps({"components": {
        "a": {"module": "Probe", "input": {"data": {"data": ["b.data"]}}, "output": {"data": ["data"]}},
        "b": {"module": "Probe", "input": {"data": {"data": ["a.data"]}}, "output": {"data": ["data"]}}}}), c), "cycle"),
])
def test_bad_dsl_or_conf_is_refused_and_creates_nothing(fstub, mutate, message):
    before = fstub.ListJobs(pb.ListJobsRequest()).total
    dsl, conf = mutate(*two_party_job())
    with pytest.raises(grpc.RpcError) as e:
        fstub.SubmitJob(pb.SubmitJobRequest(dsl_json=dsl, conf_json=conf))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and message in e.value.details()
    assert fstub.ListJobs(pb.ListJobsRequest()).total == before


def test_unknown_job_and_bad_limit(fstub):
    with pytest.raises(grpc.RpcError) as e:
        fstub.GetJob(pb.GetJobRequest(job_id="20990101000000000000"))
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as e:
        fstub.ListJobs(pb.ListJobsRequest(limit=-1))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def _running_pids(server, stub, job_id: str) -> list[int]:
    api = server.client()
    return [api.get_task(t.taskhub_task_id, namespace="*").pid for t in tasks_of(stub, job_id)
            if t.status == T.FLOW_TASK_STATUS_RUNNING]


def test_stop_ends_every_task_and_its_process(server, fstub):
    dsl, conf = two_party_job(PROBE, {"common": {"seconds": 120}})
    job = fstub.SubmitJob(pb.SubmitJobRequest(dsl_json=dsl, conf_json=conf))
    wait_for(lambda: len(_running_pids(server, fstub, job.job_id)) == 2 and
             all(t.taskhub_task_id for t in tasks_of(fstub, job.job_id) if t.component_name == "probe_0"),
             60, what="both probe tasks running")
    workers = [psutil.Process(p) for p in _running_pids(server, fstub, job.job_id)]
    stopped = fstub.StopJob(pb.StopJobRequest(job_id=job.job_id))
    assert stopped.status == J.FLOW_JOB_STATUS_CANCELED
    api = server.client()
    wait_for(lambda: all(api.get_task(t.taskhub_task_id, namespace="*").status == task_pb2.TASK_STATUS_CANCELLED
                         for t in tasks_of(fstub, job.job_id) if t.component_name == "probe_0"), 30,
             what="the probe tasks to be cancelled")
    wait_for(lambda: {t.status for t in tasks_of(fstub, job.job_id) if t.component_name == "probe_0"} == {
        T.FLOW_TASK_STATUS_CANCELED}, 30, what="the FATE tasks to read canceled")
    # The cooperative probe stops by itself; a worker that did not would have been replaced (killed).
    for w in workers:
        assert not w.is_running() or w.status() != psutil.STATUS_ZOMBIE
    with pytest.raises(grpc.RpcError) as e:
        fstub.StopJob(pb.StopJobRequest(job_id=job.job_id))
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_a_failed_task_fails_the_job_and_cancels_the_rest(fstub):
    dsl, conf = two_party_job(PROBE, {"guest": {"seconds": 60}, "host": {"fail": True, "message": "boom"}})
    job = fstub.SubmitJob(pb.SubmitJobRequest(dsl_json=dsl, conf_json=conf))
    done = wait_job(fstub, job.job_id)
    assert done.status == J.FLOW_JOB_STATUS_FAILED
    assert "probe_0 (host 10000) failed" in done.error and "boom" in done.error
    wait_for(lambda: {t.status for t in tasks_of(fstub, job.job_id) if t.component_name == "probe_0"} ==
             {T.FLOW_TASK_STATUS_FAILED, T.FLOW_TASK_STATUS_CANCELED}, 30,
             what=f"guest probe cancelled: {tasks_of(fstub, job.job_id)}")


def test_queue_holds_jobs_beyond_the_limit_and_clean_cancels_them(server_factory):
    s = server_factory("--flow-max-jobs", "1")
    stub = flow(s)
    with_tables(stub)
    dsl, conf = two_party_job(PROBE, {"common": {"seconds": 120}})
    first = stub.SubmitJob(pb.SubmitJobRequest(dsl_json=dsl, conf_json=conf))
    second = stub.SubmitJob(pb.SubmitJobRequest(dsl_json=dsl, conf_json=conf))
    assert second.status == J.FLOW_JOB_STATUS_WAITING and second.queue_position == 1
    assert stub.GetJob(pb.GetJobRequest(job_id=first.job_id)).status in (J.FLOW_JOB_STATUS_READY,
                                                                         J.FLOW_JOB_STATUS_RUNNING)
    assert not tasks_of(stub, second.job_id)[0].taskhub_task_id
    cleaned = stub.CleanQueue(pb.CleanQueueRequest())
    assert list(cleaned.job_ids) == [second.job_id]
    assert stub.GetJob(pb.GetJobRequest(job_id=second.job_id)).status == J.FLOW_JOB_STATUS_CANCELED
    assert stub.StopJob(pb.StopJobRequest(job_id=first.job_id)).status == J.FLOW_JOB_STATUS_CANCELED


def test_sigkill_mid_job_resumes_after_restart(server_factory, tmp_path):
    s = server_factory()
    stub = flow(s)
    with_tables(stub)
    dsl, conf = two_party_job(PROBE, {"common": {"seconds": 4}})
    conf = json.loads(conf)
    conf["job_parameters"]["common"]["auto_retries"] = 1
    job = stub.SubmitJob(pb.SubmitJobRequest(dsl_json=dsl, conf_json=json.dumps(conf)))
    wait_for(lambda: any(t.status == T.FLOW_TASK_STATUS_RUNNING for t in tasks_of(stub, job.job_id)
                         if t.component_name == "probe_0"), 60, what="a probe task running")
    before = {(t.component_name, t.party.role): (t.taskhub_task_id, t.status) for t in tasks_of(stub, job.job_id)}
    s.kill()
    again = server_factory(db=s.db)
    stub = flow(again)
    done = wait_job(stub, job.job_id)
    assert done.status == J.FLOW_JOB_STATUS_SUCCESS, done.error
    after = {(t.component_name, t.party.role): (t.taskhub_task_id, t.status) for t in tasks_of(stub, job.job_id)}
    for key in [k for k in before if k[0] != "probe_0"]:   # finished components stay finished, not re-run
        assert before[key] == after[key] == (before[key][0], T.FLOW_TASK_STATUS_SUCCESS)
    api = again.client()
    probes = [api.get_task(after[("probe_0", r)][0], namespace="*") for r in ("guest", "host")]
    assert any(p.retries == 1 for p in probes)   # the interrupted one ran again within auto_retries


def test_a_party_with_labelled_nodes_runs_only_there(server_factory, tmp_path):
    from node_agents import agents_fixture_factory, node_stub, wait_online
    s = server_factory()
    make, close_all = agents_fixture_factory(tmp_path)
    try:
        make(s.grpc_target, "party-10000", "--label", "fate.party=10000")
        wait_online(node_stub(s.grpc_target)[1], "party-10000")
        stub = flow(s)
        with_tables(stub)
        dsl, conf = two_party_job()
        job = stub.SubmitJob(pb.SubmitJobRequest(dsl_json=dsl, conf_json=conf))
        done = wait_job(stub, job.job_id)
        assert done.status == J.FLOW_JOB_STATUS_SUCCESS, done.error
        nodes = {(t.component_name, t.party.party_id): t.node for t in tasks_of(stub, job.job_id)}
        assert nodes[("reader_0", HOST)] == nodes[("data_transform_0", HOST)] == "party-10000"
        api = s.client()
        host_task = next(t for t in tasks_of(stub, job.job_id) if t.party.party_id == HOST)
        assert dict(api.get_task(host_task.taskhub_task_id, namespace="*").spec.node_selector) == {
            "fate.party": "10000"}
    finally:
        close_all()


def test_retention_purges_old_finished_jobs_but_not_uploaded_tables(server_factory):
    s = server_factory("--retain", "2s")
    stub = flow(s)
    with_tables(stub)
    dsl, conf = two_party_job()
    job = stub.SubmitJob(pb.SubmitJobRequest(dsl_json=dsl, conf_json=conf))
    assert wait_job(stub, job.job_id).status == J.FLOW_JOB_STATUS_SUCCESS

    def gone():
        try:
            stub.GetJob(pb.GetJobRequest(job_id=job.job_id))
        except grpc.RpcError as e:
            return e.code() == grpc.StatusCode.NOT_FOUND
    wait_for(gone, 60, what="the finished job to be purged")
    assert not tasks_of(stub, job.job_id)
    assert stub.GetTable(pb.GetTableRequest(namespace="experiment", name="breast_hetero_guest")).count == 569
    assert not stub.GetTable(pb.GetTableRequest(namespace=f"output_data_{job.job_id}",
                                                name="reader_0_guest_9999_data")).exist
