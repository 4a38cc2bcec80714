"""FATE models and tags (seed 004's model.* and tag.*) through fate-client's own `flow_sdk`, on real
servers: FATE's published hetero LR trained, deployed and used by FATE's published predict job;
archives exported from one server and imported into another; store/restore, load/bind, migrate."""
from __future__ import annotations

import copy
import io
import json
import zipfile

import grpc
import pytest
from taskhub.v1 import flow_service_pb2 as pb

from conftest import wait_for
from server.flow.components.base import decode_row
from flow_jobs import GUEST, HOST, slow_job
from test_flow import DATA, flow, with_tables
from test_flow_sdk import sdk, wait_status

pytest.importorskip("flow_sdk.client")

CPNS = ["reader_0", "data_transform_0", "intersection_0", "hetero_lr_0"]    # what FATE's published predict DSL holds
MODEL_ID = f"arbiter-{HOST}#guest-{GUEST}#host-{HOST}#model"


def published(name: str) -> dict:
    return json.loads((DATA / f"{name}.json").read_text())


@pytest.fixture(scope="module")
def fc(server):
    with_tables(flow(server))
    return sdk(server)


@pytest.fixture(scope="module")
def trained(fc):
    """FATE's published hetero LR (guest, host, arbiter), a few iterations; its job id."""
    dsl, conf = published("hetero_lr_normal_dsl"), published("hetero_lr_normal_conf")
    conf["component_parameters"]["common"]["hetero_lr_0"]["max_iter"] = 3
    answer = fc.job.submit(conf, dsl)
    assert answer["retcode"] == 0, answer
    assert answer["data"]["model_info"] == {"model_id": MODEL_ID, "model_version": answer["jobId"]}
    assert wait_status(fc, answer["jobId"], {"success", "failed", "canceled"}, timeout=300) == "success"
    return answer["jobId"]


@pytest.fixture(scope="module")
def deployed(fc, trained):
    answer = fc.model.deploy(MODEL_ID, trained, cpn_list=CPNS)
    assert answer["retcode"] == 0, answer
    data = answer["data"]
    assert data["model_id"] == MODEL_ID and data["model_version"] != trained
    assert data["guest"] == {str(GUEST): 0} and data["host"] == {str(HOST): 0} and data["arbiter"] == {str(HOST): 0}
    return data["model_version"]


def scores(server, job_id: str) -> dict[str, float]:
    """id -> predict_score of the guest's hetero_lr_0 output."""
    stub = flow(server)
    out = stub.GetComponentOutput(pb.GetComponentOutputRequest(job_id=job_id, component_name="hetero_lr_0"))
    table = out.output_tables[0]
    header = json.loads(table.schema_json)["header"]
    at = header.index("predict_score")
    found = {}
    for msg in stub.ReadTable(pb.ReadTableRequest(namespace=table.namespace, name=table.name)):
        for line in msg.lines:
            cells = decode_row(line)
            found[cells[0]] = float(cells[1:][at])
    return found


