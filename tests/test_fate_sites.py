"""FATE across sites (issue 19): three taskhub servers on this machine, one per party, each with its
own database and directory, talking to each other over mutual TLS with certificates made here.
FATE's published hetero LR job (with a second host, holding other columns) is submitted with
flow_sdk at the guest's gateway only; each party's tables stay on its own server."""
from __future__ import annotations

import csv
import json
import os
import re
import socket
import struct
import zipfile
from pathlib import Path
from urllib.parse import urlparse

import grpc
import numpy as np
import pytest
from taskhub.v1 import flow_service_pb2 as fpb
from taskhub.v1 import flow_service_pb2_grpc as fgrpc
from taskhub.v1 import site_service_pb2 as spb
from taskhub.v1 import site_service_pb2_grpc as sgrpc

from conftest import ServerProcess, http, wait_for
from server.sites import certs
from flow_jobs import DATA, slow_job
from test_flow_sdk import job_status, wait_status

flow_sdk_client = pytest.importorskip("flow_sdk.client")

GUEST, HOST, HOST2 = 9999, 10000, 10001
TERMINAL = {"success", "failed", "canceled", "timeout"}
PARTY_TIMEOUT = 30   # a party's server silent this long fails the job (the last test waits it out)


# -- certificates (server/sites/certs.py: a CA and a certificate naming party-<id> for each party) -----
def party_cert(ca, party: int, d: Path, stem: str) -> tuple[Path, Path]:
    return tuple(map(Path, certs.party_cert(ca, party, str(d), stem)))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- three sites ----------------------------------------------------------------------------------
class Sites:
    def __init__(self, root: Path):
        self.root = root
        self.pki = root / "pki"
        self.pki.mkdir()
        self.ca = certs.make_ca("FATE parties test CA")
        certs.write_ca(self.ca, str(self.pki / "ca.pem"))
        self.ports = {p: free_port() for p in (GUEST, HOST, HOST2)}
        self.servers: dict[int, ServerProcess] = {}
        self.dirs: dict[int, Path] = {}
        for party in self.ports:
            certs.party_cert(self.ca, party, str(self.pki))

    def route_table(self, party: int) -> Path:
        path = self.pki / f"route_table_{party}.json"
        table = certs.route_table({p: ("127.0.0.1", port) for p, port in self.ports.items()}, party)
        table["permission"]["default_allow"] = party != HOST   # both: only the parties of the table get in
        path.write_text(json.dumps(table, indent=1))
        return path

    def start(self, party: int) -> ServerProcess:
        d = self.dirs.setdefault(party, self.root / f"party-{party}")
        d.mkdir(exist_ok=True)
        s = ServerProcess(d, ["--fate-party-id", str(party), "--fate-route-table", str(self.route_table(party)),
                              "--fate-party-timeout", str(PARTY_TIMEOUT), "--python-workers", "1", "--slots", "8",
                              "--flow-max-jobs", "1" if party == HOST2 else "4"])
        self.servers[party] = s.start()
        return s

    def sdk(self, party: int):
        url = urlparse(self.servers[party].http_url)
        return flow_sdk_client.FlowClient(url.hostname, url.port, "v1")

    def close(self) -> None:
        for s in self.servers.values():
            s.close()


@pytest.fixture(scope="module")
def sites(tmp_path_factory):
    s = Sites(tmp_path_factory.mktemp("sites"))
    try:
        for party in (GUEST, HOST, HOST2):
            s.start(party)
        yield s
    finally:
        s.close()


def wait_end(fc, job_id: str, timeout: float = 300) -> str:
    return wait_status(fc, job_id, TERMINAL, timeout)


# -- the data: guest columns, and the host's 20 columns split between the two hosts -----------------
def read_csv(name: str) -> tuple[list[str], list[list[str]]]:
    with open(os.path.join(DATA, f"{name}.csv"), newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], rows[1:]


