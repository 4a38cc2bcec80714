"""Drives the Celery workloads and prints one JSON line. Run by the peer venv's python.

    python -m bench.peer_celery.drive A|B|C COUNT [CLIENTS]
"""
import json
import sys
import threading
import time

from bench.peer_celery.app import noop, true


def throughput(task, total: int, clients: int) -> float:
    per = total // clients
    errors = []

    def client():
        try:
            results = [task.delay() for _ in range(per)]
            for r in results:
                r.get(timeout=600)
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


def latency(count: int) -> list:
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
    elif workload == "B":
        print(json.dumps({"rate": throughput(true, count, clients)}))
    else:
        print(json.dumps({"samples_ms": latency(count)}))
