"""`taskhub serve`: store + engine + local node + gRPC server (+ HTTP gateway), one process."""
from __future__ import annotations

import asyncio
import gc
import logging
import os
import shutil
import signal
import sys
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2_grpc
from taskhub.v1 import (auth_service_pb2, auth_service_pb2_grpc, cluster_pb2, cluster_pb2_grpc,
                        delta_service_pb2, delta_service_pb2_grpc,
                        flow_service_pb2, flow_service_pb2_grpc,
                        node_service_pb2, node_service_pb2_grpc, site_service_pb2, site_service_pb2_grpc,
                        task_group_service_pb2, task_group_service_pb2_grpc,
                        task_service_pb2, task_service_pb2_grpc)

from client.cli_support import parse_duration, quiet_when_unread
from gateway.app import Gateway, connect_host

from . import event_loop, grpc_setup, metrics, stages
from .background import spawn
from .api.auth_service import AuthService
from .api.cluster_service import ClusterService
from .api.forward import ToScheduler
from .api.generic import GenericOnly
from .api.flow_service import FlowService
from .api.delta_service import DeltaService
from .api.site_service import SiteService
from .cluster import Cluster
from .db_target import POSTGRESQL, SQLITE, UnsupportedDatabase, claim_database, parse_db_target
from .delta.datasets import node_labels
from .delta.service import DeltaTasks
from .api.group_service import TaskGroupService
from .api.node_service import NodeService
from .api.task_service import TaskService
from .engine import Engine, EngineConfig
from .flow.data import FlowData
from .flow.federation import Federation
from .flow.jobs import FlowJobs, JobIds
from .flow.model_store import ModelStore
from .flow.models import FlowModels
from .flow.registry import Registry
from .flow.store import FlowStore, purge_step as flow_purge_step
from .flow.tenants import owner_lookups
from .groups import TaskGroups
from .modules import ModuleDescriber
from .node.executor import Executor
from .node import task_user as task_users
from .node.local import LocalNode
from .node.pool import worker_paths
from .node.remote import NodeRegistry
from .retention import Retention
from .rpc_metrics import MetricsInterceptor
from .security import Security, SecurityConfig
from .sites.peers import server_credentials
from .sites.routes import RouteError, TlsFiles
from .sites.routes import load as load_routes
from .sites.sites import Sites
from .storage import StoreError, open_store

log = logging.getLogger("taskhub")
LOCAL_OFF = ("local node OFF: under --auth tasks must not run as the server's user (they could read its"
             " database and tokens), and {why}. Run tasks on node agents, fix that, or pass --trust-local-node")


@dataclass
class ServerConfig:
    db: str = "var/taskhub.db"
    host: str = "127.0.0.1"
    grpc_port: int = 50051
    http_port: int = 8080            # -1: no HTTP gateway
    local_node: bool = True
    slots: int = 0                   # local node slots; 0: 8 x cores
    python_workers: int = 0          # warm Python workers; 0: one per core
    allowed_modules: list[str] = field(default_factory=lambda: ["starter"])
    kill_grace: float = 5.0
    work_dir: str = ""               # cwd of command tasks; default: <db dir>/work
    task_paths: list[str] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)
    node_timeout: float = 10.0       # an agent's lease: silent this long, it stops its runs
    lease_grace: float = 2.0         # the server re-runs a lost agent's tasks after node_timeout + this
    retain: str = "7d"               # finished tasks and their logs are purged after this ("0": never)
    max_queued: int = 1_000_000      # unfinished tasks; creates beyond get RESOURCE_EXHAUSTED
    queue_window: int = 10_000       # queued tasks held in memory; the rest of the queue stays in the database
    max_log_lines: int = 1_000_000   # per task
    flow_max_jobs: int = 4           # FATE jobs running at once; more wait in the queue
    flow_data_dir: str = ""          # server-side files of FATE uploads/downloads; default <db dir>/data
    flow_model_dir: str = ""         # FATE model archives of model/store and model/restore; default <db dir>/models
    flow_components: dict[str, str] = field(default_factory=dict)  # DSL module -> package.module:Class
    security: SecurityConfig = field(default_factory=SecurityConfig)
    delta_tasks: bool = True         # accept delta-task's own tasks, as command tasks (same auth rule); --no-delta
    data_dir: str = "var/data"       # Delta datasets the local node holds
    fate_party_id: int = 0           # FATE across sites: the party this server runs (0: every party runs here)
    fate_route_table: str = ""       # the other parties' servers (server/sites/routes.py)
    fate_party_timeout: float = 600.0
    event_loop: str = "auto"         # server/event_loop.py: auto (uvloop if installed), uvloop, asyncio


