"""Running tasks as an unprivileged user, so that a task cannot read what its server or agent
keeps: the database, tokens, TLS keys (all mode 0600 in 0700 directories, see server/app.py), nor
the node's own token in its environment.

Under `--auth` the local node (and an agent started as root) runs its command spawner and its
Python workers as `--task-user` (default `nobody`), with no supplementary groups, in a working
directory that user owns and nothing of the server's is in. Only root can switch users: a server
that is not root keeps the local node off under --auth unless told to trust it.
"""
from __future__ import annotations

import grp
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass

# Never handed to a task's process (or to the processes that start tasks): a node's own credential.
SECRET_ENV = ("TASKHUB_TOKEN",)


@dataclass(frozen=True)
class TaskUser:
    name: str
    uid: int
    gid: int

    def command(self, argv: list[str]) -> list[str]:
        """`argv` run as this user, with no supplementary groups (the spawner, a Python worker, and
        the probe of cannot_run_workers): uvloop's process creation cannot switch users. A bootstrap
        switches, then execs `argv`. It is Python in isolated mode (-I): no PYTHONPATH, working
        directory or user site on its path, so nothing it runs as root comes from where a task can write."""
        return [sys.executable, "-I", "-c", _BECOME, str(self.uid), str(self.gid), *argv]


# sys.argv of `python -c`: ["-c", uid, gid, program, args...]
_BECOME = ("import os, sys; os.setgroups([]); os.setgid(int(sys.argv[2])); os.setuid(int(sys.argv[1]));"
           " os.execv(sys.argv[3], sys.argv[3:])")


def lookup(name: str) -> TaskUser:
    try:
        pw = pwd.getpwnam(name)
    except KeyError:
        raise SystemExit(f"taskhub: --task-user {name!r}: no such user on this machine") from None
    if pw.pw_uid == 0:
        raise SystemExit(f"taskhub: --task-user {name!r} is root; name an unprivileged user")
    return TaskUser(name, pw.pw_uid, pw.pw_gid)


def can_switch() -> bool:
    return os.geteuid() == 0


def clean_env(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if k not in SECRET_ENV}


def work_dir_for(user: TaskUser, wanted: str) -> str:
    """The tasks' working directory, owned by the task user (mode 0700): `wanted`, or a new one
    under the system's temporary directory (the default: nothing of the server's is near it)."""
    path = wanted or tempfile.mkdtemp(prefix=f"taskhub-work-{user.name}-")
    os.makedirs(path, mode=0o700, exist_ok=True)
    os.chown(path, user.uid, user.gid)
    os.chmod(path, 0o700)
    return os.path.abspath(path)


def hand_over(user: TaskUser, work_dir: str, files: dict[str, str]) -> dict[str, str]:
    """Copies of the files named by `files` (env name -> path: an agent's TLS CA and client
    certificate, which its FATE tasks dial the server with) in `work_dir`/.tls, owned by the task
    user (0600 in a 0700 directory); the same mapping to the copies."""
    if not files:
        return {}
    folder = os.path.join(work_dir, ".tls")
    os.makedirs(folder, mode=0o700, exist_ok=True)
    os.chown(folder, user.uid, user.gid)
    out = {}
    for env, path in files.items():
        copy = os.path.join(folder, env.lower())
        shutil.copyfile(path, copy)
        os.chown(copy, user.uid, user.gid)
        os.chmod(copy, 0o600)
        out[env] = copy
    return out


def for_agent(token: str, name: str, trust: bool, paths: list[str]) -> TaskUser | None:
    """The user an agent runs tasks as: with a token, `name` (the agent must be root); None for its
    own user (no token, or trusted). Exits with what to do when neither is possible. `paths`: what
    its workers import from (pool.worker_paths; passed in, as pool.py imports this module)."""
    if not token:
        return None
    if can_switch():
        user = lookup(name)
        why = cannot_run_workers(user, [*paths, os.environ.get("PYTHONPATH", "")], "/")
        if not why:
            return user
    else:
        why = "only root can run them as --task-user"
    if trust:
        print("taskhub node: tasks run as this agent's own user (--trust-tasks): they can read its token", flush=True)
        return None
    raise SystemExit(f"taskhub node: refusing to run tasks as this agent's user (they could read its token),"
                     f" and {why}. Start the agent as root, fix that, or pass --trust-tasks.")


def cannot_run_workers(user: TaskUser, paths: list[str], cwd: str) -> str:
    """Workers run as the task user and import taskhub and the task modules: "" if that user can
    start one, else why not and what to fix (e.g. the interpreter or a --task-path not readable)."""
    env = clean_env({**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)})
    try:
        probe = subprocess.run(user.command([sys.executable, "-c", "import server.node.worker"]), env=env, cwd=cwd,
                               capture_output=True, text=True, timeout=60)
        if probe.returncode == 0:
            return ""
        why = (probe.stderr.strip().splitlines() or ["(no output)"])[-1]
    except OSError as e:
        why = f"{e.strerror}: {e.filename}"
    return (f"--task-user {user.name} cannot start a Python worker ({why}); make the interpreter"
            f" ({os.path.realpath(sys.executable)}), the environment ({sys.prefix}) and the task paths readable"
            f" by {user.name}")
