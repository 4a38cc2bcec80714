"""The end-to-end subset against a real `taskhub serve --db postgresql://...` (SQLite runs the whole
suite): core task semantics, restart recovery and auth, reusing the SQLite tests' own bodies."""
from __future__ import annotations

import subprocess
import sys

import grpc
import pytest

import test_auth
import test_recovery
from client import make_spec, status_name
from conftest import ServerProcess, rpc_code, wait_for


@pytest.fixture
def pg_factory(server_factory, pg_url):
    """server_factory whose servers keep their state in one fresh PostgreSQL database."""
    def make(*extra_args: str, db=None, start: bool = True) -> ServerProcess:
        return server_factory(*extra_args, db=db or pg_url, start=start)
    return make


def test_create_trace_wait_cancel_retry_delete(pg_factory):
    srv = pg_factory()
    c = srv.client()
    t = c.create_task(argv=["sh", "-c", "echo one; echo two"], request_id="req-1")
    assert c.create_task(argv=["sh", "-c", "echo one; echo two"], request_id="req-1").id == t.id
    assert [ln.text for ln in c.trace(t.id)] == ["one", "two"]
    assert status_name(c.wait(t.id).status) == "SUCCESS"
    failing = c.create_task(argv=["sh", "-c", "echo attempt; exit 3"], max_retries=1)
    ended = c.wait(failing.id)
    assert (status_name(ended.status), ended.retries, ended.exit_code) == ("FAILED", 1, 3)
    sleeper = c.create_task(argv=["sleep", "30"])
    wait_for(lambda: status_name(c.get_task(sleeper.id).status) == "RUNNING", what="running")
    c.cancel_task(sleeper.id)
    assert status_name(c.wait(sleeper.id).status) == "CANCELLED"
    batch = c.create_tasks([make_spec(argv=["echo", str(i)]) for i in range(50)])
    assert all(status_name(x.status) == "SUCCESS" for x in c.wait_tasks([b.id for b in batch]))
    listed = {x.id for x in c.list_tasks(limit=1000).tasks}
    assert {t.id, failing.id, sleeper.id} | {b.id for b in batch} <= listed
    c.delete_task(t.id)
    with pytest.raises(grpc.RpcError) as e:
        c.get_task(t.id)
    assert rpc_code(e) == grpc.StatusCode.NOT_FOUND
    # What was acknowledged is in the database: a second server on it sees the same tasks.
    srv.kill()
    again = pg_factory()
    assert status_name(again.client().get_task(failing.id).status) == "FAILED"
    with pytest.raises(grpc.RpcError) as e:  # the request id is remembered across servers, its task deleted
        again.client().create_task(argv=["true"], request_id="req-1")
    assert rpc_code(e) == grpc.StatusCode.FAILED_PRECONDITION


def test_sigkill_mid_run_restores_and_reruns(pg_factory, tmp_path):
    test_recovery.test_sigkill_mid_run_restores_and_reruns(pg_factory, tmp_path)


def test_sigterm_is_clean_and_keeps_tasks_for_restart(pg_factory):
    test_recovery.test_sigterm_is_clean_and_keeps_tasks_for_restart(pg_factory)


@pytest.fixture
def pg_authsrv(tmp_path, pg_url):
    proc = ServerProcess(tmp_path, ["--auth", "--admin-token-file", str(tmp_path / "admin.token")], db=pg_url).start()
    yield test_auth.AuthServer(proc)
    proc.close()


def test_auth_scopes_and_audit(pg_authsrv):
    test_auth.test_scoped_token_sees_only_its_namespaces(pg_authsrv)
    test_auth.test_refusals_are_in_the_audit_log_with_who_and_what(pg_authsrv)


