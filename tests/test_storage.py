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
from server.flow.model import FlowJob, FlowTask
from server.flow.model_store import MODEL_COLS, ModelStore
from server.flow.store import FlowStore, delete_jobs
from server.model import Status, Task, TaskSpec, TaskType
from server.db_target import parse_db_target
from server.storage import StoreError, open_store
from server.storage import sqlite as sqlite_backend
from server.storage.base import NOT_SUCCESS


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
        assert store.task_states([c.id, 10**9, b.id]) == {c.id: ("default", Status.CANCELLED), b.id: ("team", Status.NEW)}
        assert store.created_by_request("default\0req-1", 0) == [a.id, b.id, c.id]
        assert store.created_by_request("default\0req-1", a.create_time_ms + 1) is None  # outside the window
        assert store.created_by_request("default\0other", 0) is None
    run(db_url, body)


PATHS = {  # legal moves from NEW to each status the test needs
    Status.SUCCESS: (Status.SCHEDULING, Status.SCHEDULED, Status.RUNNING, Status.SUCCESS),
    Status.FAILED: (Status.SCHEDULING, Status.SCHEDULED, Status.RUNNING, Status.FAILED),
    Status.CANCELLED: (Status.SCHEDULING, Status.CANCELLED),
    Status.RUNNING: (Status.SCHEDULING, Status.SCHEDULED, Status.RUNNING),
    Status.NEW: (),
}


def test_status_filters_find_successes_without_a_status_index_entry(db_url):
    """Successes are left out of the status indexes (storage.base.NOT_SUCCESS): every filter still
    finds what it names, a rare status is found through an index, and the unfinished count holds."""
    ends = [Status.SUCCESS, Status.FAILED, Status.SUCCESS, Status.CANCELLED, Status.RUNNING, Status.NEW,
            Status.FAILED, Status.SUCCESS]

    async def body(store):
        tasks = await create(store, [spec(f"t{i}", "team" if i % 2 else "default") for i in range(len(ends))])
        for t, end in zip(tasks, ends):
            for step in PATHS[end]:
                t.move(step)
        async with store.batch() as batch:
            batch.update_tasks([(t.id, t.mutable_row()) for t in tasks])
        for namespace in (None, "default", "team"):
            for wanted in ([Status.SUCCESS], [Status.FAILED], [Status.SUCCESS, Status.FAILED],
                           [Status.RUNNING, Status.NEW], [Status.CANCELLED]):
                expected = [t.id for t in reversed(tasks) if t.status in wanted
                            and namespace in (None, t.namespace)]
                got = [t.id for t in store.list_tasks(namespace, [int(s) for s in wanted], 10, 10**9)]
                assert got == expected, (namespace, wanted)
        assert store.count_unfinished() == 2

    run(db_url, body)
    rare = "SELECT id FROM tasks WHERE id < 99 AND namespace = 'team' AND status IN (12) AND {} ORDER BY id DESC"
    if parse_db_target(db_url).kind == "sqlite":
        with sqlite3.connect(parse_db_target(db_url).location) as c:
            plan = " ".join(r[-1] for r in c.execute("EXPLAIN QUERY PLAN " + rare.format(NOT_SUCCESS)))
    else:
        with psycopg.connect(parse_db_target(db_url).location, autocommit=True) as c:
            c.execute("SET enable_seqscan = off")
            plan = " ".join(r[0] for r in c.execute("EXPLAIN " + rare.format(NOT_SUCCESS)))
    assert "tasks_namespace_status" in plan, plan


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


