"""The store's contract, one suite run against every backend (SQLite file, real PostgreSQL).

Each test opens a store on a fresh database, starts its writer on the test's event loop, and checks
what the domain relies on: what a committed batch holds, what a failed one leaves (nothing), reads.
"""
from __future__ import annotations

import asyncio
import json
import sqlite3

import psycopg
import pytest

from bench.pgcluster import free_port
from conftest import wait_for
from server.auth_store import AuditRecord, AuthStore, TokenRecord
from server.errors import Unavailable
from server.flow.store import FlowStore
from server.model import Status, Task, TaskSpec, TaskType
from server.db_target import parse_db_target
from server.storage import StoreError, open_store
from server.storage import sqlite as sqlite_backend


def run(db_url: str, body):
    """Open the store, run `await body(store)` with its writer started, close it."""
    store = open_store(db_url)

    async def main():
        store.writer.start(asyncio.get_running_loop())
        try:
            return await body(store)
        finally:
            await asyncio.get_running_loop().run_in_executor(None, store.close)
    return asyncio.run(main())


def spec(name: str = "t", namespace: str = "default") -> TaskSpec:
    return TaskSpec(type=TaskType.COMMAND, namespace=namespace, name=name, argv=["true"])


async def create(store, specs, request_key: str = "") -> list[Task]:
    tasks = [Task(i, s) for i, s in zip(store.next_task_ids(len(specs)), specs)]
    async with store.batch() as b:
        b.insert_tasks(tasks, request_key)
    return tasks


def test_tasks_are_read_back_as_written(db_url):
    async def body(store):
        a, b, c = await create(store, [spec("alpha"), spec("beta", "team"), spec("gamma")], "default\0req-1")
        assert [a.id, b.id, c.id] == sorted({a.id, b.id, c.id})
        c.move(Status.SCHEDULING), c.move(Status.CANCELLED)
        async with store.batch() as batch:
            batch.update_tasks([(c.id, c.mutable_row())])
        got = store.get_task(b.id)
        assert (got.uid, got.namespace, got.spec.name, got.status) == (b.uid, "team", "beta", Status.NEW)
        assert store.get_task_by_uid(a.uid).id == a.id and store.get_task(10**9) is None
        assert [t.id for t in store.list_tasks(None, [], 10, 10**9)] == [c.id, b.id, a.id]
        assert [t.id for t in store.list_tasks("team", [], 10, 10**9)] == [b.id]
        assert [t.id for t in store.list_tasks(None, [int(Status.CANCELLED)], 10, 10**9)] == [c.id]
        assert [t.id for t in store.list_tasks(None, [], 10, c.id, name_contains="ph")] == [a.id]
        assert [t.id for t in store.list_tasks(None, [], 1, 10**9)] == [c.id]
        assert [t.id for t in store.queued_tasks(None, 10)] == [a.id, b.id] and store.count_unfinished() == 2
        assert [t.id for t in store.tasks_by_ids([c.id, 10**9, a.id])] == [c.id, a.id]
        assert store.created_by_request("default\0req-1", 0) == [a.id, b.id, c.id]
        assert store.created_by_request("default\0req-1", a.create_time_ms + 1) is None  # outside the window
        assert store.created_by_request("default\0other", 0) is None
    run(db_url, body)


def test_the_queue_is_read_in_windows_in_scheduling_order(db_url):
    """Higher priority first, then lower id; a window starts after the last task of the one before;
    placed tasks are active, not queued; finished ones are neither."""
    def prio(p: int) -> TaskSpec:
        s = spec(f"p{p}")
        s.priority = p
        return s

    async def body(store):
        tasks = await create(store, [prio(p) for p in (0, 5, 0, -1, 5, 0, 9)])
        placed, done = tasks[2], tasks[5]
        placed.move(Status.SCHEDULING), placed.move(Status.SCHEDULED), placed.move(Status.QUEUED)
        done.move(Status.SCHEDULING), done.move(Status.CANCELLED)
        tasks[0].move(Status.PENDING)  # parked: still in the queue
        async with store.batch() as b:
            b.update_tasks([(t.id, t.mutable_row()) for t in (placed, done, tasks[0])])
        order = [tasks[i].id for i in (6, 1, 4, 0, 3)]
        assert [t.id for t in store.queued_tasks(None, 100)] == order
        assert [t.status for t in store.queued_tasks(None, 100)][3] == Status.PENDING
        got, after = [], None
        while batch := store.queued_tasks(after, 2):  # windows of 2, each after the last one read
            got += [t.id for t in batch]
            after = (batch[-1].spec.priority, batch[-1].id)
        assert got == order
        assert [t.id for t in store.queued_tasks((5, tasks[4].id), 10)] == order[3:]
        assert [t.id for t in store.active_tasks()] == [placed.id]
        assert store.count_unfinished() == 6
    run(db_url, body)