def test_serve_refuses_a_db_it_cannot_use(tmp_path, pg_url):
    def serve(db: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "server.cli", "serve", "--db", db, "--grpc-port", "0",
                               "--http-port", "-1"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    done = serve("mysql://u@h/db")
    assert done.returncode != 0 and "mysql:// databases are not supported by this build" in done.stderr
    assert not (tmp_path / "mysql:").exists()  # never taken as a file path
    port = pg_url.rsplit(":", 1)[1].split("/")[0]
    done = serve(f"postgresql://postgres:secret@127.0.0.1:{port}/no_such_database")
    assert done.returncode != 0 and "cannot reach the PostgreSQL database" in done.stderr
    assert "secret" not in done.stderr
    import psycopg
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE taskhub_schema (version BIGINT NOT NULL)")
        conn.execute("INSERT INTO taskhub_schema VALUES (999)")
    done = serve(pg_url)
    assert done.returncode != 0 and "schema v999, newer than this taskhub" in done.stderr


def test_a_second_server_follows_taskhub_db_env_and_store_stats(tmp_path, pg_url):
    srv = ServerProcess(tmp_path, ["--no-local-node"], db=pg_url)
    srv.start()
    srv.client().create_task(argv=["true"])
    env = {"TASKHUB_DB": pg_url, "PATH": "/usr/bin:/bin", "PYTHONPATH": ":".join(sys.path)}

    def cli(*argv: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "server.cli", *argv], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=120)
    second = subprocess.Popen([sys.executable, "-m", "server.cli", "serve", "--grpc-port", "0", "--http-port", "-1",
                               "--no-local-node"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)  # --db from TASKHUB_DB
    try:
        said = next((line for line in second.stdout if "among the servers" in line), "")
        assert "a follower among the servers on postgresql://" in said  # welcome, not refused
    finally:
        second.terminate()
        second.wait(30)
    stats = cli("store", "stats")  # reads without owning
    assert stats.returncode == 0, stats.stderr
    assert '"tasks": 1' in stats.stdout and '"unfinished_tasks": 1' in stats.stdout
    srv.close()


def _try(call):
    try:
        return call()
    except grpc.RpcError as e:
        assert rpc_code(e) == grpc.StatusCode.UNAVAILABLE, e
        return None


def test_losing_the_database_answers_unavailable_and_service_resumes(tmp_path):
    """The database stops under a running server: calls say UNAVAILABLE and why, a status change
    made meanwhile is kept and committed once it is back, and the server carries on without a restart."""
    from bench.pgcluster import PgCluster
    with PgCluster(durable=False) as pg:
        url = pg.create_database("outage")
        srv = ServerProcess(tmp_path, ["--no-local-node"], db=url).start()
        c = srv.client()
        t = c.create_task(argv=["true"])
        pg.pause()
        with pytest.raises(grpc.RpcError) as e:
            c.list_tasks(limit=10)
        assert rpc_code(e) == grpc.StatusCode.UNAVAILABLE and "cannot be reached" in e.value.details()
        with pytest.raises(grpc.RpcError) as e:
            c.create_task(argv=["true"], request_id="during-outage")
        assert rpc_code(e) == grpc.StatusCode.UNAVAILABLE and "nothing was saved" in e.value.details()
        c.cancel_task(t.id)  # the change waits in the server for the database
        pg.resume()
        assert status_name(c.wait(t.id).status) == "CANCELLED"
        again = wait_for(lambda: _try(lambda: c.create_task(argv=["true"], request_id="during-outage")),
                         what="creates to work again")
        assert again.id > t.id and srv.proc.poll() is None
        srv.terminate()
        second = ServerProcess(tmp_path, ["--no-local-node"], db=url).start()
        assert status_name(second.client().get_task(t.id).status) == "CANCELLED"
        second.close()
        srv.close()


def test_fate_hetero_lr_trains_deploys_and_predicts(tmp_path, pg_url):
    """FATE's published hetero LR through fate-client's flow_sdk on a PostgreSQL server (metrics,
    summaries, models), then deployed and used by the published predict job: test_flow_models' test."""
    pytest.importorskip("flow_sdk.client")
    import test_flow_models as fm
    srv = ServerProcess(tmp_path, [], db=pg_url).start(timeout=180)
    try:
        fm.with_tables(fm.flow(srv))
        fc = fm.sdk(srv)
        dsl, conf = fm.published("hetero_lr_normal_dsl"), fm.published("hetero_lr_normal_conf")
        conf["component_parameters"]["common"]["hetero_lr_0"]["max_iter"] = 3
        answer = fc.job.submit(conf, dsl)
        assert answer["retcode"] == 0, answer
        assert fm.wait_status(fc, answer["jobId"], {"success", "failed", "canceled"}, timeout=300) == "success"
        # The job's success is read from memory; its model rows are committed just behind it (a race
        # of FlowModels._on_job_end, the same on SQLite): a 404 until then.
        deployed = wait_for(lambda: (lambda d: d if d["retcode"] != 404 else None)(
            fc.model.deploy(fm.MODEL_ID, answer["jobId"], cpn_list=fm.CPNS)), what="the trained model")
        assert deployed["retcode"] == 0, (deployed, srv.output[-30:])
        fm.test_train_deploy_predict_round_trip(srv, fc, answer["jobId"], deployed["data"]["model_version"])
    finally:
        srv.close()