def test_unfinished_tasks_are_found_by_an_annotation(db_url):
    """Queued and placed ones carrying the annotation; not finished ones, nor those that only
    mention its name elsewhere (Delta rebuilds its links and timers from these at start)."""
    def marked(name: str, **annotations) -> TaskSpec:
        s = spec(name)
        s.annotations = annotations
        return s

    async def body(store):
        queued, placed, done, other, mention = await create(store, [
            marked("queued", **{"delta.role": "coordinator"}), marked("placed", **{"delta.role": "client"}),
            marked("done", **{"delta.role": "client"}), marked("other", **{"delta.run": "1"}),
            marked('says "delta.role"')])
        placed.move(Status.SCHEDULING), placed.move(Status.SCHEDULED), placed.move(Status.QUEUED)
        done.move(Status.SCHEDULING), done.move(Status.CANCELLED)
        async with store.batch() as b:
            b.update_tasks([(t.id, t.mutable_row()) for t in (placed, done)])
        found = store.annotated_unfinished("delta.role")
        assert sorted(t.id for t in found) == [queued.id, placed.id]
        assert {t.spec.annotations["delta.role"] for t in found} == {"coordinator", "client"}
        assert store.annotated_unfinished("nobody.uses.this") == []
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


def test_a_task_changed_in_its_insert_round_is_written_as_it_is_now(db_url):
    """The writer folds a change into its task's insert when both land in one round."""
    async def body(store):
        specs = [spec("folded"), spec("untouched")]
        tasks = [Task(i, s) for i, s in zip(store.next_task_ids(2), specs)]
        folded, untouched = tasks
        async with store.batch() as b:
            b.insert_tasks(tasks)
            folded.move(Status.SCHEDULING), folded.move(Status.PENDING)
            folded.queue_reason = "no node"
            b.update_tasks([(folded.id, folded.mutable_row())])
        got = store.get_task(folded.id)
        assert (got.status, got.queue_reason, got.spec.name) == (Status.PENDING, "no node", "folded")
        assert store.get_task(untouched.id).status == Status.NEW
        assert [t.id for t in store.queued_tasks(None, 10)] == [folded.id, untouched.id]
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


# ---------------------------------------------------------------- FATE (server/storage/flow.py)
async def barrier(store) -> None:
    """Every batch handed to the writer before this one is committed once it is (one writer, in order)."""
    async with store.batch() as b:
        b.put_kv_if_absent("barrier", "1")


def job_row(job_id: str, namespace: str = "fate", status: int = 3, created: int = 100, ended: int = 0,
            parties=(("guest", 9999), ("host", 10000)), job_type: str = "train") -> tuple:
    """FLOW_JOB_COLUMNS."""
    return (job_id, namespace, job_type, status, "{}", "{}", "guest", 9999, json.dumps([list(p) for p in parties]),
            "", "", 1.5, "d", "", 0, created, 0, ended, created)


def task_row(job_id: str, component: str, role: str = "guest", party: int = 9999, status: int = 1,
             created: int = 100) -> tuple:
    """FLOW_TASK_COLUMNS."""
    return (job_id, component, role, party, "HeteroLR", status, 0, 0, 0, "", "", 0, created, 0, 0)