def test_status_changes_in_one_round_coalesce_and_the_last_wins(db_url):
    async def body(store):
        [t] = await create(store, [spec()])
        for status in (Status.SCHEDULING, Status.SCHEDULED, Status.RUNNING):
            t.move(status)
            store.batch().update_tasks([(t.id, t.mutable_row())])  # not submitted: must change nothing
            with store.batch() as b:  # fire and forget
                b.update_tasks([(t.id, t.mutable_row())])
        t.progress = 40
        async with store.batch() as b:
            b.update_tasks([(t.id, t.mutable_row())])
        got = store.get_task(t.id)
        assert (got.status, got.progress) == (Status.RUNNING, 40)
    run(db_url, body)


def test_a_failed_batch_saves_nothing_and_says_why(db_url):
    async def body(store):
        [t] = await create(store, [spec()])
        fresh = Task(store.next_task_ids(1)[0], spec("fresh"))
        b = store.batch()
        b.insert_tasks([fresh])
        b.put_kv_if_absent("k", "v")
        b.insert_tasks([Task(t.id, spec("duplicate id"))])  # refused: the whole batch rolls back
        with pytest.raises(Unavailable, match="nothing was saved"):
            await b.submit(wait=True)
        assert store.get_task(fresh.id) is None and store.get_kv("k") is None
        async with store.batch() as ok:  # the writer goes on
            ok.put_kv_if_absent("k", "v")
        assert store.get_kv("k") == "v"
    run(db_url, body)


def test_logs_keep_each_line_once_with_their_cursor(db_url):
    async def body(store):
        [t, other] = await create(store, [spec(), spec()])
        committed = []
        store.writer.on_logs_committed = committed.append
        rows = [(t.id, i, 1000 + i, 1, f"line {i}") for i in range(5)]
        async with store.batch() as b:
            b.append_logs(rows[:3], [("1:3", t.id)])
        async with store.batch() as b:
            b.append_logs(rows[2:], [("1:5", t.id)])  # line 2 again: kept once
        assert store.log_length(t.id) == 5 and store.log_length(other.id) == 0
        assert [tuple(r) for r in store.read_logs(t.id, 1, 2)] == [(1, 1001, 1, "line 1"), (2, 1002, 1, "line 2")]
        assert store.log_cursor(t.id) == (1, 5) and store.log_cursor(other.id) is None
        assert committed[-1] == {t.id: 4}
        async with store.batch() as b:
            b.delete_tasks([t.id])
        assert store.get_task(t.id) is None and store.read_logs(t.id, 0, 10) == []
        assert store.get_task(other.id) is not None
    run(db_url, body)


def test_text_with_nul_never_fails_a_batch(db_url):
    """PostgreSQL text holds no NUL: a line or result with one is kept (NUL as U+FFFD there)."""
    async def body(store):
        [t] = await create(store, [spec()], "default\0with-nul-key")
        t.result, t.error = "a\0b", "e\0"
        async with store.batch() as b:
            b.update_tasks([(t.id, t.mutable_row())])
            b.append_logs([(t.id, 0, 1, 1, "x\0y")])
        text = store.read_logs(t.id, 0, 1)[0][3]
        assert text in ("x\0y", "x\ufffdy") and store.get_task(t.id).result in ("a\0b", "a\ufffdb")
        assert store.created_by_request("default\0with-nul-key", 0) == [t.id]
        assert store.old_create_request_keys(10**15, 5) == ["default\0with-nul-key"]
    run(db_url, body)


