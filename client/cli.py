"""The `taskhub` command: `taskhub serve`, and `taskhub <noun> <verb>` against a server."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import grpc

from .cli_support import DEFAULT_SERVER, add_connection_flags, key_values, print_message

# -- serve --------------------------------------------------------------------
def cmd_serve(a) -> int:
    from server.app import ServerConfig, run
    from server.security import SecurityConfig
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
        delta_tasks=not a.no_delta, data_dir=a.data_dir,
    )
    return run(cfg)


def cmd_gateway(a) -> int:
    from gateway.app import run_alone
    from gateway.app import https_context

    from .credentials import env_tls_ca
    if bool(a.tls_cert) != bool(a.tls_key):
        raise SystemExit("taskhub: give both --tls-cert and --tls-key (or neither)")
    ctx = https_context(a.tls_cert, a.tls_key, a.tls_client_ca) if a.tls_cert else None
    return run_alone(a.grpc.removeprefix("grpc://"), a.host, a.port, a.tls_ca if a.tls_ca is not None else env_tls_ca(),
                     ctx)


# -- task ---------------------------------------------------------------------
def _client(a):
    from .cli_support import connect
    return connect(a)


def cmd_task_create(a) -> int:
    from .client import make_spec
    argv = a.argv[1:] if a.argv[:1] == ["--"] else a.argv
    if a.python:
        input_value = None
        if a.input is not None:
            try:
                input_value = json.loads(a.input)
            except ValueError as e:
                raise SystemExit(f"taskhub: --input is not JSON: {e}")
        spec = make_spec(callable=a.python, input=input_value, name=a.name, priority=a.priority, timeout=a.timeout,
                         max_retries=a.retries, env=key_values(a.env, "--env"))
    elif argv:
        spec = make_spec(argv=argv, name=a.name, priority=a.priority, timeout=a.timeout, max_retries=a.retries,
                         env=key_values(a.env, "--env"), cwd=a.cwd)
    else:
        raise SystemExit("taskhub: give a command after --, or --python module:function")
    task = _client(a).create_task(spec)
    print(task.id)
    return 0


def cmd_task_get(a) -> int:
    print_message(_client(a).get_task(a.id))
    return 0


def cmd_task_list(a) -> int:
    from .client import status_name
    try:
        resp = _client(a).list_tasks(a.status or [], limit=a.limit,
                                     namespace="*" if a.all_namespaces else None)
    except ValueError as e:
        raise SystemExit(f"taskhub: {e}")
    if a.json:
        print_message(resp)
        return 0
    print(f"{'ID':>8}  {'STATUS':<11} {'PROG':>4}  {'CREATED':<19}  {'NAMESPACE':<12} NAME")
    for t in resp.tasks:
        created = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t.create_time_ms / 1000))
        print(f"{t.id:>8}  {status_name(t.status):<11} {t.progress:>3}%  {created}  {t.spec.namespace:<12} {t.spec.name}")
    return 0


def cmd_task_cancel(a) -> int:
    resp = _client(a).cancel_task(a.id, a.reason)
    from .client import status_name
    print(f"task {a.id}: {'cancel requested' if resp.cancelled else 'already ended'} ({status_name(resp.task.status)})")
    return 0


def cmd_task_delete(a) -> int:
    _client(a).delete_task(a.id, force=a.force)
    print(f"task {a.id} deleted")
    return 0


def _exit_code(status: int) -> int:
    from taskhub.v1 import task_pb2 as pb
    return 0 if status == pb.TASK_STATUS_SUCCESS else 1


def cmd_task_trace(a) -> int:
    client = _client(a)
    status = 0
    for batch in client.trace_batches(a.id, offset=a.offset, follow=not a.no_follow):
        out = []
        for line in batch.lines:
            prefix = time.strftime("%Y-%m-%d %H:%M:%S  ", time.localtime(line.time_ms / 1000)) if a.timestamps else ""
            out.append(prefix + line.text)
        if out:
            sys.stdout.write("\n".join(out) + "\n")
            sys.stdout.flush()
        if batch.end:
            status = batch.status
    if not status:
        return 0 if a.no_follow else _exit_code(client.get_task(a.id).status)
    return _exit_code(status)


def cmd_task_wait(a) -> int:
    from .client import status_name
    task = _client(a).wait(a.id)
    print(f"task {a.id}: {status_name(task.status)}" + (f" ({task.error})" if task.error else ""))
    return _exit_code(task.status)


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
    s.add_argument("--data-dir", default="var/data", metavar="DIR",
                   help="Delta datasets the local node holds (default ./var/data)")
    s.add_argument("--flow-data-dir", default="", metavar="DIR",
                   help="the only directory FATE uploads/downloads may name server-side files in (default <db dir>/data)")
    s.add_argument("--flow-model-dir", default="", metavar="DIR",
                   help="where model/store saves FATE model archives and model/restore reads them (default <db dir>/models)")
    s.add_argument("--flow-component", action="append", metavar="MODULE=package.module:Class",
                   help="a FATE component plug-in for DSL module MODULE (under an --allow-module prefix; repeatable)")
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
    from .store_cli import add_reliability_flags, add_store_parser
    add_reliability_flags(s)
    s.set_defaults(fn=cmd_serve)

    gw = sub.add_parser("gateway", help="run the HTTP gateway alone, as a client of a taskhub gRPC server")
    gw.add_argument("--grpc", default=DEFAULT_SERVER, help="gRPC address of the server (env TASKHUB_SERVER)")
    gw.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    gw.add_argument("--port", type=int, default=8080, help="HTTP port (default 8080; 0 picks a free port)")
    gw.add_argument("--tls-ca", default=None, metavar="PEM", help="the server's CA: dial it over TLS (env TASKHUB_TLS_CA)")
    gw.add_argument("--tls-cert", default="", metavar="PEM", help="HTTPS: this certificate (chain)")
    gw.add_argument("--tls-key", default="", metavar="PEM", help="HTTPS: its private key")
    gw.add_argument("--tls-client-ca", default="", metavar="PEM", help="HTTPS: require client certificates it signed")
    gw.set_defaults(fn=cmd_gateway)

    from .auth_cli import add_token_parser
    from .flow_cli import add_flow_parser
    from .groups_cli import add_group_parser
    from .nodes_cli import add_node_parser
    add_node_parser(sub)
    add_group_parser(sub)
    add_flow_parser(sub)
    add_token_parser(sub)
    add_store_parser(sub)

    t = sub.add_parser("task", help="create, inspect, follow and end tasks")
    t.add_argument("--server", default=DEFAULT_SERVER, help="gRPC address (env TASKHUB_SERVER)")
    t.add_argument("--namespace", "-n", default="", help="namespace (default: default)")
    add_connection_flags(t)
    tv = t.add_subparsers(dest="verb", required=True, metavar="VERB")

    c = tv.add_parser("create", help="create a task; prints its id")
    c.add_argument("--name", default="")
    c.add_argument("--python", metavar="MODULE:FUNCTION", help="a Python task instead of a command")
    c.add_argument("--input", help="JSON input of a Python task")
    c.add_argument("--priority", type=int, default=0)
    c.add_argument("--timeout", type=float, default=0, help="seconds, 0 for none")
    c.add_argument("--retries", type=int, default=0, help="retries allowed after a failure")
    c.add_argument("--env", action="append", help="KEY=VALUE (repeatable)")
    c.add_argument("--cwd", default="")
    c.add_argument("argv", nargs=argparse.REMAINDER, help="-- command and arguments")
    c.set_defaults(fn=cmd_task_create)

    g = tv.add_parser("get", help="print a task as JSON")
    g.add_argument("id", type=int)
    g.set_defaults(fn=cmd_task_get)

    ls = tv.add_parser("list", help="list tasks, newest first")
    ls.add_argument("--status", action="append", help="only this status (repeatable), e.g. running")
    ls.add_argument("--limit", type=int, default=50)
    ls.add_argument("--all-namespaces", "-A", action="store_true")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(fn=cmd_task_list)

    x = tv.add_parser("cancel", help="cancel a task")
    x.add_argument("id", type=int)
    x.add_argument("--reason", default="")
    x.set_defaults(fn=cmd_task_cancel)

    d = tv.add_parser("delete", help="delete a finished task's record and log")
    d.add_argument("id", type=int)
    d.add_argument("--force", action="store_true", help="also an unfinished task (it is killed first)")
    d.set_defaults(fn=cmd_task_delete)

    tr = tv.add_parser("trace", help="print the log live; exits 0 if the task succeeded")
    tr.add_argument("id", type=int)
    tr.add_argument("--offset", type=int, default=0, help="first line number")
    tr.add_argument("--no-follow", action="store_true", help="print what is stored and stop")
    tr.add_argument("--timestamps", "-t", action="store_true")
    tr.set_defaults(fn=cmd_task_trace)

    w = tv.add_parser("wait", help="block until the task ends; exits 0 if it succeeded")
    w.add_argument("id", type=int)
    w.set_defaults(fn=cmd_task_wait)
    from .cli_support import accept_global_flags_after_verb
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
    args = with_config(parser, argv, parser.parse_args(argv))
    try:
        code = args.fn(args)
        sys.stdout.flush()  # here, so that a reader gone (`| head`) is caught below
        return code
    except BrokenPipeError:  # the reader of our output went away: stop quietly, as `seq | head` does
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # the exit's flush must not fail again
        return 141  # 128 + SIGPIPE
    except grpc.RpcError as e:
        code = e.code()
        if code == grpc.StatusCode.UNAVAILABLE:
            print(f"taskhub: cannot reach the server at {getattr(args, 'server', '?')}: {e.details()}", file=sys.stderr)
        else:
            print(f"taskhub: {code.name}: {e.details()}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
