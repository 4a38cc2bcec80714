"""Bad actors against a real `taskhub serve --auth`: every RPC (from the protos) and every HTTP
route (from the gateway's route table) x (no token, malformed, wrong role, wrong namespace,
expired, revoked) is refused with the right code, and nothing changes. Then the real clients
with credentials, task tokens, the audit log, the limits and the non-loopback refusal."""
from __future__ import annotations

import base64
import json
import subprocess
import sys
import uuid

import grpc
import pytest
from google.protobuf import descriptor_pool, message_factory
from taskhub.v1 import auth_service_pb2 as apb
from taskhub.v1 import auth_service_pb2_grpc as asvc
from taskhub.v1 import node_service_pb2 as npb
from taskhub.v1 import task_group_service_pb2 as gpb
from taskhub.v1 import task_pb2 as pb
from taskhub.v1 import task_service_pb2 as svc

from client import TaskhubClient
from conftest import ServerProcess, http, wait_for
from server.auth import ADMIN, ANY_ROLE, NODE, READER, RULES, SITE, SUBMITTER
from test_auth_rules import all_rpcs

C = grpc.StatusCode
BAD_AUTH = ("none", "malformed", "unknown", "expired", "revoked")


class AuthServer:
    """One --auth server and a token of each kind."""

    def __init__(self, proc: ServerProcess):
        self.proc = proc
        self.target = proc.grpc_target
        self.url = proc.http_url
        self.admin = (proc.workdir / "admin.token").read_text().strip()
        self.channel = grpc.insecure_channel(self.target)
        self.auth = asvc.AuthServiceStub(self.channel)
        self.tokens = {
            READER: self.token(READER, ["team-a"]),
            SUBMITTER: self.token(SUBMITTER, ["team-a"]),
            "other-ns": self.token(SUBMITTER, ["team-b"]),
            "default-ns": self.token(SUBMITTER, ["default"]),
            "graph": self.token(SUBMITTER, ["gs1/g1"]),
            NODE: self.token(NODE, []),
            ADMIN: self.admin,
        }
        revoked = self.auth.CreateToken(apb.CreateTokenRequest(name="to-revoke", role=ADMIN), metadata=self.md())
        self.auth.RevokeToken(apb.RevokeTokenRequest(id=revoked.info.id), metadata=self.md())
        self.tokens["revoked"] = revoked.token
        self.tokens["expired"] = self.token(ADMIN, [], ttl=1)
        wait_for(lambda: self.whoami(self.tokens["expired"]) == C.UNAUTHENTICATED, 10, what="a token to expire")

    def md(self, token: str | None = None):
        return (("authorization", f"Bearer {token or self.admin}"),)

    def token(self, role: str, namespaces: list[str], ttl: int = 0) -> str:
        return self.auth.CreateToken(apb.CreateTokenRequest(name=f"{role}-{'-'.join(namespaces)}", role=role,
                                                            namespaces=namespaces, ttl_seconds=ttl),
                                     metadata=self.md()).token

    def whoami(self, token: str) -> C:
        try:
            self.auth.WhoAmI(apb.WhoAmIRequest(), metadata=self.md(token), timeout=10)
            return C.OK
        except grpc.RpcError as e:
            return e.code()

    def authorization(self, case: str) -> str | None:
        """The `authorization` value of a bad-credentials case."""
        return {"none": None, "malformed": "Token abc", "unknown": "Bearer thk_00000000_notatoken",
                "expired": f"Bearer {self.tokens['expired']}", "revoked": f"Bearer {self.tokens['revoked']}"}[case]

    def snapshot(self) -> dict:
        """Everything a refused call could have changed (once earlier tests' tasks have ended)."""
        c = self.client(self.admin)
        ended = {pb.TASK_STATUS_SUCCESS, pb.TASK_STATUS_FAILED, pb.TASK_STATUS_CANCELLED}
        wait_for(lambda: all(t.status in ended for t in c.list_tasks(namespace="*", limit=10_000).tasks), 60,
                 what="earlier tasks to end")
        return {
            "tasks": [(t.id, t.status) for t in c.list_tasks(namespace="*", limit=10_000).tasks],
            "tokens": [(t.id, t.revoke_time_ms) for t in self.auth.ListTokens(apb.ListTokensRequest(),
                                                                              metadata=self.md()).tokens],
            "templates": [t.name for t in c.groups.ListTemplates(gpb.ListTemplatesRequest()).templates],
            "instances": [i.id for i in c.groups.ListInstances(gpb.ListInstancesRequest()).instances],
            "nodes": [(n.name, n.draining) for n in c.nodes.ListNodes(npb.ListNodesRequest()).nodes],
        }

    def client(self, token: str, **kw) -> TaskhubClient:
        return self.proc.client(token=token, **kw)


@pytest.fixture(scope="module")
def authsrv(tmp_path_factory):
    proc = ServerProcess(tmp_path_factory.mktemp("auth"), ["--auth", "--max-streams-per-token", "3",
                                                           "--max-message-mb", "1"]).start()
    s = AuthServer(proc)
    yield s
    s.channel.close()
    proc.close()


# -- gRPC ------------------------------------------------------------------------
def _method(path: str):
    service, name = path.strip("/").split("/")
    return descriptor_pool.Default().FindServiceByName(service).methods_by_name[name]


