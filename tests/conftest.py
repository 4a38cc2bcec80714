"""Fixtures: real `taskhub serve` processes on ephemeral ports, each in its own tmp dir."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
import weakref
from pathlib import Path

import json
import urllib.error
import urllib.request

import grpc
import pytest

from client import TaskhubClient

REPO = Path(__file__).resolve().parent.parent
TESTS = Path(__file__).resolve().parent


def slack() -> float:
    """How many times a test's deadline to allow: it is for a machine of its own; CI shares two cores
    with other work (load 10-20). TASKHUB_TEST_SLACK overrides. Deadlines only end failing waits,
    so a long one costs a passing test nothing."""
    if os.environ.get("TASKHUB_TEST_SLACK"):
        return float(os.environ["TASKHUB_TEST_SLACK"])
    return max(2.0, min(10.0, os.getloadavg()[0] / (os.cpu_count() or 1)))


def wait_for(predicate, timeout: float = 30.0, interval: float = 0.02, what: str = "condition"):
    """Poll `predicate` until it returns something truthy; fail after `timeout` seconds (times slack())."""
    allowed = timeout * slack()
    deadline = time.monotonic() + allowed
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {allowed:.0f}s ({timeout}s x slack) waiting for {what}")
        time.sleep(interval)


# Every server, agent and gateway process the tests start: a failing test shows what each printed
# while it ran, the only account of a race seen once in CI. Weak: a process's lines go with it.
PROCESSES: list[tuple[str, "weakref.ref"]] = []
SHOWN_LINES = 150


def watch_output(name: str, owner) -> None:
    """`owner.output` is the list of lines the process printed."""
    PROCESSES[:] = [(n, ref) for n, ref in PROCESSES if ref() is not None]
    PROCESSES.append((name, weakref.ref(owner)))


def _outputs():
    return [(name, owner.output) for name, ref in PROCESSES if (owner := ref()) is not None]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    item._taskhub_before = {id(out): (out, len(out)) for _, out in _outputs()}  # (kept alive: ids stay theirs)
    yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    report = (yield).get_result()
    if not report.failed or call.when == "teardown":
        return
    before = getattr(item, "_taskhub_before", {})
    for name, out in _outputs():
        lines = out[before.get(id(out), (out, 0))[1]:]
        if lines:
            report.sections.append((f"{name} printed {len(lines)} lines during the test; the last {SHOWN_LINES}",
                                    "\n".join(lines[-SHOWN_LINES:])))


class ServerProcess:
    """One `taskhub serve` subprocess. Output is collected in `self.output`."""

    def __init__(self, workdir: Path, extra_args: list[str] = (), db: Path | None = None):
        self.workdir = workdir
        self.db = db or workdir / "taskhub.db"
        self.args = [sys.executable, "-m", "server.cli", "serve", "--db", str(self.db), "--grpc-port", "0",
                     "--http-port", "0", "--kill-grace", "1", "--allow-module", "starter",
                     "--allow-module", "sdk_tasks", "--task-path", str(TESTS), *extra_args]
        self.output: list[str] = []
        watch_output(f"server {workdir.name}", self)
        self.grpc_target = ""
        self.http_url = ""
        self.proc: subprocess.Popen | None = None
        self._clients: list[TaskhubClient] = []

    def start(self, timeout: float = 60) -> "ServerProcess":
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(self.args, cwd=self.workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, env=env)
        ready = threading.Event()

        def pump():
            for line in self.proc.stdout:
                self.output.append(line.rstrip("\n"))
                m = re.search(r"gRPC listening on (\S+)", line)
                if m:
                    self.grpc_target = m.group(1)
                m = re.search(r"HTTP gateway listening on (\S+)", line)
                if m:
                    self.http_url = m.group(1)
                if line.startswith("taskhub: database"):
                    ready.set()
            ready.set()

        threading.Thread(target=pump, daemon=True).start()
        if not ready.wait(timeout * slack()) or not self.grpc_target or self.proc.poll() is not None:
            self.kill()
            raise AssertionError("taskhub serve did not start:\n" + "\n".join(self.output))
        return self

    def client(self, **kw) -> TaskhubClient:
        c = TaskhubClient(self.grpc_target, **kw)
        self._clients.append(c)
        return c

    def terminate(self, timeout: float = 30, scaled: bool = True) -> int:
        """SIGTERM and wait (timeout x slack() unless not `scaled`); returns the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout * slack() if scaled else timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError("taskhub serve did not stop on SIGTERM:\n" + "\n".join(self.output))

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def close(self) -> None:
        for c in self._clients:
            c.close()
        if self.proc and self.proc.poll() is None:
            try:
                self.terminate(20, scaled=False)  # at teardown: a server that hangs is killed soon
            except AssertionError:
                pass
        self.kill()


@pytest.fixture
def server_factory(tmp_path):
    """Start servers with extra flags: server_factory("--slots", "2"). All are stopped afterwards."""
    started: list[ServerProcess] = []

    def make(*extra_args: str, db: Path | None = None, start: bool = True) -> ServerProcess:
        s = ServerProcess(tmp_path, list(extra_args), db=db)
        started.append(s)
        return s.start() if start else s

    yield make
    for s in started:
        s.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> ServerProcess:
    """One server shared by a test module (tests that restart or kill use server_factory)."""
    s = ServerProcess(tmp_path_factory.mktemp("server")).start()
    yield s
    s.close()


@pytest.fixture
def client(server) -> TaskhubClient:
    return server.client()


def rpc_code(excinfo) -> grpc.StatusCode:
    return excinfo.value.code()


class HttpAnswer:
    def __init__(self, status: int, headers, body: bytes):
        self.status, self.headers, self.body = status, headers, body

    def json(self):
        return json.loads(self.body)

    def __repr__(self) -> str:
        return f"<HTTP {self.status} {self.body[:300]!r}>"


def http(method: str, url: str, body: bytes | str | dict | list | None = None, headers: dict | None = None,
         timeout: float = 60) -> HttpAnswer:
    """One real HTTP request; answers of any status come back (no exception for 4xx/5xx)."""
    if isinstance(body, (dict, list)):
        body = json.dumps(body)
    if isinstance(body, str):
        body = body.encode()
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return HttpAnswer(resp.status, resp.headers, resp.read())
    except urllib.error.HTTPError as e:
        return HttpAnswer(e.code, e.headers, e.read())


# -- PostgreSQL: one throwaway cluster per test session, a fresh database per test ----------------
@pytest.fixture(scope="session")
def pg_cluster():
    from bench.pgcluster import PgCluster
    cluster = PgCluster(durable=False).start()
    yield cluster
    cluster.stop()


@pytest.fixture
def pg_url(pg_cluster) -> str:
    import uuid
    return pg_cluster.create_database("t_" + uuid.uuid4().hex[:16])


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path) -> str:
    """--db for each backend: the store contract and the end-to-end subset run against both."""
    if request.param == "sqlite":
        return str(tmp_path / "taskhub.db")
    return request.getfixturevalue("pg_url")
