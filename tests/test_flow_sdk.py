"""Seed 004 through FATE's own client: fate-client 1.11.3's `flow_sdk.client.FlowClient`, unchanged,
against the gateway's FATE Flow routes on a real server."""
from __future__ import annotations

import json
import os
import tarfile
import uuid
from urllib.parse import urlparse

import grpc
import pytest

from conftest import http, wait_for
from flow_jobs import GUEST, HOST, ROWS, csv_path, pipeline, slow_job, upload_conf
from taskhub.v1 import flow_service_pb2 as fpb
from taskhub.v1 import task_pb2 as pb

flow_sdk_client = pytest.importorskip("flow_sdk.client")

TERMINAL = {pb.TASK_STATUS_SUCCESS, pb.TASK_STATUS_FAILED, pb.TASK_STATUS_CANCELLED}


def sdk(server):
    url = urlparse(server.http_url)
    return flow_sdk_client.FlowClient(url.hostname, url.port, "v1")


def job_status(fc, job_id: str) -> str:
    rows = fc.job.query(job_id=job_id)["data"]
    return rows[0]["f_status"] if rows else ""


def wait_status(fc, job_id: str, wanted: set[str], timeout: float = 60) -> str:
    return wait_for(lambda: (s := job_status(fc, job_id)) in wanted and s, timeout=timeout, interval=0.1,
                    what=f"job {job_id} in {wanted}")


@pytest.fixture(scope="module")
def fc(server):
    return sdk(server)


@pytest.fixture(scope="module")
def namespace(fc):
    """Both breast_hetero tables uploaded (multipart, drop=1) into a fresh namespace."""
    ns = "exp_" + uuid.uuid4().hex[:8]
    for table in ("breast_hetero_guest", "breast_hetero_host"):
        answer = fc.data.upload(upload_conf(ns, table), drop=1)
        assert answer["retcode"] == 0, answer
        assert answer["jobId"] == answer["data"]["job_id"] and answer["data"]["table_name"] == table
    return ns


@pytest.fixture(scope="module")
def done_job(fc, namespace):
    dsl, conf = pipeline(namespace)
    answer = fc.job.submit(conf, dsl)
    assert answer["retcode"] == 0, answer
    job_id = answer["jobId"]
    assert answer["data"]["job_id"] == job_id and set(answer["data"]["model_info"]) == {"model_id", "model_version"}
    assert wait_status(fc, job_id, {"success", "failed", "canceled"}) == "success", fc.job.query(job_id=job_id)
    return job_id


def test_upload_replaces_only_with_drop_and_table_info(fc, namespace, tmp_path):
    again = fc.data.upload(upload_conf(namespace, "breast_hetero_guest"))
    assert again["retcode"] == 100 and "already exists" in again["retmsg"]

    # A large file: the server refuses at the upload's first message, while the gateway still
    # writes the file's chunks; its answer must be the server's, whichever write meets the end.
    big = tmp_path / "big.csv"
    with open(csv_path("breast_hetero_guest")) as src:
        header, *rows = src.read().splitlines()
    with open(big, "w") as out:
        out.write(header + "\n")
        while out.tell() < 12 << 20:  # 12 chunks of the gateway's 1 MiB
            out.write("\n".join(rows) + "\n")
    for _ in range(3):
        again = fc.data.upload(upload_conf(namespace, "breast_hetero_guest", str(big)))
        assert again["retcode"] == 100 and "already exists" in again["retmsg"], again

    info = fc.table.info(namespace=namespace, table_name="breast_hetero_guest")
    assert info["retcode"] == 0, info
    data = info["data"]
    assert data["exist"] == 1 and data["count"] == ROWS and data["namespace"] == namespace
    assert data["schema"]["sid"] == "id" and data["schema"]["header"][:2] == ["y", "x0"]
    missing = fc.table.info(namespace=namespace, table_name="nothing_here")
    assert missing["retcode"] == 0 and missing["data"]["exist"] == 0

    history = fc.data.upload_history(limit=10)
    assert history["retcode"] == 0
    infos = [info for entry in history["data"] for info in entry.values()]
    mine = [i for i in infos if i["upload_info"]["namespace"] == namespace]
    assert {i["upload_info"]["table_name"] for i in mine} == {"breast_hetero_guest", "breast_hetero_host"}
    assert all(i["upload_info"]["upload_count"] == ROWS for i in mine)

    # An upload is a job, ended successfully.
    job_id = next(job for entry in history["data"] for job, i in entry.items()
                  if i["upload_info"]["namespace"] == namespace)
    assert job_status(fc, job_id) == "success"