class Server:
    """The assembled server. `start()` then `wait()`; `stop()` from a signal."""

    def __init__(self, cfg: ServerConfig):
        self.cfg = cfg
        try:
            self.db_target = parse_db_target(cfg.db)
        except UnsupportedDatabase as e:
            raise SystemExit(f"taskhub: {e}")
        self.db_lock = claim_database(self.db_target)  # before anything reads it: one server per database
        self.store = open_store(cfg.db)  # several servers may share a PostgreSQL database (server/cluster.py)
        local_dir = self.store.local_dir
        self.engine = Engine(self.store, EngineConfig(allowed_modules=cfg.allowed_modules, kill_grace=cfg.kill_grace,
                                                      max_queued=cfg.max_queued, max_log_lines=cfg.max_log_lines,
                                                      queue_window=cfg.queue_window,
                                                      ended_kept_seconds=_ended_kept(cfg.retain)))
        self.nodes = NodeRegistry(self.engine, self.store, cfg.node_timeout, cfg.lease_grace)
        self.retention = Retention(self.store, parse_duration(cfg.retain), self.engine.config.request_window_seconds)
        self.retention.steps.append(flow_purge_step(self.store))
        self.groups = TaskGroups(self.engine)
        data_dir = cfg.flow_data_dir or os.path.join(local_dir, "data")
        fstore = FlowStore(self.store)
        model_dir = cfg.flow_model_dir or os.path.join(local_dir, "models")
        ids = JobIds()  # job ids, also model versions
        self.flow_models = FlowModels(ModelStore(self.store), model_dir, ids, live_jobs=lambda: self.flow.jobs.values())
        self.flow = FlowJobs(self.engine, fstore, Registry(cfg.flow_components, cfg.allowed_modules), cfg.flow_max_jobs,
                             hooks=self.flow_models.hooks(), ids=ids)
        self.flow_data = FlowData(self.flow, fstore, data_dir)
        self.federation = Federation(self.flow_data)
        self.sites = self._sites()
        self.security = Security(cfg.security, self.store, self.engine, cfg.host, local_dir,
                                 shared=self.db_target.kind == POSTGRESQL)
        # The rule table's FATE checks look up what a request names here (server/flow/tenants.py).
        self.security.authority.owners.update(owner_lookups(fstore, self.flow.running_component))
        self.delta = DeltaTasks(self.engine, cfg.delta_tasks)
        self.cluster = Cluster(self.store, self.engine, self.nodes, shared=self.db_target.kind == POSTGRESQL)
        self.to_scheduler = ToScheduler(self.cluster, dial=not cfg.security.tls_cert)
        self.executor: Executor | None = None
        self.grpc: grpc.aio.Server | None = None
        self.site_grpc: grpc.aio.Server | None = None   # the other FATE parties' own port (server/sites/)
        self.health = health.aio.HealthServicer()
        self.grpc_port = 0
        self.http_port = 0
        self._stopped = asyncio.Event()
        self._background: list[asyncio.Task] = []
        self._closers: list = []
        self._local_note = ""
        self._fresh_work_dir = ""

    def _sites(self) -> Sites | None:
        cfg = self.cfg
        if not cfg.fate_party_id and not cfg.fate_route_table:
            return None
        if not cfg.fate_party_id or not cfg.fate_route_table:
            raise SystemExit("taskhub: give both --fate-party-id and --fate-route-table (or neither)")
        sec = cfg.security
        flags = TlsFiles(sec.tls_cert, sec.tls_key, sec.tls_client_ca) if sec.tls_cert and sec.tls_client_ca else None
        try:
            table = load_routes(cfg.fate_route_table, cfg.fate_party_id, flags)
        except RouteError as e:
            raise SystemExit(f"taskhub: --fate-route-table {cfg.fate_route_table}: {e}")
        return Sites(table, self.flow, self.federation, self.flow_models, cfg.fate_party_timeout)

    def _site_on_main_port(self) -> bool:
        """This party's own route is the main gRPC port (its TLS from --tls-*): SiteService is served there."""
        listen = self.sites.table.listen
        return listen is None or (listen.port == self.cfg.grpc_port and listen.ip == self.cfg.host)

    async def _start_site_listener(self) -> None:
        """Where the other parties reach this server: its own route, a gRPC server of its own that serves
        only SiteService (mutual TLS, or plaintext on loopback), so a party's certificate opens nothing else."""
        listen = self.sites.table.listen
        server = grpc.aio.server(interceptors=[MetricsInterceptor()], options=[
            ("grpc.max_receive_message_length", self.cfg.security.max_message_bytes),
            ("grpc.max_send_message_length", self.cfg.security.max_message_bytes), ("grpc.so_reuseport", 0)])
        site_service_pb2_grpc.add_SiteServiceServicer_to_server(SiteService(self.sites), server)
        try:
            port = (server.add_insecure_port(listen.target) if listen.tls is None
                    else server.add_secure_port(listen.target, server_credentials(listen)))
        except (RouteError, RuntimeError) as e:
            raise SystemExit(f"taskhub: cannot listen for FATE parties on {listen.target}: {e}")
        if not port:
            raise SystemExit(f"taskhub: cannot listen for FATE parties on {listen.target}")
        await server.start()
        self.site_grpc = server
        print(f"taskhub: FATE party {self.sites.table.own_party}: other parties' servers reach it on {listen.target}"
              f" ({'mutual TLS' if listen.tls else 'plaintext, loopback'});"
              f" routes to {', '.join(map(str, sorted(self.sites.table.routes))) or 'no other party'}", flush=True)

    async def start(self) -> None:
        cfg = self.cfg
        self.security.check_exposure()  # before anything listens: no open server off loopback
        # Bound first: tasks the engine brings back call this server (TASKHUB_SERVER) as soon as they run.
        # Authentication first: the metrics interceptor caches each method's handler, so nothing may
        # run after it per call (refused calls are counted by the audit, not by /metrics).
        # (With TASKHUB_STAGES set, bench/stages.py's timestamps bracket them: server/stages.py.)
        # On a follower, FATE, Delta and task group calls go on to the scheduler (server/api/forward.py).
        forward = [self.to_scheduler] if self.cluster.shared else []
        interceptors = stages.interceptors([*self.security.interceptors(), MetricsInterceptor(), *forward])
        self.grpc = grpc.aio.server(interceptors=interceptors, options=[
            ("grpc.max_receive_message_length", cfg.security.max_message_bytes),
            ("grpc.max_send_message_length", cfg.security.max_message_bytes),
            ("grpc.so_reuseport", 0),
        ])
        self.grpc_port = self.security.add_port(self.grpc, f"{cfg.host}:{cfg.grpc_port}")
        # With TLS, in-process clients (the gateway, the local node's tasks) dial a private Unix socket.
        self._gateway_target = self.security.add_gateway_port(self.grpc) if cfg.http_port >= 0 or cfg.local_node else ""
        if not self.grpc_port:
            raise SystemExit(f"taskhub: cannot listen on {cfg.host}:{cfg.grpc_port}")
        self.cluster.prepare(f"{connect_host(cfg.host)}:{self.grpc_port}")  # the scheduler, or a follower
        self.nodes.preload()  # before recovery: tasks on known agents wait for them
        await self.engine.start()
        await self.cluster.start()
        await self.nodes.start()
        self.groups.load()
        await self.security.start()
        if cfg.security.auth:
            # A SQLite file (and its WAL) beside the admin token; with PostgreSQL only the local directory.
            db_file = cfg.db if self.db_target.kind == SQLITE else os.path.join(self.store.local_dir, "no-db-file")
            for note in self.security.protect_files(db_file):
                print(f"taskhub: {note}", flush=True)
        self._closers.append(self.nodes.stop)
        self.retention.start()
        self._closers.append(self.retention.stop)
        if self.cluster.leading:  # FATE jobs are driven by the scheduler (a follower loads them when it takes over)
            await self.flow.load()
            spawn(self.delta.load(), "load delta tasks")  # a scan of the queue: beside the start, not before it
        else:
            self.cluster.on_lead += [self.flow.load, self.groups.reload, self.delta.load]
        cores = os.cpu_count() or 1
        task_user, self._local_note = self._local_node_user()
        if cfg.local_node and not self._local_note.startswith("local node OFF"):
            work_dir = cfg.work_dir or os.path.join(self.store.local_dir, "work")
            if task_user is not None:
                work_dir = task_users.work_dir_for(task_user, cfg.work_dir)
                self._fresh_work_dir = "" if cfg.work_dir else work_dir   # this run's own: removed at stop
                self.security.share_socket(task_user.gid)
            self.executor = Executor(self.engine, python_workers=cfg.python_workers or cores, work_dir=work_dir,
                                     instance=self.engine.run_tag, kill_grace=cfg.kill_grace,
                                     task_paths=cfg.task_paths, task_user=task_user)
            self.executor.server_target = self._gateway_target or f"{connect_host(cfg.host)}:{self.grpc_port}"
            self.executor.data_dir = os.path.abspath(cfg.data_dir)
            await self.executor.start()
            node = LocalNode(self.executor, cfg.slots or 8 * cores, labels=node_labels(cfg.data_dir, cfg.labels))
            self.engine.add_node(node)
            self._background.append(asyncio.create_task(self._sample(node)))

        self._closers.append(_closer(metrics.register_engine(self.engine)))
        metrics.set_flow_jobs_source(self.flow.jobs_by_status)
        services = GenericOnly(self.grpc)  # what the generated add_*_to_server calls are given
        task_service_pb2_grpc.add_TaskServiceServicer_to_server(TaskService(
            self.engine, ModuleDescriber(cfg.allowed_modules, cfg.task_paths)), services)
        node_service_pb2_grpc.add_NodeServiceServicer_to_server(NodeService(self.nodes, self.cluster), services)
        task_group_service_pb2_grpc.add_TaskGroupServiceServicer_to_server(TaskGroupService(self.groups), services)
        flow_service_pb2_grpc.add_FlowServiceServicer_to_server(
            FlowService(self.flow, self.flow_data, self.federation, self.flow_models,
                        max_upload=cfg.security.max_upload_bytes), services)
        auth_service_pb2_grpc.add_AuthServiceServicer_to_server(AuthService(self.security.authority), services)
        delta_service_pb2_grpc.add_DeltaServiceServicer_to_server(DeltaService(self.delta), services)
        cluster_pb2_grpc.add_ClusterServiceServicer_to_server(ClusterService(self.cluster), services)
        if self.sites is not None:
            if self._site_on_main_port():
                site_service_pb2_grpc.add_SiteServiceServicer_to_server(SiteService(self.sites), services)
            else:
                await self._start_site_listener()
            self.sites.watch()
            self._closers.append(self.sites.close)
        names = [auth_service_pb2.DESCRIPTOR.services_by_name["AuthService"].full_name,
                 task_service_pb2.DESCRIPTOR.services_by_name["TaskService"].full_name,
                 node_service_pb2.DESCRIPTOR.services_by_name["NodeService"].full_name,
                 task_group_service_pb2.DESCRIPTOR.services_by_name["TaskGroupService"].full_name,
                 flow_service_pb2.DESCRIPTOR.services_by_name["FlowService"].full_name,
                 delta_service_pb2.DESCRIPTOR.services_by_name["DeltaService"].full_name,
                 cluster_pb2.DESCRIPTOR.services_by_name["ClusterService"].full_name]
        if self.sites is not None and self._site_on_main_port():
            names.append(site_service_pb2.DESCRIPTOR.services_by_name["SiteService"].full_name)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, services)
        reflection_pb2_grpc.add_ServerReflectionServicer_to_server(  # (enable_server_reflection, through GenericOnly)
            reflection.aio.ReflectionServicer(names + [health.SERVICE_NAME, reflection.SERVICE_NAME]), services)
        await self.grpc.start()
        for name in names + [""]:
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        print(f"taskhub: gRPC listening on {cfg.host}:{self.grpc_port} ({grpc_setup.describe()})", flush=True)
        if cfg.http_port >= 0:
            await self._start_gateway()

        self.security.announce()
        if self._local_note:
            print(f"taskhub: {self._local_note}", flush=True)

    def announce_ready(self) -> None:
        """The line that says the server is up (scripts and tests wait for it). serve() prints it once
        SIGTERM and SIGINT are handled, so a stop sent on seeing it is a clean one."""
        print(f"taskhub: database {self.store.describe()}; local node {'on' if self.executor else 'off'};"
              f" event loop {event_loop.name()}", flush=True)

    def _local_node_user(self) -> tuple[task_users.TaskUser | None, str]:
        """(the user the local node's tasks run as, or None for this process's; a note for `serve`)."""
        sec = self.cfg.security
        if not (self.cfg.local_node and sec.auth):
            return None, ""
        why = "only root can run them as --task-user"
        if task_users.can_switch():
            user = task_users.lookup(sec.task_user)
            why = task_users.cannot_run_workers(user, [*worker_paths(self.cfg.task_paths),
                                                       os.environ.get("PYTHONPATH", "")], "/")
            if not why:
                return user, f"local node tasks run as {user.name} (--task-user); they cannot read the server's files"
        if sec.trust_local_node:
            return None, ("local node ON as this server's own user (--trust-local-node): its tasks can read the"
                          " database and the tokens; give tasks only to people you would make admin")
        return None, LOCAL_OFF.format(why=why)

    async def _start_gateway(self) -> None:
        # The gateway is a gRPC client of this server; it is the first closer (its open streams end at once).
        target = self._gateway_target or f"{connect_host(self.cfg.host)}:{self.grpc_port}"
        gw = Gateway(target, self.cfg.host, self.cfg.http_port, ssl_context=self.security.http_ssl_context(),
                     max_body=self.cfg.security.max_message_bytes, require_credentials=self.cfg.security.auth,
                     fate_verifier=self.security.fate_verifier(), authenticate=self.security.credential_check(),
                     max_upload=self.cfg.security.max_upload_bytes,
                     open_metrics=not self.cfg.security.auth or self.cfg.security.open_metrics)
        try:
            await gw.start()
        except OSError as e:
            raise SystemExit(f"taskhub: cannot listen on {self.cfg.host}:{self.cfg.http_port} for HTTP: {e}")
        self.http_port = gw.port
        self._closers.append(gw.stop)
        print(f"taskhub: HTTP gateway listening on {gw.url}", flush=True)

    async def _sample(self, node: LocalNode) -> None:
        while True:
            node.sample_usage()
            await asyncio.sleep(2.0)

    async def stop(self) -> None:
        for name in list(self.health._server_status):
            await self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        await self.cluster.stop()  # a stopping server takes over nothing
        await self.to_scheduler.close()
        for closer in reversed(self._closers):
            await closer()
        if self.site_grpc:
            await self.site_grpc.stop(grace=1.0)
        if self.grpc:  # calls in flight have a second, then open streams (trace, watch, wait, agents) are cut
            await self.grpc.stop(grace=1.0)
        self.flow.close()
        self.delta.close()
        await self.engine.stop()
        self.security.close()
        for t in self._background:
            t.cancel()
        if self.executor:
            await self.executor.close()
        if self._fresh_work_dir:
            shutil.rmtree(self._fresh_work_dir, ignore_errors=True)
        await asyncio.sleep(0.05)  # let the last status changes reach the writer
        self.engine._flush()
        await asyncio.get_running_loop().run_in_executor(None, self.store.close)
        stages.flush()
        self._stopped.set()

    async def wait(self) -> None:
        await self._stopped.wait()