def test_train_deploy_predict_round_trip(server, fc, trained, deployed):
    rows = fc.model.get_model_info(model_id=MODEL_ID, model_version=trained)
    assert rows["retcode"] == 0, rows
    assert {(r["f_role"], r["f_party_id"]) for r in rows["data"]} == {
        ("guest", str(GUEST)), ("host", str(HOST)), ("arbiter", str(HOST))}
    guest = next(r for r in rows["data"] if r["f_role"] == "guest")
    assert guest["f_job_id"] == trained and guest["f_train_dsl"] == published("hetero_lr_normal_dsl")
    assert {"data_transform_0", "hetero_lr_0"} <= set(guest["f_components"]) and guest["f_size"] > 0
    only = fc.model.get_model_info(model_version=trained, role="host", party_id=HOST, query_filters=["role"])
    assert only["data"] == [{"f_role": "host"}]

    # The generated predict DSL is FATE's published one (pipeline.<cpn>.<model output> wired).
    predict_dsl = published("hetero_lr_normal_predict_dsl")
    got = fc.model.get_predict_dsl(MODEL_ID, deployed)
    assert got["retcode"] == 0 and got["data"] == predict_dsl
    assert fc.job.generate_dsl(published("hetero_lr_normal_dsl"), CPNS)["data"] == predict_dsl
    template = fc.model.get_predict_conf(MODEL_ID, deployed)["data"]
    assert template["job_parameters"]["common"] == {"job_type": "predict", "model_id": MODEL_ID,
                                                     "model_version": deployed}

    # FATE's published predict conf, its model and parties replaced by ours (as FATE's tutorial says).
    conf = published("hetero_lr_normal_predict_conf")
    train_conf = published("hetero_lr_normal_conf")
    conf["initiator"], conf["role"] = train_conf["initiator"], train_conf["role"]
    conf["job_parameters"]["common"].update(model_id=MODEL_ID, model_version=deployed)
    answer = fc.job.submit(conf, predict_dsl)
    assert answer["retcode"] == 0, answer
    assert wait_status(fc, answer["jobId"], {"success", "failed", "canceled"}, timeout=300) == "success", \
        fc.job.query(job_id=answer["jobId"])
    predicted, own = scores(server, answer["jobId"]), scores(server, trained)
    assert len(predicted) == 569 and predicted.keys() == own.keys()
    assert max(abs(predicted[k] - own[k]) for k in own) < 1e-9

    # The conf alone (FATE 1.7+'s documented way after deploy): the deployed predict DSL runs.
    alone = fc.job.submit(conf)
    assert alone["retcode"] == 0, alone
    assert wait_status(fc, alone["jobId"], {"success", "failed", "canceled"}, timeout=300) == "success"
    assert scores(server, alone["jobId"]) == predicted

    # A predict job naming a model this server does not have is refused at submit.
    conf["job_parameters"]["common"]["model_version"] = "19700101000000000000"
    refused = fc.job.submit(conf, predict_dsl)
    assert refused["retcode"] == 101 and "does not have" in refused["retmsg"]


def test_deploy_and_generate_refuse_what_cannot_be_deployed(fc, trained):
    missing = fc.model.deploy(MODEL_ID, "19700101000000000000", cpn_list=CPNS)
    assert missing["retcode"] == 404 and "no model" in missing["retmsg"]
    gap = fc.model.deploy(MODEL_ID, trained, cpn_list=["hetero_lr_0"])
    assert gap["retcode"] == 101 and "intersection_0 is not deployed" in gap["retmsg"]
    unknown = fc.job.generate_dsl(published("hetero_lr_normal_dsl"), ["reader_0", "nope_0"])
    assert unknown["retcode"] == 101 and "nope_0" in unknown["retmsg"]
    only_eval = fc.job.generate_dsl(published("hetero_lr_normal_dsl"), "evaluation_0")
    assert only_eval["retcode"] == 101 and "hetero_lr_0 is not deployed" in only_eval["retmsg"]
    # Without cpn_list FATE deploys every component of the training DSL, Evaluation included.
    everything = fc.model.deploy(MODEL_ID, trained)
    assert everything["retcode"] == 0, everything
    whole = fc.model.get_predict_dsl(MODEL_ID, everything["data"]["model_version"])["data"]
    assert list(whole["components"]) == CPNS + ["evaluation_0"]
    assert whole["components"]["evaluation_0"] == {"module": "Evaluation", "input": {"data": {"data": ["hetero_lr_0.data"]}},
                                                   "output": {"data": ["data"]}}
    not_deployed = fc.model.get_predict_dsl(MODEL_ID, trained)
    assert not_deployed["retcode"] == 210

    # A predict DSL given as is: kept when the model has what it reads.
    given = published("hetero_lr_normal_predict_dsl")
    answer = fc.model.deploy(MODEL_ID, trained, predict_dsl=given)
    assert answer["retcode"] == 0, answer
    assert fc.model.get_predict_dsl(MODEL_ID, answer["data"]["model_version"])["data"] == given
    given["components"]["hetero_lr_0"]["input"]["model"] = ["pipeline.evaluation_0.model"]
    wrong = fc.model.deploy(MODEL_ID, trained, predict_dsl=given)
    assert wrong["retcode"] == 101 and "no model of evaluation_0" in wrong["retmsg"]