def sample_request(path: str, namespace: str = "team-a"):
    """A request that would do something real if it were allowed."""
    m = _method(path)
    req = message_factory.GetMessageClass(m.input_type)()
    spec = pb.TaskSpec(type=pb.TASK_TYPE_COMMAND, argv=["true"], namespace=namespace)
    rule = RULES[path]
    if rule.namespace == "spec.namespace":
        req.spec.CopyFrom(spec)
    elif rule.namespace == "specs.namespace":
        req.specs.append(spec)
    elif rule.namespace == "namespace":
        req.namespace = namespace
    fields = req.DESCRIPTOR.fields_by_name
    if "id" in fields and fields["id"].type == fields["id"].TYPE_INT64:
        req.id = 1
    if "ids" in fields:
        req.ids.append(1)
    for name, value in (("name", "n1"), ("json", '{"name": "t1", "task_groups": []}'), ("module", "starter.examples"),
                        ("role", "admin")):
        if name in fields and not getattr(req, name):
            setattr(req, name, value)
    if "id" in fields and fields["id"].type == fields["id"].TYPE_STRING:
        req.id = "x"
    return req


def call(channel, path: str, request, authorization: str | None) -> C:
    m = _method(path)
    out_cls = message_factory.GetMessageClass(m.output_type)
    md = (("authorization", authorization),) if authorization else ()
    try:
        if m.client_streaming:
            hello = npb.AgentMessage(register=npb.Register(name="intruder", session=uuid.uuid4().hex, slots=1))
            it = channel.stream_stream(path, request_serializer=lambda x: x.SerializeToString(),
                                       response_deserializer=out_cls.FromString)(iter([hello]), metadata=md, timeout=10)
            next(it)
            it.cancel()
        elif m.server_streaming:
            it = channel.unary_stream(path, request_serializer=lambda x: x.SerializeToString(),
                                      response_deserializer=out_cls.FromString)(request, metadata=md, timeout=10)
            next(it)
            it.cancel()
        else:
            channel.unary_unary(path, request_serializer=lambda x: x.SerializeToString(),
                                response_deserializer=out_cls.FromString)(request, metadata=md, timeout=10)
        return C.OK
    except grpc.RpcError as e:
        return e.code()


WRONG_ROLE = {READER: NODE, SUBMITTER: READER, ADMIN: SUBMITTER, NODE: ADMIN}
# The roles as the issue states them, independent of RULES: a reader only reads tasks; a
# submitter only works on tasks (and module descriptions); the rest is admin's (or a node's).
FLOW_READS = {"GetJob", "ListJobs", "WatchJob", "TraceJob", "ListFlowTasks", "ListComponents", "GetComponentOutput",
              "UploadHistory", "GetTable", "ReadTable", "ListModels", "GetPredictDsl", "GetPredictConf", "ExportModel",
              "ListTags", "ListTaggedModels", "ListModelTags", "GenerateDsl"}
FLOW_SUBMITS = {"SubmitJob", "StopJob", "RerunJob", "CleanJob", "CleanQueue", "DeleteMetrics", "UploadData", "DownloadData", "DeleteTable",
                "WriteTable", "PutTracking", "FederationSend", "FederationReceive", "DeployModel", "ImportModel",
                "StoreModel", "RestoreModel", "MigrateModel", "LoadModel", "BindModel", "DeleteModel", "CreateTag",
                "UpdateTag", "DeleteTag", "TagModel"}
READS = {"GetTask", "ListTasks", "TraceTask", "WaitTask", "WaitTasks", "WatchTasks", "WhoAmI"} | FLOW_READS
DELTA_SUBMITS = {"CreateDeltaTask", "StartDeltaClients", "DeltaSend", "DeltaReceive"}
SUBMITS = READS | {"CreateTask", "CreateTasks", "RunTask", "ExecuteTask", "CancelTask", "DeleteTask", "DescribeModule"} | FLOW_SUBMITS | DELTA_SUBMITS


def test_every_rpc_refuses_bad_callers_and_changes_nothing(authsrv):
    before = authsrv.snapshot()
    wrong = []
    rpcs = all_rpcs()
    for path in rpcs:
        rule = RULES[path]
        if rule.role == SITE:  # served only on the party's mutual-TLS port (tests/test_fate_sites.py), not here
            for case, authorization in [("admin", f"Bearer {authsrv.admin}"), ("none", None)]:
                got = call(authsrv.channel, path, sample_request(path), authorization)
                if got != C.UNIMPLEMENTED:
                    wrong.append(f"{path} with {case}: {got.name}, expected UNIMPLEMENTED on the main port")
            continue
        cases = [(case, authsrv.authorization(case), C.UNAUTHENTICATED) for case in BAD_AUTH]
        if rule.role != ANY_ROLE:
            cases.append(("wrong role", f"Bearer {authsrv.tokens[WRONG_ROLE[rule.role]]}", C.PERMISSION_DENIED))
        if rule.namespace:
            cases.append(("wrong namespace", f"Bearer {authsrv.tokens['other-ns']}", C.PERMISSION_DENIED))
        name = path.rsplit("/", 1)[-1]
        if name not in READS:
            cases.append(("a reader", f"Bearer {authsrv.tokens[READER]}", C.PERMISSION_DENIED))
        if name not in SUBMITS:
            cases.append(("a submitter", f"Bearer {authsrv.tokens[SUBMITTER]}", C.PERMISSION_DENIED))
        if name not in ("Connect", "WhoAmI"):
            cases.append(("a node", f"Bearer {authsrv.tokens[NODE]}", C.PERMISSION_DENIED))
        for case, authorization, expected in cases:
            got = call(authsrv.channel, path, sample_request(path), authorization)
            if got != expected:
                wrong.append(f"{path} with {case}: {got.name}, expected {expected.name}")
    assert not wrong, "\n".join(wrong)
    assert authsrv.snapshot() == before

    # The same calls with the right token get past the gate (whatever the RPC then says).
    right = {READER: READER, SUBMITTER: SUBMITTER, ADMIN: ADMIN, NODE: NODE, ANY_ROLE: READER}
    for path in [r for r in rpcs if RULES[r].role != SITE]:
        got = call(authsrv.channel, path, sample_request(path), f"Bearer {authsrv.tokens[right[RULES[path].role]]}")
        assert got not in (C.UNAUTHENTICATED, C.PERMISSION_DENIED), f"{path} refused its own role: {got}"