def split_host(d: Path) -> dict[int, Path]:
    head, rows = read_csv("breast_hetero_host")
    out = {}
    for party, cols in ((HOST, range(1, 11)), (HOST2, range(11, 21))):
        path = d / f"host_{party}.csv"
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow([head[0]] + [head[c] for c in cols])
            w.writerows([r[0]] + [r[c] for c in cols] for r in rows)
        out[party] = path
    return out


def lr_job() -> tuple[dict, dict]:
    """hetero_lr_normal as published, with a second host (other columns), few iterations, a small Paillier key, weight_diff early stopping (as FATE's multi-host example) and no
    shuffling (so the result does not depend on the run)."""
    with open(os.path.join(DATA, "hetero_lr_normal_dsl.json")) as f:
        dsl = json.load(f)
    with open(os.path.join(DATA, "hetero_lr_normal_conf.json")) as f:
        conf = json.load(f)
    conf["role"]["host"] = [HOST, HOST2]
    by_host = conf["component_parameters"]["role"]["host"]
    by_host["1"] = json.loads(json.dumps(by_host["0"]))
    by_host["0"]["reader_0"]["table"] = {"namespace": "experiment", "name": f"host_{HOST}"}
    by_host["1"]["reader_0"]["table"] = {"namespace": "experiment", "name": f"host_{HOST2}"}
    common = conf["component_parameters"]["common"]
    common["hetero_lr_0"].update(max_iter=5, shuffle=False, early_stop="weight_diff", encrypt_param={"key_length": 512})
    return dsl, conf


def reference_auc(dsl: dict, conf: dict, host_files: dict[int, Path]) -> float:
    """The same job on one process (every party in its own thread): what a single server computes."""
    from server.flow.standalone import MemoryTable, run_job
    tables = {("experiment", "breast_hetero_guest"): MemoryTable.from_csv(
        os.path.join(DATA, "breast_hetero_guest.csv"), "experiment", "breast_hetero_guest")}
    for party, path in host_files.items():
        tables[("experiment", f"host_{party}")] = MemoryTable.from_csv(str(path), "experiment", f"host_{party}")
    job = run_job(dsl, conf, tables)
    return job.outputs["evaluation_0"][("guest", 0)].summary["hetero_lr_0"]["train"]["auc"]


@pytest.fixture(scope="module")
def lr_done(sites, tmp_path_factory):
    host_files = split_host(tmp_path_factory.mktemp("hostdata"))
    uploads = {GUEST: os.path.join(DATA, "breast_hetero_guest.csv"), HOST: host_files[HOST], HOST2: host_files[HOST2]}
    names = {GUEST: "breast_hetero_guest", HOST: f"host_{HOST}", HOST2: f"host_{HOST2}"}
    for party, path in uploads.items():   # each party uploads its own table to its own server
        answer = sites.sdk(party).data.upload({"file": str(path), "head": 1, "partition": 4,
                                               "namespace": "experiment", "table_name": names[party]}, drop=1)
        assert answer["retcode"] == 0, answer
    dsl, conf = lr_job()
    guest = sites.sdk(GUEST)
    answer = guest.job.submit(conf, dsl)
    assert answer["retcode"] == 0, answer
    job_id = answer["jobId"]
    status = wait_end(guest, job_id)
    assert status == "success", (guest.job.query(job_id=job_id)["data"][0].get("f_error") or guest.job.query(job_id=job_id)["data"][0], [(t["f_component_name"], t["f_role"], t["f_party_id"], t["f_status"]) for t in guest.task.query(job_id=job_id)["data"]])
    return job_id, dsl, conf, host_files, answer["data"]["model_info"]["model_id"]


