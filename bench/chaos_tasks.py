"""The chaos harness's task, as a Python task (`chaos_tasks:work`) and as a command (run this file).

Each attempt takes an exclusive lock on a per-task file for as long as it runs: if another
attempt of the same task holds it, the two overlap, and the file <key>.overlap records it.
It appends "start <attempt> <time>" and "end <attempt> <time>" to <key>.marks and prints
numbered lines "a<attempt> <i>", so the checker can see order and gaps in the task's log.
"""
from __future__ import annotations

import fcntl
import os
import sys
import time


def _mark(markers: str, key: str, what: str, attempt: int) -> None:
    with open(os.path.join(markers, key + ".marks"), "a") as f:
        f.write(f"{what} {attempt} {time.time():.6f} {os.getpid()} {os.environ.get('TASKHUB_TASK_ID', '-')}\n")


def work(markers: str, key: str, duration: float, lines: int) -> str:
    attempt = int(os.environ.get("TASKHUB_ATTEMPT", "0"))
    lock = open(os.path.join(markers, key + ".lock"), "a")
    try:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            with open(os.path.join(markers, key + ".overlap"), "a") as f:
                f.write(f"attempt {attempt} started at {time.time():.6f} while another attempt ran\n")
        _mark(markers, key, "start", attempt)
        for i in range(lines):
            print(f"a{attempt} {i}", flush=True)
            time.sleep(duration / lines)
        _mark(markers, key, "end", attempt)
    finally:
        lock.close()
    return "ok"


if __name__ == "__main__":
    work(sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4]))
