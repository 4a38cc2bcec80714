"""Seed 002 (HugeGraph async tasks, 4.8), every example as written against a real `taskhub serve`.

The examples name task 2 in graph space gs1 (graphs "huegraph" — so spelled in the seed's list
example — and "hugegraph"). Each test starts its own server and creates task 1 elsewhere and
then task 2 where the example looks, so the requests run with the seed's own ids.
The seed's task is a gremlin job; taskhub runs commands and Python callables, so task 2 is a
command named like the seed's task that prints the seed's result, "0". Where taskhub's values
differ from the seed's gremlin job (README, "Deviations from the seeds"), the test says so.
"""
from __future__ import annotations

import json
import shlex

from conftest import wait_for
from seedlib import INT, MILLIS, documented, match, ok_json, send

LIST = "GET http://localhost:8080/graphspaces/gs1/graphs/huegraph/tasks?status=SUCCESS"
GET = "GET http://localhost:8080/graphspaces/gs1/graphs/hugegraph/tasks/2"
DELETE = "DELETE http://localhost:8080/graphspaces/gs1/graphs/hugegraph/tasks/2?force=true"
CANCEL = "PUT http://localhost:8080/graphspaces/gs1/graphs/hugegraph/tasks/2?action=cancel"

SEED_TASK = """{
	"task_name": "hugegraph.traversal().V()",
	"task_progress": 0,
	"task_create": 1532943976585,
	"task_status": "success",
	"task_update": 1532943976736,
	"task_result": "0",
	"task_retries": 0,
	"id": 2,
	"task_type": "gremlin",
	"task_callable": "com.baidu.hugegraph.api.job.GremlinAPI$GremlinJob",
	"task_input": "{\\"gremlin\\":\\"hugegraph.traversal().V()\\",\\"bindings\\":{},\\"language\\":\\"gremlin-groovy\\",\\"aliases\\":{\\"hugegraph\\":\\"graph\\"}}"
}"""
SEED_LIST = '{\n\t"tasks": [' + SEED_TASK + ']\n}'

NAME = "hugegraph.traversal().V()"
ARGV = ["sh", "-c", "echo 0"]
# The seed's gremlin job stays at progress 0; taskhub sets 100 when a task succeeds, so progress
# is checked by type. Type, callable and input are taskhub's (a command: its argv, as text and JSON).
OURS = dict(task_progress=INT, task_create=MILLIS, task_update=MILLIS, task_type="command",
            task_callable=shlex.join(ARGV), task_input=json.dumps(ARGV))


def server_with_task_2(server_factory, namespace: str, **spec):
    """A fresh server whose task 2 is `spec` in `namespace` (task 1 is a no-op in another graph)."""
    server = server_factory()
    filler = server.client(namespace="gs1/elsewhere").create_task(argv=["true"], name="filler")
    task = server.client(namespace=namespace).create_task(**spec)
    assert (filler.id, task.id) == (1, 2)
    return server, task


def test_list_tasks_by_status(server_factory):
    """4.8.1: 列出所有状态为SUCCESS的异步任务."""
    server, task = server_with_task_2(server_factory, "gs1/huegraph", argv=ARGV, name=NAME)
    c = server.client(namespace="gs1/huegraph")
    c.wait(task.id)
    failed = c.create_task(argv=["false"], name="not listed: it failed")
    c.wait(failed.id)
    body = ok_json(send(server.http_url, LIST), 200)
    match(body, documented(SEED_LIST, **{f"tasks__0__{k}": v for k, v in OURS.items()}))
    assert body["tasks"][0]["task_update"] >= body["tasks"][0]["task_create"]


def test_get_task(server_factory):
    """4.8.2: 查看id为2的任务的状态."""
    server, task = server_with_task_2(server_factory, "gs1/hugegraph", argv=ARGV, name=NAME)
    server.client(namespace="gs1/hugegraph").wait(task.id)
    body = ok_json(send(server.http_url, GET), 200)
    match(body, documented(SEED_TASK, **OURS))


def test_delete_task_record(server_factory):
    """4.8.3: 强制删除id为2的任务的信息 -> 204, no body; the record is gone afterwards."""
    server, task = server_with_task_2(server_factory, "gs1/hugegraph", argv=ARGV, name=NAME)
    server.client(namespace="gs1/hugegraph").wait(task.id)
    answer = send(server.http_url, DELETE)
    assert (answer.status, answer.body) == (204, b"")
    assert send(server.http_url, GET).status == 404


def test_cancel_task(server_factory):
    """4.8.4: 取消id为2的异步任务 — a task that runs ten one-second steps and honours interruption."""
    loop = "for i in 0 1 2 3 4 5 6 7 8 9; do echo man $i; sleep 1; done"
    server, task = server_with_task_2(server_factory, "gs1/hugegraph", argv=["sh", "-c", loop], name="gremlin-job")
    c = server.client(namespace="gs1/hugegraph")
    wait_for(lambda: c.get_task(task.id).pid, what="task 2 to start")  # sent within its 10 seconds
    answer = send(server.http_url, CANCEL)
    assert answer.status == 202
    match(answer.json(), documented('{\n    "cancelled": true\n}'))
    c.wait(task.id)
    assert ok_json(send(server.http_url, GET))["task_status"] == "cancelled"