def test_hetero_lr_across_three_sites_has_the_single_server_auc(sites, lr_done):
    job_id, dsl, conf, host_files, _ = lr_done
    guest = sites.sdk(GUEST)
    metrics = guest.component.metric_all(job_id=job_id, role="guest", party_id=GUEST, component_name="evaluation_0")
    assert metrics["retcode"] == 0, metrics
    auc = dict(map(tuple, metrics["data"]["train"]["hetero_lr_0"]["data"]))["auc"]
    assert auc > 0.9
    assert auc == pytest.approx(reference_auc(dsl, conf, host_files), abs=1e-6)
    # The initiator knows every party's tasks; each party's server has its own party's only.
    tasks = guest.task.query(job_id=job_id)["data"]
    assert {(t["f_role"], int(t["f_party_id"])) for t in tasks} == {
        ("guest", GUEST), ("host", HOST), ("host", HOST2), ("arbiter", HOST)}
    assert all(t["f_status"] in ("success", "pass") for t in tasks), tasks
    for party, roles in ((HOST, {("host", HOST), ("arbiter", HOST)}), (HOST2, {("host", HOST2)})):
        fc = sites.sdk(party)
        assert wait_end(fc, job_id) == "success"   # the initiator's EndJob reaches it after its own end
        own = fc.task.query(job_id=job_id)["data"]
        assert {(t["f_role"], int(t["f_party_id"])) for t in own} == roles
        model = fc.component.output_model(job_id=job_id, role="host", party_id=party, component_name="hetero_lr_0")
        assert model["retcode"] == 0 and model["data"], model
    # Rerun is not carried across sites (yet): refused with the reason, nothing changes.
    rerun = json.loads(http("POST", sites.servers[GUEST].http_url + "/v1/job/rerun", {"job_id": job_id}).body)
    assert rerun["retcode"] != 0 and "across sites" in rerun["retmsg"], rerun
    # A party's server answers for its own party only: the guest's model is not on a host's server.
    assert sites.sdk(HOST).component.output_model(job_id=job_id, role="guest", party_id=GUEST,
                                                  component_name="hetero_lr_0")["retcode"] != 0


def _needles(rows: list[list[str]], others: list[list[str]]) -> tuple[set[bytes], set[bytes]]:
    """A table's feature values (not ids) that no other party's table holds: as text and as doubles.
    As text only the negative ones: a party's evaluation curves are points rounded to 6 decimals in
    [0, 1], as the data's values are, and some coincide (no curve point is negative)."""
    taken = {v for r in others for v in r[1:]}
    values = {v for r in rows for v in r[1:] if len(v) >= 6 and v not in taken}
    return {v.encode() for v in values if v.startswith("-")}, {struct.pack("<d", float(v)) for v in values} | {
        struct.pack(">d", float(v)) for v in values}


NUMBER = re.compile(rb"-?\d+\.\d+(?:[eE][-+]?\d+)?")   # whole numbers in text: 0.42 is not found in -0.42


