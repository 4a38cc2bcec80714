"""WatchTasks (a namespace's task changes as they happen) and ListTasks' name filter."""
from __future__ import annotations

import threading

import grpc
from taskhub.v1 import task_pb2 as pb
from taskhub.v1 import task_service_pb2 as svc

from conftest import wait_for


def test_watch_streams_creates_changes_and_deletes_of_one_namespace(server, client):
    stream = client.stub.WatchTasks(svc.WatchTasksRequest(namespace="w1"))
    seen: list[svc.WatchTasksResponse] = []
    def read():
        try:
            for m in stream:
                seen.append(m)
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.CANCELLED  # our own cancel below

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    wait_for(lambda: seen, what="the stream's first (empty) message")
    assert not seen[0].tasks and not seen[0].deleted_ids

    mine = client.create_task(argv=["sh", "-c", "echo hi"], namespace="w1", name="watched")
    other = client.create_task(argv=["true"], namespace="w2")
    states = lambda: [(t.id, t.status) for m in list(seen) for t in m.tasks]  # noqa: E731
    wait_for(lambda: (mine.id, pb.TASK_STATUS_SUCCESS) in states(), what="the task's success on the stream")
    assert (mine.id, pb.TASK_STATUS_NEW) in states() or (mine.id, pb.TASK_STATUS_QUEUED) in states()
    assert client.wait(other.id, namespace="w2").status == pb.TASK_STATUS_SUCCESS
    client.stub.DeleteTask(svc.DeleteTaskRequest(namespace="w1", id=mine.id))
    wait_for(lambda: any(mine.id in m.deleted_ids for m in list(seen)), what="the delete on the stream")
    assert all(t.spec.namespace == "w1" for m in seen for t in m.tasks), "another namespace's task leaked in"
    stream.cancel()
    reader.join(10)


def test_list_by_name(server, client):
    names = ["alpha-report", "beta-report", "alpha-cleanup"]
    ids = {n: client.create_task(argv=["true"], namespace="byname", name=n).id for n in names}
    got = client.stub.ListTasks(svc.ListTasksRequest(namespace="byname", name_contains="alpha"))
    assert [t.id for t in got.tasks] == [ids["alpha-cleanup"], ids["alpha-report"]]  # newest first
    got = client.stub.ListTasks(svc.ListTasksRequest(namespace="byname", name_contains="report", limit=1))
    assert [t.id for t in got.tasks] == [ids["beta-report"]] and got.next_page_token
    more = client.stub.ListTasks(svc.ListTasksRequest(namespace="byname", name_contains="report",
                                                      page_token=got.next_page_token))
    assert [t.id for t in more.tasks] == [ids["alpha-report"]]
