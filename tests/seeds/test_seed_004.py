"""Seed 004 (FATE Flow client SDK) with FATE's own `flow_sdk` (fate-client 1.11.3) against taskhub.

`client = FlowClient('127.0.0.1', 9000, 'v1')`, with the test server's host and port, then every
`client.<noun>.<fn>` the seed documents, one test each, named test_<noun>_<fn>. Responses are
checked against the contract in FATE_FLOW.md (the seed documents parameters, not answers).

Every function runs against taskhub's FlowService (FATE jobs, components, data, tables, queue,
models and tags); none is an expected failure.

The seed's guide is older than fate-client 1.11: where it passes a conf or DSL file's path
(`submit(conf_path, dsl_path)`, `data.upload(conf_path)`, `model.load(conf_path)`, ...), 1.11
takes the file's contents, so the tests write the file and pass what it holds; `generate_dsl`'s
`cpn_list` is 1.11's `cpn`. FATE's examples run a hetero logistic regression (Reader ->
DataTransform -> Intersection -> HeteroLR -> Evaluation) on breast_hetero_guest/host.csv; the tests
write small synthetic tables of the same shape (guest: id, y and 10 features; host: id and 20
features) and a DSL and conf of that pipeline, with few rows and iterations so the job is quick.
"""
from __future__ import annotations

import json
import math
import os
import random
import re
import urllib.parse
import uuid

import pytest
from conftest import wait_for
from flow_sdk.client import FlowClient

SEED_FUNCTIONS = {
    "job": ["submit", "stop", "query", "config", "log", "list", "view", "generate_dsl"],
    "component": ["parameters", "metric_all", "metrics", "metric_delete", "output_model", "output_data",
                  "output_data_table", "list", "get_summary"],
    "data": ["download", "upload", "upload_history"],
    "task": ["list", "query"],
    "model": ["load", "bind", "export_model", "import_model", "migrate", "tag_list", "tag_model", "deploy",
              "get_predict_dsl", "get_predict_conf", "get_model_info"],
    "tag": ["create", "update", "list", "query", "delete"],
    "table": ["info", "delete"],
    "queue": ["clean"],
}
GUEST, HOST = 9999, 10000
NAMESPACE = "experiment"
ROWS = 40
JOB_ID = re.compile(r"\d{20,}")  # YYYYMMDDHHMMSSffffff + a counter
JOB_ENDED = {"success", "failed", "canceled", "timeout"}
JOB_TIMEOUT = 300.0
DSL = {"components": {
    "reader_0": {"module": "Reader", "output": {"data": ["data"]}},
    "data_transform_0": {"module": "DataTransform", "input": {"data": {"data": ["reader_0.data"]}},
                         "output": {"data": ["data"], "model": ["model"]}},
    "intersection_0": {"module": "Intersection", "input": {"data": {"data": ["data_transform_0.data"]}},
                       "output": {"data": ["data"]}},
    "hetero_lr_0": {"module": "HeteroLR", "input": {"data": {"train_data": ["intersection_0.data"]}},
                    "output": {"data": ["data"], "model": ["model"]}},
    "evaluation_0": {"module": "Evaluation", "input": {"data": {"data": ["hetero_lr_0.data"]}},
                     "output": {"data": ["data"]}},
}}
MAX_ITER = 3


def conf(guest_table: str, host_table: str) -> dict:
    return {
        "dsl_version": 2,
        "initiator": {"role": "guest", "party_id": GUEST},
        "role": {"guest": [GUEST], "host": [HOST], "arbiter": [HOST]},
        "job_parameters": {"common": {"task_parallelism": 2}},
        "component_parameters": {
            "common": {
                "intersection_0": {"intersect_method": "rsa"},
                "hetero_lr_0": {"penalty": "L2", "optimizer": "rmsprop", "alpha": 0.01, "max_iter": MAX_ITER,
                                "batch_size": -1, "learning_rate": 0.15, "init_param": {"init_method": "zeros"},
                                "encrypt_param": {"key_length": 1024}},
                "evaluation_0": {"eval_type": "binary"},
            },
            "role": {
                "guest": {"0": {"reader_0": {"table": {"name": guest_table, "namespace": NAMESPACE}},
                                "data_transform_0": {"with_label": True, "output_format": "dense"}}},
                "host": {"0": {"reader_0": {"table": {"name": host_table, "namespace": NAMESPACE}},
                               "data_transform_0": {"with_label": False}}},
            },
        },
    }


