"""Prometheus metrics of one `taskhub serve` process (served by the gateway at GET /metrics).

Counters and histograms are updated where things happen (engine, store writer, the gRPC
interceptor in server/rpc_metrics.py); levels (queue depth, running tasks, nodes, flow
jobs) are read from the live engine when Prometheus scrapes, by `EngineCollector`, so the
hot paths pay nothing for them. Names follow Prometheus conventions (`_total`, `_seconds`);
the RPC metrics use the names of go-grpc-prometheus so existing Grafana panels fit.
"""
from __future__ import annotations

from collections import Counter as Tally
from typing import Callable

from prometheus_client import REGISTRY, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily

from .model import Status

LATENCY_BUCKETS = (.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300)

TASKS_CREATED = Counter("taskhub_tasks_created", "Tasks created (committed), by namespace.", ["namespace"])
TASKS_FINISHED = Counter("taskhub_tasks_finished", "Tasks that reached a terminal status, by namespace and status.",
                         ["namespace", "status"])
SUBMIT_TO_RUNNING = Histogram("taskhub_task_submit_to_running_seconds",
                              "From a task's creation to the start of its first run.", buckets=LATENCY_BUCKETS)
STORE_COMMIT = Histogram("taskhub_store_commit_seconds", "One group commit of the store writer (BEGIN to COMMIT).",
                         buckets=LATENCY_BUCKETS)
STORE_COMMIT_ROWS = Counter("taskhub_store_committed_rows", "Rows written by the store writer, by kind.", ["kind"])
LOG_LINES = Counter("taskhub_log_lines_written", "Task log lines committed to the store.")
RPC_HANDLED = Counter("grpc_server_handled", "RPCs completed on the server, by method and status code.",
                      ["grpc_type", "grpc_service", "grpc_method", "grpc_code"])
RPC_SECONDS = Histogram("grpc_server_handling_seconds", "Time to answer an RPC (a stream: until it ends).",
                        ["grpc_type", "grpc_service", "grpc_method"], buckets=LATENCY_BUCKETS)

WAITING = frozenset({Status.NEW, Status.SCHEDULING, Status.SCHEDULED, Status.QUEUED, Status.PENDING, Status.RESTORING})


def _children(metric) -> Callable:
    """metric.labels(...) cached per label values: labels() costs microseconds on every call (it
    validates and locks); the hot paths call this instead."""
    cache: dict = {}

    def child(*values):
        c = cache.get(values)
        if c is None:
            c = cache[values] = metric.labels(*values)
        return c
    return child


_created = _children(TASKS_CREATED)
_finished = _children(TASKS_FINISHED)
_STATUS_LABEL = {s: s.name.lower() for s in Status}
_INSERTED, _UPDATED, _LOGGED = (STORE_COMMIT_ROWS.labels(k) for k in ("task_insert", "task_update", "log_line"))


def tasks_created(tasks) -> None:
    if len(tasks) == 1:
        _created(tasks[0].spec.namespace).inc()
        return
    for namespace, n in Tally(t.spec.namespace for t in tasks).items():
        _created(namespace).inc(n)


def task_finished(task) -> None:
    _finished(task.spec.namespace, _STATUS_LABEL[task.status]).inc()


def task_started(task) -> None:
    if task.retries == 0 and task.start_time_ms >= task.create_time_ms > 0:
        SUBMIT_TO_RUNNING.observe((task.start_time_ms - task.create_time_ms) / 1000)


def store_committed(seconds: float, inserted: int, updated: int, log_lines: int) -> None:
    STORE_COMMIT.observe(seconds)
    if inserted:
        _INSERTED.inc(inserted)
    if updated:
        _UPDATED.inc(updated)
    if log_lines:
        _LOGGED.inc(log_lines)
        LOG_LINES.inc(log_lines)


# Flow jobs are counted by whoever owns them (FlowService): it registers a function that
# returns {status: number of jobs}, read at scrape time.
_flow_jobs: Callable[[], dict[str, int]] | None = None


def set_flow_jobs_source(source: Callable[[], dict[str, int]] | None) -> None:
    global _flow_jobs
    _flow_jobs = source


class EngineCollector:
    """Levels read from the engine at scrape time (on the server's event loop)."""

    def __init__(self, engine):
        self.engine = engine

    def collect(self):
        by_status = self.engine.status_counts()
        unfinished = GaugeMetricFamily("taskhub_tasks_unfinished", "Unfinished tasks, by status.", labels=["status"])
        for status in Status:
            if not status.terminal:
                unfinished.add_metric([status.name.lower()], by_status.get(status, 0))
        yield unfinished
        yield GaugeMetricFamily("taskhub_queue_depth", "Tasks waiting to run (new, scheduling, scheduled, queued, "
                                "pending, restoring).", value=sum(by_status.get(s, 0) for s in WAITING))
        yield GaugeMetricFamily("taskhub_tasks_running", "Tasks whose process runs.", value=by_status.get(Status.RUNNING, 0))
        yield GaugeMetricFamily("taskhub_tasks_in_memory", "Tasks the engine holds: on nodes, the queue's window"
                                " (--queue-window), parked; the rest of the queue is in the database only.",
                                value=len(self.engine.tasks))

        nodes = list(self.engine.nodes.values())
        online = GaugeMetricFamily("taskhub_nodes", "Nodes the server knows, by state.", labels=["state"])
        online.add_metric(["online"], sum(1 for n in nodes if n.online))
        online.add_metric(["offline"], sum(1 for n in nodes if not n.online))
        yield online
        slots = GaugeMetricFamily("taskhub_node_slots", "Task slots of each node.", labels=["node"])
        free = GaugeMetricFamily("taskhub_node_free_slots", "Slots of each node not taken by its tasks.", labels=["node"])
        up = GaugeMetricFamily("taskhub_node_online", "1 while a node is online.", labels=["node"])
        for n in nodes:
            slots.add_metric([n.name], n.slots)
            free.add_metric([n.name], n.free_slots)
            up.add_metric([n.name], 1 if n.online else 0)
        yield from (slots, free, up)

        if _flow_jobs is not None:
            jobs = GaugeMetricFamily("taskhub_flow_jobs", "FATE Flow jobs, by status.", labels=["status"])
            for status, n in sorted(_flow_jobs().items()):
                jobs.add_metric([status], n)
            yield jobs


def register_engine(engine) -> Callable[[], None]:
    """Register the scrape-time collector for this engine; returns the function that unregisters it."""
    collector = EngineCollector(engine)
    REGISTRY.register(collector)
    return lambda: REGISTRY.unregister(collector)
