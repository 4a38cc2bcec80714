"""`taskhub group ...`: task group templates and instances (seed 003)."""
from __future__ import annotations

import sys

from taskhub.v1 import task_group_service_pb2 as pb

from .cli_support import DEFAULT_SERVER, SERVER_HELP, add_connection_flags, connect, print_message

def cmd_create(a) -> int:
    text = sys.stdin.read() if a.file == "-" else open(a.file, encoding="utf-8").read()
    t = connect(a).groups.CreateTemplate(pb.CreateTemplateRequest(json=text), timeout=30)
    print(f"template {t.name} created")
    return 0


def cmd_get(a) -> int:
    print(connect(a).groups.GetTemplate(pb.GetTemplateRequest(name=a.name), timeout=30).json)
    return 0


def cmd_list(a) -> int:
    for t in connect(a).groups.ListTemplates(pb.ListTemplatesRequest(), timeout=30).templates:
        print(t.name)
    return 0


def cmd_delete(a) -> int:
    connect(a).groups.DeleteTemplate(pb.DeleteTemplateRequest(name=a.name), timeout=30)
    print(f"template {a.name} deleted")
    return 0


def cmd_deploy(a) -> int:
    print(connect(a).groups.Deploy(pb.DeployRequest(name=a.name, namespace=a.namespace), timeout=30).id)
    return 0


def cmd_status(a) -> int:
    print_message(connect(a).groups.GetInstance(pb.GetInstanceRequest(id=a.id), timeout=30))
    return 0


def cmd_instances(a) -> int:
    for i in connect(a).groups.ListInstances(pb.ListInstancesRequest(template=a.template), timeout=30).instances:
        print(f"{i.id}  {pb.InstanceStatus.Name(i.status).removeprefix('INSTANCE_STATUS_'):<9}  {i.template}")
    return 0


def cmd_stop(a) -> int:
    r = connect(a).groups.StopInstance(pb.StopInstanceRequest(id=a.id), timeout=30)
    print(f"instance {r.id} stopped ({len(r.cancelled_task_ids)} tasks cancelled)")
    return 0


def add_group_parser(sub) -> None:
    g = sub.add_parser("group", help="task group templates and instances")
    g.add_argument("--server", default=DEFAULT_SERVER, help=SERVER_HELP)
    add_connection_flags(g)
    verbs = g.add_subparsers(dest="verb", required=True, metavar="VERB")
    c = verbs.add_parser("create", help="store a template from a JSON file ('-': stdin)")
    c.add_argument("file")
    c.set_defaults(fn=cmd_create)
    for verb, fn, help_ in (("get", cmd_get, "print a template as stored"),
                            ("delete", cmd_delete, "delete a template"),
                            ("deploy", cmd_deploy, "deploy an instance; prints its id")):
        p = verbs.add_parser(verb, help=help_)
        p.add_argument("name")
        if verb == "deploy":
            p.add_argument("--namespace", "-n", default="")
        p.set_defaults(fn=fn)
    verbs.add_parser("list", help="list templates").set_defaults(fn=cmd_list)
    i = verbs.add_parser("instances", help="list instances")
    i.add_argument("--template", default="")
    i.set_defaults(fn=cmd_instances)
    for verb, fn, help_ in (("status", cmd_status, "print an instance and its status"),
                            ("stop", cmd_stop, "cancel an instance's tasks and remove it")):
        p = verbs.add_parser(verb, help=help_)
        p.add_argument("id")
        p.set_defaults(fn=fn)