# -- helpers ------------------------------------------------------------------------------------
def ok(resp) -> dict:
    assert isinstance(resp, dict) and resp.get("retcode") == 0, resp
    assert resp.get("retmsg") is not None, resp
    return resp


def write_json(path, value) -> dict:
    """Write a conf/DSL file as the seed's user would, and return what fate-client 1.11 takes: its contents."""
    path.write_text(json.dumps(value, indent=2))
    return json.loads(path.read_text())


def job_rows(client, job_id: str) -> list[dict]:
    return ok(client.job.query(job_id=job_id))["data"]


def wait_job(client, job_id: str, want: str = "success") -> list[dict]:
    rows = wait_for(lambda: (r := job_rows(client, job_id)) and all(x["f_status"] in JOB_ENDED for x in r) and r,
                    timeout=JOB_TIMEOUT, interval=0.2, what=f"FATE job {job_id} to end")
    assert {x["f_status"] for x in rows} == {want}, rows
    return rows


def synthetic_tables(directory) -> tuple:
    """Guest (id, y, x0..x9) and host (id, x0..x19) CSVs, shaped like FATE's breast_hetero data."""
    rng = random.Random(4)
    guest = ["id,y," + ",".join(f"x{i}" for i in range(10))]
    host = ["id," + ",".join(f"x{i}" for i in range(20))]
    for row in range(ROWS):
        gx = [rng.gauss(0, 1) for _ in range(10)]
        hx = [rng.gauss(0, 1) for _ in range(20)]
        y = int(1 / (1 + math.exp(-(gx[0] + gx[1] - hx[0]))) > rng.random())
        guest.append(f"{row},{y}," + ",".join(f"{v:.6f}" for v in gx))
        host.append(f"{row}," + ",".join(f"{v:.6f}" for v in hx))
    paths = directory / "seed_004_guest.csv", directory / "seed_004_host.csv"
    for path, lines in zip(paths, (guest, host)):
        path.write_text("\n".join(lines) + "\n")
    return paths


def upload(client, directory, csv_path, table_name: str) -> dict:
    """data.upload of a client-side file (multipart), replacing any table of that name; waits for its job."""
    upload_conf = write_json(directory / f"upload_{table_name}.json", {
        "file": str(csv_path), "table_name": table_name, "namespace": NAMESPACE, "head": 1, "partition": 1,
        "id_delimiter": ","})
    resp = ok(client.data.upload(upload_conf, verbose=0, drop=1))
    wait_job(client, resp["jobId"])
    return resp


# -- fixtures: one upload and one training job, shared by the module --------------------------------
@pytest.fixture(scope="module")
def client(server) -> FlowClient:
    url = urllib.parse.urlsplit(server.http_url)
    return FlowClient(url.hostname, url.port, "v1")  # the seed: FlowClient('127.0.0.1', 9000, 'v1')


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    directory = tmp_path_factory.mktemp("fate")
    guest_csv, host_csv = synthetic_tables(directory)
    return {"dir": directory, "guest_csv": guest_csv, "host_csv": host_csv,
            "dsl": write_json(directory / "hetero_lr_dsl.json", DSL),
            "conf": write_json(directory / "hetero_lr_conf.json", conf("seed_004_guest", "seed_004_host"))}


@pytest.fixture(scope="module")
def uploaded(client, files) -> dict:
    return {"guest": upload(client, files["dir"], files["guest_csv"], "seed_004_guest"),
            "host": upload(client, files["dir"], files["host_csv"], "seed_004_host")}


@pytest.fixture(scope="module")
def job(client, files, uploaded) -> dict:
    """The pipeline, submitted and run to success: {"job_id", "model_id", "model_version", "submit"}."""
    resp = ok(client.job.submit(files["conf"], files["dsl"]))
    job_id = resp["data"]["job_id"]
    wait_job(client, job_id)
    info = resp["data"]["model_info"]
    return {"job_id": job_id, "model_id": info["model_id"], "model_version": info["model_version"], "submit": resp}