def test_flow_jobs_and_tasks(db_url):
    async def body(store):
        async with store.batch() as b:
            b.put_flow_job(job_row("j1", "ns-a", created=100))
            b.put_flow_job(job_row("j2", "ns-b", status=7, created=200, ended=300, job_type="predict"))
            b.put_flow_job(job_row("j_x", "ns-a", status=6, created=300, ended=5000, parties=[("guest", 1)]))
            b.put_flow_job(job_row("jax", "ns-a", status=4, created=400, ended=6000, parties=[("arbiter", 7)]))
            b.insert_flow_tasks([task_row("j1", "lr_0") + ('{"alpha": 1}',),
                                 task_row("j1", "lr_0", "host", 10000, created=101) + ("{}",),
                                 task_row("j2", "reader_0", status=7) + ("{}",)])
        job = store.flow_job("j1")
        assert (job["namespace"], job["status"], job["timeout_seconds"], json.loads(job["parties_json"])) == \
            ("ns-a", 3, 1.5, [["guest", 9999], ["host", 10000]])
        assert store.flow_job("nope") is None
        assert [j["job_id"] for j in store.flow_unfinished_jobs()] == ["j1"]
        assert store.flow_finished_job_ids(1000, 10) == ["j2"] and store.flow_finished_job_ids(10**6, 2) == ["j2", "j_x"]
        assert store.flow_job_counts() == {3: 1, 7: 1, 6: 1, 4: 1}
        assert sorted((t["role"], t["party_id"]) for t in store.flow_job_tasks("j1")) == [("guest", 9999), ("host", 10000)]
        assert store.flow_task_outputs(("j1", "lr_0", "guest", 9999))["parameters_json"] == '{"alpha": 1}'
        assert store.flow_task_outputs(("j1", "lr_0", "guest", 1)) is None

        row = list(task_row("j1", "lr_0", status=2))
        row[9], row[6] = "node-1", 42  # node, taskhub_task_id
        async with store.batch() as b:
            b.update_flow_tasks([tuple(row)])
            b.put_flow_job(job_row("j1", "ns-a", status=7, created=100, ended=900))  # replaced whole
        [t] = [t for t in store.flow_job_tasks("j1") if t["role"] == "guest"]
        assert (t["status"], t["node"], t["taskhub_task_id"]) == (2, "node-1", 42)
        assert store.flow_job("j1")["status"] == 7 and store.flow_unfinished_jobs() == []
        b = store.batch()
        b.put_flow_job(job_row("j9"))
        b.insert_flow_tasks([task_row("j1", "lr_0") + ("{}",)])  # already there: the whole batch is refused
        with pytest.raises(Unavailable, match="nothing was saved"):
            await b.submit(wait=True)
        assert store.flow_job("j9") is None

        def ids(**kw):
            args = {"job_id": "", "party": None, "statuses": [], "job_type": "", "limit": 10, "offset": 0, "scope": None}
            rows, total = store.flow_list_jobs(**(args | kw))
            return [r["job_id"] for r in rows], total
        assert ids() == (["jax", "j_x", "j2", "j1"], 4)
        assert ids(limit=2, offset=1) == (["j_x", "j2"], 4)
        assert ids(job_id="j_*") == (["j_x"], 1)  # '_' is no wildcard in a prefix
        assert ids(job_id="j2") == (["j2"], 1) and ids(job_id="j*", statuses=[6, 4]) == (["jax", "j_x"], 2)
        assert ids(job_type="predict") == (["j2"], 1)
        assert ids(scope=("ns-a",)) == (["jax", "j_x", "j1"], 3) and ids(scope=()) == ([], 0)
        assert ids(party=("host", 10000)) == (["j2", "j1"], 2) and ids(party=("guest", 0)) == (["j_x", "j2", "j1"], 3)
        assert ids(party=("host", 1)) == ([], 0) and ids(party=("arbiter", 0)) == (["jax"], 1)

        def tasks(**kw):
            args = {"job_id": "", "role": "", "party_id": 0, "component": "", "statuses": [], "limit": 10,
                    "offset": 0, "scope": None}
            rows, total = store.flow_list_tasks(**(args | kw))
            return [(r["job_id"], r["role"]) for r in rows], total
        assert tasks() == ([("j2", "guest"), ("j1", "guest"), ("j1", "host")], 3)
        assert tasks(job_id="j1", role="host") == ([("j1", "host")], 1)
        assert tasks(party_id=9999, statuses=[2]) == ([("j1", "guest")], 1)
        assert tasks(component="reader_0") == ([("j2", "guest")], 1)
        assert tasks(scope=("ns-b",)) == ([("j2", "guest")], 1) and tasks(limit=1, offset=2) == ([("j1", "host")], 3)
        assert sorted(store.flow_job_ids_created_between(150, 301, None)) == ["j2", "j_x"]
        assert store.flow_job_ids_created_between(150, 301, ("ns-a",)) == ["j_x"]
    run(db_url, body)


