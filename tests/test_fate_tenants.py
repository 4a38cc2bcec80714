"""Issue 22, finding 1: FATE resources belong to namespaces. A reader and a submitter of team-b
attack team-a's real job, tasks, tables, model and tag through every FlowService RPC and every
FATE route of a `taskhub serve --auth`; each is refused (or, for listings, sees none of team-a's),
and a dump of the store is the same before and after.

The RPC and route lists are walked from the protos and the gateway, so a new RPC or route
without a rule and an attack here fails the test with what to add.
"""
from __future__ import annotations

import hashlib
import io
import json
import sqlite3
import zipfile
from urllib.parse import quote

import grpc
import pytest
from google.protobuf import descriptor_pool
from taskhub.v1 import auth_service_pb2 as apb
from taskhub.v1 import auth_service_pb2_grpc as asvc
from taskhub.v1 import flow_service_pb2 as pb
from taskhub.v1 import flow_service_pb2_grpc as pb_grpc
from taskhub.v1 import task_service_pb2 as tpb

from conftest import ServerProcess, http, wait_for
from flow_jobs import GUEST, HOST, slow_job
from server.auth import OWNER_KINDS, RULES
from test_auth import FATE_PREFIXES, gateway_routes
from test_flow import two_party_job, upload, wait_job, with_tables

C = grpc.StatusCode
FLOW = "/taskhub.v1.FlowService/"
MODEL_ID = f"guest-{GUEST}#host-{HOST}#model"
REFUSED = (C.PERMISSION_DENIED, C.NOT_FOUND)


class Caller:
    """A FlowService stub that sends one token on every call."""

    def __init__(self, channel, token: str):
        self._stub = pb_grpc.FlowServiceStub(channel)
        self._md = (("authorization", f"Bearer {token}"),)
        self.token = token

    def __getattr__(self, name):
        method = getattr(self._stub, name)
        return lambda request, **kw: method(request, metadata=self._md, timeout=kw.pop("timeout", 60), **kw)


