"""`taskhub node list|get|drain`: inspect and drain nodes. `taskhub node` without a verb runs the
node agent, which server/cli.py adds to this parser (the agent is server code: server/node/agent.py)."""
from __future__ import annotations

import argparse

from taskhub.v1 import node_service_pb2 as pb

from .cli_support import DEFAULT_SERVER, SERVER_HELP, add_connection_flags, connect, print_message


def cmd_no_agent(a) -> int:
    raise SystemExit("taskhub node: give a verb (list, get, drain); the node agent comes with the server"
                     " (install taskhub, not only its SDK)")


def cmd_list(a) -> int:
    resp = connect(a).nodes.ListNodes(pb.ListNodesRequest(), timeout=30)
    if a.json:
        print_message(resp)
        return 0
    print(f"{'NAME':<24} {'ADDRESS':<16} {'STATE':<8} {'SLOTS':>9} {'CPU%':>5} {'MEM%':>5}  LABELS")
    for n in resp.nodes:
        state = "online" if n.state == pb.NODE_STATE_ONLINE else "offline"
        if n.draining:
            state += ",drain"
        labels = ",".join(f"{k}={v}" for k, v in sorted(n.labels.items()))
        print(f"{n.name:<24} {n.address:<16} {state:<8} {n.free_slots:>4}/{n.slots:<4} {n.cpu_percent:>5.0f}"
              f" {n.memory_percent:>5.0f}  {labels}")
    return 0


def cmd_get(a) -> int:
    print_message(connect(a).nodes.GetNode(pb.GetNodeRequest(name=a.node), timeout=30))
    return 0


def cmd_drain(a) -> int:
    n = connect(a).nodes.DrainNode(pb.DrainNodeRequest(name=a.node, resume=a.resume), timeout=30)
    print(f"node {n.name}: {'draining' if n.draining else 'accepting tasks'}")
    return 0


def add_node_parser(sub) -> argparse.ArgumentParser:
    n = sub.add_parser("node", help="run the node agent (no verb), or list / get / drain nodes",
                       description="Without a verb: run the node agent for the server at --server.")
    n.add_argument("--server", default=DEFAULT_SERVER, help=SERVER_HELP)
    add_connection_flags(n)
    n.set_defaults(fn=cmd_no_agent)
    verbs = n.add_subparsers(dest="verb", metavar="VERB")
    ls = verbs.add_parser("list", help="list nodes")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(fn=cmd_list)
    g = verbs.add_parser("get", help="print one node as JSON")
    g.add_argument("node")
    g.set_defaults(fn=cmd_get)
    d = verbs.add_parser("drain", help="place no new tasks on a node (running ones finish)")
    d.add_argument("node")
    d.add_argument("--resume", action="store_true", help="accept new tasks again")
    d.set_defaults(fn=cmd_drain)
    return n