def test_flow_tracking(db_url):
    """Metrics appended (each backend's JSON functions), summaries patched, models set, outputs cleared."""
    async def body(store):
        fs = FlowStore(store)
        task = FlowTask(job_id="j1", component="lr_0", role="guest", party_id=9999, module="HeteroLR")
        job = FlowJob("j1", "fate", "train", "{}", "{}", ("guest", 9999), [("guest", 9999)], tasks={task.key: task})
        await fs.insert_job(job, {task.key: {"max_iter": 3}})
        key, other = ("j1", "lr_0", "guest", 9999), ("j2", "lr_0", "guest", 9999)
        await fs.put_metric(key, "train", "loss", [[0, 0.7]], '{"unit": "x"}')
        await fs.put_metric(key, "train", "loss", [[1, 0.5], [2, {"a": 1}]], "")
        await fs.put_metric(key, "eval", "auc", [[0, 0.9]], "{}")
        await fs.put_metric(other, "train", "loss", [[0, 1]], "{}")
        [auc, loss] = fs.metrics(*key)
        assert (auc["name"], json.loads(loss["data_json"])) == ("auc", [[0, 0.7], [1, 0.5], [2, {"a": 1}]])
        assert json.loads(loss["meta_json"]) == {"unit": "x"}
        assert store.flow_count_metrics(key=key) == 2 and store.flow_count_metrics(["j1", "j2"]) == 3
        assert store.flow_count_metrics([]) == 0
        await fs.put_outputs(key, summary_json='{"a": 1, "b": 2}')
        await fs.put_outputs(key, summary_json='{"b": 3, "a": null, "c": [1]}', model_json='{"w": 1}')
        outputs = fs.task_outputs(*key)
        assert json.loads(outputs["summary_json"]) == {"b": 3, "c": [1]} and outputs["model_json"] == '{"w": 1}'
        assert outputs["model_meta_json"] == "{}" and json.loads(outputs["parameters_json"]) == {"max_iter": 3}
        assert await fs.clear_task_outputs([task], tracking=False) == (0, 2)
        assert fs.metrics(*key) == [] and fs.task_outputs(*key)["model_json"] == '{"w": 1}'
        await fs.put_metric(key, "train", "loss", [[0, 0.7]], "")
        assert await fs.clear_task_outputs([task], tracking=True) == (0, 1)
        outputs = fs.task_outputs(*key)
        assert (outputs["summary_json"], outputs["model_json"], outputs["model_meta_json"]) == ("{}", "", "")
        await fs.delete_metrics(["j2"])
        assert store.flow_count_metrics(["j1", "j2"]) == 0
    run(db_url, body)


def test_flow_tables_and_uploads(db_url):
    async def body(store):
        fs = FlowStore(store)
        async with store.batch() as b:
            b.put_flow_job(job_row("j1", "ns-a"))
            for seq in range(5):
                b.put_flow_table_chunk("output_data_j1", "t", seq, 1, f"r{seq}")
            b.put_flow_table_chunk("output_data_j1", "t", 4, 2, "r4\nr5")  # replaced
        assert store.flow_table("output_data_j1", "t") is None  # invisible until described
        assert store.flow_table_chunks("output_data_j1", "t", 1, 2) == [(2, "r2"), (3, "r3")]
        assert list(fs.table_chunks("output_data_j1", "t")) == ["r0", "r1", "r2", "r3", "r4\nr5"]
        info = {"namespace": "output_data_j1", "name": "t", "count": 6, "partitions": 4, "schema_json": "{}",
                "job_id": "j1", "component": "lr_0", "role": "guest", "party_id": 9999, "output_name": "data_0",
                "create_time_ms": 7}
        await fs.describe_table(info)
        await fs.describe_table(info | {"name": "u", "output_name": "data_1"})
        await fs.describe_table(info | {"namespace": "experiment", "job_id": "upload-1"})  # no such job
        got = store.flow_table("output_data_j1", "t")
        assert {k: got[k] for k in info} == info and got["tenant"] == "ns-a"
        assert store.flow_table("experiment", "t")["tenant"] == "fate"
        assert store.flow_table_tenants("output_data_j1", "t") == ["ns-a"] and store.flow_table_tenants("x", "t") == []
        assert [t["name"] for t in store.flow_output_tables(("j1", "lr_0", "guest", 9999))] == ["t", "u"]
        await fs.describe_table(info | {"count": 9})
        assert store.flow_table("output_data_j1", "t")["count"] == 9
        await fs.delete_tables([("output_data_j1", "u")])
        assert store.flow_table("output_data_j1", "u") is None
        await fs.drop_table("output_data_j1", "t", wait=True)
        assert store.flow_table("output_data_j1", "t") is None and list(fs.table_chunks("output_data_j1", "t")) == []

        await fs.record_upload("j1", "experiment", "t", "{}", 0, 5)
        await fs.record_upload("j2", "experiment", "u", "{}", 0, 6)
        await fs.record_upload("j2", "experiment", "v", "{}", 3, 6)  # replaced
        fs.set_upload_count("j1", 42)  # fire and forget: in once a later batch committed
        await barrier(store)
        assert [(u["job_id"], u["name"], u["upload_count"]) for u in fs.uploads(10, "")] == \
            [("j2", "v", 3), ("j1", "t", 42)]
        assert [u["job_id"] for u in fs.uploads(1, "")] == ["j2"] and [u["job_id"] for u in fs.uploads(9, "j1")] == ["j1"]
        assert [u["job_id"] for u in fs.uploads(9, "", ("ns-a",))] == ["j1"]  # j2 has no job: in no namespace
    run(db_url, body)


