"""Seed 004's FlowClient over gRPC (client/flow.py) and `taskhub flow ...` (client/flow_cli.py), on a real server."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import pytest

from client.flow import FlowClient
from conftest import REPO
from flow_jobs import GUEST, HOST, ROWS, csv_path, pipeline, upload_conf
from taskhub.v1 import flow_service_pb2 as fpb

JOB_TERMINAL = {fpb.FLOW_JOB_STATUS_SUCCESS, fpb.FLOW_JOB_STATUS_FAILED, fpb.FLOW_JOB_STATUS_CANCELED,
                fpb.FLOW_JOB_STATUS_TIMEOUT}


@pytest.fixture(scope="module")
def fc(server):
    host, port = server.grpc_target.rsplit(":", 1)
    with FlowClient(host, int(port), "v1") as c:
        yield c


@pytest.fixture(scope="module")
def namespace(fc):
    ns = "cli_" + uuid.uuid4().hex[:8]
    for table in ("breast_hetero_guest", "breast_hetero_host"):
        answer = fc.data.upload(upload_conf(ns, table), drop=1)
        assert answer["retcode"] == 0 and answer["jobId"], answer
    return ns


def wait_job(fc: FlowClient, job_id: str) -> fpb.FlowJob:
    """The job once it ended, from the WatchJob stream."""
    last = None
    for change in fc.taskhub.flow.WatchJob(fpb.WatchJobRequest(job_id=job_id), timeout=120):
        if change.HasField("job"):
            last = change.job
            if last.status in JOB_TERMINAL:
                break
    return last


@pytest.fixture(scope="module")
def done_job(fc, namespace, tmp_path_factory):
    dsl, conf = pipeline(namespace)
    folder = tmp_path_factory.mktemp("confs")
    (folder / "dsl.json").write_text(json.dumps(dsl))
    (folder / "conf.json").write_text(json.dumps(conf))
    answer = fc.job.submit(str(folder / "conf.json"), str(folder / "dsl.json"))  # paths, as the seed shows
    assert answer["retcode"] == 0, answer
    assert wait_job(fc, answer["jobId"]).status == fpb.FLOW_JOB_STATUS_SUCCESS
    return answer["jobId"]


def test_flow_client_job_and_component(fc, namespace, done_job, tmp_path):
    info = fc.table.info(namespace, "breast_hetero_host")
    assert info["data"]["count"] == ROWS and info["data"]["exist"] == 1

    rows = fc.job.query(job_id=done_job)["data"]
    assert {(r["f_role"], r["f_status"]) for r in rows} == {("guest", "success"), ("host", "success")}
    tasks = fc.task.query(job_id=done_job, role="host")
    assert {t["f_component_name"] for t in tasks["data"]} == {"reader_0", "data_transform_0", "probe_0"}
    assert all(t["f_party_id"] == str(HOST) for t in tasks["data"])
    assert fc.component.list(done_job)["data"]["components"] == ["reader_0", "data_transform_0", "probe_0"]
    assert fc.job.list(limit=1)["data"]["jobs"][0]["job_id"] == done_job

    out = fc.component.output_data(done_job, "guest", GUEST, "data_transform_0", str(tmp_path), limit=10)
    assert out["retcode"] == 0, out
    lines = open(os.path.join(out["directory"], "data.csv")).read().splitlines()
    assert lines[0].startswith("id,y,x0") and len(lines) == 11
    assert fc.component.output_model(done_job, "guest", GUEST, "probe_0")["data"]["rows"] == ROWS
    assert fc.component.metric_all(done_job, "guest", GUEST, "probe_0")["data"]["probe"]["rows"]["data"] == [[0, ROWS]]
    assert fc.component.get_summary(done_job, "host", HOST, "reader_0")["data"]["count"] == ROWS

    log = fc.job.log(done_job, str(tmp_path))
    assert os.path.isfile(os.path.join(log["directory"], "guest", str(GUEST), "reader_0", "INFO.log"))
    config = fc.job.config(done_job, "guest", GUEST, str(tmp_path))
    assert json.load(open(os.path.join(config["directory"], "runtime_conf.json")))["initiator"]["party_id"] == GUEST
    assert fc.queue.clean() == {"retcode": 0, "retmsg": "success", "data": {}}


def test_flow_client_errors(fc, namespace, tmp_path):
    unknown = "20990101000000000000"
    assert fc.job.query(job_id=unknown)["data"] == []
    assert fc.job.stop(unknown)["retcode"] == 102
    assert fc.task.query(job_id=unknown)["retcode"] == 101
    assert fc.component.list(unknown)["retcode"] == 100
    assert fc.job.list(limit=-3)["retcode"] == 101
    assert fc.task.query(job_id=unknown, party_id="abc")["retcode"] == 101
    bad = tmp_path / "bad.csv"
    bad.write_text("id,x\n1\n")
    answer = fc.data.upload(upload_conf(namespace, "bad", str(bad)), drop=1)
    assert answer["retcode"] == 101 and "line 2" in answer["retmsg"]
    missing = fc.data.upload(upload_conf(namespace, "bad", str(tmp_path / "nope.csv")))
    assert missing["retcode"] == 101 and "does not exist" in missing["retmsg"]
    assert fc.model.load(job_id=unknown)["retcode"] == 101
    assert fc.tag.query("no-such-tag") == {"retcode": 100, "retmsg": "No tags found."}


def cli(server, *args: str) -> tuple[int, dict]:
    proc = subprocess.run([sys.executable, "-m", "client.cli", "flow", "--server", server.grpc_target, *args],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.stderr == "" or proc.returncode, proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def test_cli(server, namespace, done_job, tmp_path):
    code, answer = cli(server, "job", "query", "-j", done_job, "-r", "guest", "-p", str(GUEST))
    assert code == 0 and [r["f_role"] for r in answer["data"]] == ["guest"]
    code, answer = cli(server, "table", "info", "-t", "breast_hetero_guest", "-n", namespace)
    assert code == 0 and answer["data"]["count"] == ROWS
    code, answer = cli(server, "component", "output-data", "-j", done_job, "-cpn", "reader_0", "-r", "host",
                       "-p", str(HOST), "-o", str(tmp_path), "-l", "3")
    assert code == 0 and len(open(os.path.join(answer["directory"], "data.csv")).read().splitlines()) == 4
    code, answer = cli(server, "task", "query", "-j", done_job, "-cpn", "probe_0", "-s", "success")
    assert code == 0 and len(answer["data"]) == 2

    conf = tmp_path / "upload.json"
    conf.write_text(json.dumps(upload_conf(namespace, "via_cli", csv_path("breast_homo_guest"))))
    code, answer = cli(server, "data", "upload", "-c", str(conf), "--drop")
    assert code == 0 and answer["jobId"]
    code, answer = cli(server, "table", "info", "-t", "via_cli", "-n", namespace)
    assert code == 0 and answer["data"]["count"] == 227
    code, answer = cli(server, "job", "config", "-j", "20990101000000000000", "-r", "guest", "-p", "1",
                       "-o", str(tmp_path))
    assert code == 1 and answer["retcode"] == 101