def test_refusals_are_in_the_audit_log_with_who_and_what(authsrv):
    reader = authsrv.client(authsrv.tokens[READER])
    with pytest.raises(grpc.RpcError) as e:
        reader.create_task(argv=["true"], namespace="team-a")
    assert e.value.code() == C.PERMISSION_DENIED
    assert "needs submitter" in e.value.details()
    task = authsrv.client(authsrv.tokens[SUBMITTER]).create_task(argv=["true"])
    assert task.spec.namespace == "team-a"  # a one-namespace token's namespace is the default
    assert task.spec.annotations["taskhub.token"].startswith("submitter-team-a (")
    def audited():  # audit rows are written behind the calls they record (never slowing them)
        entries = authsrv.auth.ListAudit(apb.ListAuditRequest(limit=1000), metadata=authsrv.md()).entries
        return entries if any(e.allowed and e.tasks == str(task.id) for e in entries) else None
    entries = wait_for(audited, 30, what="the create's audit row")
    refused = [e for e in entries if not e.allowed and e.method.endswith("/CreateTask") and e.token_name == "reader-team-a"]
    assert refused and "needs submitter" in refused[0].reason and refused[0].namespace == ""
    created = [e for e in entries if e.allowed and e.tasks == str(task.id)]
    assert created and created[0].method.endswith("/CreateTask") and created[0].namespace == "team-a"
    # Only admins read it.
    with pytest.raises(grpc.RpcError) as e:
        authsrv.auth.ListAudit(apb.ListAuditRequest(), metadata=authsrv.md(authsrv.tokens[SUBMITTER]))
    assert e.value.code() == C.PERMISSION_DENIED


def test_scoped_token_sees_only_its_namespaces(authsrv):
    admin = authsrv.client(authsrv.admin)
    elsewhere = admin.create_task(argv=["true"], namespace="team-b")
    reader = authsrv.client(authsrv.tokens[READER])
    with pytest.raises(grpc.RpcError) as e:
        reader.get_task(elsewhere.id, namespace="*")   # "*" is narrowed to the token's namespace
    assert e.value.code() == C.NOT_FOUND
    assert all(t.spec.namespace == "team-a" for t in reader.list_tasks(namespace="*").tasks)
    with pytest.raises(grpc.RpcError) as e:
        reader.list_tasks(namespace="team-b")
    assert e.value.code() == C.PERMISSION_DENIED and "team-b" in e.value.details()



def test_every_spec_of_a_batch_is_checked_and_stamped(authsrv):
    submitter = authsrv.client(authsrv.tokens[SUBMITTER])
    made = submitter.create_tasks([pb.TaskSpec(type=pb.TASK_TYPE_COMMAND, argv=["true"]),
                                   pb.TaskSpec(type=pb.TASK_TYPE_COMMAND, argv=["true"], namespace="team-a"),
                                   pb.TaskSpec(type=pb.TASK_TYPE_COMMAND, argv=["true"], namespace="*")])
    assert [t.spec.namespace for t in made] == ["team-a"] * 3
    assert all(t.spec.annotations["taskhub.token"].startswith("submitter-team-a (") for t in made)
    before = len(authsrv.client(authsrv.admin).list_tasks(namespace="*", limit=1000).tasks)
    with pytest.raises(grpc.RpcError) as e:  # one spec outside the token's namespaces refuses the batch
        submitter.create_tasks([pb.TaskSpec(type=pb.TASK_TYPE_COMMAND, argv=["true"]),
                                pb.TaskSpec(type=pb.TASK_TYPE_COMMAND, argv=["true"], namespace="team-b")])
    assert e.value.code() == C.PERMISSION_DENIED and "team-b" in e.value.details()
    assert len(authsrv.client(authsrv.admin).list_tasks(namespace="*", limit=1000).tasks) == before

# -- HTTP ------------------------------------------------------------------------
def _spec_json(namespace: str) -> dict:
    return {"type": "TASK_TYPE_COMMAND", "argv": ["true"], "namespace": namespace}


def _multipart(data: bytes) -> tuple[bytes, dict]:
    b = uuid.uuid4().hex
    body = (f"--{b}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"task\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode() + data + f"\r\n--{b}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={b}"}