def test_flow_messages_and_job_purge(db_url):
    async def body(store):
        fs = FlowStore(store)
        guest, host = ("guest", 9), ("host", 10)
        await fs.put_message("j1", "x", "0", guest, host, b"\x00\x01payload")
        assert fs.get_message("j1", "x", "0", guest, host) == b"\x00\x01payload"
        await fs.put_message("j1", "x", "0", guest, host, b"replaced")
        await fs.put_message("j1", "x", "1", guest, host, b"other tag")
        await fs.put_message("j2", "x", "0", guest, host, b"other job")
        assert fs.get_message("j1", "x", "0", guest, host) == b"replaced"
        assert fs.get_message("j1", "x", "0", host, guest) is None and fs.get_message("j1", "y", "0", guest, host) is None
        fs.delete_messages("j1")
        await barrier(store)
        assert fs.get_message("j1", "x", "1", guest, host) is None and fs.get_message("j2", "x", "0", guest, host)
        async with store.batch() as b:  # across sites: kept for another party's server until delivered
            b.put_flow_messages([("j3", "x", "0", "guest", 9, "host", 10, b"a"), ("j3", "y", "0", "guest", 9, "host", 10, b"b"),
                                 ("j3", "x", "0", "host", 10, "guest", 9, b"to me")])
            b.put_flow_messages([("j3", "y", "0", "guest", 9, "host", 10, b"b2")])
        assert sorted(store.flow_outbox(9)) == [("j2", "x", "0", "guest", 9, "host", 10, b"other job"),
                                                ("j3", "x", "0", "guest", 9, "host", 10, b"a"),
                                                ("j3", "y", "0", "guest", 9, "host", 10, b"b2")]
        async with store.batch() as b:
            b.delete_flow_messages([("j3", "x", "0", "guest", 9, "host", 10), ("j3", "y", "0", "guest", 9, "host", 10)])
        assert [m[0] for m in store.flow_outbox(9)] == ["j2"] and store.flow_outbox(10) == [
            ("j3", "x", "0", "host", 10, "guest", 9, b"to me")]

        async with store.batch() as b:  # retention: a job goes with everything of it, output tables included
            for j in ("j1", "j2"):
                b.put_flow_job(job_row(j, status=7, ended=10))
                b.insert_flow_tasks([task_row(j, "lr_0") + ("{}",)])
                b.append_flow_metric((j, "lr_0", "guest", 9999, "train", "loss", "[[0, 1]]", ""))
                b.put_flow_table_chunk(f"output_data_{j}", "t", 0, 1, "r")
                b.put_flow_table((f"output_data_{j}", "t", 1, 1, "{}", j, "lr_0", "guest", 9999, "data_0", 1))
                b.put_flow_upload((j, "experiment", j, "{}", 1, 1))
        assert store.flow_finished_job_ids(11, 10) == ["j1", "j2"]
        async with store.batch() as b:
            delete_jobs(b, ["j2"])
        assert store.flow_job("j2") is None and store.flow_job_tasks("j2") == []
        assert store.flow_count_metrics(["j2"]) == 0 and store.flow_table("output_data_j2", "t") is None
        assert store.flow_table_chunks("output_data_j2", "t", -1, 9) == [] and fs.uploads(9, "j2") == []
        assert fs.get_message("j2", "x", "0", guest, host) is None
        assert store.flow_job("j1") and store.flow_count_metrics(["j1"]) == 1 and store.flow_table("output_data_j1", "t")
    run(db_url, body)