def test_kv_groups_and_nodes(db_url):
    async def body(store):
        async with store.batch() as b:
            b.put_kv_if_absent("instance", "first")
            b.put_kv_if_absent("instance", "second")
            b.put_group_template("tpl", '{"name": "tpl"}', 5)
            b.put_group_instance("i-1", "tpl", "ns", [3, 4], 6)
            b.put_node({"name": "n1", "address": "a:1", "slots": 2, "labels": "{}", "cpu_count": 4,
                        "memory_mb": 100, "session": "s1", "draining": 0, "last_heartbeat_ms": 7})
            b.put_node({"name": "n1", "address": "a:2", "slots": 3, "labels": '{"gpu": "1"}', "cpu_count": 4,
                        "memory_mb": 100, "session": "s2", "draining": 1, "last_heartbeat_ms": 8})
        assert store.get_kv("instance") == "first" and store.get_kv("absent") is None
        assert store.group_templates() == [{"name": "tpl", "json": '{"name": "tpl"}', "create_time_ms": 5}]
        assert store.group_instances() == [{"id": "i-1", "template": "tpl", "namespace": "ns", "task_ids": "[3, 4]",
                                            "create_time_ms": 6}]
        [node] = store.nodes()
        assert (node["address"], node["slots"], node["session"], node["draining"]) == ("a:2", 3, "s2", 1)
        async with store.batch() as b:
            b.delete_group_template("tpl")
            b.delete_group_instance("i-1")
        assert store.group_templates() == [] and store.group_instances() == []
    run(db_url, body)


def test_tokens_and_audit(db_url):
    async def body(store):
        auth = AuthStore(store)
        await auth.insert_token(TokenRecord("t1", "ci", "user", ("a", "b"), "h1", 10))
        await auth.insert_token(TokenRecord("t2", "ops", "admin", (), "h2", 20, 99))
        await auth.revoke_token("t1", 30)
        assert [(t.id, t.namespaces, t.revoke_time_ms) for t in auth.all_tokens()] == [("t2", (), 0), ("t1", ("a", "b"), 30)]
        await auth.save_server_key("k1")
        await auth.save_server_key("k2")
        assert auth.server_key() == "k1"
        auth.append_audit([AuditRecord(i, "t1" if i % 2 else "t2", "n", "M", "ns", "", bool(i % 2), "why", "peer")
                           for i in range(5)])
        async with store.batch():
            pass  # the audit is fire and forget: it is in once a later batch has committed
        await asyncio.sleep(0)
        for _ in range(100):
            if len(auth.read_audit(10)) == 5:
                break
            await asyncio.sleep(0.02)
        assert [a.time_ms for a in auth.read_audit(10)] == [4, 3, 2, 1, 0]
        assert [a.time_ms for a in auth.read_audit(10, "t1")] == [3, 1]
        assert auth.read_audit(10, "t1")[0].allowed is True
        assert store.old_audit_seqs(3, 10) == [r["seq"] for r in store.audit(10)][::-1][:3]  # written at 0, 1, 2
        assert len(store.old_audit_seqs(10**6, 2)) == 2
        async with store.batch() as b:
            b.delete_audit(store.old_audit_seqs(3, 10))
        assert [a.time_ms for a in auth.read_audit(10)] == [4, 3]
    run(db_url, body)


def test_retention_finds_only_old_finished_records(db_url):
    async def body(store):
        old, young, running = await create(store, [spec(), spec(), spec()], "default\0r")
        for t, done in ((old, 1000), (young, 5000)):
            t.move(Status.SCHEDULING), t.move(Status.FAILED)
            t.done_time_ms = done
        async with store.batch() as b:
            b.update_tasks([(t.id, t.mutable_row()) for t in (old, young)])
        assert store.finished_task_ids(2000, 10) == [old.id]
        assert store.finished_task_ids(10**15, 1) == [old.id]
        assert store.old_create_request_keys(old.create_time_ms + 1, 10) == ["default\0r"]
        async with store.batch() as b:
            b.delete_tasks(store.finished_task_ids(2000, 10))
            b.delete_create_requests(["default\0r"])
        assert {t.id for t in store.list_tasks(None, [], 10, 10**9)} == {young.id, running.id}
        assert store.created_by_request("default\0r", 0) is None
    run(db_url, body)


