"""The `taskhub` command: `serve`, `gateway`, the node agent (`node` without a verb) and `store`,
beside the client's verbs (client/cli.py: task, group, flow, token, node list/get/drain).

This is the one module that assembles the command ([project.scripts] in pyproject.toml); it is
server code because serve, the agent and store run server code.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from . import grpc_setup  # noqa: F401  (first: it sets up gRPC before grpc is imported)

from client.cli import add_client_verbs, run
from client.cli_support import DEFAULT_SERVER, accept_global_flags_after_verb, key_values
from client.credentials import env_tls_ca, env_token
from client.servers import parse_servers

from .event_loop import LOOPS
from .store_cli import add_reliability_flags, add_store_parser

# serve, gateway and the agent import their side when they run (the contract test's allow-list):
# loading the server takes seconds of CPU that a client verb (`taskhub task get 1`) should not pay.


# -- serve, gateway -----------------------------------------------------------
def cmd_serve(a) -> int:
    from .app import ServerConfig
    from .app import run as run_server
    from .security import SecurityConfig
    security = SecurityConfig(
        auth=a.auth, insecure=a.insecure, tls_cert=a.tls_cert, tls_key=a.tls_key, tls_client_ca=a.tls_client_ca,
        admin_token_file=a.admin_token_file, open_reflection=not a.close_reflection,
        max_message_bytes=int(a.max_message_mb * (1 << 20)), max_streams_per_token=a.max_streams_per_token,
        fate_sign_window=a.fate_sign_window, max_upload_bytes=int(a.max_upload_mb * (1 << 20)),
        open_metrics=a.open_metrics, task_user=a.task_user, trust_local_node=a.trust_local_node)
    cfg = ServerConfig(
        db=a.db, host=a.host, grpc_port=a.grpc_port, http_port=a.http_port, local_node=not a.no_local_node,
        slots=a.slots, python_workers=a.python_workers,
        allowed_modules=a.allow_module if a.allow_module is not None else ["starter"],
        kill_grace=a.kill_grace, work_dir=a.work_dir, task_paths=a.task_path or [], labels=key_values(a.label, "--label"),
        node_timeout=a.node_timeout, flow_max_jobs=a.flow_max_jobs, flow_data_dir=a.flow_data_dir,
        flow_model_dir=a.flow_model_dir,
        flow_components=key_values(a.flow_component, "--flow-component"), security=security,
        lease_grace=a.lease_grace, retain=a.retain, max_queued=a.max_queued, max_log_lines=a.max_log_lines,
        queue_window=a.queue_window,
        delta_tasks=not a.no_delta, data_dir=a.data_dir,
        fate_party_id=a.fate_party_id, fate_route_table=a.fate_route_table, fate_party_timeout=a.fate_party_timeout,
        event_loop=a.loop,
    )
    return run_server(cfg)


def cmd_gateway(a) -> int:
    from gateway.app import https_context, run_alone
    if bool(a.tls_cert) != bool(a.tls_key):
        raise SystemExit("taskhub: give both --tls-cert and --tls-key (or neither)")
    try:
        parse_servers(a.grpc)
    except ValueError as e:
        raise SystemExit(f"taskhub gateway: --grpc: {e}")
    ctx = https_context(a.tls_cert, a.tls_key, a.tls_client_ca) if a.tls_cert else None
    if a.retries < 0:
        raise SystemExit("taskhub gateway: --retries must be 0 or more")
    return run_alone(a.grpc, a.host, a.port, a.tls_ca if a.tls_ca is not None else env_tls_ca(),
                     ctx, a.retries)


# -- the node agent -----------------------------------------------------------
def cmd_agent(a) -> int:
    from .node.agent import AgentConfig
    from .node.agent import run as run_agent
    if a.token:
        print("taskhub node: --token on the command line is visible to every user of this machine (ps);"
              " pass it as TASKHUB_TOKEN instead", file=sys.stderr, flush=True)
    try:
        parse_servers(a.server)
    except ValueError as e:
        raise SystemExit(f"taskhub node: --server: {e}")
    return run_agent(AgentConfig(
        server=a.server, name=a.name, address=a.address, slots=a.slots,
        labels=key_values(a.label, "--label"), python_workers=a.python_workers, work_dir=a.work_dir,
        data_dir=a.data_dir,
        task_paths=a.task_path or [], kill_grace=a.kill_grace, heartbeat=a.heartbeat, max_backoff=a.max_backoff,
        token=a.token if a.token is not None else env_token(), tls_ca=a.tls_ca if a.tls_ca is not None else env_tls_ca(),
        tls_cert=a.tls_cert, tls_key=a.tls_key, task_user=a.task_user, trust_tasks=a.trust_tasks,
        event_loop=a.loop))


def add_agent_flags(n: argparse.ArgumentParser) -> None:
    """`taskhub node` without a verb runs the agent: its flags on the client's `node` parser."""
    n.add_argument("--tls-cert", default="", metavar="PEM", help="this agent's certificate, for mutual TLS")
    n.add_argument("--tls-key", default="", metavar="PEM", help="its private key")
    n.add_argument("--name", default="", help="node name (default: the host name)")
    n.add_argument("--address", default="", help="address reported for this node (default: as the server sees it)")
    n.add_argument("--slots", type=int, default=0, help="tasks run at once (default 8 x cores)")
    n.add_argument("--label", action="append", help="node label KEY=VALUE for node_selector (repeatable)")
    n.add_argument("--python-workers", type=int, default=1, help="warm Python workers (default 1)")
    n.add_argument("--work-dir", default="var/agent", help="working directory of command tasks (default ./var/agent)")
    n.add_argument("--data-dir", default="var/data", metavar="DIR",
                   help="Delta datasets this node holds; each entry becomes label delta.dataset.NAME=1 (default ./var/data)")
    n.add_argument("--task-path", action="append", help="extra sys.path entry for Python task modules")
    n.add_argument("--kill-grace", type=float, default=5.0, help="seconds between cancel and SIGKILL")
    n.add_argument("--heartbeat", type=float, default=0.0, metavar="SECONDS",
                   help="heartbeat interval (default: what the server asks, a quarter of its --node-timeout)")
    n.add_argument("--max-backoff", type=float, default=5.0, metavar="SECONDS",
                   help="longest wait between reconnect attempts (default 5)")
    n.add_argument("--task-user", default="nobody", metavar="USER",
                   help="with a token, run tasks as this unprivileged user (the agent must be root; default nobody)")
    n.add_argument("--trust-tasks", action="store_true",
                   help="with a token and not root: run tasks as the agent's own user anyway (they can read its token)")
    n.add_argument("--loop", choices=LOOPS, default="auto",
                   help="event loop: uvloop if installed (auto, the default), uvloop, or asyncio's own")
    n.set_defaults(fn=cmd_agent)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="taskhub", description="taskhub: durable tasks over gRPC and HTTP.")
    sub = p.add_subparsers(dest="noun", required=True, metavar="COMMAND")

    s = sub.add_parser("serve", help="run the server, HTTP gateway and a local node")
    s.add_argument("--db", default=os.environ.get("TASKHUB_DB", "var/taskhub.db"), metavar="PATH|URL",
                   help="a SQLite file, or postgresql://user:password@host:port/dbname (env TASKHUB_DB;"
                        " default ./var/taskhub.db)")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    s.add_argument("--grpc-port", type=int, default=50051, help="0 picks a free port")
    s.add_argument("--http-port", type=int, default=8080, help="0 picks a free port, -1 disables the gateway")
    s.add_argument("--no-local-node", action="store_true", help="run no tasks here; wait for node agents")
    s.add_argument("--slots", type=int, default=0, help="tasks the local node runs at once (default 8 x cores)")
    s.add_argument("--python-workers", type=int, default=0, help="warm Python workers (default one per core)")
    s.add_argument("--allow-module", action="append", metavar="PREFIX",
                   help="Python module prefix tasks may run (repeatable; default: starter)")
    s.add_argument("--kill-grace", type=float, default=5.0, help="seconds between cancel and SIGKILL")
    s.add_argument("--work-dir", default="", help="working directory of command tasks")
    s.add_argument("--task-path", action="append", help="extra sys.path entry for Python task modules")
    s.add_argument("--label", action="append", help="label of the local node, KEY=VALUE (repeatable)")
    s.add_argument("--node-timeout", type=float, default=10.0, metavar="SECONDS",
                   help="an agent's lease: silent this long, it stops its runs (default 10)")
    s.add_argument("--flow-max-jobs", type=int, default=4, metavar="N",
                   help="FATE jobs running at once; more wait in the queue (default 4)")
    s.add_argument("--no-delta", action="store_true",
                   help="refuse delta-task's own tasks (accepted by default under the rule for command tasks)")
    s.add_argument("--allow-delta", action="store_true", help=argparse.SUPPRESS)  # the old opt-in: now a no-op
    s.add_argument("--loop", choices=LOOPS, default="auto",
                   help="event loop: uvloop if installed (auto, the default), uvloop, or asyncio's own")
    s.add_argument("--data-dir", default="var/data", metavar="DIR",
                   help="Delta datasets the local node holds (default ./var/data)")
    s.add_argument("--flow-data-dir", default="", metavar="DIR",
                   help="the only directory FATE uploads/downloads may name server-side files in (default <db dir>/data)")
    s.add_argument("--flow-model-dir", default="", metavar="DIR",
                   help="where model/store saves FATE model archives and model/restore reads them (default <db dir>/models)")
    s.add_argument("--flow-component", action="append", metavar="MODULE=package.module:Class",
                   help="a FATE component plug-in for DSL module MODULE (under an --allow-module prefix; repeatable)")
    site = s.add_argument_group("FATE across sites: each party runs its own server (README: FATE across sites)")
    site.add_argument("--fate-party-id", type=int, default=0, metavar="ID",
                      help="the FATE party this server runs (every role it plays in a job); other parties' tasks"
                           " run on their own servers, reached through --fate-route-table")
    site.add_argument("--fate-route-table", default="", metavar="JSON",
                      help='FATE rollsite route table: {"route_table": {"<party>": {"default": [{"ip": ..., "port": N}]}},'
                           ' "tls": {"cert": ..., "key": ..., "ca": ...}}; this party\'s own entry is where it listens')
    site.add_argument("--fate-party-timeout", type=float, default=600.0, metavar="SECONDS",
                      help="a party's server unreachable this long fails the job that needs it (default 600)")
    sec = s.add_argument_group("security (README: Security)")
    sec.add_argument("--config", metavar="JSON",
                     help='serve settings from a JSON file, keys as the flags: {"auth": true, "tls_cert": "..."};'
                          ' flags given on the command line win')
    sec.add_argument("--auth", action="store_true", help="require a token on every call (writes admin.token first)")
    sec.add_argument("--insecure", action="store_true",
                     help="allow a non-loopback --host without --auth (only on a trusted network)")
    sec.add_argument("--tls-cert", default="", metavar="PEM", help="TLS certificate (chain) of the gRPC and HTTP ports")
    sec.add_argument("--tls-key", default="", metavar="PEM", help="its private key")
    sec.add_argument("--tls-client-ca", default="", metavar="PEM",
                     help="require client certificates signed by this CA (mutual TLS)")
    sec.add_argument("--admin-token-file", default="", metavar="PATH",
                     help="where --auth keeps the bootstrap admin token (default: admin.token next to --db)")
    sec.add_argument("--close-reflection", action="store_true", help="gRPC reflection needs a token too")
    sec.add_argument("--max-message-mb", type=float, default=64, help="largest request or message (default 64)")
    sec.add_argument("--max-upload-mb", type=float, default=1024,
                     help="largest streamed upload (FATE data/upload, model/import); refused as soon as it passes"
                          " (default 1024)")
    sec.add_argument("--open-metrics", action="store_true", help="with --auth, /metrics without a token")
    sec.add_argument("--task-user", default="nobody", metavar="USER",
                     help="with --auth, the local node runs tasks as this unprivileged user (default nobody)")
    sec.add_argument("--trust-local-node", action="store_true",
                     help="with --auth and not root: run the local node's tasks as the server's own user anyway"
                          " (they can read its database and tokens)")
    sec.add_argument("--max-streams-per-token", type=int, default=256,
                     help="open streams (trace, wait, agent) one token may hold (default 256)")
    sec.add_argument("--fate-sign-window", type=float, default=60.0, metavar="SECONDS",
                     help="how far a FATE-signed request's TIMESTAMP may be from the server's clock (default 60)")
    add_reliability_flags(s)
    s.set_defaults(fn=cmd_serve)

    gw = sub.add_parser("gateway", help="run the HTTP gateway alone, as a client of a taskhub gRPC server")
    gw.add_argument("--grpc", default=DEFAULT_SERVER,
                    help="gRPC address of the server, or a list h1:50051,h2:50051 of servers on one database to fail"
                         " over along (env TASKHUB_SERVER)")
    gw.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    gw.add_argument("--port", type=int, default=8080, help="HTTP port (default 8080; 0 picks a free port)")
    gw.add_argument("--tls-ca", default=None, metavar="PEM", help="the server's CA: dial it over TLS (env TASKHUB_TLS_CA)")
    gw.add_argument("--tls-cert", default="", metavar="PEM", help="HTTPS: this certificate (chain)")
    gw.add_argument("--tls-key", default="", metavar="PEM", help="HTTPS: its private key")
    gw.add_argument("--tls-client-ca", default="", metavar="PEM", help="HTTPS: require client certificates it signed")
    gw.add_argument("--retries", type=int, default=5, metavar="TURNS",
                    help="with a list of servers: turns over the list a call or a stream's resume may take before"
                         " its error is answered (default 5, about 6 s; like the SDK's create_retries)")
    gw.set_defaults(fn=cmd_gateway)

    add_agent_flags(add_client_verbs(sub))
    add_store_parser(sub)
    accept_global_flags_after_verb(p)
    return p


def with_config(parser: argparse.ArgumentParser, argv: list[str] | None, args):
    """`serve --config FILE`: the file's values become the defaults, then the command line is read again."""
    if getattr(args, "noun", "") != "serve" or not args.config:
        return args
    try:
        with open(args.config) as f:
            values = json.load(f)
    except (OSError, ValueError) as e:
        raise SystemExit(f"taskhub: cannot read --config {args.config}: {e}")
    if not isinstance(values, dict):
        raise SystemExit(f"taskhub: --config {args.config} must hold a JSON object")
    values = {k.replace("-", "_"): v for k, v in values.items()}
    unknown = sorted(set(values) - set(vars(args)) | ({"config", "fn", "noun"} & set(values)))
    if unknown:
        raise SystemExit(f"taskhub: --config {args.config}: unknown setting(s) {', '.join(unknown)}")
    serve = next(a for a in parser._subparsers._group_actions[0].choices.values() if a.prog.endswith(" serve"))
    serve.set_defaults(**values)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    return run(with_config(parser, argv, parser.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
