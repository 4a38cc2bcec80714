"""TaskGroupService against a real server with two real node agents."""
from __future__ import annotations

import json
import uuid

import grpc
import pytest
from taskhub.v1 import task_group_service_pb2 as gpb
from taskhub.v1 import task_group_service_pb2_grpc as gsvc
from taskhub.v1 import task_pb2 as pb

from conftest import ServerProcess, wait_for
from node_agents import agents_fixture_factory, node_stub, wait_online

TEMPLATE = {
    "name": "我的数据处理任务",
    "task_groups": [
        {"tasks": [
            {"name": "数据清洗器", "config": {"command": "echo 清洗 $TASKHUB_TASK_ID; sleep 30"}},
            {"name": "数据分析器", "config": {"command": "echo analyse; sleep 30"}},
            {"name": "third", "config": {"command": "sleep 30"}},
        ]},
        {"tasks": [
            {"name": "other-1", "config": {"command": "sleep 30"}},
            {"name": "other-2", "config": {"command": "sleep 30"}},
        ], "note": "extra fields are kept"},
    ],
}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("groups")
    server = ServerProcess(tmp, ["--no-local-node", "--http-port", "-1", "--node-timeout", "2"]).start()
    make, close_all = agents_fixture_factory(tmp)
    try:
        for name in ("g1", "g2"):
            make(server.grpc_target, name, "--slots", "6", wait=False)
        channel = grpc.insecure_channel(server.grpc_target)
        nchannel, nstub = node_stub(server.grpc_target)
        wait_online(nstub, "g1", "g2")
        yield server, gsvc.TaskGroupServiceStub(channel)
        channel.close()
        nchannel.close()
    finally:
        close_all()
        server.close()


def _code(excinfo) -> grpc.StatusCode:
    return excinfo.value.code()


def _create(stub, doc) -> gpb.TaskGroupTemplate:
    return stub.CreateTemplate(gpb.CreateTemplateRequest(json=json.dumps(doc, ensure_ascii=False)), timeout=30)


def _template(name: str, *commands: str) -> dict:
    return {"name": name, "task_groups": [{"tasks": [{"name": f"t{i}", "config": {"command": c}}
                                                     for i, c in enumerate(commands)]}]}


def test_template_is_stored_and_returned_as_submitted(env):
    server, stub = env
    text = json.dumps(TEMPLATE, ensure_ascii=False, indent=1)
    created = stub.CreateTemplate(gpb.CreateTemplateRequest(json=text), timeout=30)
    assert created.name == "我的数据处理任务"
    got = stub.GetTemplate(gpb.GetTemplateRequest(name="我的数据处理任务"), timeout=30)
    assert got.json == text  # byte for byte, unicode and extra fields included
    assert [t.name for t in got.task_groups[0].tasks] == ["数据清洗器", "数据分析器", "third"]
    assert got.task_groups[0].tasks[0].config.command.startswith("echo 清洗")
    names = [t.name for t in stub.ListTemplates(gpb.ListTemplatesRequest(), timeout=30).templates]
    assert "我的数据处理任务" in names

    with pytest.raises(grpc.RpcError) as e:
        stub.CreateTemplate(gpb.CreateTemplateRequest(json=text), timeout=30)
    assert _code(e) == grpc.StatusCode.ALREADY_EXISTS and "already exists" in e.value.details()


def test_template_from_a_message(env):
    server, stub = env
    m = gpb.TaskGroupTemplate(name="from-message", task_groups=[gpb.TaskGroup(tasks=[
        gpb.GroupTask(name="a", config=gpb.GroupTaskConfig(command="true"))])])
    stub.CreateTemplate(gpb.CreateTemplateRequest(template=m), timeout=30)
    got = stub.GetTemplate(gpb.GetTemplateRequest(name="from-message"), timeout=30)
    assert json.loads(got.json) == {"name": "from-message", "task_groups": [{"tasks": [{"name": "a", "config": {"command": "true"}}]}]}