def _ended_kept(retain: str) -> float:
    """How long WaitTasks answers an ended task from memory: 10 s, well inside --retain."""
    seconds = parse_duration(retain)
    return 10.0 if seconds <= 0 else min(10.0, seconds / 4)


def _closer(fn):
    """A plain function as one of Server._closers (which are awaited)."""
    async def call() -> None:
        fn()
    return call


async def serve(cfg: ServerConfig) -> int:
    server = Server(cfg)
    await server.start()
    loop = asyncio.get_running_loop()
    stopping = []

    def on_signal(signame: str) -> None:
        if stopping:
            return
        stopping.append(signame)
        print(f"taskhub: {signame}, shutting down", flush=True)
        spawn(server.stop(), "shutdown")

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig.name)
    # What start-up made (modules, messages, the servers) lives as long as the process: kept out
    # of the collector's full collections, which walked all of it every few seconds under load
    # (batched no-op tasks: 52 ms per full collection, 3.9 us per task; frozen, 12 ms and 0.9 us).
    gc.freeze()
    server.announce_ready()
    await server.wait()
    print("taskhub: stopped", flush=True)
    return 0


def run(cfg: ServerConfig) -> int:
    quiet_when_unread()
    logging.basicConfig(level=os.environ.get("TASKHUB_LOG", "WARNING"), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        code = event_loop.run(serve(cfg), cfg.event_loop)
    except StoreError as e:  # never a silent fallback: say why, exit non-zero
        print(f"taskhub: {e}", file=sys.stderr, flush=True)
        return 2
    # Stopped: the store is closed, every child process is gone. What is left is the interpreter's
    # teardown, where gRPC's poller thread held the exit back by 1-2.5 s (measured); leave at once.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