HG = "/graphspaces/gs1/graphs/g1/tasks"
TEMPLATE = {"name": "t1", "task_groups": [{"tasks": [{"name": "a", "config": {"command": "true"}}]}]}
# (method, route as the gateway registers it) -> (path and query, body). Namespace team-a (or gs1/g1).
HTTP_SAMPLES = {
    ("GET", "/auto/run"): ("/auto/run?module=starter.examples&name=count&task_ns=team-a", None),
    ("GET", "/auto/task_info"): ("/auto/task_info?task_id=" + "0" * 32 + "&task_ns=team-a", None),
    ("GET", "/graphspaces/{gs}/graphs/{g}/tasks"): (HG, None),
    ("GET", "/graphspaces/{gs}/graphs/{g}/tasks/{id}"): (HG + "/1", None),
    ("DELETE", "/graphspaces/{gs}/graphs/{g}/tasks/{id}"): (HG + "/1?force=true", None),
    ("PUT", "/graphspaces/{gs}/graphs/{g}/tasks/{id}"): (HG + "/1?action=cancel", None),
    ("POST", "/v1/task"): ("/v1/task", "multipart"),
    ("GET", "/v1/task/metadata"): ("/v1/task/metadata?task_id=1", None),
    ("GET", "/v1/task/logs"): ("/v1/task/logs?task_id=1", None),
    ("GET", "/v1/task/result"): ("/v1/task/result?task_id=1", None),
    ("GET", "/v1/task/list"): ("/v1/task/list", None),
    ("POST", "/api/task/task_group"): ("/api/task/task_group", TEMPLATE),
    ("POST", "/api/task/query"): ("/api/task/query", {"name": "t1"}),
    ("POST", "/api/task/task_group/deploy"): ("/api/task/task_group/deploy", {"name": "t1"}),
    ("POST", "/api/task/task_group/query"): ("/api/task/task_group/query", {"id": "x"}),
    ("POST", "/api/task/task_group/stop"): ("/api/task/task_group/stop", {"id": "x"}),
    ("GET", "/api/task/node"): ("/api/task/node", None),
    ("POST", "/v1/tasks:batchCreate"): ("/v1/tasks:batchCreate", {"specs": [_spec_json("team-a")]}),
    ("POST", "/v1/tasks:run"): ("/v1/tasks:run", _spec_json("team-a")),
    ("POST", "/v1/tasks:execute"): ("/v1/tasks:execute", _spec_json("team-a")),
    ("POST", "/v1/tasks/{v0}:cancel"): ("/v1/tasks/1:cancel?namespace=team-a", {}),
    ("GET", "/v1/tasks/{v0}:wait"): ("/v1/tasks/1:wait?namespace=team-a", None),
    ("POST", "/v1/nodes/{v0}:drain"): ("/v1/nodes/n1:drain", {}),
    ("POST", "/v1/taskgroups/instances/{v0}:stop"): ("/v1/taskgroups/instances/x:stop", {}),
    ("POST", "/v1/tasks"): ("/v1/tasks", _spec_json("team-a")),
    ("GET", "/v1/tasks/{v0}"): ("/v1/tasks/1?namespace=team-a", None),
    ("GET", "/v1/tasks"): ("/v1/tasks?namespace=team-a", None),
    ("DELETE", "/v1/tasks/{v0}"): ("/v1/tasks/1?namespace=team-a&force=true", None),
    ("GET", "/v1/tasks/{v0}/logs"): ("/v1/tasks/1/logs?namespace=team-a", None),
    ("GET", "/v1/modules/{v0}"): ("/v1/modules/starter.examples", None),
    ("GET", "/v1/nodes"): ("/v1/nodes", None),
    ("GET", "/v1/cluster/servers"): ("/v1/cluster/servers", None),
    ("GET", "/v1/nodes/{v0}"): ("/v1/nodes/n1", None),
    ("POST", "/v1/taskgroups/templates"): ("/v1/taskgroups/templates", {"json": json.dumps(TEMPLATE)}),
    ("GET", "/v1/taskgroups/templates/{v0}"): ("/v1/taskgroups/templates/t1", None),
    ("GET", "/v1/taskgroups/templates"): ("/v1/taskgroups/templates", None),
    ("DELETE", "/v1/taskgroups/templates/{v0}"): ("/v1/taskgroups/templates/t1", None),
    ("POST", "/v1/taskgroups/instances"): ("/v1/taskgroups/instances", {"name": "t1", "namespace": "team-a"}),
    ("GET", "/v1/taskgroups/instances/{v0}"): ("/v1/taskgroups/instances/x", None),
    ("GET", "/v1/taskgroups/instances"): ("/v1/taskgroups/instances", None),
    ("GET", "/v1/tasks:watch"): ("/v1/tasks:watch?namespace=team-a", None),
    ("POST", "/v1/flow/jobs"): ("/v1/flow/jobs", {"namespace": "team-a", "dsl_json": "{}", "conf_json": "{}"}),
    ("GET", "/v1/flow/jobs/{v0}"): ("/v1/flow/jobs/1", None),
    ("GET", "/v1/flow/jobs"): ("/v1/flow/jobs", None),
    ("POST", "/v1/flow/jobs/{v0}:stop"): ("/v1/flow/jobs/1:stop", {}),
    ("POST", "/v1/flow/jobs/{v0}:rerun"): ("/v1/flow/jobs/1:rerun", {}),
    ("POST", "/v1/flow/jobs/{v0}:clean"): ("/v1/flow/jobs/1:clean", {}),
    ("GET", "/v1/flow/jobs/{v0}:watch"): ("/v1/flow/jobs/1:watch", None),
    ("GET", "/v1/flow/jobs/{v0}/logs"): ("/v1/flow/jobs/1/logs", None),
    ("POST", "/v1/flow/queue:clean"): ("/v1/flow/queue:clean", {}),
    ("GET", "/v1/flow/tasks"): ("/v1/flow/tasks", None),
    ("GET", "/v1/flow/jobs/{v0}/components"): ("/v1/flow/jobs/1/components", None),
    ("GET", "/v1/flow/jobs/{v0}/components/{v1}"): ("/v1/flow/jobs/1/components/reader_0", None),
    ("POST", "/v1/flow/metrics:delete"): ("/v1/flow/metrics:delete", {"job_id": "1"}),
    ("POST", "/v1/flow/tables:download"): ("/v1/flow/tables:download",
                                           {"namespace": "n", "table_name": "t", "output_path": "x.csv"}),
    ("GET", "/v1/flow/uploads"): ("/v1/flow/uploads", None),
    ("GET", "/v1/flow/tables/{v0}/{v1}"): ("/v1/flow/tables/n/t", None),
    ("DELETE", "/v1/flow/tables/{v0}/{v1}"): ("/v1/flow/tables/n/t", None),
    ("GET", "/v1/flow/tables/{v0}/{v1}/rows"): ("/v1/flow/tables/n/t/rows", None),
}
# FlowService's model and tag RPCs (transcoded).
_MODEL = {"model_id": "m", "model_version": "1"}
HTTP_SAMPLES.update({
    ("GET", "/v1/flow/models"): ("/v1/flow/models", None),
    ("GET", "/v1/flow/models:predictDsl"): ("/v1/flow/models:predictDsl?model_id=m&model_version=1", None),
    ("GET", "/v1/flow/models:predictConf"): ("/v1/flow/models:predictConf?model_id=m&model_version=1", None),
    ("GET", "/v1/flow/models:export"): ("/v1/flow/models:export?model_id=m&model_version=1", None),
    ("GET", "/v1/flow/models/tags"): ("/v1/flow/models/tags", None),
    ("GET", "/v1/flow/models/tags:models"): ("/v1/flow/models/tags:models?name=t", None),
    ("GET", "/v1/flow/models:tags"): ("/v1/flow/models:tags?job_id=1", None),
    **{("POST", f"/v1/flow/models{verb}"): (f"/v1/flow/models{verb}", body) for verb, body in {
        ":deploy": _MODEL, ":store": {"model": _MODEL}, ":restore": _MODEL, ":migrate": _MODEL, ":load": _MODEL,
        ":bind": {"model": _MODEL, "service_id": "s"}, ":delete": _MODEL, "/tags": {"name": "t"},
        "/tags:update": {"name": "t"}, "/tags:delete": {"name": "t"}, ":tag": {"job_id": "1", "tag": "t"},
        ":generateDsl": {"train_dsl_json": "{}"}}.items()},
})
# FATE Flow's routes (gateway/families/fate*.py).
_JOB, _CPN = {"job_id": "1"}, {"job_id": "1", "component_name": "c"}
_TABLE = {"namespace": "n", "table_name": "t"}
HTTP_SAMPLES.update({("POST", f"/v1/{path}"): (f"/v1/{path}", body) for path, body in {
    "job/submit": {"job_runtime_conf": {"initiator": {"role": "guest", "party_id": 1}, "role": {"guest": [1]}},
                   "job_dsl": {"components": {}}},
    "job/stop": _JOB, "job/query": {}, "job/list/job": {}, "job/config": _JOB, "job/log/download": _JOB, "job/log": _JOB,
    "job/data/view/query": _JOB, "job/list/task": {}, "job/task/query": _JOB, "job/clean/queue": {},
    "job/rerun": _JOB, "job/clean": _JOB,
    "job/dsl/generate": {"train_dsl": "{}", "cpn_str": "reader_0"},
    "log/size": _JOB, "log/cat": _JOB,
    "tracking/component/list": _JOB, "tracking/component/parameters": _CPN, "tracking/component/metrics": _CPN,
    "tracking/component/metric/all": _CPN, "tracking/component/metric/delete": _JOB,
    "tracking/component/output/model": _CPN, "tracking/component/output/data": _CPN,
    "tracking/component/output/data/table": _CPN, "tracking/component/summary/download": _CPN,
    "data/upload": {**_TABLE, "use_local_data": 0, "file": "x.csv", "head": 1},
    "data/download": {**_TABLE, "output_path": "o.csv"}, "data/upload/history": {},
    "table/table_info": _TABLE, "table/delete": _TABLE,
}.items()})
HTTP_SAMPLES.update({
    ("GET", "/v1/tracking/component/output/data/download"): ("/v1/tracking/component/output/data/download", _CPN),
    ("POST", "/v1/model/{tail}"): ("/v1/model/load", _JOB),
    ("GET", "/v1/model/{tail}"): ("/v1/model/export", {"model_id": "m", "model_version": "1", "role": "guest",
                                                       "party_id": 1}),
})
FATE_PREFIXES = ("/v1/job/", "/v1/log/", "/v1/tracking/", "/v1/data/", "/v1/table/", "/v1/model/")
# Served without a token even with --auth: the dashboard's static files (a browser loads a page
# before it can send a token), the API description, and Prometheus' scrape (counts only, no task
# content; README: Security says so).
OPEN_HTTP = {("GET", "/"), ("GET", "/ui"), ("GET", "/ui/"), ("GET", "/ui/api"), ("GET", "/ui/static"),
             ("GET", "/openapi.json"), ("GET", "/metrics")}