def test_two_party_job_tasks_and_rows(fc, done_job):
    rows = fc.job.query(job_id=done_job)["data"]
    assert {(r["f_role"], r["f_party_id"]) for r in rows} == {("guest", str(GUEST)), ("host", str(HOST))}
    guest = next(r for r in rows if r["f_role"] == "guest")
    assert guest["f_is_initiator"] and guest["f_progress"] == 100 and guest["f_status"] == "success"
    assert set(guest["f_dsl"]["components"]) == {"reader_0", "data_transform_0", "probe_0"}
    assert guest["f_runtime_conf"]["initiator"] == {"role": "guest", "party_id": GUEST}
    assert fc.job.query(job_id=done_job, role="host", party_id=HOST)["data"][0]["f_role"] == "host"

    tasks = fc.task.query(job_id=done_job)
    assert tasks["retcode"] == 0
    assert {(t["f_component_name"], t["f_role"], t["f_status"]) for t in tasks["data"]} == {
        (c, r, "success") for c in ("reader_0", "data_transform_0", "probe_0") for r in ("guest", "host")}
    t0 = next(t for t in tasks["data"] if t["f_component_name"] == "data_transform_0")
    assert t0["f_task_id"] == f"{done_job}_data_transform_0" and t0["f_component_module"] == "DataTransform"
    assert t0["f_end_time"] >= t0["f_start_time"] > 0
    only_host = fc.task.query(job_id=done_job, role="host", party_id=HOST, component_name="probe_0")["data"]
    assert [(t["f_role"], t["f_party_id"]) for t in only_host] == [("host", str(HOST))]

    listed = fc.job.list(limit=5)
    assert listed["retcode"] == 0 and listed["data"]["count"] >= 1
    row = next(j for j in listed["data"]["jobs"] if j["job_id"] == done_job)
    assert row["party_id"] == GUEST and row["partners"] == [HOST] and row["status"] == "success"
    task_list = fc.task.list(limit=3)
    assert task_list["retcode"] == 0 and len(task_list["data"]["tasks"]) == 3 and task_list["data"]["count"] >= 6
    assert "job_id" in task_list["data"]["tasks"][0] and "f_job_id" not in task_list["data"]["tasks"][0]


