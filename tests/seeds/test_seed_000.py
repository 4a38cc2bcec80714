"""Seed 000 (Delta Node API) with Delta's own SDK: delta-task 0.8.3's `DeltaNode` against taskhub.

Each example is the seed's code, with DELTA_NODE_API pointing at the test server's gateway.
The seed's `Example` is a Delta task (a HorizontalAnalytics subclass) that its user builds; it runs
on a server as started by default, its map step on the local node, which holds the data set
in its --data-dir (tests/test_delta_tasks.py runs Delta tasks across agents).

Tracing and waiting already work for any task taskhub runs: those are tested with Delta's
DeltaNode on tasks created through taskhub (its own DeltaNode face, the same POST /v1/task).
"""
from __future__ import annotations

import re
import sys

import cloudpickle
import delta.dataset
import httpx
import pytest
from delta.delta_node import DeltaNode
from delta.task import HorizontalAnalytics
from conftest import ServerProcess
from seedlib import ok_json, send

from client import CommandTask
from client import DeltaNode as TaskhubDeltaNode

LINE = re.compile(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)  (.*)")  # the seed's 命令行输出: "2022-05-24 03:43:06  message"


class Example(HorizontalAnalytics):
    """A horizontal analytics task, as the seed's comment describes `Example`: the mean of a column."""

    def __init__(self) -> None:
        super().__init__(name="wage_avg", min_clients=1, max_clients=1, wait_timeout=5, connection_timeout=5)

    def dataset(self):
        return {"wages": delta.dataset.DataFrame("wages.csv")}

    def execute(self, wages):
        return wages.mean()


# A Delta user writes Example in the script that submits it, so cloudpickle sends the class by
# value; this module is importable here, so it is asked to do the same.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


@pytest.fixture(scope="module")
def delta_api(tmp_path_factory) -> str:
    """DELTA_NODE_API: the gateway of a server that accepts Delta tasks, whose local node holds the
    data set Example reads in its data directory."""
    workdir = tmp_path_factory.mktemp("seed000")
    (workdir / "data").mkdir()
    (workdir / "data" / "wages.csv").write_text("wage\n100\n200\n600\n")
    server = ServerProcess(workdir, ["--data-dir", str(workdir / "data")]).start()
    yield server.http_url
    server.close()


def seed_lines(text: str) -> list[str]:
    """The messages of trace's printed lines, each checked to have the seed's format."""
    lines = text.splitlines()
    assert lines, "trace printed nothing"
    for line in lines:
        assert LINE.fullmatch(line), f"not the seed's 'YYYY-MM-DD HH:MM:SS  message' format: {line!r}"
    return [LINE.fullmatch(line).group(2) for line in lines]


# -- the seed's examples, as written ------------------------------------------------------------
def test_create_task(delta_api):
    """create_task - 创建任务: returns the task's id, an int."""
    task = Example().build()
    DELTA_NODE_API = delta_api
    delta_node = DeltaNode(DELTA_NODE_API)
    task_id = delta_node.create_task(task)
    assert isinstance(task_id, int) and not isinstance(task_id, bool)
    meta = ok_json(send(delta_api, f"GET http://127.0.0.1:6700/v1/task/metadata?task_id={task_id}"))
    assert meta["id"] == task_id and meta["name"] == "wage_avg"


def test_trace(delta_api, capsys):
    """trace - 跟踪任务日志: prints the log until the task ends; True when it succeeded."""
    task = Example().build()
    DELTA_NODE_API = delta_api
    delta_node = DeltaNode(DELTA_NODE_API)
    task_id = delta_node.create_task(task)
    assert delta_node.trace(task_id) is True
    seed_lines(capsys.readouterr().out)


def test_wait(delta_api):
    """wait - 等待任务结束: blocks until the task ends; True when it succeeded."""
    task = Example().build()
    DELTA_NODE_API = delta_api
    delta_node = DeltaNode(DELTA_NODE_API)
    task_id = delta_node.create_task(task)
    assert delta_node.wait(task_id) is True
    assert list(delta_node.get_result(task_id)) == [300.0]  # the mean wage


# -- Delta's trace and wait on tasks created through taskhub ------------------------------------
class SeedLog(CommandTask):
    """Prints the seed's 命令行输出 messages, with a pause so that trace follows it live."""

    name = "seed-000-log"
    argv = ["sh", "-c", "echo start run task $TASKHUB_TASK_ID; echo [Create Task] create task $TASKHUB_TASK_ID;"
                        " sleep 1; echo task $TASKHUB_TASK_ID finish"]


class Fails(CommandTask):
    name = "seed-000-fails"
    argv = ["sh", "-c", "echo about to fail; exit 3"]


def test_delta_trace_follows_a_taskhub_task(delta_api, capsys):
    task_id = TaskhubDeltaNode(delta_api).create_task(SeedLog())
    delta_node = DeltaNode(delta_api)
    assert delta_node.trace(task_id) is True
    assert seed_lines(capsys.readouterr().out) == [
        f"start run task {task_id}", f"[Create Task] create task {task_id}", f"task {task_id} finish"]
    assert delta_node.wait(task_id) is True


class Pauses(CommandTask):
    name = "seed-000-pauses"
    argv = ["sh", "-c", "echo first; sleep 1; echo last"]


def test_delta_logs_page_is_empty_only_once_the_task_ended(delta_api):
    """DeltaNode.trace stops at the first empty page whose metadata then says FINISHED: an empty
    page answered while the task still ran would let its last lines go unread."""
    task_id = TaskhubDeltaNode(delta_api).create_task(Pauses())
    seen, start = [], 0
    while page := httpx.get(f"{delta_api}/v1/task/logs", params={"task_id": task_id, "start": start, "limit": 20},
                            timeout=None).raise_for_status().json():
        seen += [line["message"] for line in page]
        start = page[-1]["id"] + 1
    status = httpx.get(f"{delta_api}/v1/task/metadata", params={"task_id": task_id}).json()["status"]
    assert (seen, status) == (["first", "last"], "FINISHED")


def test_delta_trace_and_wait_report_a_failure(delta_api, capsys):
    task_id = TaskhubDeltaNode(delta_api).create_task(Fails())
    delta_node = DeltaNode(delta_api)
    assert delta_node.wait(task_id) is False
    assert delta_node.trace(task_id) is False
    assert seed_lines(capsys.readouterr().out)[0] == "about to fail"