# Endless streams: the admin pass below would wait for their end.
ENDLESS = {("GET", "/v1/tasks:watch")}


def gateway_routes() -> list[tuple[str, str]]:
    import asyncio

    from gateway.app import build_app

    async def routes():
        channel = grpc.aio.insecure_channel("127.0.0.1:9")
        app = build_app(channel)
        out = [(r.method, r.resource.canonical) for r in app.router.routes() if r.method != "HEAD"]
        await channel.close()
        return out
    return asyncio.run(routes())


def test_every_gateway_route_has_a_sample():
    routes = gateway_routes()
    assert len(routes) >= 37
    missing = [r for r in routes if r not in HTTP_SAMPLES and r not in OPEN_HTTP]
    assert not missing, f"routes with no sample in HTTP_SAMPLES (add one, so the auth matrix covers them): {missing}"


def envelope_ok(path: str, answer) -> bool:
    """The refusal is in the route family's own error envelope."""
    body = answer.json()
    if path.startswith("/auto/"):
        return body.get("code") in (7, 16) and "msg" in body
    if path.startswith("/graphspaces/"):
        return body.get("exception") in ("NotAuthorizedException", "ForbiddenException", "NotFoundException")
    if path.startswith("/v1/task/") or path == "/v1/task":
        return "detail" in body
    if path.startswith("/api/task/"):
        return body.get("status") == "error"
    if path.startswith(FATE_PREFIXES):
        return body.get("retcode") in (108, 109) and bool(body.get("retmsg"))
    return body.get("code") in (5, 7, 16) and "message" in body