def test_export_import_into_another_server_and_bad_archives(fc, server_factory, deployed, tmp_path):
    conf = {"model_id": MODEL_ID, "model_version": deployed, "role": "guest", "party_id": GUEST,
            "output_path": str(tmp_path)}
    exported = fc.model.export_model(conf)
    assert exported["retcode"] == 0, exported
    with zipfile.ZipFile(exported["file"]) as z:
        manifest = json.loads(z.read("manifest.json"))
        assert manifest["format"] == "taskhub-fate-model" and manifest["party_id"] == GUEST
        assert {"model.json", "components/hetero_lr_0.json", "components/data_transform_0.json"} <= set(z.namelist())

    other = server_factory()
    fc2 = sdk(other)
    corrupt = tmp_path / "corrupt.zip"
    raw = bytearray(open(exported["file"], "rb").read())
    with zipfile.ZipFile(io.BytesIO(bytes(raw))) as z:   # same archive, one component altered
        files = {n: z.read(n) for n in z.namelist()}
    files["components/hetero_lr_0.json"] = files["components/hetero_lr_0.json"].replace(b"0", b"1", 1)
    with zipfile.ZipFile(corrupt, "w") as z:
        for n, body in files.items():
            z.writestr(n, body)
    foreign = tmp_path / "foreign.zip"
    foreign.write_bytes(b"PK this is not a zip")
    for bad, why in ((corrupt, "sha256"), (foreign, "not a zip")):
        answer = fc2.model.import_model({**conf, "file": str(bad)})
        assert answer["retcode"] == 101 and why in answer["retmsg"], answer
    assert fc2.model.get_model_info(model_id=MODEL_ID)["retcode"] == 100   # nothing came in

    answer = fc2.model.import_model({**conf, "file": exported["file"]})
    assert answer["retcode"] == 0, answer
    assert answer["data"] == {"model_id": MODEL_ID, "model_version": deployed, "role": "guest", "party_id": GUEST}
    [row] = fc2.model.get_model_info(model_id=MODEL_ID, model_version=deployed)["data"]
    assert row["f_imported"] == 1 and row["f_role"] == "guest" and "hetero_lr_0" in row["f_components"]
    assert fc2.model.get_predict_dsl(MODEL_ID, deployed)["data"] == published("hetero_lr_normal_predict_dsl")
    again = fc2.model.import_model({**conf, "file": exported["file"]})
    assert again["retcode"] == 100 and "force_update" in again["retmsg"]
    assert fc2.model.import_model({**conf, "file": exported["file"], "force_update": 1})["retcode"] == 0


def test_store_and_restore_from_the_model_directory(server, fc, deployed):
    conf = {"model_id": MODEL_ID, "model_version": deployed, "role": "host", "party_id": HOST}
    stored = fc.model.export_model(conf, to_database=True)
    assert stored["retcode"] == 0, stored
    assert stored["data"]["path"].startswith(str(server.db.parent / "models"))
    # Gone from the database, then back from the directory.
    stub = flow(server)
    stub.DeleteModel(pb.ModelRef(model_id=MODEL_ID, model_version=deployed))
    assert fc.model.get_model_info(model_id=MODEL_ID, model_version=deployed)["retcode"] == 100
    restored = fc.model.import_model(conf, from_database=True)
    assert restored["retcode"] == 0, restored
    [row] = fc.model.get_model_info(model_id=MODEL_ID, model_version=deployed)["data"]
    assert (row["f_role"], row["f_party_id"], row["f_imported"]) == ("host", str(HOST), 1)
    missing = fc.model.import_model({**conf, "model_version": "19700101000000000000"}, from_database=True)
    assert missing["retcode"] == 101 and "not stored" in missing["retmsg"]


