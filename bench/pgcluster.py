"""A throwaway PostgreSQL cluster from Debian's `postgresql` package, for tests and benches.

initdb and pg_ctl in a temporary directory, on a free port of 127.0.0.1. PostgreSQL refuses to run
as root, so as root both run as the `postgres` system user (the directory is chowned to it).
`make test` installs the package when it is missing (the `postgres` target).
"""
from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile


def pg_bin() -> str:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if not found:
        raise RuntimeError("PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb);"
                           " `make postgres` installs Debian's postgresql package")
    return os.path.dirname(found[-1])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PgCluster:
    """start() -> url(dbname); create_database(name); stop() removes everything."""

    def __init__(self, durable: bool = True):
        self.bin = pg_bin()
        self.dir = tempfile.mkdtemp(prefix="taskhub-pg-")
        self.data = os.path.join(self.dir, "data")
        self.port = 0
        # Tests trade crash safety of the throwaway cluster for speed on a loaded machine; benches keep fsync.
        self.durable = durable
        self._as_postgres = os.geteuid() == 0

    def _run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
        cmd = (["runuser", "-u", "postgres", "--"] if self._as_postgres else []) + list(argv)
        return subprocess.run(cmd, capture_output=True, text=True, check=check, timeout=120, cwd=self.dir)

    def start(self) -> "PgCluster":
        if self._as_postgres:
            shutil.chown(self.dir, "postgres", "postgres")
        self._run(f"{self.bin}/initdb", "-D", self.data, "-A", "trust", "-U", "postgres", "--no-sync",
                  "-E", "UTF8", "--locale", "C")
        self.port = free_port()
        return self.resume()

    def pause(self) -> None:
        """Stop the database server (keeping its data and port): clients see it go away."""
        self._run(f"{self.bin}/pg_ctl", "-D", self.data, "-m", "fast", "-w", "stop")

    def resume(self) -> "PgCluster":
        """Start it (again) on the same port."""
        opts = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c max_connections=200"
        if not self.durable:
            opts += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        p = self._run(f"{self.bin}/pg_ctl", "-D", self.data, "-o", opts, "-l", os.path.join(self.dir, "log"),
                      "-w", "-t", "60", "start", check=False)
        if p.returncode != 0:
            log = open(os.path.join(self.dir, "log")).read() if os.path.exists(os.path.join(self.dir, "log")) else ""
            raise RuntimeError(f"PostgreSQL did not start: {p.stdout}{p.stderr}{log}")
        return self

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def create_database(self, name: str) -> str:
        import psycopg
        with psycopg.connect(self.url(), autocommit=True) as c:
            c.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        if self.port:
            self._run(f"{self.bin}/pg_ctl", "-D", self.data, "-m", "immediate", "-w", "stop", check=False)
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> "PgCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