def http_call(url: str, key, authorization: str | None):
    path, body = HTTP_SAMPLES[key]
    headers = {"Authorization": authorization} if authorization else {}
    if body == "multipart":
        body, extra = _multipart(json.dumps(_spec_json("team-a")).encode())
        headers.update(extra)
    elif body is not None:
        body = json.dumps(body)
        headers["Content-Type"] = "application/json"
    return http(key[0], url + path, body, headers, timeout=15)


def test_every_http_route_refuses_bad_callers_and_changes_nothing(authsrv):
    before = authsrv.snapshot()
    basic = "Basic " + base64.b64encode(f"user:{authsrv.tokens[NODE]}".encode()).decode()
    cases = [(case, authsrv.authorization(case), (401,)) for case in BAD_AUTH]
    cases += [("malformed basic", "Basic %%%", (401,)), ("wrong role (Basic)", basic, (403,))]
    wrong_ns = ("wrong namespace", f"Bearer {authsrv.tokens['other-ns']}", (403,))
    wrong = []
    for key in [r for r in gateway_routes() if r not in OPEN_HTTP]:
        # Routes that name a namespace; the others act in the token's own (or need admin: wrong role).
        names_one = any("team-a" in text or "gs1" in text for text in map(str, HTTP_SAMPLES[key]))
        for case, authorization, expected in cases + ([wrong_ns] if names_one else []):
            answer = http_call(authsrv.url, key, authorization)
            if answer.status not in expected or not envelope_ok(key[1], answer):
                wrong.append(f"{key} with {case}: {answer!r}, expected {expected}")
            elif answer.status == 401 and "Basic" not in answer.headers.get("WWW-Authenticate", ""):
                wrong.append(f"{key} with {case}: 401 without WWW-Authenticate")
    assert not wrong, "\n".join(wrong)
    assert authsrv.snapshot() == before

    for key in [r for r in gateway_routes() if r not in OPEN_HTTP and r not in ENDLESS]:
        answer = http_call(authsrv.url, key, f"Bearer {authsrv.admin}")
        assert answer.status not in (401, 403), f"{key}: admin refused: {answer!r}"


def test_http_clients_with_credentials(authsrv):
    import requests

    from client import DeltaNode

    # Delta Node SDK over http://user:TOKEN@host:port (HTTP Basic, the token as the password)
    token = authsrv.tokens["default-ns"]
    node = DeltaNode(authsrv.url.replace("http://", f"http://me:{token}@"))
    from client import make_spec
    task_id = node.create_task(make_spec(argv=["sh", "-c", "echo delta-ok"]))
    assert node.wait(task_id) is True
    # HugeGraph's client sends user/pwd as Basic (requests' auth=(user, pwd))
    r = requests.get(authsrv.url + HG, auth=("admin", authsrv.tokens["graph"]), timeout=15)
    assert r.status_code == 200 and r.json() == {"tasks": []}
    r = requests.get(authsrv.url + "/graphspaces/gs2/graphs/g1/tasks", auth=("admin", authsrv.tokens["graph"]),
                     timeout=15)
    assert r.status_code == 403 and r.json()["exception"] == "ForbiddenException"


# -- task tokens -------------------------------------------------------------------
CALL_BACK = """
import os, sys
from client import TaskhubClient
c = TaskhubClient(sys.argv[1])          # TASKHUB_TOKEN comes from the run's environment
t = c.create_task(argv=["true"], name="child")
print("token", os.environ["TASKHUB_TOKEN"], "child", t.id, t.spec.namespace, flush=True)
try:
    c.list_tasks(namespace="team-b")
except Exception as e:
    print("other namespace:", e.code().name)
"""


def test_a_running_task_calls_back_with_its_own_token_which_ends_with_it(authsrv):
    sub = authsrv.client(authsrv.tokens[SUBMITTER])
    task = sub.create_task(argv=[sys.executable, "-c", CALL_BACK, authsrv.target])
    assert sub.wait(task.id).status == pb.TASK_STATUS_SUCCESS, sub.get_task(task.id)
    out = [line.text for line in sub.trace(task.id, follow=False)]
    words = next(line for line in out if line.startswith("token ")).split()
    task_token, child_ns = words[1], words[4]
    assert task_token.startswith("tht_") and child_ns == "team-a"
    assert "other namespace: PERMISSION_DENIED" in out
    # The task has ended: its token no longer works.
    assert authsrv.whoami(task_token) == C.UNAUTHENTICATED