def test_load_bind_and_migrate(fc, trained):
    version = fc.model.deploy(MODEL_ID, trained, cpn_list=CPNS)["data"]["model_version"]
    # flow_sdk's load(job_id=...) alone fails inside the SDK (it preprocesses config_data=None): the
    # job id goes in the conf, which is what the SDK then posts.
    loaded = fc.model.load({"job_id": version})
    assert loaded["retcode"] == 0 and loaded["data"]["guest"] == {str(GUEST): 0} and "arbiter" not in loaded["data"]
    assert fc.model.load({"job_id": "19700101000000000000"})["retcode"] == 101
    not_deployed = fc.model.load({"job_id": trained})
    assert not_deployed["retcode"] == 103 and "deploy" in not_deployed["retmsg"]
    bind_conf = {"service_id": "breast-lr", "initiator": {"role": "guest", "party_id": GUEST},
                 "role": {"guest": [GUEST], "host": [HOST]},
                 "job_parameters": {"model_id": MODEL_ID, "model_version": version}}
    bound = fc.model.bind(bind_conf)
    assert bound == {"retcode": 0, "retmsg": "service id is breast-lr"}
    assert fc.model.bind({**bind_conf, "service_id": ""})["retcode"] == 101
    rows = fc.model.get_model_info(model_id=MODEL_ID, model_version=version)["data"]
    guest = next(r for r in rows if r["f_role"] == "guest")
    assert guest["f_loaded_times"] == 1 and guest["f_service_ids"] == ["breast-lr"]

    migrate = {"job_parameters": {"federated_mode": "MULTIPLE"},
               "migrate_initiator": {"role": "guest", "party_id": 99},
               "role": {"guest": [GUEST], "host": [HOST], "arbiter": [HOST]},
               "migrate_role": {"guest": [99], "host": [100], "arbiter": [100]},
               "execute_party": {"guest": [GUEST], "host": [HOST], "arbiter": [HOST]},
               "model_id": MODEL_ID, "model_version": version, "unify_model_version": "migrated_1"}
    moved = fc.model.migrate(migrate)
    assert moved["retcode"] == 0, moved
    assert moved["data"]["model_id"] == "arbiter-100#guest-99#host-100#model"
    new_rows = fc.model.get_model_info(model_id="arbiter-100#guest-99#host-100#model",
                                       model_version="migrated_1")["data"]
    assert {(r["f_role"], r["f_party_id"]) for r in new_rows} == {("guest", "99"), ("host", "100"),
                                                                   ("arbiter", "100")}
    assert next(r for r in new_rows if r["f_role"] == "guest")["f_train_runtime_conf"]["role"]["guest"] == [99]
    same = fc.model.migrate({**migrate, "migrate_role": migrate["role"]})
    assert same["retcode"] == 101 and "no need to migrate" in same["retmsg"]
    partial = {k: v for k, v in migrate.items() if k != "execute_party"}
    assert fc.model.migrate(partial)["retcode"] == 101


def test_tags_on_models(fc, trained):
    assert fc.tag.create("breast", "hetero LR on breast")["retcode"] == 0
    dup = fc.tag.create("breast")
    assert dup["retcode"] == 100 and "already exists" in dup["retmsg"]
    assert fc.tag.create("")["retcode"] == 100
    assert fc.model.tag_model(trained, "breast")["retcode"] == 0
    assert fc.model.tag_model(trained, "auto-made")["retcode"] == 0     # a new tag name is created
    twice = fc.model.tag_model(trained, "breast")
    assert twice["retcode"] == 100 and "already been tagged" in twice["retmsg"]
    assert fc.model.tag_model("19700101000000000000", "breast")["retcode"] == 100

    listed = fc.model.tag_list(trained)["data"]
    assert listed == {"tags": [{"name": "breast", "description": "hetero LR on breast"},
                               {"name": "auto-made", "description": ""}], "count": 2}
    tags = {t["name"]: t for t in fc.tag.list(limit=10)["data"]["tags"]}
    assert tags["breast"]["model_count"] == 1
    with_model = fc.tag.query("breast", with_model=True)["data"]
    assert with_model["count"] == 3 and {m["model_version"] for m in with_model["models"]} == {trained}
    assert fc.tag.query("brea")["data"]["tags"][0]["name"] == "breast"

    assert fc.tag.update("breast", new_tag_name="breast-lr", new_tag_desc="renamed")["retcode"] == 0
    assert fc.tag.update("breast-lr", new_tag_name="breast-lr", new_tag_desc="renamed")["retcode"] == 100
    assert fc.model.tag_list(trained)["data"]["tags"][0] == {"name": "breast-lr", "description": "renamed"}
    assert fc.model.tag_model(trained, "breast-lr", remove=True)["retcode"] == 0
    assert fc.model.tag_model(trained, "breast-lr", remove=True)["retcode"] == 100
    assert fc.tag.delete("breast-lr")["retcode"] == 0
    gone = fc.tag.query("breast-lr")
    assert gone["retcode"] == 100 and gone["retmsg"] == "No tags found."
    assert fc.tag.delete("breast-lr")["retcode"] == 100
    assert [t["name"] for t in fc.model.tag_list(trained)["data"]["tags"]] == ["auto-made"]