class TeamA:
    """What team-a made: tables, a trained model (tagged), a running and a waiting job."""

    def __init__(self, srv: ServerProcess, channel, admin: str):
        auth = asvc.AuthServiceStub(channel)

        def token(role: str, ns: str) -> str:
            return auth.CreateToken(apb.CreateTokenRequest(name=f"{role}-{ns}", role=role, namespaces=[ns]),
                                    metadata=(("authorization", f"Bearer {admin}"),)).token
        self.a = Caller(channel, token("submitter", "team-a"))
        self.attackers = {"team-b reader": Caller(channel, token("reader", "team-b")),
                          "team-b submitter": Caller(channel, token("submitter", "team-b"))}
        with_tables(self.a)
        dsl, conf = two_party_job()
        trained = self.a.SubmitJob(pb.SubmitJobRequest(dsl_json=dsl, conf_json=conf))
        assert wait_job(self.a, trained.job_id).status == pb.FLOW_JOB_STATUS_SUCCESS
        self.job, self.version = trained.job_id, trained.job_id
        self.a.CreateTag(pb.CreateTagRequest(name="a-tag", description="team-a's"))
        self.a.TagModel(pb.TagModelRequest(job_id=self.version, tag="a-tag"))
        self.archive = b"".join(c.chunk for c in self.a.ExportModel(pb.PartyModelRef(
            model_id=MODEL_ID, model_version=self.version, role="guest", party_id=GUEST)))
        dsl, conf = slow_job(600)
        self.running = self.a.SubmitJob(pb.SubmitJobRequest(dsl_json=json.dumps(dsl), conf_json=json.dumps(conf))).job_id
        self.waiting = self.a.SubmitJob(pb.SubmitJobRequest(dsl_json=json.dumps(dsl), conf_json=json.dumps(conf))).job_id
        tasks = wait_for(lambda: [t for t in self.a.ListFlowTasks(pb.ListFlowTasksRequest(job_id=self.running)).tasks
                                  if t.status == pb.FLOW_TASK_STATUS_RUNNING and t.taskhub_task_id], 60,
                         what="team-a's slow job to run")
        from taskhub.v1 import task_service_pb2_grpc as tsvc
        task = tsvc.TaskServiceStub(channel).GetTask(tpb.GetTaskRequest(id=tasks[0].taskhub_task_id,
                                                                        namespace="team-a"),
                                                     metadata=(("authorization", f"Bearer {admin}"),))
        self.running_uid = task.uid   # what an attacker who learnt it would send
        self.db = srv.db
        self.a_url = srv.http_url
        # What must never show in an attacker's answer.
        self.secrets = [self.job, self.running, self.waiting, "a-tag", "breast_hetero_guest", MODEL_ID]

    def tampered_archive(self) -> bytes:
        """team-a's model with every weight set to 999 and the manifest's sha256 fixed (the attack)."""
        src = zipfile.ZipFile(io.BytesIO(self.archive))
        files = {n: src.read(n) for n in src.namelist()}
        manifest = json.loads(files.pop("manifest.json"))
        for name in files:
            if name.startswith("components/"):
                files[name] = json.dumps(_poison(json.loads(files[name]))).encode()
        manifest["files"] = {n: hashlib.sha256(b).hexdigest() for n, b in files.items()}
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w") as z:
            z.writestr("manifest.json", json.dumps(manifest))
            for n, b in files.items():
                z.writestr(n, b)
        return out.getvalue()

    def dump(self) -> dict:
        """The FATE part of the store (what an attack could change), read from the database file."""
        con = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True)
        try:
            q = {
                "jobs": "SELECT job_id, namespace, status FROM flow_jobs",
                "tasks": "SELECT job_id, component, role, party_id, status FROM flow_tasks",
                # (the running probe's own ticks grow while the test runs)
                "metrics": f"SELECT * FROM flow_metrics WHERE job_id != '{self.running}'", "tables": "SELECT * FROM flow_tables",
                "chunks": "SELECT namespace, name, COUNT(*), SUM(LENGTH(data)) FROM flow_table_chunks"
                          " GROUP BY namespace, name",
                "uploads": "SELECT * FROM flow_uploads", "models": "SELECT * FROM flow_models",
                "components": "SELECT * FROM flow_model_components", "tags": "SELECT * FROM flow_tags",
                "model_tags": "SELECT * FROM flow_model_tags",
            }
            return {k: sorted(map(tuple, con.execute(sql).fetchall())) for k, sql in q.items()}
        finally:
            con.close()

    def leaks(self, text: str) -> list[str]:
        return [s for s in self.secrets if s in text]


