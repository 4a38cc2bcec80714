"""Task classes for the SDK tests; the test servers allow this module (--allow-module sdk_tasks)."""
import os
import pwd

from client import CommandTask, PythonTask


class Countdown(PythonTask):
    name = "countdown"

    def __init__(self, start: int = 3):
        self.start = start

    def run(self, ctx):
        for i in range(self.start, 0, -1):
            ctx.log(f"{i}...")
        ctx.log("liftoff")
        return {"counted": self.start}


class Broken(PythonTask):
    def run(self):
        raise ValueError("this task always fails")


class Hello(CommandTask):
    name = "hello"
    argv = ["sh", "-c", "echo hello from $TASKHUB_TASK_ID"]


def read_file(path: str) -> str:
    """What a task can read of a file (tests/test_security_hardening.py: nothing of the server's)."""
    with open(path) as f:
        return f.read()


def whoami() -> dict:
    """Who a Python worker runs as (tests/test_security_hardening.py: the task user, no groups), and
    that its task code can still list its own open files."""
    return {"user": pwd.getpwuid(os.getuid()).pw_name, "groups": os.getgroups(),
            "fds": len(os.listdir("/proc/self/fd"))}


def environment(names: list) -> dict:
    """What a Python task and a process it starts see of these variables (tests/test_run_env.py)."""
    import subprocess
    script = "; ".join(f'printf "%s\\n" "${{{n}-unset}}"' for n in names)
    child = subprocess.run(["/bin/sh", "-c", script], capture_output=True, text=True, check=True).stdout
    return {"task": [os.environ.get(n) for n in names], "child": child.splitlines()}


def environment_now(names: list) -> dict:
    """What the task sees of these variables, in os.environ and in libc's environment (what a
    process it started would get), without starting one: short enough to be held in a worker's line."""
    import ctypes
    getenv = ctypes.CDLL(None).getenv
    getenv.restype = ctypes.c_char_p
    libc = [getenv(n.encode()) for n in names]
    return {"task": [os.environ.get(n) for n in names], "libc": [v.decode() if v is not None else None for v in libc]}
