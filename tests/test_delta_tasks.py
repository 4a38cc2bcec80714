"""Delta face II: delta-task's own tasks, submitted with its own DeltaNode, run on taskhub.

A real server (Delta tasks are on by default) and two real agents, each holding a different slice of one CSV in its
data directory. The map steps run on the agents, the reduce steps in the coordinator task.
"""
from __future__ import annotations

import io
import pickle
import re
import sys

import cloudpickle
import numpy as np
import pandas as pd
import pytest
from delta.dataset import DataFrame, Dataset
from delta.delta_node import DeltaNode
from delta.serialize import dump_task
from delta.task import FedAvg, HorizontalAnalytics, HorizontalLearning
from taskhub.v1 import task_pb2 as tpb
from node_agents import AgentProcess, node_stub, wait_online

from conftest import ServerProcess, http, wait_for


class WageAvg(HorizontalAnalytics):
    """The issue's example, as a Delta user writes it."""

    def __init__(self, dataset: str = "wages.csv", min_clients: int = 2, wait_timeout: float = 60):
        super().__init__(name="wage_avg", min_clients=min_clients, max_clients=2, wait_timeout=wait_timeout)
        self.file = dataset

    def dataset(self):
        return {"data": DataFrame(self.file)}

    def execute(self, data):
        return data.mean()


cloudpickle.register_pickle_by_value(sys.modules[__name__])  # as from a user's script

WAGES = pd.DataFrame({"wage": [100.0, 200, 600, 50, 75, 1000, 30], "age": [20, 31, 45, 52, 23, 38, 60]})


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    root = tmp_path_factory.mktemp("delta")
    slices = {"a": WAGES.iloc[:3], "b": WAGES.iloc[3:]}
    for name, rows in slices.items():
        (root / f"data-{name}").mkdir()
        rows.to_csv(root / f"data-{name}" / "wages.csv", index=False)
    (root / "data-a" / "only-a.csv").write_text("x\n1\n")
    rng = np.random.default_rng(0)
    xy = pd.DataFrame(rng.uniform(-1, 1, size=(400, 2)), columns=["x1", "x2"])
    xy["y"] = 3 * xy.x1 - 2 * xy.x2 + 1 + rng.normal(0, 0.05, 400)
    xy.iloc[:200].to_csv(root / "data-a" / "xy.csv", index=False)
    xy.iloc[200:].to_csv(root / "data-b" / "xy.csv", index=False)
    server = ServerProcess(root, ["--data-dir", str(root / "data-server")]).start()
    agents = [AgentProcess(server.grpc_target, name, root, "--data-dir", str(root / f"data-{name}")).start()
              for name in slices]
    channel, nodes = node_stub(server.grpc_target)
    try:
        wait_online(nodes, "a", "b")
        yield server, server.client()
    finally:
        channel.close()
        for a in agents:
            a.close()
        server.close()


def test_wage_avg_runs_on_the_data_holders_and_returns_the_means(cluster, capsys):
    server, client = cluster
    node = DeltaNode(server.http_url)
    task_id = node.create_task(WageAvg().build())
    assert node.trace(task_id) is True
    messages = capsys.readouterr().out
    assert f"start run task {task_id}" in messages and f"[Create Task] create task {task_id}" in messages
    assert "[Reduce] round 1/1" in messages and f"task {task_id} finish" in messages
    assert "[Secure Aggregation] pairwise masks among 2 clients" in messages
    assert node.wait(task_id) is True
    result = node.get_result(task_id)
    pd.testing.assert_series_equal(result, WAGES.mean(), check_names=False)
    clients = [t for t in client.list_tasks(limit=50).tasks if t.spec.annotations.get("delta.run") == str(task_id)]
    assert sorted(t.node for t in clients) == ["a", "b"]  # each slice was read where it lives
    # each client ends once it has read the coordinator's stop, just after the coordinator
    assert all(client.wait(t.id).status == tpb.TASK_STATUS_SUCCESS for t in clients)


def test_too_few_data_holders_wait_pending_with_the_reason_then_fail(cluster):
    server, client = cluster
    node = DeltaNode(server.http_url)
    task_id = node.create_task(WageAvg("only-a.csv", wait_timeout=3).build())
    task = wait_for(lambda: (t := client.get_task(task_id)).queue_reason and t, 30, what="a queue reason")
    assert "only-a.csv" in task.queue_reason and "1 online node has it" in task.queue_reason
    meta = http("GET", f"{server.http_url}/v1/task/metadata?task_id={task_id}").json()
    assert meta["status"] == "PENDING"
    assert node.wait(task_id) is False  # after the task's wait_timeout
    assert "wait_timeout" in client.get_task(task_id).error


def _post(url: str, data: bytes, token: str = ""):
    boundary = "deltaboundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"task\"\r\n"
            f"Content-Type: application/octet-stream\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    auth = {"Authorization": f"Bearer {token}"} if token else {}
    return http("POST", f"{url}/v1/task", body, {"Content-Type": f"multipart/form-data; boundary={boundary}", **auth})