def test_a_model_in_use_by_a_running_predict_job_cannot_be_deleted(server, fc):
    dsl, conf = slow_job(0)
    train = fc.job.submit(conf, dsl)
    assert wait_status(fc, train["jobId"], {"success", "failed"}) == "success"
    model_id = f"guest-{GUEST}#host-{HOST}#model"
    version = fc.model.deploy(model_id, train["jobId"])["data"]["model_version"]
    predict_dsl = fc.model.get_predict_dsl(model_id, version)["data"]
    assert predict_dsl["components"]["probe_0"]["input"]["model"] == ["pipeline.probe_0.model"]
    pconf = copy.deepcopy(conf)
    pconf["component_parameters"]["common"]["probe_0"]["seconds"] = 60
    pconf["job_parameters"] = {"common": {"model_id": model_id, "model_version": version}}
    job = fc.job.submit(pconf, predict_dsl)
    assert job["retcode"] == 0, job
    wait_status(fc, job["jobId"], {"running"})
    stub = flow(server)
    with pytest.raises(grpc.RpcError) as e:
        stub.DeleteModel(pb.ModelRef(model_id=model_id, model_version=version))
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION and job["jobId"] in e.value.details()
    assert fc.job.stop(job["jobId"])["retcode"] == 0
    wait_for(lambda: stub.GetJob(pb.GetJobRequest(job_id=job["jobId"])).status == pb.FLOW_JOB_STATUS_CANCELED
             and not stub.ListFlowTasks(pb.ListFlowTasksRequest(job_id=job["jobId"],
                                                                statuses=[pb.FLOW_TASK_STATUS_RUNNING])).tasks,
             what="predict job canceled")
    assert stub.DeleteModel(pb.ModelRef(model_id=model_id, model_version=version)).deleted == 2
    # The train job's own model stays (deleting a version never touches its parent or the job).
    assert fc.model.get_model_info(model_id=model_id, model_version=train["jobId"])["retcode"] == 0
    assert fc.job.query(job_id=train["jobId"])["retcode"] == 0


def test_flow_client_and_cli_answer_as_flow_sdk(server, fc, trained, tmp_path):
    """client/flow.py's FlowClient (gRPC) and `taskhub flow model|tag` give flow_sdk's answers."""
    from client.flow import FlowClient
    from test_flow_client import cli

    with FlowClient(server.grpc_target) as gc:
        deployed = gc.model.deploy(MODEL_ID, trained, cpn_list=CPNS)
        assert deployed["retcode"] == 0 and deployed["data"]["guest"] == {str(GUEST): 0}, deployed
        version = deployed["data"]["model_version"]
        assert gc.model.get_predict_dsl(MODEL_ID, version) == fc.model.get_predict_dsl(MODEL_ID, version)
        assert gc.model.get_model_info(MODEL_ID, version) == fc.model.get_model_info(MODEL_ID, version)
        assert gc.model.get_predict_dsl(MODEL_ID, trained)["retcode"] == 210
        assert gc.job.generate_dsl(str(DATA / "hetero_lr_normal_dsl.json"), cpn_list="reader_0,data_transform_0")[
            "data"]["components"]["data_transform_0"]["input"]["model"] == ["pipeline.data_transform_0.model"]
        conf = {"model_id": MODEL_ID, "model_version": version, "role": "guest", "party_id": GUEST,
                "output_path": str(tmp_path)}
        exported = gc.model.export_model(conf)
        assert exported["retcode"] == 0 and zipfile.is_zipfile(exported["file"])
        assert gc.model.import_model({**conf, "file": exported["file"]})["retcode"] == 100   # already here
        assert gc.tag.create("via-grpc", "d")["retcode"] == 0
        assert gc.model.tag_model(version, "via-grpc")["retcode"] == 0
        assert gc.model.tag_list(version)["data"] == fc.model.tag_list(version)["data"]
        assert gc.tag.query("via-grpc", with_model=True)["data"]["count"] == 3
        assert gc.model.load(job_id=version)["data"]["host"] == {str(HOST): 0}

    code, answer = cli(server, "model", "get-model-info", "--model-id", MODEL_ID, "--model-version", version,
                       "-r", "host")
    assert code == 0 and [r["f_role"] for r in answer["data"]] == ["host"]
    code, answer = cli(server, "model", "get-predict-dsl", "--model-id", MODEL_ID, "--model-version", version,
                       "-o", str(tmp_path))
    assert code == 0 and json.loads(open(answer["file"]).read()) == published("hetero_lr_normal_predict_dsl")
    code, answer = cli(server, "tag", "query", "-t", "via-grpc", "--with-model")
    assert code == 0 and answer["data"]["count"] == 3
    code, answer = cli(server, "model", "tag-model", "-j", version, "-t", "via-grpc", "--remove")
    assert code == 0
    code, answer = cli(server, "tag", "delete", "-t", "nope")
    assert code == 1 and answer["retcode"] == 100
    code, answer = cli(server, "job", "dsl", "--train-dsl-path", str(DATA / "hetero_lr_normal_dsl.json"),
                       "--cpn-list", ",".join(CPNS))
    assert code == 0 and answer["data"] == published("hetero_lr_normal_predict_dsl")