@pytest.mark.parametrize("text, needle", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "JSON object"),
    (json.dumps({"task_groups": []}), "name"),
    (json.dumps({"name": "x", "task_groups": []}), "task_groups"),
    (json.dumps({"name": "x", "task_groups": [{"tasks": []}]}), "task_groups[0].tasks"),
    (json.dumps({"name": "x", "task_groups": [{"tasks": [{"name": "a", "config": {}}]}]}),
     "task_groups[0].tasks[0].config.command"),
    (json.dumps({"name": "x", "task_groups": [{"tasks": [{"config": {"command": "true"}}]}]}),
     "task_groups[0].tasks[0].name"),
])
def test_malformed_templates_are_refused(env, text, needle):
    server, stub = env
    with pytest.raises(grpc.RpcError) as e:
        stub.CreateTemplate(gpb.CreateTemplateRequest(json=text), timeout=30)
    assert _code(e) == grpc.StatusCode.INVALID_ARGUMENT and needle in e.value.details()
    with pytest.raises(grpc.RpcError) as e:
        stub.CreateTemplate(gpb.CreateTemplateRequest(), timeout=30)
    assert _code(e) == grpc.StatusCode.INVALID_ARGUMENT


def test_unknown_names_and_ids_are_not_found(env):
    server, stub = env
    calls = [
        lambda: stub.GetTemplate(gpb.GetTemplateRequest(name="nope"), timeout=30),
        lambda: stub.DeleteTemplate(gpb.DeleteTemplateRequest(name="nope"), timeout=30),
        lambda: stub.Deploy(gpb.DeployRequest(name="nope"), timeout=30),
        lambda: stub.GetInstance(gpb.GetInstanceRequest(id=str(uuid.uuid4())), timeout=30),
        lambda: stub.StopInstance(gpb.StopInstanceRequest(id="not-an-id"), timeout=30),
    ]
    for call in calls:
        with pytest.raises(grpc.RpcError) as e:
            call()
        assert _code(e) == grpc.StatusCode.NOT_FOUND


def test_deploy_runs_each_group_on_one_node_then_stop_removes_it(env):
    server, stub = env
    if not _exists(stub, TEMPLATE["name"]):
        _create(stub, TEMPLATE)
    inst = stub.Deploy(gpb.DeployRequest(name=TEMPLATE["name"]), timeout=30)
    assert str(uuid.UUID(inst.id)) == inst.id and inst.template == TEMPLATE["name"]
    assert len(inst.task_ids) == 5
    c = server.client()
    wait_for(lambda: all(c.get_task(i).status == pb.TASK_STATUS_RUNNING for i in inst.task_ids), 60,
             what="every task of the instance to run")
    tasks = [c.get_task(i) for i in inst.task_ids]
    assert [t.spec.name for t in tasks] == ["数据清洗器", "数据分析器", "third", "other-1", "other-2"]
    assert tasks[0].spec.argv[:2] == ["sh", "-c"]
    assert len({t.node for t in tasks[:3]}) == 1, [t.node for t in tasks]   # group 0 on one node
    assert len({t.node for t in tasks[3:]}) == 1, [t.node for t in tasks]   # group 1 on one node
    got = stub.GetInstance(gpb.GetInstanceRequest(id=inst.id), timeout=30)
    assert got.status == gpb.INSTANCE_STATUS_RUNNING
    assert inst.id in [i.id for i in stub.ListInstances(gpb.ListInstancesRequest(template=TEMPLATE["name"]),
                                                          timeout=30).instances]
    # An instance's tasks are ordinary tasks: listed and traceable.
    listed = {t.id for t in c.list_tasks(["running"], limit=1000).tasks}
    assert set(inst.task_ids) <= listed
    wait_for(lambda: any(l.text.startswith("清洗") for l in c.trace(inst.task_ids[0], follow=False)), 30,
             what="the first task's output")

    stopped = stub.StopInstance(gpb.StopInstanceRequest(id=inst.id), timeout=30)
    assert stopped.id == inst.id and sorted(stopped.cancelled_task_ids) == sorted(inst.task_ids)
    for t in c.wait_tasks(inst.task_ids):
        assert t.status == pb.TASK_STATUS_CANCELLED
    for call in (stub.GetInstance, stub.StopInstance):
        req = gpb.GetInstanceRequest(id=inst.id) if call is stub.GetInstance else gpb.StopInstanceRequest(id=inst.id)
        with pytest.raises(grpc.RpcError) as e:
            call(req, timeout=30)
        assert _code(e) == grpc.StatusCode.NOT_FOUND