@pytest.fixture(scope="module")
def deployed(client, job) -> dict:
    """model.deploy of the trained model (a new model version with a predict DSL)."""
    resp = ok(client.model.deploy(job["model_id"], job["model_version"],
                                  cpn_list=["reader_0", "data_transform_0", "intersection_0", "hetero_lr_0"]))
    return {"model_id": resp["data"]["model_id"], "model_version": resp["data"]["model_version"], "deploy": resp}


# -- 用法 -------------------------------------------------------------------------------------------
def test_usage_every_seed_function_exists_and_is_tested(client):
    """The client of the seed's 用法 has every noun and function the seed lists; each has its test here."""
    for noun, functions in SEED_FUNCTIONS.items():
        for fn in functions:
            assert callable(getattr(getattr(client, noun), fn)), f"client.{noun}.{fn}"
            assert callable(globals().get(f"test_{noun}_{fn}")), f"no test for client.{noun}.{fn}"


# -- Job 操作 ---------------------------------------------------------------------------------------
def test_job_submit(job):
    resp = job["submit"]
    data = resp["data"]
    assert JOB_ID.fullmatch(data["job_id"]) and resp["jobId"] == data["job_id"]
    assert {"job_id", "model_info", "logs_directory", "board_url", "dsl_path", "runtime_conf_path"} <= set(data)
    assert set(data["model_info"]) >= {"model_id", "model_version"}
    assert isinstance(data["model_info"]["model_id"], str) and data["model_info"]["model_version"]


def test_job_stop(client, files, uploaded):
    job_id = ok(client.job.submit(files["conf"], files["dsl"]))["data"]["job_id"]
    ok(client.job.stop(job_id))
    wait_job(client, job_id, want="canceled")


def test_job_query(client, job):
    rows = job_rows(client, job["job_id"])
    # FATE keeps party ids as text in its rows; compared as text here.
    assert {(r["f_role"], str(r["f_party_id"])) for r in rows} == {("guest", f"{GUEST}"), ("host", f"{HOST}"),
                                                                     ("arbiter", f"{HOST}")}
    for r in rows:
        assert {"f_job_id", "f_status", "f_role", "f_party_id", "f_progress", "f_start_time", "f_end_time",
                "f_elapsed", "f_dsl", "f_runtime_conf"} <= set(r)
        assert r["f_job_id"] == job["job_id"] and r["f_status"] == "success" and r["f_progress"] == 100
        assert isinstance(r["f_start_time"], int) and r["f_end_time"] >= r["f_start_time"]
        assert set(r["f_dsl"]["components"]) == set(DSL["components"])
    [guest] = ok(client.job.query(job_id=job["job_id"], role="guest", party_id=GUEST))["data"]
    assert guest["f_role"] == "guest"
    assert ok(client.job.query(job_id="20000101000000000000"))["data"] == []


def test_job_config(client, job, tmp_path):
    resp = ok(client.job.config(job["job_id"], "guest", GUEST, output_path=str(tmp_path)))
    directory = resp["directory"]
    assert directory == os.path.join(str(tmp_path), f"job_{job['job_id']}_config")
    with open(os.path.join(directory, "dsl.json")) as f:
        assert json.load(f) == DSL
    with open(os.path.join(directory, "runtime_conf.json")) as f:
        assert json.load(f)["initiator"] == {"role": "guest", "party_id": GUEST}
    assert {"job_id", "train_runtime_conf", "model_info"} <= set(resp["data"])


def test_job_log(client, job, tmp_path):
    resp = ok(client.job.log(job["job_id"], output_path=str(tmp_path)))
    files = [os.path.join(d, f) for d, _, fs in os.walk(resp["directory"]) for f in fs]
    assert files and any(os.path.getsize(f) for f in files)


