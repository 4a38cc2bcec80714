"""Test helpers: real `taskhub node` agent processes, and NodeService/TaskGroupService stubs."""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import grpc
from taskhub.v1 import node_service_pb2 as npb
from taskhub.v1 import node_service_pb2_grpc as nsvc

from conftest import REPO, TESTS, wait_for, watch_output


class AgentProcess:
    """One `taskhub node` subprocess; output collected in `self.output`."""

    def __init__(self, server_target: str, name: str, workdir: Path, *extra: str, work_dir: Path | None = None):
        self.name = name
        self.work_dir = work_dir or workdir / f"agent-{name}"
        self.args = [sys.executable, "-m", "server.cli", "node", "--server", server_target, "--name", name,
                     "--work-dir", str(self.work_dir), "--python-workers", "1", "--kill-grace", "1",
                     "--max-backoff", "0.3", "--task-path", str(TESTS), *extra]
        self.output: list[str] = []
        watch_output(f"agent {name}", self)
        self.proc: subprocess.Popen | None = None

    def start(self) -> "AgentProcess":
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(self.args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, env=env)

        def pump():
            for line in self.proc.stdout:
                self.output.append(line.rstrip("\n"))

        threading.Thread(target=pump, daemon=True).start()
        return self

    def registrations(self) -> int:
        return sum(1 for line in self.output if line.startswith("taskhub node: registered as"))

    def wait_registered(self, count: int = 1, timeout: float = 60) -> None:
        wait_for(lambda: self.registrations() >= count or self.proc.poll() is not None, timeout,
                 what=f"agent {self.name} to register")
        assert self.registrations() >= count, "agent exited:\n" + "\n".join(self.output)

    def kill(self) -> None:
        """SIGKILL, like a machine dying; then remove the task processes it left behind."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.kill_orphans()

    def kill_orphans(self) -> None:
        from server.node.spawner import kill_orphans
        try:
            slot = next((m.group(1) for m in map(re.compile(r"uses slot (\d+)").search, self.output) if m), None)
            instance = (self.work_dir / (".taskhub-agent-instance" + (f".{slot}" if slot else ""))).read_text().strip()
        except FileNotFoundError:
            return
        kill_orphans(instance)

    def close(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                pass
        self.kill()


def node_stub(target: str) -> tuple[grpc.Channel, nsvc.NodeServiceStub]:
    channel = grpc.insecure_channel(target)
    return channel, nsvc.NodeServiceStub(channel)


def list_nodes(stub) -> dict[str, npb.NodeInfo]:
    return {n.name: n for n in stub.ListNodes(npb.ListNodesRequest(), timeout=30).nodes}


def wait_online(stub, *names: str, timeout: float = 60) -> None:
    def ok():
        nodes = list_nodes(stub)
        return all(n in nodes and nodes[n].state == npb.NODE_STATE_ONLINE for n in names)
    wait_for(ok, timeout, what=f"nodes {names} online")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def agents_fixture_factory(tmp_path):
    """Start agents; returns (make, close_all)."""
    started: list[AgentProcess] = []

    def make(target: str, name: str, *extra: str, wait: bool = True) -> AgentProcess:
        a = AgentProcess(target, name, tmp_path, *extra).start()
        started.append(a)
        if wait:
            a.wait_registered()
        return a

    def close_all():
        for a in started:
            a.close()
    return make, close_all
