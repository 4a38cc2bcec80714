"""Chaos: a real server and real agents under steady load, killed and frozen at random; then
the invariants are checked.

    make chaos                              # 10 minutes (bench/results/chaos.json)
    python -m bench.chaos --seconds 60 --out /tmp/chaos.json

Load: command and Python tasks (bench/chaos_tasks.py) created with a request_id each, retried
with the same id until acknowledged. Chaos, one action at a time: SIGKILL and restart the
server; SIGKILL and restart an agent; freeze an agent (SIGSTOP), sometimes past its lease +
grace, then SIGCONT. At the end, with everything back up:
- every acknowledged task reached a terminal status, and the same one after one more server
  SIGKILL and restart (exactly one terminal status);
- no two attempts of a task overlapped (an exclusive lock per task, and the start/end marks);
- every attempt's log lines are in order with no gaps, and the task's lines are numbered
  without gaps;
- no request_id made two tasks (task name = request id; a repeat of a create returns its task);
- the WAL stayed under 64 MB.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

import grpc
import psutil
from taskhub.v1 import task_pb2 as pb
from taskhub.v1 import task_service_pb2 as svc
from taskhub.v1 import task_service_pb2_grpc as svc_grpc

REPO = Path(__file__).resolve().parent.parent
BENCH = Path(__file__).resolve().parent
NAMESPACE = "chaos"
TERMINAL = {pb.TASK_STATUS_SUCCESS, pb.TASK_STATUS_FAILED, pb.TASK_STATUS_CANCELLED}
WAL_BOUND = 64 << 20
LINE = re.compile(r"^a(\d+) (\d+)$")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Proc:
    """One child process of the harness, restartable, its output appended to a file."""

    def __init__(self, name: str, args: list[str], log: Path):
        self.name, self.args, self.log = name, args, log
        self.proc: subprocess.Popen | None = None
        self.stopped = False

    def start(self) -> None:
        out = open(self.log, "a")
        self.proc = subprocess.Popen(self.args, cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1"})
        out.close()
        self.stopped = False

    def signal(self, sig: int) -> None:
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
            self.stopped = sig == signal.SIGSTOP

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)

    def stop(self, timeout: float = 30) -> int | None:
        """SIGCONT (if frozen), SIGTERM, wait; the exit code (None if it had to be killed)."""
        if not self.proc:
            return None
        if self.proc.poll() is None:
            self.signal(signal.SIGCONT)
            self.proc.terminate()
            try:
                return self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
                return None
        return self.proc.returncode


class Chaos:
    def __init__(self, seconds: float, agents: int, seed: int, workdir: Path, lease: float = 3.0,
                 grace: float = 1.0, pace: tuple[float, float] = (2.0, 6.0), min_kills: int = 0):
        self.seconds, self.seed, self.dir = seconds, seed, workdir
        self.min_kills = min_kills
        self.rng = random.Random(seed)
        self.lease, self.grace, self.pace = lease, grace, pace
        self.port = free_port()
        self.target = f"127.0.0.1:{self.port}"
        self.markers = workdir / "markers"
        self.markers.mkdir(parents=True, exist_ok=True)
        self.db = workdir / "taskhub.db"
        py = sys.executable
        self.server = Proc("server", [
            py, "-m", "server.cli", "serve", "--db", str(self.db), "--grpc-port", str(self.port), "--http-port", "-1",
            "--no-local-node", "--node-timeout", str(lease), "--lease-grace", str(grace), "--kill-grace", "1",
            "--allow-module", "chaos_tasks", "--task-path", str(BENCH)], workdir / "server.log")
        self.agents = [Proc(f"agent-{i}", [
            py, "-m", "server.cli", "node", "--server", self.target, "--name", f"chaos-{i}",
            "--work-dir", str(workdir / f"agent-{i}"), "--slots", "6", "--python-workers", "2",
            "--max-backoff", "0.5", "--kill-grace", "1", "--task-path", str(BENCH)], workdir / f"agent-{i}.log")
            for i in range(agents)]
        self.acked: dict[str, list[int]] = {}    # request id -> task ids it returned
        self.repeats = 0                          # creates repeated on purpose with the same request id
        self.create_retries = 0
        self.counts = defaultdict(int)            # chaos actions survived
        self.violations: list[str] = []
        self.max_wal = 0
        self.max_db = 0
        self.server_rss: list[int] = []
        self._done = threading.Event()
        self._lock = threading.Lock()

    # -------------------------------------------------------------- running
    def wait_server(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with grpc.insecure_channel(self.target) as ch:
                try:
                    grpc.channel_ready_future(ch).result(timeout=1)
                    svc_grpc.TaskServiceStub(ch).ListTasks(svc.ListTasksRequest(namespace=NAMESPACE, limit=1), timeout=5)
                    return
                except (grpc.FutureTimeoutError, grpc.RpcError):
                    time.sleep(0.2)
        raise RuntimeError("the server did not come up; see " + str(self.server.log))

    def spec(self, key: str) -> pb.TaskSpec:
        duration = round(self.rng.uniform(0.1, 2.5), 2)
        lines = self.rng.randint(2, 40)
        common = dict(name=key, namespace=NAMESPACE, max_retries=100, retry_backoff_seconds=0.2)
        if self.rng.random() < 0.5:
            return pb.TaskSpec(type=pb.TASK_TYPE_COMMAND, argv=[
                sys.executable, str(BENCH / "chaos_tasks.py"), str(self.markers), key, str(duration), str(lines)], **common)
        return pb.TaskSpec(type=pb.TASK_TYPE_PYTHON, callable="chaos_tasks:work", input_json=json.dumps(
            {"markers": str(self.markers), "key": key, "duration": duration, "lines": lines}), **common)

    def _create(self, stub, request_id: str, specs: list[pb.TaskSpec]) -> list[int]:
        """Create, retrying with the same request id until the server acknowledges."""
        while True:
            try:
                if len(specs) == 1:
                    return [stub.CreateTask(svc.CreateTaskRequest(spec=specs[0], request_id=request_id), timeout=5).id]
                resp = stub.CreateTasks(svc.CreateTasksRequest(specs=specs, request_id=request_id), timeout=5)
                return [t.id for t in resp.tasks]
            except grpc.RpcError as e:
                if e.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
                                    grpc.StatusCode.CANCELLED, grpc.StatusCode.UNKNOWN):
                    self.violations.append(f"create {request_id} refused: {e.code().name} {e.details()}")
                    return []
                with self._lock:
                    self.create_retries += 1
                time.sleep(0.2)

    def load(self, worker: int) -> None:
        channel = grpc.insecure_channel(self.target)
        stub = svc_grpc.TaskServiceStub(channel)
        n = 0
        while not self._done.is_set():
            n += 1
            request_id = f"w{worker}-{n}"
            batch = 3 if self.rng.random() < 0.15 else 1
            specs = [self.spec(request_id if batch == 1 else f"{request_id}.{j}") for j in range(batch)]
            ids = self._create(stub, request_id, specs)
            if not ids:
                continue
            with self._lock:
                self.acked[request_id] = ids
            if self.rng.random() < 0.1:  # a client that never saw the answer sends it again
                again = self._create(stub, request_id, specs)
                with self._lock:
                    self.repeats += 1
                if again != ids:
                    self.violations.append(f"request_id {request_id} made tasks {ids} and then {again}")
            time.sleep(self.rng.uniform(0.05, 0.4))
        channel.close()

    def monitor(self) -> None:
        wal = Path(str(self.db) + "-wal")
        while not self._done.wait(0.5):
            try:
                self.max_wal = max(self.max_wal, wal.stat().st_size)
                self.max_db = max(self.max_db, self.db.stat().st_size)
            except OSError:
                pass
            try:
                if self.server.proc and self.server.proc.poll() is None:
                    self.server_rss.append(psutil.Process(self.server.proc.pid).memory_info().rss)
            except psutil.Error:
                pass

    def kills(self) -> int:
        return sum(v for k, v in self.counts.items() if k != "agent_sigstop_past_lease")

    def monkey(self, until: float) -> None:
        """Kill and freeze until `until`, and past it (up to 5x as long) until min_kills were survived:
        on a loaded machine each kill takes longer, and a run with too few proves little."""
        cap = until + 5 * self.seconds
        while time.monotonic() < until or (self.kills() < self.min_kills and time.monotonic() < cap):
            time.sleep(self.rng.uniform(*self.pace))
            if time.monotonic() >= until and self.kills() >= self.min_kills:
                break
            action = self.rng.choices(["server", "agent", "freeze"], weights=[3, 3, 4])[0]
            if action == "server":
                self.server.kill()
                time.sleep(self.rng.uniform(0.1, 2.0))
                self.server.start()
                self.wait_server()
                self.counts["server_sigkill"] += 1
            elif action == "agent":
                agent = self.rng.choice(self.agents)
                agent.kill()
                time.sleep(self.rng.uniform(0.1, 3.0))
                agent.start()
                self.counts["agent_sigkill"] += 1
            else:
                agent = self.rng.choice(self.agents)
                frozen = self.rng.uniform(0.5, self.lease + self.grace + 3)
                agent.signal(signal.SIGSTOP)
                time.sleep(frozen)
                agent.signal(signal.SIGCONT)
                self.counts["agent_sigstop"] += 1
                if frozen > self.lease + self.grace:
                    self.counts["agent_sigstop_past_lease"] += 1

    def run(self) -> dict:
        started = time.monotonic()
        self.server.start()
        self.wait_server()
        for a in self.agents:
            a.start()
        threads = [threading.Thread(target=self.load, args=(i,), daemon=True) for i in range(2)]
        threads.append(threading.Thread(target=self.monitor, daemon=True))
        for t in threads:
            t.start()
        try:
            self.monkey(started + self.seconds)
        finally:
            self._done.set()
            for a in self.agents:
                a.signal(signal.SIGCONT)
        for t in threads[:2]:
            t.join(120)
        report = self.check()
        report["seconds"] = round(time.monotonic() - started, 1)
        return report

    # -------------------------------------------------------------- checking
    def list_all(self, stub) -> list[pb.Task]:
        tasks, token = [], ""
        while True:
            resp = stub.ListTasks(svc.ListTasksRequest(namespace=NAMESPACE, limit=10_000, page_token=token), timeout=60)
            tasks.extend(resp.tasks)
            token = resp.next_page_token
            if not token:
                return tasks

    def check(self) -> dict:
        self.wait_server()
        channel = grpc.insecure_channel(self.target)
        stub = svc_grpc.TaskServiceStub(channel)
        acked_ids = {i for ids in self.acked.values() for i in ids}
        deadline = time.monotonic() + 300
        while True:
            tasks = {t.id: t for t in self.list_all(stub)}
            unfinished = [i for i in acked_ids if i not in tasks or tasks[i].status not in TERMINAL]
            if not unfinished or time.monotonic() > deadline:
                break
            time.sleep(1)
        for i in unfinished:
            t = tasks.get(i)
            self.violations.append(f"task {i} did not end: {pb.TaskStatus.Name(t.status) if t else 'missing'}")
        # Exactly one terminal status: the same after one more crash and restart.
        self.server.kill()
        self.server.start()
        self.wait_server()
        again = {t.id: t for t in self.list_all(stub)}
        for i in acked_ids:
            if i in tasks and tasks[i].status in TERMINAL and (i not in again or again[i].status != tasks[i].status):
                self.violations.append(f"task {i} changed its terminal status after a restart")
        # No request id made two tasks.
        by_name = defaultdict(list)
        for t in again.values():
            by_name[t.spec.name].append(t.id)
        for name, ids in by_name.items():
            if len(ids) > 1:
                self.violations.append(f"request {name} has {len(ids)} tasks: {ids}")
        strays = [t.id for t in again.values() if t.id not in acked_ids]
        for i in strays:
            self.violations.append(f"task {i} ({again[i].spec.name}) exists but was never acknowledged to the client")
        overlaps, attempts, reruns = self.check_marks(again)
        log_lines = self.check_logs(stub, sorted(acked_ids))
        channel.close()
        if self.max_wal > WAL_BOUND:
            self.violations.append(f"the WAL grew to {self.max_wal} bytes (bound {WAL_BOUND})")
        statuses = defaultdict(int)
        for i in acked_ids:
            if i in again:
                statuses[pb.TaskStatus.Name(again[i].status).removeprefix("TASK_STATUS_")] += 1
        rss = self.server_rss
        return {
            "seed": self.seed, "agents": len(self.agents), "lease_seconds": self.lease, "grace_seconds": self.grace,
            "tasks": len(acked_ids), "requests": len(self.acked), "requests_repeated": self.repeats,
            "create_retries": self.create_retries, "statuses": dict(statuses), "attempts": attempts,
            "attempts_rerun_same_number": reruns, "log_lines_checked": log_lines,
            "kills_survived": dict(self.counts), "kills_total": self.kills(),
            "overlaps": overlaps, "max_wal_bytes": self.max_wal, "max_db_bytes": self.max_db,
            "server_rss_mb": {"first": round(rss[0] / 2**20, 1), "max": round(max(rss) / 2**20, 1),
                              "last": round(rss[-1] / 2**20, 1)} if rss else {},
            "violations": len(self.violations), "violation_details": self.violations[:50],
        }

    def check_marks(self, tasks: dict[int, pb.Task]) -> tuple[int, int, int]:
        overlaps = 0
        for f in self.markers.glob("*.overlap"):
            overlaps += 1
            self.violations.append(f"{f.stem}: two attempts ran at once: {f.read_text().strip()}")
        attempts = reruns = 0
        by_name = {t.spec.name: t for t in tasks.values()}
        for f in self.markers.glob("*.marks"):
            runs: dict[int, list[list[float]]] = defaultdict(list)
            for line in f.read_text().splitlines():
                what, attempt, ts, *_ = line.split()
                if what == "start":
                    runs[int(attempt)].append([float(ts), None])
                elif runs[int(attempt)]:
                    runs[int(attempt)][-1][1] = float(ts)
            attempts += sum(len(v) for v in runs.values())
            reruns += sum(len(v) - 1 for v in runs.values())
            intervals = sorted((s, e, a) for a, v in runs.items() for s, e in v)
            for (s1, e1, a1), (s2, _e2, a2) in zip(intervals, intervals[1:]):
                if e1 is not None and s2 < e1:
                    self.violations.append(f"{f.stem}: attempt {a2} started before attempt {a1} ended")
            t = by_name.get(f.stem)
            if t is not None and t.status == pb.TASK_STATUS_SUCCESS and not any(
                    e is not None for v in runs.values() for _, e in v):
                self.violations.append(f"{f.stem}: SUCCESS but no attempt ran to its end")
        return overlaps, attempts, reruns

    def check_logs(self, stub, ids: list[int]) -> int:
        checked = 0
        for i in ids:
            seqs, per_attempt = [], defaultdict(list)
            try:
                for batch in stub.TraceTask(svc.TraceTaskRequest(namespace=NAMESPACE, id=i, follow=False), timeout=60):
                    for line in batch.lines:
                        seqs.append(line.seq)
                        m = LINE.match(line.text)
                        if m:
                            per_attempt[int(m.group(1))].append(int(m.group(2)))
                        elif "log lines" in line.text and "lost" in line.text:
                            self.violations.append(f"task {i}: {line.text}")
            except grpc.RpcError as e:
                self.violations.append(f"task {i}: trace failed: {e.code().name}")
                continue
            checked += len(seqs)
            if seqs != list(range(len(seqs))):
                self.violations.append(f"task {i}: log seq numbers have gaps or are out of order")
            for attempt, numbers in per_attempt.items():
                if numbers != list(range(len(numbers))):
                    self.violations.append(f"task {i}: attempt {attempt}'s lines are out of order or have gaps:"
                                           f" {numbers[:60]}")
        return checked

    def close(self) -> dict:
        codes = {a.name: a.stop() for a in self.agents}
        codes["server"] = self.server.stop()
        return codes


def run(seconds: float, agents: int = 2, seed: int | None = None, workdir: Path | None = None,
        pace: tuple[float, float] = (2.0, 6.0), min_kills: int = 0) -> dict:
    seed = seed if seed is not None else random.randrange(1 << 30)
    own = workdir is None
    workdir = workdir or Path(tempfile.mkdtemp(prefix="taskhub-chaos-"))
    chaos = Chaos(seconds, agents, seed, workdir, pace=pace, min_kills=min_kills)
    try:
        report = chaos.run()
    finally:
        exits = chaos.close()
    report["exit_codes"] = exits
    unclean = [f"{name} exited {code} on SIGTERM" for name, code in exits.items() if code != 0]
    tracebacks = [p.name for p in [chaos.server, *chaos.agents]
                  if "Traceback" in p.log.read_text(errors="replace") or "was destroyed but it is pending"
                  in p.log.read_text(errors="replace")]
    report["logs_with_tracebacks"] = tracebacks
    report["violations"] += len(unclean)
    report["violation_details"] += unclean
    report["workdir"] = str(workdir)
    if own and not report["violations"] and not tracebacks:
        shutil.rmtree(workdir, ignore_errors=True)
    return report


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=600)
    p.add_argument("--agents", type=int, default=3)
    p.add_argument("--seed", type=int)
    p.add_argument("--out", default=str(BENCH / "results" / "chaos.json"))
    a = p.parse_args()
    report = run(a.seconds, a.agents, a.seed)
    print(json.dumps({k: v for k, v in report.items() if k != "violation_details"}, indent=2))
    for v in report["violation_details"]:
        print("VIOLATION:", v)
    print(f"chaos: {report['tasks']} tasks, {report['kills_total']} kills survived, {report['violations']} violations")
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(report, f, indent=2)
    return 1 if report["violations"] else 0


if __name__ == "__main__":
    sys.exit(main())