def test_job_list(client, job):
    data = ok(client.job.list(limit=10))["data"]
    assert isinstance(data["count"], int) and 1 <= len(data["jobs"]) <= 10
    assert job["job_id"] in {j["job_id"] for j in data["jobs"]}
    assert not any(k.startswith("f_") for j in data["jobs"] for k in j)


def test_job_view(client, job):
    data = ok(client.job.view(job_id=job["job_id"], role="guest", party_id=GUEST))["data"]
    assert data and job["job_id"] in json.dumps(data)


def test_job_generate_dsl(client, files):
    cpn_list = ["reader_0", "data_transform_0", "intersection_0", "hetero_lr_0"]
    data = ok(client.job.generate_dsl(files["dsl"], cpn_list))["data"]
    assert set(cpn_list) <= set(data["components"]) and "evaluation_0" not in data["components"]


# -- Component 操作 ---------------------------------------------------------------------------------
def test_component_parameters(client, job):
    data = ok(client.component.parameters(job["job_id"], "guest", GUEST, "hetero_lr_0"))["data"]
    assert isinstance(data, dict) and f'"max_iter": {MAX_ITER}' in json.dumps(data)


def test_component_metric_all(client, job):
    data = ok(client.component.metric_all(job["job_id"], "guest", GUEST, "evaluation_0"))["data"]
    assert data
    for namespace, metrics in data.items():
        for name, metric in metrics.items():
            assert set(metric) >= {"data", "meta"} and isinstance(metric["data"], list), (namespace, name)


def test_component_metrics(client, job):
    data = ok(client.component.metrics(job["job_id"], "guest", GUEST, "evaluation_0"))["data"]
    assert data and all(isinstance(names, list) and names for names in data.values())


def test_component_output_model(client, job):
    resp = ok(client.component.output_model(job["job_id"], "guest", GUEST, "hetero_lr_0"))
    assert resp["data"] and "meta" in resp


def test_component_output_data(client, job, tmp_path):
    resp = ok(client.component.output_data(job["job_id"], "guest", GUEST, "intersection_0", str(tmp_path), limit=10))
    files = [os.path.join(d, f) for d, _, fs in os.walk(resp["directory"]) for f in fs]
    assert any(f.endswith(".csv") for f in files), files


def test_component_output_data_table(client, job):
    data = ok(client.component.output_data_table(job["job_id"], "guest", GUEST, "intersection_0"))["data"]
    tables = data if isinstance(data, list) else [data]
    assert tables and all(t.get("table_name") and t.get("namespace") for t in tables), data


def test_component_list(client, job):
    data = ok(client.component.list(job["job_id"]))["data"]
    assert set(data["components"]) == set(DSL["components"])


def test_component_get_summary(client, job):
    data = ok(client.component.get_summary(job["job_id"], "guest", GUEST, "evaluation_0"))["data"]
    assert data


# -- Data 操作 --------------------------------------------------------------------------------------
def test_data_upload(client, uploaded):
    for role, table in (("guest", "seed_004_guest"), ("host", "seed_004_host")):
        resp = uploaded[role]
        assert JOB_ID.fullmatch(resp["jobId"])
        assert resp["data"]["table_name"] == table and resp["data"]["namespace"] == NAMESPACE
        info = ok(client.table.info(NAMESPACE, table))["data"]
        assert info["count"] == ROWS


def test_data_download(client, uploaded, server, tmp_path):
    # The server writes only inside its data directory (taskhub serve --flow-data-dir; default next to the db).
    out = server.db.parent / "data" / "guest_download.csv"
    download_conf = write_json(tmp_path / "download.json", {
        "namespace": NAMESPACE, "table_name": "seed_004_guest", "output_path": str(out)})
    resp = ok(client.data.download(download_conf))
    if "jobId" in resp:
        wait_job(client, resp["jobId"])
    lines = [ln for ln in out.read_text().splitlines() if ln.strip()]
    assert len(lines) in (ROWS, ROWS + 1)  # with or without the header line


def test_data_upload_history(client, uploaded):
    data = ok(client.data.upload_history(limit=10))["data"]
    text = json.dumps(data)
    assert uploaded["guest"]["jobId"] in text and uploaded["host"]["jobId"] in text