def test_flow_store_round_trip(db_url):
    """The FATE store's portable statements on each backend (jobs' JSON merges are SQLite's for now)."""
    async def body(store):
        fs = FlowStore(store)
        await fs.record_upload("j1", "ns", "t", "{}", 0, 5)
        fs.set_upload_count("j1", 42)
        await fs.put_message("j1", "x", "0", ("guest", 9), ("host", 10), b"\x00\x01payload")
        await fs.put_message("j1", "x", "0", ("guest", 9), ("host", 10), b"replaced")
        assert fs.get_message("j1", "x", "0", ("guest", 9), ("host", 10)) == b"replaced"
        assert [(u["job_id"], u["upload_count"]) for u in fs.uploads(10, "")] == [("j1", 42)]
        await fs.execute(fs.replace_table("ns", "t") + [fs.append_chunk_stmt("ns", "t", i, 1, f"r{i}") for i in range(3)])
        assert list(fs.table_chunks("ns", "t")) == ["r0", "r1", "r2"]
    run(db_url, body)


def test_federation_outbox_messages(db_url):
    """What server/sites/outbox.py keeps: messages for another party's server, replaced by key, deleted once delivered."""
    async def body(store):
        row = ("j1", "grad", "hetero_lr_0.1", "guest", 9999, "host", 10000, b"\x00\xffsecret")
        local = ("j1", "grad", "hetero_lr_0.1", "host", 10000, "guest", 9999, b"in")
        async with store.batch() as b:
            b.put_flow_messages([row, local])
        async with store.batch() as b:   # the same key again replaces it
            b.put_flow_messages([row[:-1] + (b"newer",)])
        assert store.flow_outbox(9999) == [row[:-1] + (b"newer",)]
        assert store.flow_outbox(10000) == [local]
        async with store.batch() as b:
            b.delete_flow_messages([row[:-1]])
        assert store.flow_outbox(9999) == []
        assert FlowStore(store).get_message("j1", "grad", "hetero_lr_0.1", ("host", 10000), ("guest", 9999)) == b"in"
    run(db_url, body)


def test_flow_json_operations(db_url):
    """What each backend does with its own JSON functions: metrics appended, summaries patched, jobs
    found by party, a model's service ids kept once."""
    from server.flow.model import FlowJob, FlowTask
    from server.flow.model_store import MODEL_COLS, ModelStore

    async def body(store):
        fs, ms = FlowStore(store), ModelStore(store)
        parties = [("guest", 9999), ("host", 10000)]
        task = FlowTask(job_id="j1", component="lr_0", role="guest", party_id=9999, module="HeteroLR")
        job = FlowJob("j1", "fate", "train", "{}", "{}", ("guest", 9999), parties, tasks={task.key: task})
        await fs.insert_job(job, {})
        await fs.insert_job(FlowJob("j2", "fate", "train", "{}", "{}", ("guest", 1), [("guest", 1)]), {})
        key = ("j1", "lr_0", "guest", 9999)
        await fs.put_metric(key, "train", "loss", [[0, 0.7]], '{"unit": "x"}')
        await fs.put_metric(key, "train", "loss", [[1, 0.5], [2, {"a": 1}]], "")
        [m] = fs.metrics(*key)
        assert json.loads(m["data_json"]) == [[0, 0.7], [1, 0.5], [2, {"a": 1}]]
        assert json.loads(m["meta_json"]) == {"unit": "x"}
        await fs.put_outputs(key, summary_json='{"a": 1, "b": 2}')
        await fs.put_outputs(key, summary_json='{"b": 3, "a": null, "c": [1]}', model_json='{"w": 1}')
        outputs = fs.task_outputs(*key)
        assert json.loads(outputs["summary_json"]) == {"b": 3, "c": [1]} and outputs["model_json"] == '{"w": 1}'
        by_party = lambda party: [j.job_id for j in fs.list_jobs("", party, [], "", 10, 0)[0]]  # noqa: E731
        assert by_party(("host", 10000)) == ["j1"] and by_party(("host", 0)) == ["j1"]
        assert sorted(by_party(("guest", 0))) == ["j1", "j2"] and by_party(("host", 1)) == []
        row = {c: 0 for c in MODEL_COLS} | {"model_id": "m", "model_version": "v", "role": "guest", "party_id": 9,
                                            "service_ids_json": "[]"}
        row.update({c: "" for c in MODEL_COLS if c.endswith(("_json", "_role", "_version", "job_id")) and c not in
                    ("service_ids_json", "model_version")})
        await ms.put_models([row], [])
        for sid in ("s1", "s2", "s1"):
            await ms.bind_service([("m", "v", "guest", 9)], sid, 5)
        [model] = ms.models("m", "v")
        assert json.loads(model["service_ids_json"]) == ["s1", "s2"]
    run(db_url, body)