def test_components_outputs_and_metrics(fc, done_job, tmp_path):
    assert fc.component.list(job_id=done_job)["data"] == {
        "components": ["reader_0", "data_transform_0", "probe_0"]}

    params = fc.component.parameters(job_id=done_job, role="guest", party_id=GUEST,
                                     component_name="data_transform_0")
    assert params["retcode"] == 0 and params["data"]["module"] == "DataTransform", params
    assert "with_label" in params["data"]["DataTransformParam"]       # nested under the class, as FATE 1.11

    out = fc.component.output_data(job_id=done_job, role="guest", party_id=GUEST, component_name="data_transform_0",
                                   output_path=str(tmp_path))
    assert out["retcode"] == 0, out
    directory = out["directory"]
    assert directory.endswith(f"job_{done_job}_data_transform_0_guest_{GUEST}_output_data")
    lines = open(os.path.join(directory, "data.csv")).read().splitlines()
    assert lines[0].split(",")[:3] == ["id", "y", "x0"] and len(lines) == ROWS + 1
    assert json.load(open(os.path.join(directory, "data.meta")))["header"][:2] == ["id", "y"]
    limited = fc.component.output_data(job_id=done_job, role="host", party_id=HOST,
                                       component_name="data_transform_0", output_path=str(tmp_path / "l"), limit=5)
    assert len(open(os.path.join(limited["directory"], "data.csv")).read().splitlines()) == 6

    preview = http("POST", fc.API_BASE_URL + "tracking/component/output/data",
                   {"job_id": done_job, "component_name": "data_transform_0"}).json()  # initiator: guest
    assert preview["retcode"] == 0 and preview["meta"]["names"] == ["data"] and preview["meta"]["total"] == [ROWS]
    assert preview["meta"]["header"][0][:2] == ["id", "y"] and len(preview["data"][0]) == 100
    assert len(preview["data"][0][0]) == len(preview["meta"]["header"][0])

    table = fc.component.output_data_table(job_id=done_job, role="guest", party_id=GUEST,
                                           component_name="data_transform_0")
    assert table["retcode"] == 0 and table["data"][0]["data_name"] == "data", table
    assert fc.table.info(namespace=table["data"][0]["table_namespace"],
                         table_name=table["data"][0]["table_name"])["data"]["count"] == ROWS

    metrics = fc.component.metric_all(job_id=done_job, role="guest", party_id=GUEST, component_name="probe_0")
    assert metrics["retcode"] == 0 and metrics["data"]["probe"]["rows"]["data"] == [[0, ROWS]], metrics
    assert metrics["data"]["probe"]["rows"]["meta"]["metric_type"] == "COUNT"
    assert fc.component.metrics(job_id=done_job, role="guest", party_id=GUEST,
                                component_name="probe_0")["data"] == {"probe": ["rows"]}
    model = fc.component.output_model(job_id=done_job, role="host", party_id=HOST, component_name="probe_0")
    assert model["retcode"] == 0 and model["data"] == {"rows": ROWS, "role": "host"}, model
    summary = fc.component.get_summary(job_id=done_job, role="guest", party_id=GUEST, component_name="probe_0")
    assert summary["retcode"] == 0 and summary["data"]["message"] == "probed"

    view = fc.job.view(job_id=done_job, role="guest", party_id=GUEST)
    assert view["retcode"] == 0
    assert {v["f_component_name"] for v in view["data"]} == {"reader_0", "data_transform_0", "probe_0"}

    deleted = fc.component.metric_delete(job_id=done_job)
    assert deleted["retcode"] == 0 and deleted["data"] >= 2, deleted
    assert fc.component.metric_all(job_id=done_job, role="guest", party_id=GUEST,
                                   component_name="probe_0") == {"retcode": 0, "retmsg": "no data", "data": {}}
    assert fc.component.metric_delete(date="2026-11-23")["retcode"] == 101


def test_job_config_and_log_files(fc, done_job, tmp_path):
    config = fc.job.config(job_id=done_job, role="guest", party_id=GUEST, output_path=str(tmp_path))
    assert config["retcode"] == 0, config
    written = json.load(open(os.path.join(config["directory"], "dsl.json")))
    assert set(written["components"]) == {"reader_0", "data_transform_0", "probe_0"}
    assert json.load(open(os.path.join(config["directory"], "runtime_conf.json")))["role"]["host"] == [HOST]

    log = fc.job.log(job_id=done_job, output_path=str(tmp_path))
    assert log["retcode"] == 0, log
    reader_log = os.path.join(log["directory"], "guest", str(GUEST), "reader_0", "INFO.log")
    assert "breast_hetero_guest" in open(reader_log).read()
    assert os.path.isfile(os.path.join(log["directory"], "host", str(HOST), "probe_0", "INFO.log"))

    size = http("POST", fc.API_BASE_URL + "log/size", {"job_id": done_job, "role": "guest", "party_id": GUEST,
                                                       "component_name": "reader_0"}).json()
    assert size["retcode"] == 0 and size["data"] >= 1
    cat = http("POST", fc.API_BASE_URL + "log/cat", {"job_id": done_job, "role": "guest", "party_id": GUEST,
                                                     "component_name": "reader_0", "begin": 1, "end": 1}).json()
    assert cat["retcode"] == 0 and [line["line_num"] for line in cat["data"]] == [1]

    # The raw download is a tar.gz named as FATE names it.
    answer = http("POST", fc.API_BASE_URL + "job/log/download", {"job_id": done_job},
                  {"Content-Type": "application/json"})
    assert answer.status == 200 and f"job_{done_job}_log.tar.gz" in answer.headers["Content-Disposition"]
    tar_path = tmp_path / "log.tar.gz"
    tar_path.write_bytes(answer.body)
    with tarfile.open(tar_path) as tar:
        assert f"guest/{GUEST}/reader_0/INFO.log" in tar.getnames()


