"""Starts a real `taskhub serve` for a bench (tmp dir, SQLite on disk, durability on)."""
from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
import tempfile


def same_hash_seed() -> dict[str, str]:
    """The environment for servers whose figures are compared with each other (auth off and on): one
    string-hash seed for both, new on each call. Python picks a random one per process, and with
    it how its dicts and sets of strings collide: identical servers on this machine differed by up
    to 9 % in A (batched no-op tasks) from one process to the next, persistently, and within 2 %
    given the same seed (README, "The harness")."""
    return {"PYTHONHASHSEED": str(1 + secrets.randbelow(2**32 - 1))}


class TaskhubServer:
    def __init__(self, *extra: str, env: dict[str, str] | None = None, db: str = ""):
        """db: --db (default a SQLite file in a fresh temporary directory)."""
        self.env = {**os.environ, **(env or {})}
        self.dir = tempfile.mkdtemp(prefix="taskhub-bench-")
        self.args = [sys.executable, "-m", "server.cli", "serve", "--db", db or os.path.join(self.dir, "bench.db"),
                     "--grpc-port", "0", "--http-port", "-1", *extra]
        self.target = ""
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> "TaskhubServer":
        self.proc = subprocess.Popen(self.args, cwd=self.dir, stdout=subprocess.PIPE, text=True, env=self.env)
        for line in self.proc.stdout:
            m = re.search(r"gRPC listening on (\S+)", line)
            if m:
                self.target = m.group(1)
            if line.startswith("taskhub: database"):
                break
        if not self.target:
            raise RuntimeError("taskhub serve did not start")
        return self

    @property
    def token(self) -> str:
        """The admin token a server started with --auth wrote ('' without auth)."""
        try:
            with open(os.path.join(self.dir, "admin.token")) as f:
                return f.read().strip()
        except FileNotFoundError:
            return ""

    def __exit__(self, *exc) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