def test_the_scheduler_lock_elects_one_server_and_fences_a_deposed_one(pg_url):
    """Several servers share a database; one holds the scheduler lock. A take-over increments the
    epoch, after which the deposed scheduler's writes are refused by the database (server/cluster.py)."""
    from server.storage.postgres import SchedulerLock
    first = open_store(pg_url)
    second = open_store(pg_url)  # a second server on the same database is welcome (a follower)
    lock_a, lock_b = SchedulerLock(pg_url, "a"), SchedulerLock(pg_url, "b")
    try:
        epoch, _, previous = lock_a.try_lead("a:1")
        assert previous == "" and lock_b.try_lead("b:1") is None and lock_a.still_leads(epoch)
        ids, more = first.next_task_ids(3), second.next_task_ids(100)
        assert min(more) > max(ids) and len(set(more)) == 100  # one sequence: never the same id twice
        fenced = []
        first.epoch, first.on_fenced = epoch, fenced.append

        async def body():
            async with first.batch() as b:
                b.put_kv_if_absent("x", "1")  # the scheduler writes while it holds the epoch
            lock_a.close()  # its lock connection dies: the other takes over (once its backend has ended)
            got = wait_for(lambda: lock_b.try_lead("b:1"), what="the lock to be free")
            assert got is not None and got[0] == epoch + 1 and got[2] == "a:1"
            with pytest.raises(Unavailable, match="no longer the scheduler"):
                async with first.batch() as b:
                    b.put_kv_if_absent("y", "1")
        loop = asyncio.new_event_loop()
        first.writer.start(loop)
        loop.run_until_complete(body())
        loop.close()
        assert first.get_kv("x") == "1" and first.get_kv("y") is None
        assert fenced and "its epoch 1, the current epoch 2" in fenced[0]
    finally:
        lock_b.close()
        first.close()
        second.close()


def test_migrations_are_idempotent_and_a_newer_schema_is_refused(db_url):
    open_store(db_url).close()
    open_store(db_url).close()  # nothing left to do, nothing fails
    newest = len(sqlite_backend.MIGRATIONS)
    target = parse_db_target(db_url)
    if target.kind == "sqlite":
        target = target.location
        with sqlite3.connect(target) as c:
            c.execute(f"PRAGMA user_version={newest + 1}")
    else:
        with psycopg.connect(target.location, autocommit=True) as c:
            c.execute("UPDATE taskhub_schema SET version=%s", (newest + 1,))
    with pytest.raises(StoreError, match=f"schema v{newest + 1}, newer than this taskhub's v{newest}"):
        open_store(db_url)


def test_a_sqlite_file_from_before_the_one_migration_list_is_adopted(tmp_path):
    """Old files kept groups/nodes/auth/flow versions in kv rows; they carry on without re-creating."""
    path = str(tmp_path / "old.db")
    conn = sqlite_backend.connect(path)
    import sqlite_utils
    db = sqlite_utils.Database(conn)
    for step in sqlite_backend.MIGRATIONS[:max(sqlite_backend._LEGACY_STEPS)]:  # the steps such files had
        step(db)
    conn.execute("PRAGMA user_version=2")
    conn.executemany("INSERT INTO kv(key, value) VALUES (?, ?)",
                     [("schema:groups", "1"), ("schema:nodes", "1"), ("schema:auth", "1"), ("schema:flow", "2"),
                      ("schema:flow_tenants", "1")])
    conn.execute("INSERT INTO group_templates VALUES ('kept', '{}', 1)")
    conn.close()
    store = open_store(path)
    try:
        assert store.group_templates()[0]["name"] == "kept"
        assert store.get_kv("schema:groups") is None
        assert store.conn.execute("PRAGMA user_version").fetchone()[0] == len(sqlite_backend.MIGRATIONS)
    finally:
        store.close()


def test_bad_db_urls_are_refused_with_a_reason(tmp_path):
    with pytest.raises(StoreError, match="mysql:// databases are not supported by this build"):
        open_store("mysql://u@h/db")
    port = free_port()  # nothing listens there
    with pytest.raises(StoreError, match="cannot reach the PostgreSQL database"):
        open_store(f"postgresql://u:secret@127.0.0.1:{port}/db")
    assert parse_db_target(str(tmp_path / "x.db")).kind == "sqlite"
    assert parse_db_target("postgres://h/db").kind == "postgresql"