def test_flow_service_is_transcoded(server, done_job):
    job = http("GET", f"{server.http_url}/v1/flow/jobs/{done_job}")
    assert job.status == 200 and job.json()["job_id"] == done_job and job.json()["status"] == "FLOW_JOB_STATUS_SUCCESS"
    logs = http("GET", f"{server.http_url}/v1/flow/jobs/{done_job}/logs?follow=false")
    messages = [json.loads(line) for line in logs.body.decode().splitlines()]
    assert logs.status == 200 and messages[-1]["end"] and any(m["lines"] for m in messages)
    missing = http("GET", f"{server.http_url}/v1/flow/jobs/20990101000000000000")
    assert missing.status == 404 and missing.json()["code"] == grpc.StatusCode.NOT_FOUND.value[0]


def test_upload_streams_a_file_larger_than_a_chunk(fc, namespace, tmp_path):
    big = tmp_path / "big.csv"
    with open(big, "w") as f:
        f.write("id,x0,x1,x2\n")
        for i in range(60_000):
            f.write(f"r{i},{i * 0.5},{i % 7},{'z' * 20}\n")
    assert big.stat().st_size > 2 * (1 << 20)
    answer = fc.data.upload(upload_conf(namespace, "big", str(big)), drop=1)
    assert answer["retcode"] == 0, answer
    info = fc.table.info(namespace=namespace, table_name="big")["data"]
    assert info["count"] == 60_000 and info["schema"]["header"] == ["x0", "x1", "x2"]


def test_stop_running_job_ends_every_task(fc, server):
    dsl, conf = slow_job(60)
    job_id = fc.job.submit(conf, dsl)["jobId"]
    wait_status(fc, job_id, {"running"})
    stub = server.client().flow
    wait_for(lambda: any(t.status == fpb.FLOW_TASK_STATUS_RUNNING for t in stub.ListFlowTasks(
        fpb.ListFlowTasksRequest(job_id=job_id)).tasks), interval=0.05, what="a probe task running")

    stopped = fc.job.stop(job_id=job_id)
    assert stopped["retcode"] == 0, (stopped, fc.job.query(job_id=job_id)["data"][0]["f_error"],
                                     fc.task.query(job_id=job_id)["data"])
    assert job_status(fc, job_id) == "canceled"
    tasks = stub.ListFlowTasks(fpb.ListFlowTasksRequest(job_id=job_id)).tasks
    assert len(tasks) == 2 and all(t.taskhub_task_id for t in tasks)
    taskhub = server.client(namespace="*")
    wait_for(lambda: all(taskhub.get_task(t.taskhub_task_id).status in TERMINAL for t in tasks),
             what="the job's taskhub tasks ended")
    assert {taskhub.get_task(t.taskhub_task_id).status for t in tasks} == {pb.TASK_STATUS_CANCELLED}
    again = fc.job.stop(job_id=job_id)
    assert again["retcode"] != 0 and again["retmsg"]


def test_queue_clean_cancels_waiting_jobs(server_factory):
    server = server_factory("--flow-max-jobs", "1")
    fc = sdk(server)
    dsl, conf = slow_job(60)
    running = fc.job.submit(conf, dsl)["jobId"]
    wait_status(fc, running, {"running"})
    waiting = fc.job.submit(conf, dsl)["jobId"]
    assert job_status(fc, waiting) == "waiting"

    cleaned = fc.queue.clean()
    assert cleaned["retcode"] == 0 and cleaned["data"] == {waiting: 0}, cleaned
    assert job_status(fc, waiting) == "canceled"
    assert job_status(fc, running) == "running"
    assert fc.job.stop(job_id=running)["retcode"] == 0