def _exists(stub, name: str) -> bool:
    return name in [t.name for t in stub.ListTemplates(gpb.ListTemplatesRequest(), timeout=30).templates]


def test_instance_status_failed_and_completed(env):
    server, stub = env
    _create(stub, _template("fails", "sleep 0.2; exit 3", "sleep 30"))
    _create(stub, _template("succeeds", "true", "echo ok"))
    bad = stub.Deploy(gpb.DeployRequest(name="fails"), timeout=30)
    good = stub.Deploy(gpb.DeployRequest(name="succeeds"), timeout=30)
    wait_for(lambda: stub.GetInstance(gpb.GetInstanceRequest(id=bad.id), timeout=30).status
             == gpb.INSTANCE_STATUS_FAILED, 30, what="the failing instance to be FAILED")
    wait_for(lambda: stub.GetInstance(gpb.GetInstanceRequest(id=good.id), timeout=30).status
             == gpb.INSTANCE_STATUS_COMPLETED, 30, what="the good instance to be COMPLETED")
    stopped = stub.StopInstance(gpb.StopInstanceRequest(id=bad.id), timeout=30)
    assert stopped.cancelled_task_ids == [bad.task_ids[1]]  # the failed one had already ended
    stub.DeleteTemplate(gpb.DeleteTemplateRequest(name="succeeds"), timeout=30)
    with pytest.raises(grpc.RpcError) as e:
        stub.GetTemplate(gpb.GetTemplateRequest(name="succeeds"), timeout=30)
    assert _code(e) == grpc.StatusCode.NOT_FOUND
    # The instance outlives its template.
    assert stub.GetInstance(gpb.GetInstanceRequest(id=good.id), timeout=30).template == "succeeds"


def test_templates_and_instances_survive_a_restart(server_factory):
    server = server_factory("--http-port", "-1", "--slots", "2")
    stub = gsvc.TaskGroupServiceStub(grpc.insecure_channel(server.grpc_target))
    _create(stub, _template("持久", "sleep 30"))
    inst = stub.Deploy(gpb.DeployRequest(name="持久"), timeout=30)
    assert server.terminate() == 0
    server2 = server_factory("--http-port", "-1", "--slots", "2", db=server.db)
    stub2 = gsvc.TaskGroupServiceStub(grpc.insecure_channel(server2.grpc_target))
    assert json.loads(stub2.GetTemplate(gpb.GetTemplateRequest(name="持久"), timeout=30).json)["name"] == "持久"
    got = stub2.GetInstance(gpb.GetInstanceRequest(id=inst.id), timeout=30)
    assert list(got.task_ids) == list(inst.task_ids) and got.status == gpb.INSTANCE_STATUS_RUNNING
    stub2.StopInstance(gpb.StopInstanceRequest(id=inst.id), timeout=30)


def test_cli_group_and_node_commands(env, tmp_path):
    import subprocess
    import sys
    server, stub = env
    doc = tmp_path / "t.json"
    doc.write_text(json.dumps(_template("cli-模板", "sleep 30"), ensure_ascii=False), encoding="utf-8")

    def taskhub(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "server.cli", *args], capture_output=True, text=True, timeout=60)

    base = ("group", "--server", server.grpc_target)
    assert taskhub(*base, "create", str(doc)).returncode == 0
    dup = taskhub(*base, "create", str(doc))
    assert dup.returncode == 2 and "ALREADY_EXISTS" in dup.stderr
    assert json.loads(taskhub(*base, "get", "cli-模板").stdout)["name"] == "cli-模板"
    inst_id = taskhub(*base, "deploy", "cli-模板").stdout.strip()
    assert json.loads(taskhub(*base, "status", inst_id).stdout)["id"] == inst_id
    assert "1 tasks cancelled" in taskhub(*base, "stop", inst_id).stdout
    assert "NOT_FOUND" in taskhub(*base, "status", inst_id).stderr
    nodes = taskhub("node", "--server", server.grpc_target, "list")
    assert nodes.returncode == 0 and "g1" in nodes.stdout and "online" in nodes.stdout
