"""job/rerun and job/clean through FATE's own clients against a real server: the `flow` CLI's
`job rerun` command of fate-client 1.11.3 (flow_sdk 1.11.3 has no rerun; its `job.clean` is commented
out, so job/clean is called with the body that code sends), and flow_sdk for everything else."""
from __future__ import annotations

import json
import uuid
from urllib.parse import urlparse

import pytest

from conftest import http
from flow_jobs import ROWS, pipeline, slow_job, upload_conf
from test_flow_sdk import job_status, sdk, wait_status

flow_sdk_client = pytest.importorskip("flow_sdk.client")
flow_cli_job = pytest.importorskip("flow_client.flow_cli.commands.job")
from click.testing import CliRunner  # noqa: E402  (click comes with fate-client)

ENDED = {"success", "failed", "canceled", "timeout"}


def flow_cli(server, *args: str) -> dict:
    """FATE's `flow job ...` command, as `flow` runs it once initialized for this server."""
    url = urlparse(server.http_url)
    obj = {"initialized": True, "server_url": f"http://{url.hostname}:{url.port}/v1"}
    result = CliRunner().invoke(flow_cli_job.job, list(args), obj=obj, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def tasks_of(fc, job_id: str) -> dict[tuple[str, str], dict]:
    return {(t["f_component_name"], t["f_role"]): t for t in fc.task.query(job_id=job_id)["data"]}


def output_rows(fc, job_id: str, component: str) -> int | None:
    answer = fc.component.output_data_table(job_id=job_id, role="guest", party_id=9999, component_name=component)
    if answer["retcode"] != 0 or not answer.get("data"):
        return None
    table = answer["data"][0] if isinstance(answer["data"], list) else answer["data"]
    info = fc.table.info(namespace=table["namespace"], table_name=table["table_name"])["data"]
    return info["count"] if info["exist"] else None


@pytest.fixture(scope="module")
def fc(server):
    return sdk(server)


@pytest.fixture(scope="module")
def rerun_job(server, fc):
    """A job that failed because the host's table was missing, rerun after uploading it."""
    ns = "rerun_" + uuid.uuid4().hex[:8]
    assert fc.data.upload(upload_conf(ns, "breast_hetero_guest"), drop=1)["retcode"] == 0
    dsl, conf = pipeline(ns)
    job_id = fc.job.submit(conf, dsl)["jobId"]
    assert wait_status(fc, job_id, ENDED) == "failed"
    before = tasks_of(fc, job_id)
    assert before[("reader_0", "host")]["f_status"] == "failed"
    assert before[("probe_0", "guest")]["f_status"] == "canceled"

    assert fc.data.upload(upload_conf(ns, "breast_hetero_host"), drop=1)["retcode"] == 0
    answer = flow_cli(server, "rerun", "-j", job_id)
    assert answer["retcode"] == 0, answer
    assert answer["data"]["component_names"] == ["reader_0", "data_transform_0", "probe_0"]
    assert wait_status(fc, job_id, ENDED) == "success", fc.job.query(job_id=job_id)["data"][0]["f_error"]
    return job_id, before


def test_rerun_runs_the_failed_components_again_as_new_versions(fc, rerun_job):
    job_id, before = rerun_job
    after = tasks_of(fc, job_id)
    assert {k: t["f_task_version"] for k, t in before.items()} == {k: 0 for k in before}
    assert {k: (t["f_status"], t["f_task_version"]) for k, t in after.items()} == \
        {k: ("success", 1) for k in before}
    assert output_rows(fc, job_id, "probe_0") == ROWS
    row = fc.job.query(job_id=job_id)["data"][0]
    assert row["f_progress"] == 100 and not row.get("f_error")


def test_rerun_of_a_succeeded_component_needs_force_and_reruns_downstream_only(server, fc, rerun_job):
    job_id, _ = rerun_job
    refused = flow_cli(server, "rerun", "-j", job_id)
    assert refused["retcode"] == 103 and "nothing" in refused["retmsg"] and "force" in refused["retmsg"], refused
    unknown = flow_cli(server, "rerun", "-j", job_id, "-cpn", "nope_0", "--force")
    assert unknown["retcode"] == 101 and "nope_0" in unknown["retmsg"], unknown

    metrics = fc.component.metric_all(job_id=job_id, role="guest", party_id=9999, component_name="probe_0")["data"]
    answer = flow_cli(server, "rerun", "-j", job_id, "-cpn", "data_transform_0", "--force")
    assert answer["retcode"] == 0 and answer["data"]["component_names"] == ["data_transform_0", "probe_0"], answer
    assert wait_status(fc, job_id, ENDED) == "success"
    versions = {k: t["f_task_version"] for k, t in tasks_of(fc, job_id).items()}
    assert versions == {("reader_0", "guest"): 1, ("reader_0", "host"): 1, ("data_transform_0", "guest"): 2,
                        ("data_transform_0", "host"): 2, ("probe_0", "guest"): 2, ("probe_0", "host"): 2}
    # the old version's metrics were cleared, not appended to
    assert fc.component.metric_all(job_id=job_id, role="guest", party_id=9999,
                                   component_name="probe_0")["data"] == metrics


def test_rerun_refuses_a_running_or_unknown_job(server, fc):
    dsl, conf = slow_job(60)
    running = fc.job.submit(conf, dsl)["jobId"]
    try:
        answer = flow_cli(server, "rerun", "-j", running)
        assert answer["retcode"] == 103 and "only an ended job" in answer["retmsg"], answer
    finally:
        assert fc.job.stop(job_id=running)["retcode"] == 0
    assert flow_cli(server, "rerun", "-j", "20990101000000000000")["retcode"] == 102


def test_clean_deletes_output_tables_and_metrics_but_not_the_job(server, fc, rerun_job):
    job_id, _ = rerun_job
    url = f"{server.http_url}/v1/job/clean"
    # the body fate-client's (commented-out) job.clean sends
    one = http("POST", url, {"job_id": job_id, "role": "guest", "party_id": 9999, "component_name": "probe_0"}).json()
    assert one["retcode"] == 0 and one["data"] == {"tasks": 1, "tables": 1, "metrics": 1}, one
    assert output_rows(fc, job_id, "probe_0") is None
    assert output_rows(fc, job_id, "data_transform_0") == ROWS
    assert not fc.component.metric_all(job_id=job_id, role="guest", party_id=9999, component_name="probe_0")["data"]

    everything = http("POST", url, {"job_id": job_id}).json()
    assert everything["retcode"] == 0 and everything["data"]["tasks"] == 6, everything
    assert output_rows(fc, job_id, "data_transform_0") is None
    assert job_status(fc, job_id) == "success"   # the job and its model stay

    missing = http("POST", url, {"job_id": job_id, "component_name": "nope_0"}).json()
    assert missing["retcode"] == 100 and "nope_0" in missing["retmsg"], missing
    assert http("POST", url, {}).json()["retcode"] == 101


def test_taskhub_flow_client_and_cli_answer_the_same(server, rerun_job):
    """client/flow.py (gRPC) and `taskhub flow job rerun|clean` give FATE's answers too."""
    from client.flow import FlowClient
    from test_flow_client import cli

    job_id, _ = rerun_job
    host, port = server.grpc_target.rsplit(":", 1)
    with FlowClient(host, int(port), "v1") as c:
        refused = c.job.rerun(job_id)
        assert refused["retcode"] == 103 and "force" in refused["retmsg"], refused
        assert c.job.clean(job_id, component_name="nope_0")["retcode"] == 100
        assert c.job.rerun("20990101000000000000")["retcode"] == 102
    code, answer = cli(server, "job", "clean", "-j", job_id, "-cpn", "reader_0")
    assert code == 0 and answer["data"]["tasks"] == 2, answer
    code, answer = cli(server, "job", "rerun", "-j", job_id, "-cpn", "probe_0")
    assert code == 1 and answer["retcode"] == 103, answer
