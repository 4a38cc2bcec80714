"""Issue 22, findings 2-5 against a real `taskhub serve --auth`: no memory before authentication
(multi-GB bodies), names and paths that cannot leave their directories, tasks that cannot read the
server's (or an agent's) secrets, and the smaller findings (401 first, signed model import,
/metrics behind a token)."""
from __future__ import annotations

import io
import json
import os
import select
import socket
import stat
import tarfile
import time
from urllib.parse import quote, urlparse

import grpc
import psutil
import pytest
from taskhub.v1 import auth_service_pb2 as apb
from taskhub.v1 import auth_service_pb2_grpc as asvc
from taskhub.v1 import flow_service_pb2 as fpb
from taskhub.v1 import flow_service_pb2_grpc as fsvc
from taskhub.v1 import task_pb2 as pb

from conftest import ServerProcess, http, wait_for
from flow_jobs import GUEST, HOST
from node_agents import AgentProcess
from test_fate_tenants import multipart
from test_flow import two_party_job, upload, wait_job, with_tables

C = grpc.StatusCode
GB = 1 << 30
BLOCK = b"0" * (1 << 20)   # one 1 MiB block, sent again and again: bodies are never held whole


class Hardened:
    def __init__(self, srv: ServerProcess):
        self.srv = srv
        self.admin = (srv.workdir / "admin.token").read_text().strip()
        self.channel = grpc.insecure_channel(srv.grpc_target)
        made = asvc.AuthServiceStub(self.channel).CreateToken(apb.CreateTokenRequest(
            name="sub", role="submitter", namespaces=["team-a"]), metadata=self.md(self.admin))
        self.submitter, self.app_key, self.secret_key = made.token, made.info.id, made.fate_secret_key
        self.flow = fsvc.FlowServiceStub(self.channel)

    @staticmethod
    def md(token: str):
        return (("authorization", f"Bearer {token}"),)

    def rss(self) -> int:
        return psutil.Process(self.srv.proc.pid).memory_info().rss


@pytest.fixture(scope="module")
def hardened(tmp_path_factory):
    srv = ServerProcess(tmp_path_factory.mktemp("hardened"), ["--auth", "--max-upload-mb", "4"]).start()
    h = Hardened(srv)
    yield h
    h.channel.close()
    srv.close()


# -- finding 2: no memory before authentication ------------------------------------------------------------
def stream_body(url: str, path: str, headers: dict, declared: int, prefix: bytes = b"") -> tuple[int, bytes, int]:
    """POST a body of `declared` bytes made lazily of BLOCKs; stop once the server answers or closes.
    (status, head of the answer, bytes sent)."""
    u = urlparse(url)
    sock = socket.create_connection((u.hostname, u.port), timeout=30)
    head = [f"POST {path} HTTP/1.1", f"Host: {u.hostname}:{u.port}", f"Content-Length: {declared}",
            *[f"{k}: {v}" for k, v in headers.items()], "", ""]
    sock.sendall("\r\n".join(head).encode() + prefix)
    sent, answer = len(prefix), b""
    sock.setblocking(False)
    deadline = time.monotonic() + 300
    view = memoryview(BLOCK)
    while sent < declared and time.monotonic() < deadline:
        readable, writable, _ = select.select([sock], [sock], [], 1.0)
        if readable:
            try:
                chunk = sock.recv(65536)
            except (ConnectionResetError, BlockingIOError):
                chunk = b""
            answer += chunk
            if not chunk or b"\r\n\r\n" in answer:
                break
        if writable:
            try:
                sent += sock.send(view[:min(len(BLOCK), declared - sent)])
            except (BrokenPipeError, ConnectionResetError):
                break
            except BlockingIOError:
                pass
    sock.setblocking(True)
    sock.settimeout(30)
    try:
        while b"\r\n\r\n" not in answer:
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    except (OSError, socket.timeout):
        pass
    sock.close()
    status = int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else 0
    return status, answer[:2000], sent


MULTIPART_HEAD = (b'--b\r\nContent-Disposition: form-data; name="file"; filename="f"\r\n'
                  b"Content-Type: application/octet-stream\r\n\r\n")
TARGETS = [  # (path, content type, body prefix): the uploads, and a JSON route
    ("/v1/model/import", "multipart/form-data; boundary=b", MULTIPART_HEAD),
    ("/v1/data/upload?" + quote(json.dumps({"namespace": "ex", "table_name": "big", "head": 0})),
     "multipart/form-data; boundary=b", MULTIPART_HEAD),
    ("/v1/task", "multipart/form-data; boundary=b", MULTIPART_HEAD),
    ("/v1/tasks", "application/json", b'{"argv": ["'),
]


