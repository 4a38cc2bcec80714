"""Several servers on one PostgreSQL (server/cluster.py): any server answers, one schedules, another
takes over when it dies, and a deposed scheduler's writes are refused by the database."""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import grpc
import pytest

from client import TaskhubClient, make_spec, status_name
from conftest import ServerProcess, rpc_code, wait_for
from node_agents import AgentProcess


def start_servers(tmp_path, pg_url, n: int, *extra: str) -> list[ServerProcess]:
    servers = []
    for i in range(n):  # one after the other: the first one is the scheduler
        workdir = tmp_path / f"server{i}"
        workdir.mkdir()
        servers.append(ServerProcess(workdir, ["--http-port", "-1", *extra], db=pg_url).start())
    return servers


class Forwarder:
    """A TCP port forwarding each new connection to `target`: an agent's one server address, pointed
    at the next scheduler by the test (agents given a list of servers follow it themselves)."""

    def __init__(self, target: str):
        self.target = target
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.open: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                down, _ = self.sock.accept()
            except OSError:
                return
            host, port = self.target.rsplit(":", 1)
            try:
                up = socket.create_connection((host, int(port)))
            except OSError:
                down.close()
                continue
            self.open += [down, up]
            for a, b in ((down, up), (up, down)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        for s in (a, b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self) -> None:
        self.sock.close()
        for s in self.open:
            s.close()


@pytest.fixture
def trio(tmp_path, pg_url):
    servers = start_servers(tmp_path, pg_url, 3)
    yield servers
    for s in servers:
        s.close()


def cluster_cli(target: str) -> str:
    done = subprocess.run([sys.executable, "-m", "server.cli", "cluster", "--server", target],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_any_server_answers_one_schedules(trio):
    leader, f1, f2 = trio
    assert any("the scheduler among the servers" in line for line in leader.output)
    assert all(any("a follower among the servers" in line for line in s.output) for s in (f1, f2))
    shown = cluster_cli(f2.grpc_target)
    assert f"scheduler {leader.grpc_target}, epoch 1, since" in shown
    rows = [line.split() for line in shown.splitlines()[2:]]
    assert sorted((r[0], r[1], r[2]) for r in rows) == sorted(
        [(leader.grpc_target, "scheduler", "up"), (f1.grpc_target, "follower", "up"),
         (f2.grpc_target, "follower", "up")])

    # Creates on any server run (placed by the scheduler); reads and streams work from any other.
    c0, c1, c2 = leader.client(), f1.client(), f2.client()
    watched = []
    stream = c2.watch_tasks()

    def watch():
        try:
            for r in stream:
                watched.extend(r.tasks)
        except grpc.RpcError:
            pass  # cancelled below
    threading.Thread(target=watch, daemon=True).start()
    made = [c.create_task(argv=["sh", "-c", f"echo made-on-{i}"]) for i, c in enumerate((c0, c1, c2))]
    for t, reader in zip(made, (c1, c2, c0)):
        assert status_name(reader.wait(t.id).status) == "SUCCESS"
    assert [ln.text for ln in c2.trace(made[1].id)] == ["made-on-1"]
    batch = c1.create_tasks([make_spec(argv=["echo", str(i)]) for i in range(20)])
    ended = list(c2.wait_tasks([t.id for t in batch]))
    assert sorted(t.id for t in ended) == sorted(t.id for t in batch)
    assert {status_name(t.status) for t in ended} == {"SUCCESS"}
    wait_for(lambda: {t.id for t in watched if status_name(t.status) == "SUCCESS"} >= {t.id for t in batch},
             what="a follower's WatchTasks to see the batch end")
    stream.cancel()
    # A follower's cancel goes through the scheduler.
    sleeper = c1.create_task(argv=["sleep", "30"])
    wait_for(lambda: status_name(c2.get_task(sleeper.id).status) == "RUNNING", what="the sleeper to run")
    c2.cancel_task(sleeper.id)
    assert status_name(c1.wait(sleeper.id).status) == "CANCELLED"

    # Task groups (like FATE jobs and Delta runs) live in the scheduler's memory: a follower passes
    # their calls on to it.
    c1.groups.create_template({"name": "pair", "task_groups": [{"tasks": [
        {"name": "a", "config": {"command": "echo a"}}, {"name": "b", "config": {"command": "echo b"}}]}]})
    instance = c2.groups.deploy("pair")
    assert {status_name(t.status) for t in c1.wait_tasks(list(instance.task_ids))} == {"SUCCESS"}
    assert [i.id for i in c0.groups.list_instances()] == [instance.id]

    # Agents and node calls are the scheduler's: a follower says where it is.
    with pytest.raises(grpc.RpcError) as e:
        c1.nodes.list_nodes()
    assert rpc_code(e) == grpc.StatusCode.FAILED_PRECONDITION
    assert e.value.details() == f"not the scheduler; the scheduler is at {leader.grpc_target}"
    assert ("taskhub-leader", leader.grpc_target) in tuple(e.value.trailing_metadata())
    assert c0.nodes.list_nodes()


def test_sigkill_the_scheduler_under_load(trio, tmp_path):
    """No acknowledged create is lost, no task runs twice at once, a trace resumed on another server
    has no gap or duplicate; the time until another server schedules is printed."""
    leader, f1, f2 = trio
    runs = tmp_path / "runs"
    runs.mkdir()
    c1, c2 = f1.client(), f2.client()
    traced = c1.create_task(argv=["sh", "-c", "for i in $(seq 1 30); do echo line$i; sleep 0.1; done"],
                            max_retries=2)
    lines = []
    broken = []

    def trace(client, offset):
        try:
            for ln in client.trace(traced.id, offset=offset):
                lines.append(ln)
        except grpc.RpcError as e:
            broken.append(f"{e.code().name}: {e.details()}")  # its server died: resumed below

    first = threading.Thread(target=trace, args=(leader.client(), 0), daemon=True)
    first.start()
    acked: dict[int, int] = {}  # token -> task id
    stop = threading.Event()

    def load():
        token = 0
        while not stop.is_set():
            client = (c1, c2)[token % 2]
            f = runs / str(token)
            # A run holds a lock on its file while it runs: a second run while the first lives says so.
            script = f"exec 9>>{f}; flock -n 9 || echo overlap $$ >> {f}; echo start $$ >> {f}; sleep 0.2; echo end $$ >> {f}"
            spec = make_spec(argv=["sh", "-c", script], max_retries=3)
            try:
                acked[token] = client.create_tasks([spec], request_id=f"load-{token}")[0].id
            except grpc.RpcError:
                continue  # not acknowledged: retried with the same request id
            token += 1
            time.sleep(0.02)

    loader = threading.Thread(target=load, daemon=True)
    loader.start()
    wait_for(lambda: len(lines) >= 5 and len(acked) >= 20, timeout=60, what="the trace and the load to be under way")
    before = c1.cluster.list_servers()
    killed_at = time.time()
    leader.kill()
    after = wait_for(lambda: (lambda r: r if r.scheduler not in ("", leader.grpc_target) else None)(
        c1.cluster.list_servers()), timeout=60, what="another server to schedule")
    took_over = after.scheduler_since_ms / 1000 - killed_at
    probe = c2.create_task(argv=["true"])
    assert status_name(c2.wait(probe.id).status) == "SUCCESS"
    scheduling = time.time() - killed_at
    print(f"\nfailover: {after.scheduler} took over {took_over:.2f}s after the SIGKILL (epoch {before.epoch} ->"
          f" {after.epoch}); a task created after the kill had run {scheduling:.2f}s after it")
    assert after.epoch == before.epoch + 1

    first.join(30)
    resumed_at = len(lines)
    trace(c2, resumed_at)  # the client resumes on another server from its offset
    assert [ln.seq for ln in lines] == list(range(len(lines))), "a gap or a duplicate in the resumed trace"
    assert lines[-1].text == "line30", (broken, c2.get_task(traced.id),
                                        [(ln.seq, ln.text) for ln in c2.trace(traced.id, follow=False)])

    wait_for(lambda: len(acked) >= 40, timeout=60, what="creates after the failover")
    stop.set()
    loader.join(30)
    ended = {t.id: t for t in c1.wait_tasks(list(acked.values()))}
    assert len(ended) == len(acked)  # no acknowledged create lost
    assert {status_name(t.status) for t in ended.values()} == {"SUCCESS"}
    for token in acked:  # (a run killed with its server has a start and no end)
        events = (runs / str(token)).read_text().splitlines()
        assert not [e for e in events if e.startswith("overlap")], f"two runs at once: {events}"
        assert events[-1].startswith("end"), events


def test_a_deposed_scheduler_is_fenced_and_stops(tmp_path, pg_url):
    """A scheduler frozen past its idle session loses the lock; when it wakes, its writes are refused
    (the epoch moved on) and it stops, while the new scheduler carries on."""
    old, new = start_servers(tmp_path, pg_url, 2)
    try:
        os.kill(old.proc.pid, signal.SIGSTOP)
        c = new.client()
        wait_for(lambda: c.cluster.list_servers().scheduler == new.grpc_target, timeout=60,
                 what="the follower to take over from the frozen scheduler")
        t = c.create_task(argv=["echo", "after"])
        assert status_name(c.wait(t.id).status) == "SUCCESS"
        os.kill(old.proc.pid, signal.SIGCONT)
        assert old.proc.wait(60) == 0
        assert any("no longer the scheduler" in line for line in old.output), old.output
        assert c.cluster.list_servers().epoch == 2
        t = c.create_task(argv=["echo", "still"])
        assert status_name(c.wait(t.id).status) == "SUCCESS"
    finally:
        os.kill(old.proc.pid, signal.SIGCONT) if old.proc.poll() is None else None
        old.close()
        new.close()


def test_tasks_on_an_agent_are_adopted_by_the_next_scheduler(tmp_path, pg_url):
    """The scheduler dies while an agent runs its tasks: the agent reconnects to the next scheduler,
    which adopts the runs (each task runs once, no retry) instead of killing and re-running them."""
    old, new = start_servers(tmp_path, pg_url, 2, "--no-local-node", "--node-timeout", "15")
    forwarder = Forwarder(old.grpc_target)
    agent = AgentProcess(forwarder.address, "a1", tmp_path, "--slots", "4").start()
    marks = tmp_path / "marks"
    marks.mkdir()
    try:
        agent.wait_registered()
        c = new.client()
        script = f"echo start >> {marks}/$TASKHUB_TASK_ID; sleep 3; echo end >> {marks}/$TASKHUB_TASK_ID"
        ids = [c.create_task(argv=["sh", "-c", script], max_retries=0).id for _ in range(3)]
        wait_for(lambda: all(status_name(c.get_task(i).status) == "RUNNING" for i in ids), timeout=60,
                 what="the tasks to run on the agent")
        forwarder.target = new.grpc_target  # where the agent's next connection goes
        old.kill()
        ended = {t.id: t for t in c.wait_tasks(ids)}
        for i in ids:
            assert (status_name(ended[i].status), ended[i].retries) == ("SUCCESS", 0), ended[i]
            assert (marks / str(i)).read_text() == "start\nend\n", f"task {i} ran more than once"
        assert agent.registrations() >= 2  # it came back, to the new scheduler
    finally:
        agent.close()
        forwarder.close()
        old.close()
        new.close()


def unfinished_counted(server: ServerProcess) -> int:
    """The server's count of unfinished tasks, every status summed (on a follower all of them show
    as new: they are outside its memory)."""
    with urllib.request.urlopen(server.http_url + "/metrics", timeout=10) as r:
        text = r.read().decode()
    return int(sum(float(v) for v in re.findall(r'^taskhub_tasks_unfinished\{status="[a-z_]+"\} (\S+)$', text, re.M)))


def test_a_follower_refuses_creates_past_max_queued(tmp_path, pg_url):
    """--max-queued counts the unfinished tasks of every server: the scheduler publishes its count each
    beat, a follower adds its own creates to it and refuses past the limit, as the scheduler does."""
    args = ["--no-local-node", "--max-queued", "4"]
    (tmp_path / "s0").mkdir(), (tmp_path / "s1").mkdir()
    leader = ServerProcess(tmp_path / "s0", args, db=pg_url).start()  # both with HTTP: their /metrics
    follower = ServerProcess(tmp_path / "s1", args, db=pg_url).start()
    try:
        assert any("a follower among the servers" in line for line in follower.output)
        c0, c1 = leader.client(), follower.client()
        made = c0.create_tasks([make_spec(argv=["true"]) for _ in range(3)])  # no node: they stay queued
        wait_for(lambda: unfinished_counted(follower) == 3, what="the follower to hear the scheduler's count")
        c1.create_task(argv=["true"])  # the fourth: the follower counts it at once
        with pytest.raises(grpc.RpcError) as e:
            c1.create_task(argv=["true"])
        assert rpc_code(e) == grpc.StatusCode.RESOURCE_EXHAUSTED and "--max-queued" in e.value.details()
        # The scheduler hears of it by a NOTIFY and a read of the task: not before the answer.
        wait_for(lambda: unfinished_counted(leader) == 4, what="the scheduler to hear of the follower's create")
        for client in (c1, c0):
            with pytest.raises(grpc.RpcError) as e:
                client.create_task(argv=["true"])
            assert rpc_code(e) == grpc.StatusCode.RESOURCE_EXHAUSTED and "--max-queued" in e.value.details()
        for t in made[:2]:
            c0.cancel_task(t.id)
        wait_for(lambda: unfinished_counted(follower) == 2, what="the follower to hear of the two ends")
        c1.create_tasks([make_spec(argv=["true"]) for _ in range(2)])
        with pytest.raises(grpc.RpcError) as e:
            c1.create_task(argv=["true"])
        assert rpc_code(e) == grpc.StatusCode.RESOURCE_EXHAUSTED
    finally:
        follower.close()
        leader.close()


def test_a_token_made_or_revoked_on_one_server_is_valid_or_refused_on_the_others(tmp_path, pg_url):
    from taskhub.v1 import auth_service_pb2 as apb
    from taskhub.v1 import auth_service_pb2_grpc as asvc

    admin_file = tmp_path / "admin.token"
    servers = start_servers(tmp_path, pg_url, 2, "--auth", "--admin-token-file", str(admin_file))
    channels = [grpc.insecure_channel(s.grpc_target) for s in servers]
    try:
        auth = [asvc.AuthServiceStub(c) for c in channels]
        md = lambda token: (("authorization", f"Bearer {token}"),)  # noqa: E731
        admin = admin_file.read_text().strip()
        made = auth[0].CreateToken(apb.CreateTokenRequest(name="ci", role="submitter", namespaces=["team-a"]),
                                   metadata=md(admin))
        # At once on the other server: a token unknown there makes it read the tokens again.
        assert auth[1].WhoAmI(apb.WhoAmIRequest(), metadata=md(made.token), timeout=10).id == made.info.id

        def refused_on_the_other() -> bool:
            try:
                auth[1].WhoAmI(apb.WhoAmIRequest(), metadata=md(made.token), timeout=10)
                return False
            except grpc.RpcError as e:
                assert e.code() == grpc.StatusCode.UNAUTHENTICATED, e
                return "revoked" in e.details()

        auth[0].RevokeToken(apb.RevokeTokenRequest(id=made.info.id), metadata=md(admin))
        wait_for(refused_on_the_other, 15, what="the other server to refuse a token revoked on the first")
    finally:
        for c in channels:
            c.close()
        for s in servers:
            s.close()