def test_bad_input_gets_fate_retcodes(fc, namespace, tmp_path):
    base = fc.API_BASE_URL
    dsl, conf = pipeline(namespace)
    broken = {"components": {**dsl["components"], "probe_0": {
        "module": "Probe", "input": {"data": {"data": ["nowhere_0.data"]}}}}}
    answer = fc.job.submit(conf, broken)
    assert answer["retcode"] == 101 and "nowhere_0" in answer["retmsg"], answer
    no_roles = fc.job.submit({"dsl_version": 2, "initiator": {"role": "guest", "party_id": GUEST}}, dsl)
    assert no_roles["retcode"] == 101 and no_roles["retmsg"]

    unknown = "20990101000000000000"
    assert fc.job.query(job_id=unknown) == {"retcode": 0, "retmsg": "no job could be found", "data": []}
    assert fc.job.config(job_id=unknown, role="guest", party_id=GUEST, output_path=str(tmp_path))["retcode"] == 101
    stop = fc.job.stop(job_id=unknown)
    assert stop["retcode"] == 102 and unknown in stop["retmsg"]
    assert fc.task.query(job_id=unknown) == {"retcode": 101, "retmsg": "find task failed"}
    assert fc.component.list(job_id=unknown)["retcode"] == 100
    params = fc.component.parameters(job_id=unknown, role="guest", party_id=GUEST, component_name="reader_0")
    assert params["retcode"] == 101 and unknown in params["retmsg"]
    log = fc.job.log(job_id=unknown, output_path=str(tmp_path))
    assert log["retcode"] == 404 and unknown in log["retmsg"]
    out = fc.component.output_data(job_id=unknown, role="guest", party_id=GUEST, component_name="reader_0",
                                   output_path=str(tmp_path))
    assert out["retcode"] == 210 and out["retmsg"]

    assert fc.job.list(limit=-1)["retcode"] == 101
    bad_limit = fc.job.list(limit="many")
    assert bad_limit["retcode"] == 101 and "limit" in bad_limit["retmsg"]
    bad_role = fc.task.query(job_id=unknown, role="boss")
    assert bad_role["retcode"] == 101 and "role" in bad_role["retmsg"]

    bad_csv = tmp_path / "broken.csv"
    bad_csv.write_text("id,y,x0\n1,0,0.5\n2,1\n")
    answer = fc.data.upload(upload_conf(namespace, "broken", str(bad_csv)), drop=1)
    assert answer["retcode"] == 101 and "line 3" in answer["retmsg"], answer

    # Raw HTTP: malformed bodies are argument errors with HTTP 200, never a 500.
    for path, body in (("job/submit", b"{not json"), ("job/query", b"[1, 2]"), ("job/submit", b'{"job_dsl": {}}'),
                       ("data/upload", b'{"namespace": "x"}'), ("table/table_info", b"{}")):
        raw = http("POST", base + path, body, {"Content-Type": "application/json"})
        assert raw.status == 200 and raw.json()["retcode"] == 101 and raw.json()["retmsg"], (path, raw)
    no_model = http("POST", base + "model/load", {"job_id": unknown}, {"Content-Type": "application/json"})
    assert no_model.status == 200 and no_model.json()["retcode"] == 101 and "can not be found" in no_model.json()["retmsg"]
    unsupported = http("POST", base + "model/homo/convert", {}, {"Content-Type": "application/json"})
    assert unsupported.json()["retcode"] == 100 and "not currently supported" in unsupported.json()["retmsg"]
    generated = fc.job.generate_dsl(dsl, ["reader_0"])
    assert generated["retcode"] == 0 and generated["data"] == {"components": {"reader_0": {
        "module": "Reader", "output": {"data": ["data"]}}}}