def test_multi_gb_bodies_without_a_good_token_never_reach_memory(hardened):
    before = hardened.rss()
    peak = before
    for path, ctype, prefix in TARGETS:
        for case, headers in (("no token", {}), ("bad token", {"Authorization": "Bearer thk_00000000_nope"}),
                              ("bad FATE signature", {"APP_KEY": "nope", "TIMESTAMP": str(int(time.time() * 1000)),
                                                      "NONCE": "n", "SIGNATURE": "s"})):
            status, answer, sent = stream_body(hardened.srv.http_url, path, {"Content-Type": ctype, **headers},
                                               3 * GB, prefix)
            peak = max(peak, hardened.rss())
            assert status == 401, f"{path} with {case}: {answer!r}"
            assert sent < GB, f"{path} with {case}: the server read {sent} bytes before answering"
    assert peak - before < 50 << 20, f"RSS grew from {before >> 20} MB to {peak >> 20} MB"


def test_an_upload_past_the_limit_is_refused_as_it_passes(hardened):
    before = hardened.rss()
    for path in ("/v1/model/import", TARGETS[1][0]):
        status, answer, sent = stream_body(hardened.srv.http_url, path, {
            "Content-Type": "multipart/form-data; boundary=b", "Authorization": f"Bearer {hardened.submitter}"},
            3 * GB, MULTIPART_HEAD)
        assert status == 200 and b"upload limit of 4 MiB" in answer, answer
        assert sent < GB, f"{path}: {sent} bytes were read before the refusal"
        assert hardened.rss() - before < 50 << 20
    # over gRPC too: UploadData beyond --max-upload-mb is RESOURCE_EXHAUSTED.
    with pytest.raises(grpc.RpcError) as e:
        upload(_Authed(hardened.flow, hardened.submitter), "ex", "big", b"a,b\n" + BLOCK * 5, chunk=1 << 20)
    assert e.value.code() == C.RESOURCE_EXHAUSTED and "--max-upload-mb" in e.value.details()


class _Authed:
    def __init__(self, stub, token):
        self.stub, self.md = stub, Hardened.md(token)

    def __getattr__(self, name):
        return lambda req, **kw: getattr(self.stub, name)(req, metadata=self.md, **kw)


# -- finding 5: the smaller ones ---------------------------------------------------------------------------
def test_bad_credentials_get_401_before_anything_is_parsed(hardened):
    url = hardened.srv.http_url
    answer = http("POST", url + "/v1/task", b"not multipart at all", {"Authorization": "Bearer nope",
                                                                      "Content-Type": "multipart/form-data"})
    assert answer.status == 401, answer
    answer = http("POST", url + "/v1/job/submit", b"{not json", {"Authorization": "Bearer nope",
                                                                 "Content-Type": "application/json"})
    assert answer.status == 401 and answer.json()["retcode"] == 109, answer


def test_metrics_need_a_token_under_auth(hardened, server_factory):
    url = hardened.srv.http_url
    assert http("GET", url + "/metrics").status == 401
    assert http("GET", url + "/metrics", headers={"Authorization": "Bearer thk_00000000_nope"}).status == 401
    ok = http("GET", url + "/metrics", headers={"Authorization": f"Bearer {hardened.submitter}"})
    assert ok.status == 200 and b"taskhub_" in ok.body
    opened = server_factory("--auth", "--open-metrics", "--no-local-node")
    assert http("GET", opened.http_url + "/metrics").status == 200


def test_a_signed_flow_sdk_model_import_works(hardened, tmp_path):
    from flow_sdk.client import FlowClient

    from server.flow import archive
    u = urlparse(hardened.srv.http_url)
    roles = {"guest": [GUEST], "host": [HOST]}
    row = {"model_id": "guest-9999#host-10000#model", "model_version": "202601010000000000001", "role": "guest",
           "party_id": GUEST, "job_id": "202601010000000000001", "parent_version": "", "initiator_role": "guest",
           "initiator_party": GUEST, "roles_json": json.dumps(roles), "train_dsl_json": "{}", "train_conf_json": "{}",
           "inference_dsl_json": "", "create_time_ms": 1}
    path = tmp_path / "model.zip"
    path.write_bytes(archive.pack(row, [{"component": "lr_0", "module": "HeteroLR", "model_json": '{"w": [1]}',
                                         "meta_json": "{}"}]))
    conf = {"model_id": row["model_id"], "model_version": row["model_version"], "role": "guest", "party_id": GUEST,
            "file": str(path)}
    signed = FlowClient(u.hostname, u.port, "v1", app_key=hardened.app_key, secret_key=hardened.secret_key)
    answer = signed.model.import_model(dict(conf))
    assert answer["retcode"] == 0, answer
    forged = FlowClient(u.hostname, u.port, "v1", app_key=hardened.app_key, secret_key=hardened.secret_key + "x")
    answer = forged.model.import_model({**conf, "force_update": 1})
    assert answer["retcode"] == 109 and "signature" in answer["retmsg"], answer