# -- Task 操作 --------------------------------------------------------------------------------------
def test_task_list(client, job):
    data = ok(client.task.list(limit=10))["data"]
    assert isinstance(data["count"], int) and 1 <= len(data["tasks"]) <= 10


def test_task_query(client, job):
    rows = ok(client.task.query(job_id=job["job_id"], role="guest", party_id=GUEST,
                                component_name="hetero_lr_0"))["data"]
    assert rows
    for r in rows:
        assert r["f_task_id"] == f"{job['job_id']}_hetero_lr_0" and r["f_component_name"] == "hetero_lr_0"
        assert r["f_role"] == "guest" and str(r["f_party_id"]) == f"{GUEST}" and r["f_status"] == "success"
    everything = ok(client.task.query(job_id=job["job_id"]))["data"]
    assert {r["f_component_name"] for r in everything} == set(DSL["components"])


# -- Table 操作 -------------------------------------------------------------------------------------
def test_table_info(client, uploaded):
    data = ok(client.table.info(NAMESPACE, "seed_004_guest"))["data"]
    assert {"table_name", "namespace", "exist", "count", "partition"} <= set(data)
    assert (data["table_name"], data["namespace"], data["exist"], data["count"]) == ("seed_004_guest", NAMESPACE, 1, ROWS)


def test_table_delete(client, files):
    upload(client, files["dir"], files["guest_csv"], "seed_004_to_delete")
    ok(client.table.delete(namespace=NAMESPACE, table_name="seed_004_to_delete"))
    assert not (client.table.info(NAMESPACE, "seed_004_to_delete").get("data") or {}).get("exist")


# -- Queue 操作 -------------------------------------------------------------------------------------
def test_queue_clean(client):
    ok(client.queue.clean())


# -- Model 操作 -------------------------------------------------------------------------------------
def model_conf(job: dict, **extra) -> dict:
    return {"initiator": {"party_id": GUEST, "role": "guest"},
            "role": {"guest": [GUEST], "host": [HOST], "arbiter": [HOST]},
            "job_parameters": {"model_id": job["model_id"], "model_version": job["model_version"]}, **extra}


def test_model_deploy(deployed, job):
    data = deployed["deploy"]["data"]
    assert deployed["model_id"] == job["model_id"] and deployed["model_version"] != job["model_version"]
    assert isinstance(data["model_version"], str)


def test_model_get_predict_dsl(client, deployed):
    data = ok(client.model.get_predict_dsl(deployed["model_id"], deployed["model_version"]))["data"]
    assert {"reader_0", "hetero_lr_0"} <= set(data["components"])


def test_model_get_predict_conf(client, deployed):
    data = ok(client.model.get_predict_conf(deployed["model_id"], deployed["model_version"]))["data"]
    assert data["job_parameters"]["common"]["model_version"] == deployed["model_version"]


def test_model_load(client, deployed, files):
    load_conf = write_json(files["dir"] / "publish_load_model.json", model_conf(deployed))
    ok(client.model.load(load_conf))


def test_model_bind(client, deployed, files):
    bind_conf = write_json(files["dir"] / "bind_model_service.json", model_conf(deployed, service_id="seed004"))
    ok(client.model.bind(bind_conf))


def test_model_export_model(client, job, tmp_path):
    export_conf = write_json(tmp_path / "export_model.json", {
        "role": "guest", "party_id": GUEST, "model_id": job["model_id"], "model_version": job["model_version"],
        "output_path": str(tmp_path / "exported")})
    resp = ok(client.model.export_model(export_conf))
    assert os.path.getsize(resp["file"]) > 0


def test_model_import_model(client, job, tmp_path):
    export_conf = write_json(tmp_path / "export_model.json", {
        "role": "guest", "party_id": GUEST, "model_id": job["model_id"], "model_version": job["model_version"],
        "output_path": str(tmp_path / "exported")})
    archive = ok(client.model.export_model(export_conf))["file"]
    import_conf = write_json(tmp_path / "import_model.json", {
        "role": "guest", "party_id": GUEST, "model_id": job["model_id"], "model_version": job["model_version"],
        "file": archive, "force_update": 1})
    data = ok(client.model.import_model(import_conf))["data"]
    assert data["model_id"] == job["model_id"] and data["model_version"] == job["model_version"]