def model_row(model_id: str, version: str, role: str = "guest", party: int = 9, tenant: str = "fate",
              job_id: str = "", ts: int = 1) -> dict:
    row = {c: "" for c in MODEL_COLS} | {"model_id": model_id, "model_version": version, "role": role,
                                         "party_id": party, "job_id": job_id or version, "initiator_party": 9,
                                         "imported": 0, "loaded_times": 0, "service_ids_json": "[]",
                                         "create_time_ms": ts, "update_time_ms": ts, "tenant": tenant}
    return row


def component(model_id: str, version: str, name: str, role: str = "guest", party: int = 9, size: int = 3) -> dict:
    return {"model_id": model_id, "model_version": version, "role": role, "party_id": party, "component": name,
            "module": "HeteroLR", "model_json": "x" * size, "meta_json": "{}"}


def test_flow_models(db_url):
    async def body(store):
        fs, ms = FlowStore(store), ModelStore(store)
        async with store.batch() as b:  # a train job whose guest task wrote a model; its host task none
            b.put_flow_job(job_row("v1", "ns-a", status=7))
            b.insert_flow_tasks([task_row("v1", "lr_0") + ("{}",), task_row("v1", "reader_0") + ("{}",),
                                 task_row("v1", "lr_0", "host", 10000) + ("{}",)])
        await fs.put_outputs(("v1", "lr_0", "guest", 9999), model_json='{"w": 1}', model_meta_json='{"m": 1}')
        await ms.register_job([model_row("m", "v1", "guest", 9999, "ns-a", ts=5),
                               model_row("m", "v1", "host", 10000, "ns-a", ts=5)])
        assert [(c["component"], c["model_json"], c["meta_json"]) for c in ms.components("m", "v1")] == \
            [("lr_0", '{"w": 1}', '{"m": 1}')]
        assert [(r["role"], r["size"]) for r in ms.models("m", "v1")] == [("guest", 16), ("host", 0)]
        await ms.put_models([model_row("m", "v2", ts=6)], [component("m", "v2", "a"), component("m", "v2", "b", size=5)])
        await ms.put_models([model_row("m", "v2", ts=6)], [component("m", "v2", "c", size=1)])  # replaces a and b
        assert [c["component"] for c in ms.components("m", "v2", "guest", 9)] == ["c"]
        assert ms.components("m", "v2", "host", 9) == []
        assert [(r["model_version"], r["role"]) for r in ms.models("m")] == [("v2", "guest"), ("v1", "guest"), ("v1", "host")]
        assert [r["model_version"] for r in ms.models(scope=("ns-a",))] == ["v1", "v1"]
        assert [r["role"] for r in ms.models(role="host", party_id=10000)] == ["host"] and ms.models(scope=()) == []
        assert {r["tenant"] for r in ms.models(model_version="v2")} == {"fate"}
        await ms.mark_loaded([("m", "v2", "guest", 9)], 50)
        await ms.mark_loaded([("m", "v2", "guest", 9)], 60)
        for sid in ("s1", "s2", "s1"):
            await ms.bind_service([("m", "v2", "guest", 9)], sid, 70)
        [v2] = ms.models("m", "v2")
        assert (v2["loaded_times"], v2["update_time_ms"], json.loads(v2["service_ids_json"])) == (2, 70, ["s1", "s2"])
        assert store.flow_model_tenants("v1", "m") == ["ns-a"] and store.flow_model_tenants("v1") == ["ns-a"]
        assert store.flow_model_tenants("v1", "other") == [] and store.flow_job_tenants("v1") == ["ns-a"]
        assert store.flow_job_tenants("nope") == []
        await ms.delete_model("m", "v2")
        assert ms.models("m", "v2") == [] and ms.components("m", "v2") == [] and len(ms.models("m")) == 2
    run(db_url, body)