# -- limits ------------------------------------------------------------------------
def test_streams_per_token_and_message_size_are_limited(authsrv):
    sub = authsrv.client(authsrv.tokens[SUBMITTER])
    task = sub.create_task(argv=["sleep", "30"])
    streams = [sub.watch(task.id) for _ in range(3)]
    for s in streams:
        next(s)                           # each stream is open
    with pytest.raises(grpc.RpcError) as e:
        next(sub.watch(task.id))
    assert e.value.code() == C.RESOURCE_EXHAUSTED and "--max-streams-per-token" in e.value.details()
    # Another token is not affected.
    assert next(authsrv.client(authsrv.admin).watch(task.id, namespace="team-a")).id == task.id
    sub.cancel_task(task.id)              # the task ends, and its streams with it
    for s in streams:
        assert list(s)[-1].status == pb.TASK_STATUS_CANCELLED
    probe = sub.watch(task.id)
    assert next(probe).id == task.id       # a slot is free again
    probe.cancel()
    with pytest.raises(grpc.RpcError) as e:
        sub.create_task(callable="starter.examples:noop", input={"blob": "x" * (2 << 20)})
    assert e.value.code() == C.RESOURCE_EXHAUSTED


# -- exposure --------------------------------------------------------------------------
def test_non_loopback_address_needs_auth_or_insecure(tmp_path):
    args = [sys.executable, "-m", "server.cli", "serve", "--db", str(tmp_path / "x.db"), "--host", "0.0.0.0",
            "--grpc-port", "0", "--http-port", "-1", "--no-local-node"]
    done = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "refusing to listen on 0.0.0.0 without authentication" in done.stderr + done.stdout
    assert "--auth" in done.stderr + done.stdout and "--insecure" in done.stderr + done.stdout
    # --insecure is an explicit choice: it starts.
    s = ServerProcess(tmp_path, ["--host", "0.0.0.0", "--insecure", "--no-local-node"]).start()
    try:
        assert "auth off" in "\n".join(s.output)
    finally:
        s.close()
    # A config file can turn auth on instead of the flag.
    config = tmp_path / "serve.json"
    config.write_text(json.dumps({"host": "0.0.0.0", "auth": True, "close_reflection": True}))
    s = ServerProcess(tmp_path, ["--config", str(config), "--no-local-node"], db=tmp_path / "y.db").start()
    try:
        assert "security: auth on" in "\n".join(s.output)
        with grpc.insecure_channel(s.grpc_target.replace("0.0.0.0", "127.0.0.1")) as channel:
            assert call(channel, "/taskhub.v1.TaskService/ListTasks", svc.ListTasksRequest(), None) == C.UNAUTHENTICATED
            # --close-reflection: reflection needs a token (any role) too
            assert reflect(channel, None) == C.UNAUTHENTICATED
            assert reflect(channel, (tmp_path / "admin.token").read_text().strip()) == C.OK
    finally:
        s.close()


def test_fate_secret_key_is_a_credential_of_its_token(authsrv):
    resp = authsrv.auth.CreateToken(apb.CreateTokenRequest(name="fate", role=SUBMITTER, namespaces=["fate"]),
                                    metadata=authsrv.md())
    secret = resp.fate_secret_key
    assert secret.startswith(f"thf_{resp.info.id}_") and secret != resp.token
    me = authsrv.auth.WhoAmI(apb.WhoAmIRequest(), metadata=authsrv.md(secret))
    assert (me.id, me.role, list(me.namespaces)) == (resp.info.id, SUBMITTER, ["fate"])
    assert authsrv.whoami(secret[:-1] + ("0" if secret[-1] != "0" else "1")) == C.UNAUTHENTICATED
    authsrv.auth.RevokeToken(apb.RevokeTokenRequest(id=resp.info.id), metadata=authsrv.md())
    assert authsrv.whoami(secret) == C.UNAUTHENTICATED


def test_bench_auth_runs(tmp_path):
    """bench/auth.py (part of make bench) runs and writes its figures; nothing timed is asserted."""
    from conftest import REPO
    out = tmp_path / "auth.json"
    p = subprocess.run([sys.executable, "-m", "bench.auth", "--calls", "40", "--rounds", "1", "--out", str(out)],
                       cwd=REPO, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    figures = json.loads(out.read_text())
    assert figures["get_on"]["n"] == 40 and "added_p50_ms" in figures


def reflect(channel, token: str | None) -> C:
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    try:
        next(stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10,
                                       metadata=(("authorization", f"Bearer {token}"),) if token else ()))
        return C.OK
    except grpc.RpcError as e:
        return e.code()


def test_health_and_reflection_stay_open(authsrv):
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
    health = health_pb2_grpc.HealthStub(authsrv.channel)
    assert health.Check(health_pb2.HealthCheckRequest(), timeout=10).status == health_pb2.HealthCheckResponse.SERVING
    refl = reflection_pb2_grpc.ServerReflectionStub(authsrv.channel)
    answer = next(refl.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
                                            timeout=10))
    names = {s.name for s in answer.list_services_response.service}
    assert "taskhub.v1.AuthService" in names and "taskhub.v1.TaskService" in names