def packed_found(blob: bytes, needles: set[bytes]) -> list[str]:
    """The 8-byte needles found anywhere in blob (at any offset), as hex."""
    want = np.frombuffer(b"".join(sorted(needles)), dtype=np.uint64)
    found = set()
    for offset in range(8):
        words = np.frombuffer(blob, dtype=np.uint64, offset=offset, count=(len(blob) - offset) // 8)
        found.update(words[np.isin(words, want)].tolist())
    return [int(w).to_bytes(8, "little").hex() for w in found]


def _scan(root: Path, extra: list[str]) -> bytes:
    chunks = ["\n".join(extra).encode()]
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            try:
                chunks.append(path.read_bytes())
            except OSError:
                pass
    return b"\0".join(chunks)


def test_no_party_s_feature_values_reach_another_party_s_server(sites, lr_done):
    _, _, _, host_files, _ = lr_done
    tables = {GUEST: read_csv("breast_hetero_guest")[1]}
    for party, path in host_files.items():
        with open(path, newline="") as f:
            tables[party] = list(csv.reader(f))[1:]
    blobs = {p: _scan(sites.dirs[p], sites.servers[p].output) for p in tables}
    numbers = {p: set(NUMBER.findall(b)) for p, b in blobs.items()}
    for owner, rows in tables.items():
        text, packed = _needles(rows, [r for p, t in tables.items() if p != owner for r in t])
        assert len(text) > 100 and text & numbers[owner]   # the check sees a party's values on its own server
        for other in tables:
            if other != owner:
                leaked = sorted(text & numbers[other]) + packed_found(blobs[other], packed)
                assert not leaked, f"party {owner}'s values on party {other}'s server: {leaked[:5]}"


def submit_until_running(sites, dsl: dict, conf: dict, party: int) -> tuple[object, str]:
    """(the guest's client, job id) of a job submitted at the guest, once its task runs on `party`'s server."""
    guest, there = sites.sdk(GUEST), sites.sdk(party)
    answer = guest.job.submit(conf, dsl)
    assert answer["retcode"] == 0, answer
    job_id = answer["jobId"]
    wait_for(lambda: any(t["f_status"] == "running" for t in there.task.query(job_id=job_id).get("data") or []),
             timeout=120, what=f"the task to run on party {party}'s server")
    return guest, job_id


def test_stop_at_the_guest_ends_the_tasks_on_every_server(sites):
    guest, job_id = submit_until_running(sites, *slow_job(120), HOST)
    host = sites.sdk(HOST)
    assert guest.job.stop(job_id)["retcode"] == 0
    assert wait_end(guest, job_id) == "canceled"
    assert wait_end(host, job_id) == "canceled"
    wait_for(lambda: all(t["f_status"] == "canceled" for t in host.task.query(job_id=job_id)["data"]),
             timeout=60, what="the host's tasks to be cancelled")


def _site_call(sites, party: int, cert: tuple[Path, Path] | None, ca: bytes | None = None, rpc=None):
    target = f"127.0.0.1:{sites.ports[party]}"
    creds = grpc.ssl_channel_credentials(
        root_certificates=ca or (sites.pki / "ca.pem").read_bytes(),
        private_key=cert[1].read_bytes() if cert else None, certificate_chain=cert[0].read_bytes() if cert else None)
    with grpc.secure_channel(target, creds, options=[("grpc.ssl_target_name_override", f"party-{party}")]) as ch:
        if rpc is not None:
            return rpc(ch)
        sgrpc.SiteServiceStub(ch).OfferJob(spb.OfferJobRequest(job_id="1", dsl_json="{}", conf_json="{}"), timeout=20)


def test_unknown_party_or_no_valid_certificate_is_refused(sites, tmp_path):
    unknown = party_cert(sites.ca, 77777, tmp_path, "unknown")
    with pytest.raises(grpc.RpcError) as e:
        _site_call(sites, HOST, unknown)
    assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED and "names no party" in e.value.details()
    with pytest.raises(grpc.RpcError) as e:      # no client certificate: the handshake fails
        _site_call(sites, HOST, None)
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    rogue = certs.make_ca("another CA")
    forged = party_cert(rogue, GUEST, tmp_path, "forged")   # names the guest, signed by a CA not trusted
    with pytest.raises(grpc.RpcError) as e:
        _site_call(sites, HOST, forged)
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    # A known party's own certificate gets through to the checks of what it may do...
    peer = (sites.pki / f"party-{HOST2}.pem", sites.pki / f"party-{HOST2}.key")
    with pytest.raises(grpc.RpcError) as e:
        _site_call(sites, HOST, peer)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    # ...and to nothing but the SiteService: the site port serves no tables, tasks or jobs.
    with pytest.raises(grpc.RpcError) as e:
        _site_call(sites, HOST, peer, rpc=lambda ch: fgrpc.FlowServiceStub(ch).ListJobs(fpb.ListJobsRequest(),
                                                                                        timeout=20))
    assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED


def predict_conf(train_conf: dict, model_id: str, version: str) -> dict:
    """A predict job's conf alone (the deployed predict DSL runs), on each party's own table."""
    return {"dsl_version": 2, "initiator": train_conf["initiator"], "role": train_conf["role"],
            "job_parameters": {"common": {"job_type": "predict", "model_id": model_id, "model_version": version}},
            "component_parameters": {"role": {
                "guest": {"0": {"reader_0": {"table": {"namespace": "experiment", "name": "breast_hetero_guest"}}}},
                "host": {"0": {"reader_0": {"table": {"namespace": "experiment", "name": f"host_{HOST}"}}},
                         "1": {"reader_0": {"table": {"namespace": "experiment", "name": f"host_{HOST2}"}}}}}}}


def test_deploy_and_predict_at_the_guest_run_each_party_s_part_on_its_server(sites, lr_done):
    job_id, _, train_conf, _, model_id = lr_done
    guest = sites.sdk(GUEST)
    answer = guest.model.deploy(model_id, job_id, cpn_list=["reader_0", "data_transform_0", "intersection_0",
                                                            "hetero_lr_0"])
    assert answer["retcode"] == 0, answer
    version = answer["data"]["model_version"]
    conf = predict_conf(train_conf, model_id, version)
    answer = guest.job.submit(conf)    # the conf alone: the deployed predict DSL runs
    assert answer["retcode"] == 0, answer
    predict_id = answer["jobId"]
    assert wait_end(guest, predict_id) == "success", _error(guest, predict_id)
    for party in (HOST, HOST2):   # the hosts' parts ran on the hosts' servers, with their own model parts
        own = sites.sdk(party).task.query(job_id=predict_id, role="host", component_name="hetero_lr_0")["data"]
        assert [(t["f_role"], int(t["f_party_id"]), t["f_status"]) for t in own] == [("host", party, "success")]
    out = guest.component.output_data_table(job_id=predict_id, role="guest", party_id=GUEST,
                                            component_name="hetero_lr_0")
    assert out["retcode"] == 0, out
    info = guest.table.info(namespace=out["data"][0]["table_namespace"], table_name=out["data"][0]["table_name"])
    assert info["data"]["count"] == 569, info


def _unzipped(path: str) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as z:
        return {n: z.read(n) for n in z.namelist()}


def test_models_export_import_and_tags_stay_with_each_party(sites, lr_done, tmp_path):
    """As in FATE, a party's model part lives on its own server: export and import are per party, at that
    party's server (the initiator's archive names the other parts); tags are each server's own."""
    job_id, _, train_conf, host_files, model_id = lr_done
    guest = sites.sdk(GUEST)
    answer = guest.model.deploy(model_id, job_id, cpn_list=["reader_0", "data_transform_0", "intersection_0",
                                                            "hetero_lr_0"])
    assert answer["retcode"] == 0, answer
    assert {r: sorted(map(int, ids)) for r, ids in answer["data"].items() if r in ("guest", "host", "arbiter")} == {
        "guest": [GUEST], "host": [HOST, HOST2], "arbiter": [HOST]}, answer   # FATE's per-party report
    version = answer["data"]["model_version"]
    parts = {GUEST: [("guest", GUEST)], HOST: [("host", HOST), ("arbiter", HOST)], HOST2: [("host", HOST2)]}
    for party, own in parts.items():   # each server lists its own parts only
        rows = sites.sdk(party).model.get_model_info(model_id=model_id, model_version=version)["data"]
        assert sorted((r["f_role"], int(r["f_party_id"])) for r in rows) == sorted(own), rows

    archives: dict[tuple[str, int], str] = {}
    for party, own in parts.items():
        for role, pid in own:
            out = sites.sdk(party).model.export_model({"model_id": model_id, "model_version": version, "role": role,
                                                       "party_id": pid, "output_path": str(tmp_path / str(party))})
            assert out["retcode"] == 0, out
            archives[(role, pid)] = out["file"]
    files = _unzipped(archives[("guest", GUEST)])
    manifest = json.loads(files["manifest.json"])
    assert sorted((p["role"], p["party_id"]) for p in manifest["other_parts"]) == [
        ("arbiter", HOST), ("host", HOST), ("host", HOST2)]
    assert "components/hetero_lr_0.json" in files
    refused = guest.model.export_model({"model_id": model_id, "model_version": version, "role": "host",
                                        "party_id": HOST, "output_path": str(tmp_path)})
    assert refused["retcode"] != 0 and f"party {HOST}'s own server" in refused["retmsg"], refused
    # No archive carries another party's feature values (the archive's files, unpacked).
    tables = {GUEST: read_csv("breast_hetero_guest")[1]}
    for party, path in host_files.items():
        with open(path, newline="") as f:
            tables[party] = list(csv.reader(f))[1:]
    for (role, holder), path in archives.items():
        blob = b"\0".join(_unzipped(path).values())
        for owner, rows in tables.items():
            if owner != holder:
                text, packed = _needles(rows, [r for p, t in tables.items() if p != owner for r in t])
                leaked = sorted(text & set(NUMBER.findall(blob))) + packed_found(blob, packed)
                assert not leaked, f"party {owner}'s values in the {role} {holder} archive: {leaked[:5]}"

    # Each server drops the version, then imports its own parts back from the archives.
    for party in parts:
        with grpc.insecure_channel(sites.servers[party].grpc_target) as ch:
            fgrpc.FlowServiceStub(ch).DeleteModel(fpb.ModelRef(model_id=model_id, model_version=version), timeout=60)
    wrong = guest.model.import_model({"model_id": model_id, "model_version": version, "role": "host",
                                      "party_id": HOST, "file": archives[("host", HOST)]})
    assert wrong["retcode"] != 0 and f"import it at party {HOST}'s server" in wrong["retmsg"], wrong
    for (role, pid), path in archives.items():
        back = sites.sdk(pid).model.import_model({"model_id": model_id, "model_version": version, "role": role,
                                                  "party_id": pid, "file": path})
        assert back["retcode"] == 0, back
    conf = predict_conf(train_conf, model_id, version)
    answer = guest.job.submit(conf)     # the imported parts predict across the sites
    assert answer["retcode"] == 0, answer
    assert wait_end(guest, answer["jobId"]) == "success", _error(guest, answer["jobId"])

    # Tags: a server tags the parts it keeps; another party's server has its own tags.
    assert guest.model.tag_model(version, "production")["retcode"] == 0
    assert [t["name"] for t in guest.model.tag_list(version)["data"]["tags"]] == ["production"]
    tagged = guest.tag.query("production", with_model=True)["data"]["models"]
    assert [(m["role"], int(m["party_id"])) for m in tagged] == [("guest", GUEST)]
    host = sites.sdk(HOST)
    assert host.model.tag_list(version)["data"]["tags"] == []
    assert host.model.tag_model(version, "host-approved")["retcode"] == 0
    tagged = host.tag.query("host-approved", with_model=True)["data"]["models"]
    assert sorted((m["role"], int(m["party_id"])) for m in tagged) == [("arbiter", HOST), ("host", HOST)]
    assert guest.tag.query("host-approved", with_model=True)["retcode"] != 0


def _job_with_host2(seconds: float) -> tuple[dict, dict]:
    dsl, conf = slow_job(seconds)
    conf["role"]["host"] = [HOST2]
    return dsl, conf


def _error(fc, job_id: str) -> str:
    rows = fc.job.query(job_id=job_id)["data"]
    return (rows[0].get("f_error") or "") if rows else ""


def test_a_party_queues_the_jobs_it_did_not_initiate_within_its_max_jobs(sites):
    """HOST2 runs --flow-max-jobs 1: a second job offered to it waits in its queue (its initiator's own
    part runs meanwhile) and starts there when the first ends."""
    guest, first = submit_until_running(sites, *_job_with_host2(600), HOST2)
    host2 = sites.sdk(HOST2)
    answer = guest.job.submit(*reversed(_job_with_host2(0.5)))
    assert answer["retcode"] == 0, answer
    second = answer["jobId"]
    wait_for(lambda: any(t["f_role"] == "guest" and t["f_status"] == "success"
                         for t in guest.task.query(job_id=second).get("data") or []),
             timeout=120, what="the second job's guest part to end")
    wait_for(lambda: host2.job.query(job_id=second).get("data"), timeout=60, what="the offer at party 10001")
    assert job_status(host2, second) == "waiting"
    assert [t["f_status"] for t in host2.task.query(job_id=second)["data"]] == ["waiting"]
    assert job_status(guest, second) == "running"
    assert guest.job.stop(first)["retcode"] == 0
    assert wait_end(guest, second) == "success", _error(guest, second)
    assert wait_end(host2, second) == "success"


def test_a_host_server_killed_mid_job_resumes_its_part_after_restart(sites):
    """Specified: the host's interrupted task runs again within the job's auto_retries once its server is
    back (without retries left it fails, and so does the job, with that reason)."""
    dsl, conf = _job_with_host2(3)
    conf["job_parameters"] = {"common": {"auto_retries": 1}}
    guest, job_id = submit_until_running(sites, dsl, conf, HOST2)
    sites.servers[HOST2].kill()
    sites.start(HOST2)
    assert wait_end(guest, job_id) == "success", _error(guest, job_id)
    host_task = sites.sdk(HOST2).task.query(job_id=job_id)["data"][0]
    assert host_task["f_status"] == "success"


def test_the_guest_server_killed_mid_job_drives_it_on_after_restart(sites):
    """The initiator restarted: it offers the job and starts the other parties' components again (they ignore
    what they already have), hears their reports (resent while it was down), and the job ends well."""
    dsl, conf = _job_with_host2(3)
    conf["job_parameters"] = {"common": {"auto_retries": 1}}
    _, job_id = submit_until_running(sites, dsl, conf, HOST2)
    host2 = sites.sdk(HOST2)
    sites.servers[GUEST].kill()
    sites.start(GUEST)
    guest = sites.sdk(GUEST)
    assert wait_end(guest, job_id) == "success", _error(guest, job_id)
    assert {t["f_status"] for t in guest.task.query(job_id=job_id)["data"]} == {"success"}
    assert wait_end(host2, job_id) == "success"


def test_a_party_down_holds_the_job_with_its_reason_and_it_resumes_when_back(sites, lr_done):
    guest = sites.sdk(GUEST)
    sites.servers[HOST2].terminate()
    # A deploy answers once every party deployed its part, or says which did not (FATE's per-party report).
    train_id, model_id = lr_done[0], lr_done[4]
    failed = guest.model.deploy(model_id, train_id, cpn_list=["reader_0", "data_transform_0", "intersection_0",
                                                              "hetero_lr_0"])
    assert failed["retcode"] == 101 and f"party {HOST2}" in failed["retmsg"], failed
    assert failed["data"]["host"] == {str(HOST): 0, str(HOST2): 100}, failed
    dsl, conf = _job_with_host2(0.5)
    answer = guest.job.submit(conf, dsl)
    assert answer["retcode"] == 0, answer
    job_id = answer["jobId"]
    wait_for(lambda: f"waiting for party {HOST2}" in _error(guest, job_id), timeout=60, what="the waiting reason")
    assert job_status(guest, job_id) not in TERMINAL
    sites.start(HOST2)   # the same database: the offer is resent, and the job goes on
    assert wait_end(guest, job_id) == "success", _error(guest, job_id)
    assert _error(guest, job_id) == ""
    assert wait_end(sites.sdk(HOST2), job_id) == "success"


def test_messages_acknowledged_to_the_sender_survive_its_server_s_restart(sites):
    """The guest's Probe sends 40 small objects to HOST2 while HOST2 is down: each is acknowledged once
    committed on the guest's server, and the guest's task ends. That server is killed and started
    again before HOST2 comes back: HOST2's task can only receive them from the guest's store."""
    sites.servers[HOST2].terminate()
    guest = sites.sdk(GUEST)
    dsl, conf = _job_with_host2(0)
    conf["component_parameters"]["common"]["probe_0"].update(federation_messages=40, federation_bytes=100)
    answer = guest.job.submit(conf, dsl)
    assert answer["retcode"] == 0, answer
    job_id = answer["jobId"]
    wait_for(lambda: any(t["f_role"] == "guest" and t["f_status"] == "success"
                         for t in guest.task.query(job_id=job_id).get("data") or []),
             timeout=120, what="the guest's part to have sent everything")
    sites.servers[GUEST].kill()
    sites.start(GUEST)
    sites.start(HOST2)
    guest = sites.sdk(GUEST)
    assert wait_end(guest, job_id) == "success", _error(guest, job_id)
    out = sites.sdk(HOST2).component.output_model(job_id=job_id, role="host", party_id=HOST2,
                                                  component_name="probe_0")
    assert out["retcode"] == 0, out
    summary = sites.sdk(HOST2).component.get_summary(job_id=job_id, role="host", party_id=HOST2,
                                                     component_name="probe_0")
    assert summary["data"]["federation"]["messages"] == 40, summary


def test_a_party_server_gone_mid_task_fails_the_job_naming_it_after_the_party_timeout(sites):
    """Nothing waits on the host's messages here (a long Probe): the guest's server notices the host's is
    gone by asking it now and then, says so while it waits, and fails the job after --fate-party-timeout."""
    guest, job_id = submit_until_running(sites, *_job_with_host2(600), HOST2)
    sites.servers[HOST2].terminate()
    wait_for(lambda: f"waiting for party {HOST2}" in _error(guest, job_id), timeout=120, what="the waiting reason")
    assert wait_end(guest, job_id, PARTY_TIMEOUT + 120) == "failed"
    error = _error(guest, job_id)
    assert f"party {HOST2}" in error and f"127.0.0.1:{sites.ports[HOST2]}" in error, error


def test_route_tables_are_checked_before_anything_listens(tmp_path):
    from server.sites.routes import RouteError, parse
    loop = {"route_table": {"9999": {"default": [{"ip": "127.0.0.1", "port": 9371}]},
                            "10000": {"default": [{"ip": "127.0.0.1", "port": 9372}]}}}
    table = parse(json.dumps(loop), 9999)          # no TLS anywhere: plaintext, on loopback only
    assert table.listen.port == 9371 and table.route(10000).tls is None and table.is_local(9999)
    with pytest.raises(RouteError, match="10001 has no route"):
        table.route(10001)
    off = json.loads(json.dumps(loop))
    off["route_table"]["10000"]["default"][0]["ip"] = "10.1.2.3"
    with pytest.raises(RouteError, match="mutual TLS is required"):
        parse(json.dumps(off), 9999)
    off["tls"] = {"cert": "a.pem", "key": "a.key", "ca": "ca.pem"}
    assert parse(json.dumps(off), 9999, str(tmp_path)).route(10000).tls.ca == str(tmp_path / "ca.pem")
    with pytest.raises(RouteError, match="no entry for this server's own party 10001"):
        parse(json.dumps(loop), 10001)
    # permission: rollsite's default_allow only opens its "default" exchange route, which has no place here:
    # either way only the parties with an entry are accepted (HOST's table in `sites` says false).
    assert parse(json.dumps({**loop, "permission": {"default_allow": False}}), 9999).default_allow is False
    hop = {"default": [{"ip": "127.0.0.1", "port": 9373}]}
    for table, key in (({**loop, "route_table": {**loop["route_table"], "default": hop}}, "route_table['default']"),
                       ({**loop, "permission": {"default_allow": False, "allow": [10000]}}, "permission.allow"),
                       ({**loop, "permission": {"default_allow": "no"}}, "permission.default_allow")):
        with pytest.raises(RouteError, match=re.escape(key)):
            parse(json.dumps(table), 9999)
    for bad, why in (("{", "not JSON"), ('{"route_table": {"x": {}}}', "must be a number"),
                     ('{"route_table": {"1": {"default": [{"ip": "h", "port": 0}]}}}', "between 1 and 65535")):
        with pytest.raises(RouteError, match=why):
            parse(bad, 1)