class Payload:
    """A pickle that would run a command when loaded."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        import os
        return os.system, (f"touch {self.path}",)


def test_malformed_or_foreign_uploads_are_refused_and_never_run(cluster, tmp_path):
    server, _ = cluster
    marker = tmp_path / "ran"
    for data, words in [(b"\x80\x04garbage.", "not a Delta task"),
                        (pickle.dumps({"name": "x"}, protocol=4), "no delta.core.task.Task"),
                        (pickle.dumps(Payload(marker), protocol=4), "no delta.core.task.Task")]:
        answer = _post(server.http_url, data)
        assert answer.status == 400 and words in answer.json()["detail"], answer
    assert not marker.exists()  # the server read the upload without running any of it


def test_delta_tasks_follow_the_rule_of_command_tasks(server_factory, tmp_path):
    """On by default (the cluster above passes no flag); off with --no-delta; under --auth a
    submitter of the namespace may, a reader may not."""
    from taskhub.v1 import auth_service_pb2 as apb
    from taskhub.v1 import auth_service_pb2_grpc as asvc
    import grpc
    buf = io.BytesIO()
    dump_task(buf, WageAvg(wait_timeout=3).build())
    off = server_factory("--no-delta", "--no-local-node")
    answer = _post(off.http_url, buf.getvalue())
    assert answer.status == 400 and "--no-delta" in answer.json()["detail"], answer
    off.close()
    secured = ServerProcess(tmp_path / "auth", ["--auth", "--no-local-node"])
    (tmp_path / "auth").mkdir()
    secured.start()
    try:
        admin = (tmp_path / "auth" / "admin.token").read_text().strip()
        with grpc.insecure_channel(secured.grpc_target) as ch:
            def token(role):
                return asvc.AuthServiceStub(ch).CreateToken(apb.CreateTokenRequest(
                    name=role, role=role, namespaces=["team-d"]), metadata=(("authorization", f"Bearer {admin}"),)).token
            reader, submitter = token("reader"), token("submitter")
        assert _post(secured.http_url, buf.getvalue()).status == 401
        assert _post(secured.http_url, buf.getvalue(), reader).status == 403
        answer = _post(secured.http_url, buf.getvalue(), submitter)
        assert answer.status == 200, answer
        made = secured.client(token=submitter).get_task(int(answer.json()["task_id"]))
        assert made.spec.namespace == "team-d" and made.spec.name == "wage_avg"
    finally:
        secured.close()


# -- a learning task: a small MLP trained where the data lives; the coordinator averages weights --
def _rows_to_tensors(rows):
    import torch
    batch = torch.tensor([list(r.values) for r in rows], dtype=torch.float32)
    return batch[:, :2], batch[:, 2:]


class LinearFit(HorizontalLearning):
    def __init__(self, rounds: int = 4):
        super().__init__("linear_fit", max_rounds=rounds, validate_interval=1, validate_frac=0.2,
                         strategy=FedAvg(min_clients=2, max_clients=2, merge_epoch=1, wait_timeout=30))
        import torch
        torch.manual_seed(0)
        self.model = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.05)

    def dataset(self):
        return Dataset("xy.csv")

    def make_train_dataloader(self, dataset):
        from torch.utils.data import DataLoader
        return DataLoader(dataset, batch_size=16, shuffle=True, collate_fn=_rows_to_tensors)

    def make_validate_dataloader(self, dataset):
        from torch.utils.data import DataLoader
        return DataLoader(dataset, batch_size=64, collate_fn=_rows_to_tensors)

    def state_dict(self):
        return self.model.state_dict()

    def train(self, dataloader):
        import torch
        for x, y in dataloader:
            self.optimizer.zero_grad()
            loss = torch.nn.functional.mse_loss(self.model(x), y)
            loss.backward()
            self.optimizer.step()

    def validate(self, dataloader):
        import torch
        with torch.no_grad():
            losses = [torch.nn.functional.mse_loss(self.model(x), y).item() for x, y in dataloader]
        return {"loss": sum(losses) / len(losses)}


def test_learning_task_trains_on_the_holders_and_its_loss_falls(cluster, capsys):
    server, client = cluster
    node = DeltaNode(server.http_url)
    task_id = node.create_task(LinearFit().build())
    assert node.trace(task_id) is True
    losses = [float(m) for m in re.findall(r"\[Metrics\] metrics_\d+: loss=(\S+)", capsys.readouterr().out)]
    assert len(losses) == 4, losses
    assert losses[-1] < losses[0] / 2, losses
    weights = node.get_result(task_id)  # the aggregated model's state_dict
    assert set(weights) == {"0.weight", "0.bias", "2.weight", "2.bias"}


def test_cancelling_the_task_stops_its_clients(cluster):
    server, client = cluster
    task_id = DeltaNode(server.http_url).create_task(LinearFit(rounds=500).build())

    def running_clients():
        ts = [t for t in client.list_tasks(limit=50).tasks if t.spec.annotations.get("delta.run") == str(task_id)]
        return len(ts) == 2 and all(t.status == tpb.TASK_STATUS_RUNNING for t in ts) and ts
    clients = wait_for(running_clients, 60, what="both clients running")
    client.cancel_task(task_id)
    assert client.wait(task_id).status == tpb.TASK_STATUS_CANCELLED
    for t in clients:
        ended = client.wait(t.id)
        assert ended.status in (tpb.TASK_STATUS_CANCELLED, tpb.TASK_STATUS_FAILED), ended


# -- a restart: what Delta holds in memory (wait timers, coordinator-client links) comes back from the store --
def _restartable(root, port: int, *extra: str) -> ServerProcess:
    # The agents' lease (--node-timeout) outlasts the restart, so their runs go on (README, Reliability).
    return ServerProcess(root, ["--no-local-node", "--grpc-port", str(port), "--node-timeout", "30", *extra],
                         db=root / "taskhub.db")


def test_a_restart_does_not_extend_a_coordinators_wait_for_holders(tmp_path):
    import time
    from node_agents import free_port
    timeout = 20
    server = _restartable(tmp_path, free_port()).start()
    try:
        task_id = DeltaNode(server.http_url).create_task(WageAvg("nobody-has.csv", wait_timeout=timeout).build())
        client = server.client()
        created = wait_for(lambda: (t := client.get_task(task_id)).queue_reason and t, 30, what="a queue reason")
        server.terminate()
        deadline_ms = created.create_time_ms + timeout * 1000
        # Down for half of the wait: a wait counted afresh at the restart would end at least 10 s late.
        while time.time() * 1000 < created.create_time_ms + timeout * 1000 / 2:
            time.sleep(0.05)
        server = _restartable(tmp_path, free_port()).start()
        ready_ms = time.time() * 1000  # a deadline passed while the server started is kept at once
        client = server.client()
        ended = wait_for(lambda: (e := client.get_task(task_id)).done_time_ms and e, 120, 0.2, what="the wait's end")
        assert ended.status == tpb.TASK_STATUS_CANCELLED and f"after wait_timeout {timeout}s" in ended.error, ended
        assert deadline_ms - 50 <= ended.done_time_ms < max(deadline_ms, ready_ms) + 4000, \
            (ended.done_time_ms - deadline_ms, ready_ms - deadline_ms)
    finally:
        server.close()


class GatedFit(LinearFit):
    """LinearFit whose clients wait in their first training step, away from the server, until a file exists."""

    def __init__(self, gate: str):
        super().__init__(rounds=50)
        self.gate = gate

    def train(self, dataloader):
        import os
        import time
        open(os.path.join(self.gate, f"training-{os.getpid()}"), "w").close()
        while not os.path.exists(os.path.join(self.gate, "go")):
            time.sleep(0.05)
        super().train(dataloader)


def test_clients_started_before_a_restart_end_with_their_coordinator(tmp_path):
    """The coordinator's call to the server breaks while it restarts, so it fails; the server that
    comes back still knows its clients (they run on, training, on the agents) and cancels them."""
    from node_agents import AgentProcess, free_port
    rng = np.random.default_rng(1)
    xy = pd.DataFrame(rng.uniform(-1, 1, size=(100, 3)), columns=["x1", "x2", "y"])
    for name in "ab":
        (tmp_path / f"data-{name}").mkdir()
        xy.to_csv(tmp_path / f"data-{name}" / "xy.csv", index=False)
    gate = tmp_path / "gate"
    gate.mkdir()
    port = free_port()
    server = _restartable(tmp_path, port).start()
    agents = [AgentProcess(server.grpc_target, name, tmp_path, "--slots", "2", "--data-dir", str(tmp_path / f"data-{name}"))
              .start() for name in "ab"]
    channel, nodes = node_stub(server.grpc_target)
    try:
        wait_online(nodes, "a", "b")
        task_id = DeltaNode(server.http_url).create_task(GatedFit(str(gate)).build())
        wait_for(lambda: len(list(gate.glob("training-*"))) == 2, 120, what="both clients training")
        client = server.client()
        parts = [t for t in client.list_tasks(limit=50).tasks if t.spec.annotations.get("delta.run") == str(task_id)]
        assert len(parts) == 2 and all(t.status == tpb.TASK_STATUS_RUNNING for t in parts), parts
        server.terminate()
        server = _restartable(tmp_path, port).start()
        client = server.client()
        assert client.wait(task_id).status in (tpb.TASK_STATUS_FAILED, tpb.TASK_STATUS_CANCELLED)
        for t in parts:  # still in their training step: only the server can end them
            ended = wait_for(lambda: (e := client.get_task(t.id)).done_time_ms and e, 120, 0.2, what="the client's end")
            assert ended.status == tpb.TASK_STATUS_CANCELLED, ended
            assert any(f"Delta task {task_id} ended" in line.text for line in client.trace(t.id, follow=False))
    finally:
        channel.close()
        for a in agents:
            a.close()
        server.close()
