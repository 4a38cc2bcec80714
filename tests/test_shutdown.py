"""SIGTERM stops a server promptly even while clients hold streams open: gRPC trace, watch and
wait, and the gateway's server-sent events (a dashboard's task list and log view)."""
from __future__ import annotations

import http.client
import signal
import subprocess
import sys
import threading
import time
from urllib.parse import urlsplit

from taskhub.v1 import task_pb2 as pb
from taskhub.v1 import task_service_pb2 as svc

from conftest import slack, wait_for

KILL_GRACE = 2.0


def test_sigterm_with_open_streams_exits_within_the_kill_grace(server_factory):
    s = server_factory("--kill-grace", str(KILL_GRACE))
    c = s.client()
    t = c.create_task(argv=["sh", "-c", "echo started; trap '' TERM; sleep 300"])  # ignores SIGTERM: killed
    wait_for(lambda: c.get_task(t.id).status == pb.TASK_STATUS_RUNNING, what="the task running")
    opened: dict[str, threading.Event] = {}

    def hold(name, messages):
        opened[name] = threading.Event()

        def read():
            try:
                for _ in messages():
                    opened[name].set()
            except Exception:
                pass  # cut by the shutdown: what the test wants
        threading.Thread(target=read, daemon=True).start()

    url = urlsplit(s.http_url)

    def sse(path):
        def lines():
            conn = http.client.HTTPConnection(url.hostname, url.port, timeout=120)
            conn.request("GET", path, headers={"Accept": "text/event-stream"})
            resp = conn.getresponse()
            assert resp.status == 200
            while line := resp.readline():
                yield line
        return lines

    hold("trace", lambda: c.trace(t.id))
    hold("watch", lambda: c.stub.WatchTasks(svc.WatchTasksRequest()))
    hold("wait", lambda: c.stub.WaitTask(svc.WaitTaskRequest(id=t.id)))
    hold("sse logs", sse(f"/v1/tasks/{t.id}/logs?follow=true"))
    hold("sse watch", sse("/v1/tasks:watch?namespace=*"))
    idle = http.client.HTTPConnection(url.hostname, url.port, timeout=60)  # a browser's keep-alive connection
    idle.request("GET", "/ui/")
    assert idle.getresponse().read()
    c.wait(c.create_task(argv=["true"]).id)  # something for the watches to see
    for name, event in opened.items():
        assert event.wait(60), f"the {name} stream did not open"

    sent = time.monotonic()
    s.proc.send_signal(signal.SIGTERM)
    try:
        code = s.proc.wait(KILL_GRACE + 2)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"still running {KILL_GRACE + 2}s after SIGTERM:\n" + "\n".join(s.output))
    print(f"\nexit {time.monotonic() - sent:.2f}s after SIGTERM")
    assert code == 0
    wait_for(lambda: "taskhub: stopped" in s.output, 10, what="the stop message")
    idle.close()


def test_a_server_whose_output_nobody_reads_still_stops_on_sigterm(tmp_path):
    """`taskhub serve | tee log`, and the tee killed: the server goes on, and SIGTERM still stops it.
    Its "shutting down" line used to raise BrokenPipeError inside the SIGTERM handler, before the
    shutdown started, and a second SIGTERM was then ignored as one already being handled."""
    proc = subprocess.Popen([sys.executable, "-m", "server.cli", "serve", "--db", str(tmp_path / "t.db"),
                             "--grpc-port", "0", "--http-port", "0"], cwd=tmp_path, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        for line in proc.stdout:
            if line.startswith("taskhub: database"):
                break
        assert proc.poll() is None, "taskhub serve did not start"
        proc.stdout.close()  # the reader goes away
        proc.stderr.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30 * slack()) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
