"""create_task from many threads of one client: coalesced into CreateTasks, each caller its own
task or its own error, retries idempotent (client/coalesce.py), against a real server.

Where a test needs a batch of a known shape, a client interceptor holds the first CreateTask
until the other callers are queued behind it (observed, not slept on), then lets it go."""
from __future__ import annotations

import signal
import threading

import grpc
import pytest
from taskhub.v1 import task_pb2 as pb

from client import TaskhubClient, make_spec
from conftest import ServerProcess, wait_for
from test_observability import scrape, value

C = grpc.StatusCode
RPC = dict(grpc_type="unary", grpc_service="taskhub.v1.TaskService", grpc_code="OK")


class Wire(grpc.UnaryUnaryClientInterceptor):
    """Records each create RPC (method, request_id); holds the first CreateTask until released;
    `lose` drops the answer of the first CreateTasks after the server made it (as a broken
    connection would), so the client sees UNAVAILABLE."""

    def __init__(self, hold: bool = True, lose: bool = False):
        self.sent: list[tuple[str, str]] = []
        self.held, self.release = threading.Event(), threading.Event()
        self.hold, self.lose = hold, lose
        self.lost: list = []

    def intercept_unary_unary(self, continuation, details, request):
        name = details.method.rsplit("/", 1)[-1]
        if name in ("CreateTask", "CreateTasks"):
            self.sent.append((name, request.request_id))
        if self.hold and name == "CreateTask":
            self.hold = False
            self.held.set()
            assert self.release.wait(60)
        outcome = continuation(details, request)
        if self.lose and name == "CreateTasks":
            self.lose = False
            self.lost = list(outcome.result().tasks)  # the server made them; the client never hears
            raise Lost()
        return outcome


class Lost(grpc.RpcError):
    def code(self):
        return C.UNAVAILABLE

    def details(self):
        return "connection lost after the request was sent (test)"


def wired(target: str, wire: Wire, **kw) -> TaskhubClient:
    return TaskhubClient(target, channel=grpc.intercept_channel(grpc.insecure_channel(target), wire), **kw)


def held_batch(client: TaskhubClient, wire: Wire, first, rest: list) -> list:
    """Runs first() alone until its CreateTask is held, then each of `rest` in its own thread;
    lets the first go once all of them are queued. Returns each call's task or RpcError, in order."""
    out: list = [None] * (1 + len(rest))

    def run(i, fn):
        try:
            out[i] = fn()
        except grpc.RpcError as e:
            out[i] = e

    threads = [threading.Thread(target=run, args=(0, first))]
    threads[0].start()
    assert wire.held.wait(60)
    for i, fn in enumerate(rest, 1):
        threads.append(threading.Thread(target=run, args=(i, fn)))
        threads[-1].start()
    wait_for(lambda: client.coalescer.queued() == len(rest), what="the other callers queued")
    wire.release.set()
    for t in threads:
        t.join(60)
    return out


def test_many_threads_get_their_own_tasks_in_fewer_calls(server):
    c = server.client()
    before = scrape(server)
    threads, per = 8, 25
    got: dict[int, list] = {}
    start = threading.Barrier(threads)

    def run(k):
        start.wait()
        got[k] = [c.create_task(argv=["true"], name=f"t{k}-{j}", namespace="coalesce") for j in range(per)]

    workers = [threading.Thread(target=run, args=(k,)) for k in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(120)
    tasks = [t for k in range(threads) for t in got[k]]
    assert [t.spec.name for t in tasks] == [f"t{k}-{j}" for k in range(threads) for j in range(per)]
    assert len({t.id for t in tasks}) == threads * per
    listed = c.list_tasks(namespace="coalesce", limit=1000).tasks
    assert sorted(t.id for t in listed) == sorted(t.id for t in tasks)
    # The server counted fewer create calls than tasks, some of them CreateTasks, and as many as the client says.
    sent = c.coalescer.sent
    assert sent["CreateTasks"] >= 1 and sent["CreateTask"] + sent["CreateTasks"] < threads * per, sent
    # The callers an answer woke, straight back, go in one batch: not one of them alone, then the
    # rest (which made every other call a lone CreateTask).
    assert 2 * sent["CreateTask"] < sent["CreateTasks"], sent

    def counted():
        v = scrape(server)
        n = {m: value(v, "grpc_server_handled_total", grpc_method=m, **RPC)
             - value(before, "grpc_server_handled_total", grpc_method=m, **RPC) for m in sent}
        return n if n == sent else None
    wait_for(counted, what=f"the server to count {sent}")
    for t in tasks:
        assert c.wait(t.id, namespace="coalesce").status == pb.TASK_STATUS_SUCCESS


def test_a_bad_spec_fails_only_its_caller(server):
    wire = Wire()
    c = wired(server.grpc_target, wire)
    good = lambda name: lambda: c.create_task(argv=["true"], name=name, namespace="coalesce-bad")  # noqa: E731
    bad = lambda: c.create_task(make_spec(argv=["true"], name="bad", namespace="coalesce-bad", max_retries=10**6))  # noqa: E731
    out = held_batch(c, wire, good("first"), [good("a"), bad, good("b"), good("c")])
    assert [t.spec.name for t in (out[0], out[1], out[3], out[4])] == ["first", "a", "b", "c"]
    assert isinstance(out[2], grpc.RpcError) and out[2].code() == C.INVALID_ARGUMENT
    assert "max_retries" in out[2].details()
    # The batch of four was refused whole; each member went again alone with its own request_id.
    names = [n for n, _ in wire.sent]
    assert names == ["CreateTask", "CreateTasks"] + ["CreateTask"] * 4, wire.sent
    assert len({rid for _, rid in wire.sent}) == 6
    assert sorted(t.spec.name for t in c.list_tasks(namespace="coalesce-bad").tasks) == ["a", "b", "c", "first"]
    c.close()


def test_an_interrupted_caller_leaves_the_queue_and_the_others_go_on(server):
    """Ctrl-C in a thread waiting in the queue: that caller raises, and is neither sent nor in
    the way of the others; the client goes on coalescing."""
    wire = Wire()
    c = wired(server.grpc_target, wire)
    out: dict = {}

    def create(key):
        out[key] = c.create_task(argv=["true"], name=key, namespace="coalesce-int")

    first = threading.Thread(target=create, args=("first",))
    first.start()
    assert wire.held.wait(60)
    behind = threading.Thread(target=create, args=("behind",))
    behind.start()
    wait_for(lambda: c.coalescer.queued() == 1, what="a caller queued")

    sent = threading.Event()

    def interrupt_when_queued():  # the main thread is the one Ctrl-C interrupts
        wait_for(lambda: c.coalescer.queued() == 2, what="the main thread queued")
        signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)
        sent.set()

    # Ctrl-C as Python handles it by default, whatever an earlier test in this process left behind
    # (a run of the full suite once saw the signal go unanswered here for 60 s).
    handler = signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    interrupter = threading.Thread(target=interrupt_when_queued)
    interrupter.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            c.create_task(argv=["true"], name="interrupted", namespace="coalesce-int")
        assert sent.is_set() and c.coalescer.queued() == 1  # it left the queue; "behind" still waits
    finally:
        wire.release.set()
        signal.signal(signal.SIGINT, handler)
    interrupter.join(60)
    first.join(60)
    behind.join(60)
    assert out["first"].spec.name == "first" and out["behind"].spec.name == "behind"
    assert c.create_task(argv=["true"], name="after", namespace="coalesce-int").spec.name == "after"
    assert c.coalescer.queued() == 0
    names = sorted(t.spec.name for t in c.list_tasks(namespace="coalesce-int").tasks)
    assert names == ["after", "behind", "first"]
    c.close()