def test_model_migrate(client, job, files):
    migrate_conf = write_json(files["dir"] / "migrate_model.json", {
        "job_parameters": {"federated_mode": "SINGLE"},
        "migrate_initiator": {"role": "guest", "party_id": GUEST + 1},
        "role": {"guest": [GUEST], "host": [HOST], "arbiter": [HOST]},
        "migrate_role": {"guest": [GUEST + 1], "host": [HOST + 1], "arbiter": [HOST + 1]},
        "execute_party": {"guest": [GUEST], "host": [HOST], "arbiter": [HOST]},
        "model_id": job["model_id"], "model_version": job["model_version"], "unify_model_version": "seed004_migrated"})
    resp = ok(client.model.migrate(migrate_conf))
    assert "seed004_migrated" in json.dumps(resp["data"])


def test_model_tag_model(client, job):
    tag = f"seed004-{uuid.uuid4().hex[:6]}"
    ok(client.tag.create(tag, "tagged by test_model_tag_model"))
    ok(client.model.tag_model(job["job_id"], tag))
    assert tag in json.dumps(ok(client.model.tag_list(job["job_id"]))["data"])
    ok(client.model.tag_model(job["job_id"], tag, remove=True))
    assert tag not in json.dumps(ok(client.model.tag_list(job["job_id"])).get("data"))


def test_model_tag_list(client, job):
    tag = f"seed004-{uuid.uuid4().hex[:6]}"
    ok(client.tag.create(tag))
    ok(client.model.tag_model(job["job_id"], tag))
    data = ok(client.model.tag_list(job["job_id"]))["data"]
    assert tag in json.dumps(data)


def test_model_get_model_info(client, job):
    rows = ok(client.model.get_model_info(model_id=job["model_id"], model_version=job["model_version"],
                                          role="guest", party_id=GUEST))["data"]
    assert rows and all(r["f_model_id"] == job["model_id"] and r["f_model_version"] == job["model_version"]
                        for r in rows)


# -- Tag 操作 ---------------------------------------------------------------------------------------
def test_tag_create(client):
    tag = f"seed004-{uuid.uuid4().hex[:6]}"
    ok(client.tag.create(tag, "a tag"))
    assert tag in json.dumps(ok(client.tag.query(tag))["data"])
    assert client.tag.create(tag, "again")["retcode"] != 0  # names are unique


def test_tag_update(client):
    tag, renamed = (f"seed004-{uuid.uuid4().hex[:6]}" for _ in range(2))
    ok(client.tag.create(tag, "before"))
    ok(client.tag.update(tag, new_tag_name=renamed, new_tag_desc="after"))
    text = json.dumps(ok(client.tag.query(renamed))["data"])
    assert renamed in text and "after" in text


def test_tag_list(client):
    tag = f"seed004-{uuid.uuid4().hex[:6]}"
    ok(client.tag.create(tag))
    assert tag in json.dumps(ok(client.tag.list(limit=10))["data"])


def test_tag_query(client, job):
    tag = f"seed004-{uuid.uuid4().hex[:6]}"
    ok(client.tag.create(tag, "queried"))
    ok(client.model.tag_model(job["job_id"], tag))
    assert "queried" in json.dumps(ok(client.tag.query(tag))["data"])
    assert job["model_id"] in json.dumps(ok(client.tag.query(tag, with_model=True))["data"])


def test_tag_delete(client):
    tag = f"seed004-{uuid.uuid4().hex[:6]}"
    ok(client.tag.create(tag))
    ok(client.tag.delete(tag))
    assert tag not in json.dumps(client.tag.list(limit=1000).get("data"))


# Deletes the job's metrics, so it runs after the component tests that read them (file order).
def test_component_metric_delete(client, job):
    assert ok(client.component.metrics(job["job_id"], "guest", GUEST, "evaluation_0"))["data"]
    ok(client.component.metric_delete(job_id=job["job_id"]))
    assert not ok(client.component.metrics(job["job_id"], "guest", GUEST, "evaluation_0")).get("data")