def test_audit_rows_are_purged_by_retain(tmp_path):
    """--retain covers the audit table as it covers tasks: old rows go, nothing else is needed."""
    proc = ServerProcess(tmp_path, ["--auth", "--retain", "2s", "--no-local-node"]).start()
    try:
        s = AuthServer(proc)  # creates tokens: audited admin calls
        def audit():  # ListAudit itself is not audited
            return s.auth.ListAudit(apb.ListAuditRequest(limit=1000), metadata=s.md()).entries
        first = wait_for(audit, 30, what="audit rows")
        assert any(e.method.endswith("/CreateToken") for e in first)
        wait_for(lambda: not audit(), 60, what="the audit rows to be purged after --retain 2s")
        # New calls are audited again; the tokens themselves stay.
        s.token(READER, ["team-c"])
        assert any(e.method.endswith("/CreateToken") for e in wait_for(audit, 30, what="a new audit row"))
        assert len(s.auth.ListTokens(apb.ListTokensRequest(), metadata=s.md()).tokens) >= 5
        s.channel.close()
    finally:
        proc.close()


def test_a_task_token_is_valid_only_for_its_running_task_and_one_from_an_older_server_still_is(tmp_path):
    # Unit level, on a real SQLite store: task tokens are keyed BLAKE2b now; a task that a server
    # before it started (HMAC-SHA256 tokens) and that still runs on an agent keeps its token.
    import asyncio
    import hashlib
    import hmac as hmac_

    from server.auth import Authority
    from server.auth_store import AuthStore
    from server.errors import Unauthenticated
    from server.model import Task, TaskSpec, TaskType
    from server.storage import open_store

    running = {7: ("uid-7", "team-a")}

    async def main():
        store = open_store(str(tmp_path / "auth.db"))
        store.writer.start(asyncio.get_running_loop())
        try:
            authority = Authority(AuthStore(store), task_lookup=running.get)
            await authority.load()
            token = authority.task_env(Task(7, TaskSpec(type=TaskType.PYTHON), uid="uid-7"))["TASKHUB_TOKEN"]
            assert token.startswith("tht_7_") and len(token) == len("tht_7_") + 40
            caller = authority.authenticate(f"Bearer {token}")
            assert (caller.role, caller.namespaces) == (SUBMITTER, ("team-a",))
            key = bytes.fromhex(store.get_kv("auth:server_key"))
            legacy = "tht_7_" + hmac_.new(key, b"7:uid-7", hashlib.sha256).hexdigest()[:40]
            assert authority.authenticate(f"Bearer {legacy}").namespaces == ("team-a",)
            for bad in (token[:-1] + ("0" if token[-1] != "0" else "1"), token.replace("tht_7_", "tht_8_")):
                with pytest.raises(Unauthenticated):
                    authority.authenticate(f"Bearer {bad}")
            del running[7]  # the task ended: its token with it
            with pytest.raises(Unauthenticated):
                authority.authenticate(f"Bearer {token}")
        finally:
            await asyncio.get_running_loop().run_in_executor(None, store.close)

    asyncio.run(main())


def test_a_remembered_decision_fills_and_stamps_like_the_first_and_ends_with_its_token(tmp_path):
    # Unit level, on a real SQLite store: Authority.admit remembers what it decided for a token's
    # call; the same call again must fill the namespace and stamp the creator as the first did,
    # a refusal must name the token for the audit and never be remembered, and a revoke must end
    # what was remembered.
    import asyncio

    from server.auth import CALL_CREATOR, CALL_SCOPE, RULES, Authority
    from server.auth_store import AuthStore
    from server.errors import PermissionDenied, Unauthenticated
    from server.storage import open_store

    execute = "/taskhub.v1.TaskService/ExecuteTask"

    async def main():
        store = open_store(str(tmp_path / "auth.db"))
        store.writer.start(asyncio.get_running_loop())
        try:
            authority = Authority(AuthStore(store))
            await authority.load()
            record, secret = await authority.create("team-a-submitter", SUBMITTER, ["team-a"])
            bearer = f"Bearer {secret}"
            for _ in range(3):  # the first decides, the others find it
                request = svc.CreateTaskRequest(spec=pb.TaskSpec(type=pb.TASK_TYPE_PYTHON, callable="m:f"))
                CALL_CREATOR.set("")
                caller, namespace = authority.admit(bearer, execute, RULES[execute], request)
                assert (caller.id, namespace, request.spec.namespace) == (record.id, "team-a", "team-a")
                assert CALL_CREATOR.get() == f"team-a-submitter ({record.id})"
                assert CALL_SCOPE.get() == ("team-a",)
            for _ in range(2):  # refused each time, and the refusal names the token
                elsewhere = svc.CreateTaskRequest(spec=pb.TaskSpec(type=pb.TASK_TYPE_PYTHON, callable="m:f",
                                                                   namespace="team-b"))
                with pytest.raises(PermissionDenied) as e:
                    authority.admit(bearer, execute, RULES[execute], elsewhere)
                assert e.value.caller.id == record.id and "team-b" in str(e.value)
            await authority.revoke(record.id)
            with pytest.raises(Unauthenticated):
                authority.admit(bearer, execute, RULES[execute],
                                svc.CreateTaskRequest(spec=pb.TaskSpec(type=pb.TASK_TYPE_PYTHON, callable="m:f")))
        finally:
            await asyncio.get_running_loop().run_in_executor(None, store.close)

    asyncio.run(main())