def test_bad_input_over_grpc_is_a_clear_error(server):
    stub = flow(server)
    cases = [
        (lambda: stub.ImportModel(iter([pb.ImportModelRequest(chunk=b"PK")])), grpc.StatusCode.INVALID_ARGUMENT,
         "must carry `expect`"),
        (lambda: stub.ImportModel(iter([pb.ImportModelRequest(expect=pb.ImportModelExpect())])),
         grpc.StatusCode.INVALID_ARGUMENT, "the file is empty"),
        (lambda: stub.MigrateModel(pb.MigrateModelRequest(model_id="m", model_version="1", role_json="{nope")),
         grpc.StatusCode.INVALID_ARGUMENT, "role_json is not valid JSON"),
        (lambda: stub.GenerateDsl(pb.GenerateDslRequest(train_dsl_json="[]")), grpc.StatusCode.INVALID_ARGUMENT,
         "must be a JSON object"),
        (lambda: stub.ListModels(pb.ListModelsRequest(role="judge")), grpc.StatusCode.INVALID_ARGUMENT, "role"),
        (lambda: stub.DeployModel(pb.DeployModelRequest(model_id="m")), grpc.StatusCode.INVALID_ARGUMENT,
         "model_id and model_version are required"),
        (lambda: stub.DeleteModel(pb.ModelRef(model_id="m", model_version="1")), grpc.StatusCode.NOT_FOUND,
         "no model m 1"),
        (lambda: stub.ListTaggedModels(pb.TagRef(name="nope")), grpc.StatusCode.NOT_FOUND, "nope"),
        (lambda: stub.BindModel(pb.BindModelRequest(model=pb.ModelRef(model_id="m", model_version="1"))),
         grpc.StatusCode.INVALID_ARGUMENT, "no service id"),
    ]
    for call, code, text in cases:
        with pytest.raises(grpc.RpcError) as e:
            call()
        assert e.value.code() == code and text in e.value.details(), (text, e.value.details())


def test_a_model_outlives_its_purged_train_job(server_factory):
    """--retain purges ended jobs with their tasks; the model (copied out of them) stays and still predicts."""
    from test_flow import wait_job

    s = server_factory("--retain", "2s")
    fc2, stub = sdk(s), flow(s)
    dsl, conf = slow_job(0)
    train = fc2.job.submit(conf, dsl)["jobId"]
    assert wait_job(stub, train).status == pb.FLOW_JOB_STATUS_SUCCESS
    model_id = f"guest-{GUEST}#host-{HOST}#model"
    version = fc2.model.deploy(model_id, train)["data"]["model_version"]
    wait_for(lambda: fc2.job.query(job_id=train)["data"] == [], timeout=30, interval=0.2,
             what="the train job to be purged")
    assert fc2.model.get_model_info(model_id=model_id, model_version=train)["retcode"] == 0
    conf["job_parameters"] = {"common": {"model_id": model_id, "model_version": version}}
    predict = fc2.job.submit(conf, fc2.model.get_predict_dsl(model_id, version)["data"])
    assert predict["retcode"] == 0, predict
    done = wait_job(stub, predict["jobId"])
    assert done.status == pb.FLOW_JOB_STATUS_SUCCESS, done.error
