"""TLS and mutual TLS end to end, with certificates made here by the openssl CLI: the SDK, the
HTTPS gateway and a node agent; an agent with a wrong or revoked token."""
from __future__ import annotations

import json
import ssl
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import grpc
import pytest
from taskhub.v1 import flow_service_pb2 as fpb
from taskhub.v1 import flow_service_pb2_grpc as fsvc
from taskhub.v1 import auth_service_pb2 as apb
from taskhub.v1 import auth_service_pb2_grpc as asvc
from taskhub.v1 import task_pb2 as pb

from client import TaskhubClient, make_spec
from conftest import ServerProcess, wait_for
from node_agents import AgentProcess
from test_flow import two_party_job, wait_job, with_tables


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_certs(d: Path) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1/localhost and a client certificate (EC keys: fast)."""
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=taskhub test CA",
            cwd=d)
    for name, ext in (("server", "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n"),
                      ("client", "extendedKeyUsage=clientAuth\n")):
        (d / f"{name}.ext").write_text(ext)
        openssl("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN=taskhub {name}", cwd=d)
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext", cwd=d)
    return {n: d / n for n in ("ca.pem", "server.pem", "server.key", "client.pem", "client.key")}


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory):
    d = tmp_path_factory.mktemp("tls")
    certs = make_certs(d)
    proc = ServerProcess(d, ["--auth", "--tls-cert", str(certs["server.pem"]), "--tls-key", str(certs["server.key"]),
                             "--tls-client-ca", str(certs["ca.pem"])]).start()
    proc.certs = certs
    proc.admin = (d / "admin.token").read_text().strip()
    yield proc
    proc.close()


def mtls_client(s, token: str) -> TaskhubClient:
    c = s.certs
    return s.client(token=token, tls_ca=str(c["ca.pem"]), tls_cert=str(c["client.pem"]), tls_key=str(c["client.key"]))


def new_token(s, role: str, namespaces=()) -> tuple[str, str]:
    resp = asvc.AuthServiceStub(mtls_client(s, s.admin).channel).CreateToken(
        apb.CreateTokenRequest(name=f"tls-{role}", role=role, namespaces=list(namespaces)), timeout=30)
    return resp.info.id, resp.token


def test_sdk_over_mutual_tls(tls_server):
    s = tls_server
    assert "security: auth on, TLS on (mutual)" in "\n".join(s.output)
    c = mtls_client(s, s.admin)
    task = c.create_task(argv=["sh", "-c", "echo over-tls"])
    assert c.wait(task.id).status == pb.TASK_STATUS_SUCCESS
    assert [line.text for line in c.trace(task.id)] == ["over-tls"]
    # No client certificate: the handshake fails. Plain text to a TLS port: no answer either.
    for bad in (TaskhubClient(s.grpc_target, token=s.admin, tls_ca=str(s.certs["ca.pem"]), timeout=5),
                TaskhubClient(s.grpc_target, token=s.admin, tls_ca="", timeout=5)):
        with pytest.raises(grpc.RpcError) as e:
            bad.get_task(task.id)
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE
        bad.close()


def test_https_gateway_with_client_certificate(tls_server):
    s = tls_server
    assert s.http_url.startswith("https://")
    ctx = ssl.create_default_context(cafile=str(s.certs["ca.pem"]))
    ctx.load_cert_chain(str(s.certs["client.pem"]), str(s.certs["client.key"]))
    req = urllib.request.Request(s.http_url + "/v1/tasks?namespace=*", headers={"Authorization": f"Bearer {s.admin}"})
    with urllib.request.urlopen(req, context=ctx, timeout=30) as resp:
        assert resp.status == 200 and "tasks" in json.loads(resp.read())
    req = urllib.request.Request(s.http_url + "/v1/tasks")
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, context=ctx, timeout=30)
    assert e.value.code == 401
    no_cert = ssl.create_default_context(cafile=str(s.certs["ca.pem"]))
    with pytest.raises((ssl.SSLError, urllib.error.URLError, ConnectionResetError)):
        urllib.request.urlopen(urllib.request.Request(s.http_url + "/v1/tasks"), context=no_cert, timeout=30)


def test_agent_over_mutual_tls_and_its_token_revoked(tls_server, tmp_path):
    s = tls_server
    c = s.certs
    tls = ["--tls-ca", str(c["ca.pem"]), "--tls-cert", str(c["client.pem"]), "--tls-key", str(c["client.key"])]
    token_id, node_token = new_token(s, "node")
    _, submitter = new_token(s, "submitter", ["default"])
    agents = []
    try:
        # A token that is not a node's is refused, and the agent says why and exits.
        wrong = AgentProcess(s.grpc_target, "wrong", tmp_path, "--token", submitter, *tls).start()
        agents.append(wrong)
        assert wrong.proc.wait(60) == 2
        assert any("refused by the server" in line and "node" in line for line in wrong.output), wrong.output

        agent = AgentProcess(s.grpc_target, "secure", tmp_path, "--token", node_token, "--label", "tls=1", *tls).start()
        agents.append(agent)
        agent.wait_registered()
        admin = mtls_client(s, s.admin)
        task = admin.create_task(make_spec(argv=["sh", "-c", "echo on-agent"], node_selector={"tls": "1"}))
        done = admin.wait(task.id)
        assert done.status == pb.TASK_STATUS_SUCCESS and done.node == "secure"

        # Revoked while connected: the server drops the agent at once; it stops.
        asvc.AuthServiceStub(admin.channel).RevokeToken(apb.RevokeTokenRequest(id=token_id), timeout=30)
        assert agent.proc.wait(60) == 2
        assert any(f"token {token_id} was revoked" in line for line in agent.output), agent.output
        from taskhub.v1 import node_service_pb2 as npb
        wait_for(lambda: admin.nodes.GetNode(npb.GetNodeRequest(name="secure"), timeout=10).state
                 == npb.NODE_STATE_OFFLINE, 30, what="the dropped agent to be offline")
    finally:
        for a in agents:
            a.close()


def test_standalone_gateway_dials_tls_and_serves_https(tmp_path):
    """`taskhub gateway --tls-ca` to a TLS server (no client CA), serving HTTPS itself."""
    import os
    import re
    import signal
    import sys
    certs = make_certs(tmp_path)
    s = ServerProcess(tmp_path, ["--auth", "--http-port", "-1", "--tls-cert", str(certs["server.pem"]),
                                 "--tls-key", str(certs["server.key"])]).start()
    gw = subprocess.Popen([sys.executable, "-m", "server.cli", "gateway", "--grpc", s.grpc_target, "--port", "0",
                           "--tls-ca", str(certs["ca.pem"]), "--tls-cert", str(certs["server.pem"]),
                           "--tls-key", str(certs["server.key"])], stdout=subprocess.PIPE, text=True,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        url = re.search(r"listening on (\S+)", gw.stdout.readline()).group(1)
        assert url.startswith("https://")
        admin = (tmp_path / "admin.token").read_text().strip()
        ctx = ssl.create_default_context(cafile=str(certs["ca.pem"]))
        req = urllib.request.Request(url + "/v1/tasks?namespace=*", headers={"Authorization": f"Bearer {admin}"})
        with urllib.request.urlopen(req, context=ctx, timeout=30) as resp:
            assert resp.status == 200
        with pytest.raises(urllib.error.HTTPError) as e:   # the server refuses a wrong token
            urllib.request.urlopen(urllib.request.Request(url + "/v1/tasks", headers={"Authorization": "Bearer x"}),
                                   context=ctx, timeout=30)
        assert e.value.code == 401
    finally:
        gw.send_signal(signal.SIGTERM)
        gw.wait(30)
        s.close()


def test_fate_job_under_auth_and_mutual_tls(tls_server):
    """Component tasks call back into a TLS server (the local node's tasks dial its private socket)
    with their own task tokens; the whole job succeeds."""
    s = tls_server
    stub = fsvc.FlowServiceStub(mtls_client(s, s.admin).channel)
    with_tables(stub)
    dsl, conf = two_party_job()
    job = stub.SubmitJob(fpb.SubmitJobRequest(dsl_json=dsl, conf_json=conf), timeout=30)
    done = wait_job(stub, job.job_id)
    assert done.status == fpb.FLOW_JOB_STATUS_SUCCESS, done.error


def test_fate_party_on_an_agent_over_mutual_tls(tls_server, tmp_path):
    """A party whose node is an agent of a mutual-TLS server: its component tasks dial the server
    with the agent's CA and client certificate, and their task tokens."""
    s = tls_server
    c = s.certs
    _, node_token = new_token(s, "node")
    agent = AgentProcess(s.grpc_target, "party-host", tmp_path, "--token", node_token, "--label", "fate.party=10000",
                         "--tls-ca", str(c["ca.pem"]), "--tls-cert", str(c["client.pem"]),
                         "--tls-key", str(c["client.key"])).start()
    try:
        agent.wait_registered()
        stub = fsvc.FlowServiceStub(mtls_client(s, s.admin).channel)
        with_tables(stub)
        dsl, conf = two_party_job()
        job = stub.SubmitJob(fpb.SubmitJobRequest(dsl_json=dsl, conf_json=conf), timeout=30)
        done = wait_job(stub, job.job_id, timeout=180)
        assert done.status == fpb.FLOW_JOB_STATUS_SUCCESS, done.error
        tasks = stub.ListFlowTasks(fpb.ListFlowTasksRequest(job_id=job.job_id), timeout=30).tasks
        assert {t.node for t in tasks if t.party.party_id == 10000} == {"party-host"}
    finally:
        agent.close()