def _poison(node):
    if isinstance(node, dict):
        return {k: _poison(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_poison(v) for v in node]
    return 999 if isinstance(node, (int, float)) and not isinstance(node, bool) else node


@pytest.fixture(scope="module")
def team_a(tmp_path_factory):
    srv = ServerProcess(tmp_path_factory.mktemp("tenants"), ["--auth", "--flow-max-jobs", "1"]).start()
    channel = grpc.insecure_channel(srv.grpc_target)
    try:
        yield TeamA(srv, channel, (srv.workdir / "admin.token").read_text().strip())
    finally:
        channel.close()
        srv.close()


# -- every FlowService RPC ---------------------------------------------------------------------------------
# name -> (kind, call(attacker stub, team_a)); kind "refused": PERMISSION_DENIED or NOT_FOUND;
# "listing": refused, or answered with none of team-a's; "nothing": reads no stored resource.
def _stream(it):
    return list(it)


def _upload_over(t: TeamA):
    return iter([pb.UploadDataRequest(conf_json=json.dumps({"namespace": "experiment", "table_name": "breast_hetero_guest",
                                                            "head": 1, "drop": 1})),
                 pb.UploadDataRequest(chunk=b"id,x0\n1,1\n")])


def _import_over(t: TeamA):
    return iter([pb.ImportModelRequest(expect=pb.ImportModelExpect(model_id=MODEL_ID, model_version=t.version,
                                                                   role="guest", party_id=GUEST, force_update=True)),
                 pb.ImportModelRequest(chunk=t.tampered_archive())])


_MODEL = lambda t: pb.ModelRef(model_id=MODEL_ID, model_version=t.version)  # noqa: E731
_PARTY_MODEL = lambda t: pb.PartyModelRef(model_id=MODEL_ID, model_version=t.version, role="guest",  # noqa: E731
                                          party_id=GUEST)
RPC_ATTACKS = {
    "SubmitJob": ("refused", lambda s, t: s.SubmitJob(pb.SubmitJobRequest(
        dsl_json=json.dumps(slow_job(1)[0]), conf_json=json.dumps(slow_job(1)[1]), namespace="team-a"))),
    "GetJob": ("refused", lambda s, t: s.GetJob(pb.GetJobRequest(job_id=t.job))),
    "ListJobs": ("listing", lambda s, t: s.ListJobs(pb.ListJobsRequest(limit=1000))),
    "StopJob": ("refused", lambda s, t: s.StopJob(pb.StopJobRequest(job_id=t.running))),
    "WatchJob": ("refused", lambda s, t: _stream(s.WatchJob(pb.WatchJobRequest(job_id=t.running), timeout=10))),
    "TraceJob": ("refused", lambda s, t: _stream(s.TraceJob(pb.TraceJobRequest(job_id=t.job, follow=False)))),
    "RerunJob": ("refused", lambda s, t: s.RerunJob(pb.RerunJobRequest(job_id=t.job, force=True))),
    "CleanJob": ("refused", lambda s, t: s.CleanJob(pb.CleanJobRequest(job_id=t.job))),
    "CleanQueue": ("listing", lambda s, t: s.CleanQueue(pb.CleanQueueRequest())),
    "ListFlowTasks": ("listing", lambda s, t: s.ListFlowTasks(pb.ListFlowTasksRequest(job_id=t.job))),
    "ListComponents": ("refused", lambda s, t: s.ListComponents(pb.ListComponentsRequest(job_id=t.job))),
    "GetComponentOutput": ("refused", lambda s, t: s.GetComponentOutput(pb.GetComponentOutputRequest(
        job_id=t.job, component_name="data_transform_0"))),
    "DeleteMetrics": ("refused", lambda s, t: s.DeleteMetrics(pb.DeleteMetricsRequest(job_id=t.job))),
    "UploadData": ("refused", lambda s, t: s.UploadData(_upload_over(t))),
    "DownloadData": ("refused", lambda s, t: s.DownloadData(pb.DownloadDataRequest(
        namespace="experiment", table_name="breast_hetero_guest", output_path="stolen.csv"))),
    "UploadHistory": ("listing", lambda s, t: s.UploadHistory(pb.UploadHistoryRequest(limit=100))),
    "GetTable": ("refused", lambda s, t: s.GetTable(pb.GetTableRequest(namespace="experiment",
                                                                        name="breast_hetero_guest"))),
    "DeleteTable": ("refused", lambda s, t: s.DeleteTable(pb.DeleteTableRequest(namespace="experiment",
                                                                                 name="breast_hetero_guest"))),
    "ReadTable": ("refused", lambda s, t: _stream(s.ReadTable(pb.ReadTableRequest(
        namespace="experiment", name="breast_hetero_guest")))),
    "WriteTable": ("refused", lambda s, t: s.WriteTable(iter([pb.WriteTableRequest(
        task_uid=t.running_uid, output_name="data", lines=["1,1"])]))),
    "PutTracking": ("refused", lambda s, t: s.PutTracking(pb.PutTrackingRequest(task_uid=t.running_uid,
                                                                                 summary_json='{"x": 1}'))),
    "FederationSend": ("refused", lambda s, t: s.FederationSend(pb.FederationSendRequest(
        task_uid=t.running_uid, name="n", tag="t", dst_role="host", dst_party_id=HOST, payload=b"x"))),
    "FederationReceive": ("refused", lambda s, t: s.FederationReceive(pb.FederationReceiveRequest(
        task_uid=t.running_uid, name="n", tag="t", src_role="host", src_party_id=HOST, timeout_seconds=1))),
    "ListModels": ("listing", lambda s, t: s.ListModels(pb.ListModelsRequest())),
    "DeployModel": ("refused", lambda s, t: s.DeployModel(pb.DeployModelRequest(model_id=MODEL_ID,
                                                                                 model_version=t.version))),
    "GetPredictDsl": ("refused", lambda s, t: s.GetPredictDsl(_MODEL(t))),
    "GetPredictConf": ("refused", lambda s, t: s.GetPredictConf(_MODEL(t))),
    "ExportModel": ("refused", lambda s, t: _stream(s.ExportModel(_PARTY_MODEL(t)))),
    "ImportModel": ("refused", lambda s, t: s.ImportModel(_import_over(t))),
    "StoreModel": ("refused", lambda s, t: s.StoreModel(pb.StoreModelRequest(model=_PARTY_MODEL(t)))),
    "RestoreModel": ("refused", lambda s, t: s.RestoreModel(_PARTY_MODEL(t))),
    "MigrateModel": ("refused", lambda s, t: s.MigrateModel(pb.MigrateModelRequest(
        model_id=MODEL_ID, model_version=t.version, role_json=json.dumps({"guest": [GUEST], "host": [HOST]}),
        migrate_role_json=json.dumps({"guest": [1], "host": [2]})))),
    "LoadModel": ("refused", lambda s, t: s.LoadModel(_MODEL(t))),
    "BindModel": ("refused", lambda s, t: s.BindModel(pb.BindModelRequest(model=_MODEL(t), service_id="svc"))),
    "DeleteModel": ("refused", lambda s, t: s.DeleteModel(_MODEL(t))),
    "CreateTag": ("refused", lambda s, t: s.CreateTag(pb.CreateTagRequest(name="a-tag"))),
    "UpdateTag": ("refused", lambda s, t: s.UpdateTag(pb.UpdateTagRequest(name="a-tag", new_name="b-owned"))),
    "ListTags": ("listing", lambda s, t: s.ListTags(pb.ListTagsRequest(name_contains="a-"))),
    "DeleteTag": ("refused", lambda s, t: s.DeleteTag(pb.TagRef(name="a-tag"))),
    "ListTaggedModels": ("refused", lambda s, t: s.ListTaggedModels(pb.TagRef(name="a-tag"))),
    "TagModel": ("refused", lambda s, t: s.TagModel(pb.TagModelRequest(job_id=t.version, tag="b-tag"))),
    "ListModelTags": ("refused", lambda s, t: s.ListModelTags(pb.ListModelTagsRequest(job_id=t.version))),
    "GenerateDsl": ("nothing", None),   # works on the DSL it is given; stores and reads nothing
}


def flow_methods() -> list[str]:
    return [m.name for m in descriptor_pool.Default().FindServiceByName("taskhub.v1.FlowService").methods]


def test_every_flow_rpc_has_an_owner_rule_and_an_attack():
    wrong = []
    for name in flow_methods():
        rule = RULES.get(FLOW + name)
        if rule is None or rule.owner not in OWNER_KINDS:
            wrong.append(f'FlowService.{name}: add `_F + "{name}": Rule(READER or SUBMITTER, owner=<one of '
                         f'{", ".join(OWNER_KINDS)}>)` to RULES in server/auth.py (owner: what the request names, '
                         f'whose namespace must be the caller\'s; a new kind needs a lookup in server/flow/tenants.py)')
        if name not in RPC_ATTACKS:
            wrong.append(f"FlowService.{name}: add an attack on team-a's resources to RPC_ATTACKS in "
                         f"tests/test_fate_tenants.py")
    assert not wrong, "\n".join(wrong)


def test_no_flow_rpc_reaches_another_namespace(team_a):
    before = team_a.dump()
    wrong = []
    for name in flow_methods():
        kind, attack = RPC_ATTACKS[name]
        if kind == "nothing":
            assert RULES[FLOW + name].owner == "nothing", name
            continue
        for who, stub in team_a.attackers.items():
            try:
                answer = attack(stub, team_a)
            except grpc.RpcError as e:
                if e.code() not in REFUSED:
                    wrong.append(f"{name} as {who}: {e.code().name} {e.details()}")
                continue
            if kind == "refused":
                wrong.append(f"{name} as {who}: allowed, answered {str(answer)[:200]!r}")
            elif team_a.leaks(str(answer)):
                wrong.append(f"{name} as {who}: shows team-a's {team_a.leaks(str(answer))}")
    assert not wrong, "\n".join(wrong)
    assert team_a.dump() == before
    # team-a itself still reaches all of it.
    assert team_a.a.GetJob(pb.GetJobRequest(job_id=team_a.waiting)).status == pb.FLOW_JOB_STATUS_WAITING
    assert [m.model_version for m in team_a.a.ListModels(pb.ListModelsRequest(model_id=MODEL_ID)).models]


def test_a_submitter_cleans_only_its_own_queue_and_imports_only_into_its_namespace(team_a):
    b = team_a.attackers["team-b submitter"]
    # team-b's own import of team-a's exported model: a new model of team-b's, never over team-a's.
    with pytest.raises(grpc.RpcError) as e:
        b.ImportModel(_import_over(team_a))
    assert e.value.code() == C.PERMISSION_DENIED and "another namespace" in e.value.details()
    assert b.CleanQueue(pb.CleanQueueRequest()).job_ids == []
    assert team_a.a.GetJob(pb.GetJobRequest(job_id=team_a.waiting)).status == pb.FLOW_JOB_STATUS_WAITING
    # team-b's own table and tag live beside team-a's, unseen by team-a's listings and vice versa.
    upload(b, "experiment-b", "mine", b"id,x0\n1,1\n")
    b.CreateTag(pb.CreateTagRequest(name="b-tag"))
    assert [t.name for t in b.ListTags(pb.ListTagsRequest()).tags] == ["b-tag"]
    assert "b-tag" not in [t.name for t in team_a.a.ListTags(pb.ListTagsRequest()).tags]
    with pytest.raises(grpc.RpcError) as e:
        team_a.a.GetTable(pb.GetTableRequest(namespace="experiment-b", name="mine"))
    assert e.value.code() == C.PERMISSION_DENIED


# -- every FATE route --------------------------------------------------------------------------------------
MODEL_TAILS = ("load", "bind", "deploy", "get/predict/dsl", "get/predict/conf", "query", "export", "import", "store",
               "restore", "migrate", "model_tag/create", "model_tag/remove", "model_tag/retrieve", "tag/create",
               "tag/list", "tag/retrieve", "tag/update", "tag/destroy")
LISTING_ROUTES = {"job/query", "job/list/job", "job/list/task", "job/clean/queue", "data/upload/history",
                  "model/query", "model/tag/list", "model/tag/retrieve"}
NOTHING_ROUTES = {"job/dsl/generate"}   # works on the DSL it is given


def fate_body(path: str, t: TeamA) -> dict:
    """A body naming team-a's job, table, model and tag (what each route reads of them)."""
    body = {"job_id": t.job, "namespace": "experiment", "table_name": "breast_hetero_guest", "model_id": MODEL_ID,
            "model_version": t.version, "role": "guest", "party_id": GUEST, "tag_name": "a-tag",
            "component_name": "data_transform_0", "output_path": "stolen.csv", "service_id": "svc",
            "new_tag_name": "b-owned", "local": {"role": "guest", "party_id": GUEST}}
    if path == "job/stop":
        body["job_id"] = t.running
    if path == "job/rerun":
        body["force"] = True   # team-a's job succeeded: only a forced rerun would run it
    if path == "job/submit":   # a predict job with team-a's model
        dsl = {"components": {"reader_0": {"module": "Reader", "output": {"data": ["data"]}}}}
        conf = {"dsl_version": 2, "initiator": {"role": "guest", "party_id": GUEST},
                "role": {"guest": [GUEST], "host": [HOST]},
                "job_parameters": {"common": {"job_type": "predict", "model_id": MODEL_ID,
                                              "model_version": t.version}}}
        body = {"job_runtime_conf": conf, "job_dsl": dsl}
    if path == "model/model_tag/create":
        body["tag_name"] = "b-tag2"
    if path == "model/migrate":
        body.update(migrate_initiator={"role": "guest", "party_id": 1}, role={"guest": [GUEST], "host": [HOST]},
                    migrate_role={"guest": [1], "host": [2]}, execute_party={"guest": [GUEST]}, job_parameters={})
    return body


def multipart(fields: dict, file: bytes) -> tuple[bytes, str]:
    boundary = "taskhubtenants"
    out = b""
    for k, v in fields.items():
        out += f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
    out += (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="f"\r\n'
            f"Content-Type: application/octet-stream\r\n\r\n").encode() + file + f"\r\n--{boundary}--\r\n".encode()
    return out, f"multipart/form-data; boundary={boundary}"


def fate_call(url: str, method: str, path: str, t: TeamA, token: str):
    headers = {"Authorization": f"Bearer {token}"}
    if path == "data/upload":
        conf = {"namespace": "experiment", "table_name": "breast_hetero_guest", "head": 1, "drop": 1}
        body, headers["Content-Type"] = multipart({}, b"id,x0\n1,1\n")
        return http(method, f"{url}/v1/{path}?{quote(json.dumps(conf))}", body, headers)
    if path == "model/import":
        body, headers["Content-Type"] = multipart({"model_id": MODEL_ID, "model_version": t.version, "role": "guest",
                                                   "party_id": GUEST, "force_update": 1}, t.tampered_archive())
        return http(method, f"{url}/v1/{path}", body, headers)
    headers["Content-Type"] = "application/json"
    return http(method, f"{url}/v1/{path}", json.dumps(fate_body(path, t)), headers)


def fate_routes() -> list[tuple[str, str]]:
    out = []
    for method, path in gateway_routes():
        if not path.startswith(FATE_PREFIXES):
            continue
        if path == "/v1/model/{tail}":
            out += [(method, f"model/{tail}") for tail in MODEL_TAILS if method == "POST" or tail == "export"]
        else:
            out.append((method, path.removeprefix("/v1/")))
    return out


def test_no_fate_route_reaches_another_namespace(team_a):
    before = team_a.dump()
    wrong = []
    for method, path in fate_routes():
        if path in NOTHING_ROUTES:
            continue
        for who, stub in team_a.attackers.items():
            answer = fate_call(team_a.a_url, method, path, team_a, stub.token)
            try:
                retcode = answer.json().get("retcode")
            except (ValueError, AttributeError):
                retcode = None   # a file answer
            refused = answer.status != 200 or retcode not in (0, None)
            if path in LISTING_ROUTES:
                if not refused and team_a.leaks(answer.body.decode(errors='replace')):
                    wrong.append(f"{method} {path} as {who}: shows team-a's {team_a.leaks(answer.body.decode(errors='replace'))}")
            elif not refused:
                wrong.append(f"{method} {path} as {who}: allowed ({answer.status}): {answer.body[:200]!r}")
    assert not wrong, "\n".join(wrong)
    assert team_a.dump() == before


OWNER_READS = ("job/query", "job/config", "job/log/download", "job/data/view/query", "job/task/query", "log/size",
               "log/cat", "tracking/component/list", "tracking/component/parameters", "tracking/component/metrics",
               "tracking/component/metric/all", "tracking/component/output/model", "tracking/component/output/data",
               "tracking/component/output/data/table", "tracking/component/output/data/download",
               "table/table_info", "model/query", "model/export", "model/model_tag/retrieve", "model/tag/retrieve")


def test_the_attacks_bodies_are_right_team_a_reads_with_them(team_a):
    """The refusals above are for the namespace, not a bad body: team-a gets answers with the same ones."""
    routes = {path: method for method, path in fate_routes()}
    wrong = []
    for path in OWNER_READS:
        answer = fate_call(team_a.a_url, routes[path], path, team_a, team_a.a.token)
        try:
            ok = answer.status == 200 and answer.json().get("retcode") == 0
        except (ValueError, AttributeError):
            ok = answer.status == 200   # a file
        if not ok:
            wrong.append(f"{path}: {answer!r}")
    assert not wrong, "\n".join(wrong)