# -- finding 3: names and paths ----------------------------------------------------------------------------
BAD_NAMES = ["../../../../tmp/taskhub-escape/x", "/etc", "..", "a/b", "a\\b", "a%2Fb", "a\x00b", ".hidden"]


def test_bad_names_are_refused_where_they_enter(hardened):
    a = _Authed(hardened.flow, hardened.submitter)
    for bad in BAD_NAMES:
        dsl, conf = two_party_job()
        d = json.loads(dsl)
        d["components"][bad] = d["components"].pop("reader_0")
        d["components"]["data_transform_0"]["input"]["data"]["data"] = [f"{bad}.data"]
        with pytest.raises(grpc.RpcError) as e:
            a.SubmitJob(fpb.SubmitJobRequest(dsl_json=json.dumps(d), conf_json=conf, namespace="team-a"))
        assert e.value.code() == C.INVALID_ARGUMENT and "component name" in e.value.details(), bad
        for ns, name in ((bad, "t"), ("ex", bad)):
            with pytest.raises(grpc.RpcError) as e:
                upload(a, ns, name, b"id,x\n1,2\n")
            assert e.value.code() == C.INVALID_ARGUMENT, (ns, name)
    assert not os.path.exists("/tmp/taskhub-escape")


def test_server_paths_stay_inside_their_directories(hardened):
    a = _Authed(hardened.flow, hardened.submitter)
    upload(a, "ex", "t", b"id,x\n1,2\n")
    data = hardened.srv.db.parent / "data" / "team-a"   # a namespace's own part of the data directory
    data.mkdir(parents=True, exist_ok=True)
    (data / "link").symlink_to(hardened.srv.db.parent)           # a symlink out of it
    (data / "token").symlink_to(hardened.srv.db.parent / "admin.token")
    for path in ("../../escape.csv", "/tmp/taskhub-escape.csv", "link/escape.csv"):
        with pytest.raises(grpc.RpcError) as e:
            a.DownloadData(fpb.DownloadDataRequest(namespace="ex", table_name="t", output_path=path))
        assert e.value.code() == C.PERMISSION_DENIED and "outside the server's data directory" in e.value.details()
    # An encoded separator is no separator: one file of that name, inside.
    a.DownloadData(fpb.DownloadDataRequest(namespace="ex", table_name="t", output_path="..%2F..%2Fescape.csv"))
    assert (data / "..%2F..%2Fescape.csv").is_file()
    assert not os.path.exists("/tmp/taskhub-escape.csv") and not (hardened.srv.db.parent / "escape.csv").exists()
    for path in ("token", "../../admin.token", str(hardened.srv.db.parent / "admin.token"), "link/admin.token"):
        with pytest.raises(grpc.RpcError) as e:   # a server-side file to upload
            upload(a, "ex", "stolen", b"", use_local_data=0, file=path)
        assert e.value.code() in (C.PERMISSION_DENIED, C.NOT_FOUND), path


def test_archives_handed_to_clients_have_no_escaping_member(hardened):
    a = _Authed(hardened.flow, hardened.submitter)
    with_tables(a)
    dsl, conf = two_party_job()
    job = a.SubmitJob(fpb.SubmitJobRequest(dsl_json=dsl, conf_json=conf, namespace="team-a"))
    assert wait_job(a, job.job_id).status == fpb.FLOW_JOB_STATUS_SUCCESS
    headers = {"Authorization": f"Bearer {hardened.submitter}", "Content-Type": "application/json"}
    for route, body in (("job/log/download", {"job_id": job.job_id}),
                        ("tracking/component/output/data/download", {
                            "job_id": job.job_id, "component_name": "data_transform_0", "role": "guest",
                            "party_id": GUEST})):
        method = "GET" if route.startswith("tracking") else "POST"
        answer = http(method, f"{hardened.srv.http_url}/v1/{route}", json.dumps(body), headers)
        assert answer.status == 200, answer
        with tarfile.open(fileobj=io.BytesIO(answer.body)) as tar:
            names = tar.getnames()
        assert names and all(not n.startswith("/") and ".." not in n.split("/") for n in names), names
    from gateway.families.fate_files import TarDraft
    draft = TarDraft()
    try:
        for bad in ("../x", "/etc/x", "a/../../x"):
            with pytest.raises(ValueError):
                draft.append(bad, "line")
    finally:
        draft.close()


