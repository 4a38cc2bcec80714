"""Drives the Celery workloads and prints one JSON line. Run by the peer venv's python.

    python -m bench.peer_celery.drive A|B|C|G COUNT [CLIENTS]

A and B: delay() per task from CLIENTS threads, then each result; G: the same no-op tasks sent
as group()s of GROUP tasks (Celery's batch), each group's results read with one get();
C: sequential delay().get() round trips.
"""
import json
import sys
import threading
import time

from celery import group

from bench.peer_celery.app import noop, true

GROUP = 250  # as taskhub's CreateTasks batches in bench/workloads.py


def one_by_one(task, per: int) -> None:
    results = [task.delay() for _ in range(per)]
    for r in results:
        r.get(timeout=600)


def grouped(task, per: int) -> None:
    results = [group(task.s() for _ in range(min(GROUP, per - start))).apply_async()
               for start in range(0, per, GROUP)]
    for r in results:
        r.get(timeout=600)


def throughput(task, total: int, clients: int, send=one_by_one) -> float:
    per = total // clients
    errors = []

    def client():
        try:
            send(task, per)
        except Exception as e:  # reported, not hidden
            errors.append(repr(e))

    threads = [threading.Thread(target=client) for _ in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise SystemExit(f"celery workload failed: {errors[0]}")
    return per * clients / (time.perf_counter() - t0)


def latency(count: int, warm: int = 3) -> list:
    for _ in range(warm):  # the connections to the broker and the result backend: not counted
        noop.delay().get(timeout=60)
    out = []
    for _ in range(count):
        t0 = time.perf_counter()
        noop.delay().get(timeout=60)
        out.append((time.perf_counter() - t0) * 1000)
    return out


if __name__ == "__main__":
    workload, count = sys.argv[1], int(sys.argv[2])
    clients = int(sys.argv[3]) if len(sys.argv) > 3 else 8
    if workload == "A":
        print(json.dumps({"rate": throughput(noop, count, clients)}))
    elif workload == "G":
        print(json.dumps({"rate": throughput(noop, count, clients, grouped)}))
    elif workload == "B":
        print(json.dumps({"rate": throughput(true, count, clients)}))
    else:
        print(json.dumps({"samples_ms": latency(count)}))