def test_upload_history_job_and_server_side_file(fc, server, namespace):
    # use_local_data 0: the file is a path on the server, inside its data directory.
    data_dir = server.db.parent / "data"
    data_dir.mkdir(exist_ok=True)
    (data_dir / "small.csv").write_text("id,x0\na,1\nb,2\n")
    answer = fc.data.upload({**upload_conf(namespace, "small", "small.csv"), "use_local_data": 0})
    assert answer["retcode"] == 0, answer
    assert fc.table.info(namespace=namespace, table_name="small")["data"]["count"] == 2
    outside = fc.data.upload({**upload_conf(namespace, "small2", "/etc/passwd"), "use_local_data": 0})
    assert outside["retcode"] != 0 and "data directory" in outside["retmsg"]

    download = fc.data.download({"namespace": namespace, "table_name": "small", "output_path": "out/small.csv"})
    assert download["retcode"] == 0 and download["jobId"], download
    assert (data_dir / "out" / "small.csv").read_text().splitlines() == ["id,x0", "a,1", "b,2"]

    deleted = fc.table.delete(namespace=namespace, table_name="small")
    assert deleted["retcode"] == 0 and deleted["data"]["table_name"] == "small"
    assert fc.table.info(namespace=namespace, table_name="small")["data"]["exist"] == 0
    assert fc.table.delete(namespace=namespace, table_name="small")["retcode"] == 101


class Samples(dict):
    """Path variable -> a sample value (distinct per variable)."""

    def __missing__(self, key):
        return f"sample-{key}"


def test_every_route_resolves_to_itself():
    """No family route shadows another, or a transcoded one."""
    import asyncio

    from aiohttp.test_utils import make_mocked_request  # a bare request object, for the router only

    from gateway.app import build_app

    async def check():
        channel = grpc.aio.insecure_channel("127.0.0.1:1")
        app = build_app(channel)
        for r in app.router.routes():
            info = r.resource.get_info()
            path = info.get("path") or info.get("formatter") or info.get("prefix", "") + "/{file}"
            sample = path.format_map(Samples())
            method = "GET" if r.method == "*" else r.method
            found = await app.router.resolve(make_mocked_request(method, sample))
            assert found.route.resource is r.resource, (r.method, path, found.route.resource)
        await channel.close()

    asyncio.run(check())


def test_signed_flow_sdk_against_an_auth_server(server_factory, tmp_path):
    """FlowClient(..., app_key=, secret_key=) with a token's FATE keys: signed calls (a streamed
    multipart upload included) go through; unsigned or wrongly signed ones get retcode 109."""
    from taskhub.v1 import auth_service_pb2 as apb
    from taskhub.v1 import auth_service_pb2_grpc as asvc

    server = server_factory("--auth")
    admin = (server.workdir / "admin.token").read_text().strip()
    made = asvc.AuthServiceStub(grpc.insecure_channel(server.grpc_target)).CreateToken(
        apb.CreateTokenRequest(name="fate-user", role="submitter", namespaces=["fate"]),
        metadata=(("authorization", f"Bearer {admin}"),), timeout=10)
    url = urlparse(server.http_url)
    signed = flow_sdk_client.FlowClient(url.hostname, url.port, "v1", app_key=made.info.id,
                                        secret_key=made.fate_secret_key)
    small = tmp_path / "small.csv"
    small.write_text("id,x0\na,1\nb,2\n")
    answer = signed.data.upload(upload_conf("signed", "small", str(small)), drop=1)
    assert answer["retcode"] == 0, answer
    assert signed.table.info(namespace="signed", table_name="small")["data"]["count"] == 2
    assert signed.job.query(job_id=answer["jobId"])["data"][0]["f_status"] == "success"

    unsigned = sdk(server).job.query(job_id=answer["jobId"])
    assert unsigned["retcode"] == 109 and "authentication required" in unsigned["retmsg"]
    forged = flow_sdk_client.FlowClient(url.hostname, url.port, "v1", app_key=made.info.id, secret_key="guess")
    refused = forged.data.upload(upload_conf("signed", "other", str(small)))
    assert refused["retcode"] == 109 and "signature" in refused["retmsg"]
    assert signed.table.info(namespace="signed", table_name="other")["data"]["exist"] == 0