def test_a_model_archive_naming_paths_is_refused(hardened, tmp_path):
    from server.flow import archive
    row = {"model_id": "../../../tmp/x", "model_version": "1", "role": "guest", "party_id": GUEST, "job_id": "1",
           "parent_version": "", "initiator_role": "guest", "initiator_party": GUEST, "roles_json": "{}",
           "train_dsl_json": "{}", "train_conf_json": "{}", "inference_dsl_json": "", "create_time_ms": 1}
    comp = {"component": "lr_0", "module": "HeteroLR", "model_json": "{}", "meta_json": "{}"}
    for bad_row, bad_comp in ((row, comp), ({**row, "model_id": "m"}, {**comp, "component": "../../x"})):
        a = _Authed(hardened.flow, hardened.submitter)
        with pytest.raises(grpc.RpcError) as e:
            a.ImportModel(iter([fpb.ImportModelRequest(expect=fpb.ImportModelExpect()),
                                fpb.ImportModelRequest(chunk=archive.pack(bad_row, [bad_comp]))]))
        assert e.value.code() == C.INVALID_ARGUMENT


# -- finding 4: tasks cannot read the server's secrets -----------------------------------------------------
def test_secrets_are_the_servers_only(hardened):
    db = hardened.srv.db
    assert stat.S_IMODE(os.stat(db.parent).st_mode) == 0o700
    for path in (db, db.parent / "admin.token", db.parent / f"{db.name}-wal"):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, path
    assert any("run as nobody" in line for line in hardened.srv.output)


def run_command(hardened, script: str) -> tuple[pb.Task, str]:
    c = hardened.srv.client(token=hardened.submitter, namespace="team-a")
    task = c.create_task(argv=["sh", "-c", script], timeout=60)
    done = c.wait(task.id)
    return done, "\n".join(line.text for line in c.trace(task.id))


def test_a_task_cannot_read_the_servers_directory_or_tokens(hardened):
    d = hardened.srv.db.parent
    server = psutil.Process(hardened.srv.proc.pid)
    procs = " ".join(f"/proc/{p.pid}/environ /proc/{p.pid}/cmdline" for p in [server, *server.children(True)])
    done, out = run_command(hardened, f"id -un; pwd; cat ../admin.token {d}/admin.token {d}/taskhub.db; find {d};"
                                      f" ls -la .; grep -a -o 'thk_[A-Za-z0-9_-]*' {procs} 2>&1 | grep thk_; true")
    lines = out.splitlines()
    assert lines[0] == "nobody", out
    assert not lines[1].startswith(str(d)), out          # its working directory is not the server's
    assert hardened.admin not in out and "thk_" not in out and "SQLite format" not in out, out
    assert f"{d}/admin.token" not in [line.strip() for line in lines if line.startswith(str(d) + "/")], out
    python = hardened.srv.client(token=hardened.submitter, namespace="team-a").create_task(
        callable="sdk_tasks:read_file", input={"path": str(d / "admin.token")}, timeout=60)
    c = hardened.srv.client(token=hardened.submitter, namespace="team-a")
    finished = c.wait(python.id)
    assert finished.status == pb.TASK_STATUS_FAILED and "Permission denied" in finished.error, finished
    # The worker was started through the bootstrap that switches users (TaskUser.command): it is the
    # task user, with no groups, and its task code still sees its own /proc/self.
    me = c.run_task(callable="sdk_tasks:whoami", timeout=60)
    assert me.status == pb.TASK_STATUS_SUCCESS, me
    seen = json.loads(me.result)
    assert seen["user"] == "nobody" and seen["groups"] == [] and seen["fds"] > 0, seen


def test_an_agent_task_cannot_read_the_agents_token(hardened, tmp_path, monkeypatch):
    made = asvc.AuthServiceStub(hardened.channel).CreateToken(apb.CreateTokenRequest(name="agent", role="node"),
                                                               metadata=hardened.md(hardened.admin))
    monkeypatch.setenv("TASKHUB_TOKEN", made.token)   # how an agent gets its token (not on its command line)
    agent = AgentProcess(hardened.srv.grpc_target, "guarded", tmp_path, "--label", "where=agent").start()
    try:
        agent.wait_registered()
        c = hardened.srv.client(token=hardened.submitter, namespace="team-a")
        me = psutil.Process(agent.proc.pid)
        procs = " ".join(f"/proc/{p.pid}/environ /proc/{p.pid}/cmdline" for p in [me, *me.children(True)])
        task = c.create_task(argv=["sh", "-c", f"id -un; grep -a -o 'thk_[A-Za-z0-9_-]*' {procs} 2>&1 | grep thk_;"
                                               " true"],
                             node_selector={"where": "agent"}, timeout=60)
        c.wait(task.id)
        out = "\n".join(line.text for line in c.trace(task.id))
        assert out.splitlines()[0] == "nobody" and made.token not in out and "thk_" not in out, out
    finally:
        agent.kill()
