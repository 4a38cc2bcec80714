"""The client's verbs of the `taskhub` command: `taskhub <noun> <verb>` against a server (task,
group, flow, token, node list/get/drain, cluster). server/cli.py adds serve, gateway, the node agent and
store to them; `python -m client.cli` runs these verbs alone, for an SDK installed without the server.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import grpc
from taskhub.v1 import task_pb2 as pb

from .auth_cli import add_token_parser
from .cluster_cli import add_cluster_parser
from .cli_support import (DEFAULT_SERVER, SERVER_HELP, accept_global_flags_after_verb, add_connection_flags, connect,
                          key_values, print_message)
from .client import make_spec, status_name
from .flow_cli import add_flow_parser
from .groups_cli import add_group_parser
from .nodes_cli import add_node_parser


# -- task ---------------------------------------------------------------------
def _client(a):
    return connect(a)


def cmd_task_create(a) -> int:
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
    if not a.wait:
        print(_client(a).create_task(spec).id)
        return 0
    task = _client(a).run_task(spec)
    print(f"task {task.id}: {status_name(task.status)}" + (f" ({task.error})" if task.error else ""))
    return _exit_code(task.status)


def cmd_task_get(a) -> int:
    print_message(_client(a).get_task(a.id))
    return 0


def cmd_task_list(a) -> int:
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
    print(f"task {a.id}: {'cancel requested' if resp.cancelled else 'already ended'} ({status_name(resp.task.status)})")
    return 0


def cmd_task_delete(a) -> int:
    _client(a).delete_task(a.id, force=a.force)
    print(f"task {a.id} deleted")
    return 0


def _exit_code(status: int) -> int:
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
    task = _client(a).wait(a.id)
    print(f"task {a.id}: {status_name(task.status)}" + (f" ({task.error})" if task.error else ""))
    return _exit_code(task.status)


def add_task_parser(sub) -> None:
    t = sub.add_parser("task", help="create, inspect, follow and end tasks")
    t.add_argument("--server", default=DEFAULT_SERVER, help=SERVER_HELP)
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
    c.add_argument("--wait", action="store_true",
                   help="block until the task ends (one ExecuteTask call); exits 0 if it succeeded")
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


def add_client_verbs(sub) -> argparse.ArgumentParser:
    """The client's nouns on `sub`; returns the `node` parser (server/cli.py makes it run the agent)."""
    node = add_node_parser(sub)
    add_group_parser(sub)
    add_flow_parser(sub)
    add_token_parser(sub)
    add_task_parser(sub)
    add_cluster_parser(sub)
    return node


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="taskhub", description="taskhub: durable tasks over gRPC and HTTP (client verbs).")
    sub = p.add_subparsers(dest="noun", required=True, metavar="COMMAND")
    add_client_verbs(sub)
    accept_global_flags_after_verb(p)
    return p


def run(args: argparse.Namespace) -> int:
    """Run a parsed command; a failed RPC is one line on stderr and exit status 2."""
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
            server = getattr(args, "server", "?")
            where = f"any of the servers {server}" if "," in server else f"the server at {server}"
            print(f"taskhub: cannot reach {where}: {e.details()}", file=sys.stderr)
        else:
            print(f"taskhub: {code.name}: {e.details()}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def main(argv: list[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
