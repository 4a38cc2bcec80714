"""The fence: stops an agent's runs when its lease runs out, even if the agent cannot.

An agent frozen (SIGSTOP, a long GC or swap storm) or killed (SIGKILL, OOM) cannot stop its
own runs; its command tasks would go on while the server, after lease + grace, runs them
again elsewhere. The fence is a small process of its own session that the agent starts and
tells its lease deadline through a file (CLOCK_MONOTONIC seconds, shared by every process on
the machine). When the deadline passes, or the agent is gone, it kills:
- every command the agent started (environment marker TASKHUB_INSTANCE=<instance>), by
  process group, except those started with TASKHUB_KEEP_ON_DISCONNECT=1;
- every Python worker of the agent (TASKHUB_WORKER_OF=<instance>), by pid.
Once the agent is gone and nothing of it is left, the fence exits.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from .spawner import INSTANCE_ENV, KEEP_ENV

WORKER_ENV = "TASKHUB_WORKER_OF"
POLL = 0.05            # seconds between deadline checks (part of the server's lease grace)


class FenceClient:
    """The agent's side: starts the fence and moves its deadline."""

    def __init__(self, path: str, instance: str):
        self.path = path
        self.instance = instance
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.renew(0.0)  # no lease yet: nothing may run
        self.proc = subprocess.Popen([sys.executable, "-m", "server.node.fence", self.path, self.instance,
                                      str(os.getpid())], start_new_session=True, stdin=subprocess.DEVNULL)

    def renew(self, until: float) -> None:
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            f.write(repr(until))
        os.replace(tmp, self.path)  # the fence never reads half a number

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def kill_runs(instance: str) -> int:
    """SIGKILL what the agent with this instance marker started; returns how many were killed."""
    run_marker = f"{INSTANCE_ENV}={instance}".encode()
    worker_marker = f"{WORKER_ENV}={instance}".encode()
    keep = f"{KEEP_ENV}=1".encode()
    me = os.getpid()
    killed = 0
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == me:
            continue
        pid = int(name)
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = f.read().split(b"\0")
            if run_marker in env and keep not in env:
                os.killpg(os.getpgid(pid), signal.SIGKILL)  # a command leads its own process group
                killed += 1
            elif worker_marker in env:
                os.kill(pid, signal.SIGKILL)  # a worker shares the agent's group: only itself
                killed += 1
        except (OSError, ValueError):
            continue
    return killed


def _deadline(path: str, last: float) -> float:
    try:
        with open(path) as f:
            return float(f.read())
    except (OSError, ValueError):
        return last


def main() -> None:
    path, instance, agent_pid = sys.argv[1], sys.argv[2], int(sys.argv[3])
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # the agent stopping cleanly
    deadline = 0.0
    fenced_for = 0.0  # the deadline whose runs were killed already
    while True:
        time.sleep(POLL)
        agent_gone = os.getppid() != agent_pid
        deadline = _deadline(path, deadline)
        # Once per lease that ran out (no new run starts without a lease), and when the agent is gone.
        if agent_gone or (deadline and fenced_for != deadline and time.monotonic() >= deadline):
            fenced_for = deadline
            n = kill_runs(instance)
            if n:
                why = "the agent is gone" if agent_gone else "the agent's lease ran out"
                print(f"taskhub fence: {why}; killed {n} of its task processes", flush=True)
            if agent_gone:
                return

if __name__ == "__main__":
    main()