def test_flow_tags(db_url):
    async def body(store):
        ms = ModelStore(store)
        await ms.put_models([model_row("m", "v1"), model_row("m", "v1", "host", 10)], [component("m", "v1", "a")])
        await ms.put_models([model_row("n", "v2")], [])
        await ms.create_tag("prod", "production", 1, "ns-a")
        await ms.create_tag("dev", "", 2, "ns-b")
        with pytest.raises(Unavailable):
            await ms.create_tag("prod", "again", 3, "ns-a")  # a tag's name is its key
        await ms.tag_model("prod", "v1", remove=False)
        await ms.tag_model("prod", "v1", remove=False)  # linked once
        await ms.tag_model("prod", "v2", remove=False)
        await ms.tag_model("dev", "v2", remove=False)
        assert [(t["name"], t["model_count"]) for t in ms.tags()] == [("prod", 2), ("dev", 1)]
        assert [t["name"] for t in ms.tags(limit=1)] == ["prod"] and [t["name"] for t in ms.tags("de")] == ["dev"]
        assert [t["name"] for t in ms.tags(scope=("ns-b",))] == ["dev"] and ms.tags(scope=()) == []
        assert ms.get_tag("prod") == {"name": "prod", "description": "production", "create_time_ms": 1}
        assert ms.get_tag("nope") is None and store.flow_tag_tenants("dev") == ["ns-b"]
        assert [t["name"] for t in ms.model_tags("v2")] == ["prod", "dev"]
        assert [(m["model_version"], m["role"], m["size"]) for m in ms.tagged_models("prod")] == \
            [("v1", "guest", 5), ("v1", "host", 0), ("v2", "guest", 0)]
        await ms.update_tag("prod", "live", "renamed")
        assert ms.get_tag("prod") is None and ms.get_tag("live")["description"] == "renamed"
        assert [t["name"] for t in ms.model_tags("v1")] == ["live"] and store.flow_tag_tenants("live") == ["ns-a"]
        await ms.tag_model("live", "v1", remove=True)
        assert [m["model_version"] for m in ms.tagged_models("live")] == ["v2"]
        await ms.delete_model("n", "v2")  # the last model of v2: its tags' links go with it
        assert ms.model_tags("v2") == [] and [(t["name"], t["model_count"]) for t in ms.tags()] == [("live", 0), ("dev", 0)]
        await ms.delete_tag("dev")
        assert [t["name"] for t in ms.tags()] == ["live"]
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


def test_a_quiet_stream_of_inline_commits_keeps_the_sqlite_wal_bounded(tmp_path, monkeypatch):
    """A quiet server commits small writes inline on its loop (Writer.put), where the writer
    thread's WAL check never runs, and a steady trickle of commits never lets a PASSIVE
    checkpoint catch up: the WAL grew without end (229 MB after 3,000 no-op round trips). Past
    the limit, writes go to the thread, which cuts the WAL back, and then inline again."""
    monkeypatch.setattr(sqlite_backend, "WAL_TRUNCATE_BYTES", 1 << 20)
    monkeypatch.setattr(sqlite_backend, "WAL_CHECK_SECONDS", 0.0)
    path = tmp_path / "quiet.db"
    inline = 0

    async def body(store):
        nonlocal inline
        store.writer.quiet = lambda: True
        for _ in range(400):  # about 20 kB of WAL each: 8 MB if nothing cut it back
            committed = store.batch()
            committed.insert_tasks([Task(store.next_task_ids(1)[0], spec())])
            fut = committed.submit(wait=True)
            inline += fut.done()  # committed on this thread already
            await fut
        return (tmp_path / "quiet.db-wal").stat().st_size

    wal_bytes = run(str(path), body)
    assert inline > 300, inline  # the inline path is the one under test
    assert wal_bytes < 2 << 20, wal_bytes