def test_a_caller_with_its_own_request_id_goes_alone_at_once(server):
    wire = Wire()
    c = wired(server.grpc_target, wire)
    first = threading.Thread(target=lambda: c.create_task(argv=["true"], namespace="coalesce-own"))
    first.start()
    assert wire.held.wait(60)
    # While the first call is held, a call with a request_id is not queued behind it.
    mine = c.create_task(argv=["true"], namespace="coalesce-own", request_id="mine-1")
    again = c.create_task(argv=["true"], namespace="coalesce-own", request_id="mine-1")
    assert mine.id == again.id and c.coalescer.queued() == 0
    wire.release.set()
    first.join(60)
    assert len(c.list_tasks(namespace="coalesce-own").tasks) == 2
    c.close()


def test_coalesce_off_sends_one_call_per_task(server):
    wire = Wire(hold=False)
    c = wired(server.grpc_target, wire, coalesce=False)
    workers = [threading.Thread(target=lambda: c.create_task(argv=["true"], namespace="coalesce-off"))
               for _ in range(6)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    assert [n for n, _ in wire.sent] == ["CreateTask"] * 6 and c.coalescer is None
    c.close()


def test_a_retried_batch_keeps_its_request_id_and_makes_nothing_twice(server):
    wire = Wire(lose=True)
    c = wired(server.grpc_target, wire)
    make = lambda name: lambda: c.create_task(argv=["true"], name=name, namespace="coalesce-retry")  # noqa: E731
    out = held_batch(c, wire, make("first"), [make("a"), make("b"), make("c")])
    assert [t.spec.name for t in out] == ["first", "a", "b", "c"]
    batches = [rid for n, rid in wire.sent if n == "CreateTasks"]
    assert len(batches) == 2 and batches[0] == batches[1], wire.sent   # the retry, same request_id
    assert [t.id for t in out[1:]] == [t.id for t in wire.lost]       # the tasks the lost answer carried
    assert len(c.list_tasks(namespace="coalesce-retry").tasks) == 4
    c.close()


@pytest.fixture(scope="module")
def authsrv(tmp_path_factory):
    proc = ServerProcess(tmp_path_factory.mktemp("auth"), ["--auth"]).start()
    yield proc
    proc.close()


def test_a_namespace_the_token_may_not_use_fails_only_its_caller(authsrv):
    admin = authsrv.client(token=(authsrv.workdir / "admin.token").read_text().strip())
    team_a = admin.auth.create_token(name="team-a", role="submitter", namespaces=["team-a"]).token
    wire = Wire()
    c = wired(authsrv.grpc_target, wire, token=team_a)
    c.metadata = (("authorization", f"Bearer {team_a}"),)  # a given channel carries no token by itself
    make = lambda ns: lambda: c.create_task(argv=["true"], namespace=ns)  # noqa: E731
    out = held_batch(c, wire, make("team-a"), [make("team-a"), make("team-b"), make("team-a")])
    assert [t.spec.namespace for t in (out[0], out[1], out[3])] == ["team-a"] * 3
    assert isinstance(out[2], grpc.RpcError) and out[2].code() == C.PERMISSION_DENIED and "team-b" in out[2].details()
    assert [n for n, _ in wire.sent] == ["CreateTask", "CreateTasks"] + ["CreateTask"] * 3
    assert len(admin.list_tasks(namespace="team-a").tasks) == 3
    assert len(admin.list_tasks(namespace="team-b").tasks) == 0
    c.close()
