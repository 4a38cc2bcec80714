"""`taskhub node ...`: run the node agent, or list/inspect/drain nodes."""
from __future__ import annotations

import sys


from .cli_support import DEFAULT_SERVER, add_connection_flags, connect, key_values, print_message

def cmd_agent(a) -> int:
    from server.agent import AgentConfig, run
    from .credentials import env_tls_ca, env_token
    if a.token:
        print("taskhub node: --token on the command line is visible to every user of this machine (ps);"
              " pass it as TASKHUB_TOKEN instead", file=sys.stderr, flush=True)
    return run(AgentConfig(
        server=a.server.removeprefix("grpc://"), name=a.name, address=a.address, slots=a.slots,
        labels=key_values(a.label, "--label"), python_workers=a.python_workers, work_dir=a.work_dir,
        data_dir=a.data_dir,
        task_paths=a.task_path or [], kill_grace=a.kill_grace, heartbeat=a.heartbeat, max_backoff=a.max_backoff,
        token=a.token if a.token is not None else env_token(), tls_ca=a.tls_ca if a.tls_ca is not None else env_tls_ca(),
        tls_cert=a.tls_cert, tls_key=a.tls_key, task_user=a.task_user, trust_tasks=a.trust_tasks))


def cmd_list(a) -> int:
    from taskhub.v1 import node_service_pb2 as pb
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
    from taskhub.v1 import node_service_pb2 as pb
    print_message(connect(a).nodes.GetNode(pb.GetNodeRequest(name=a.node), timeout=30))
    return 0


def cmd_drain(a) -> int:
    from taskhub.v1 import node_service_pb2 as pb
    n = connect(a).nodes.DrainNode(pb.DrainNodeRequest(name=a.node, resume=a.resume), timeout=30)
    print(f"node {n.name}: {'draining' if n.draining else 'accepting tasks'}")
    return 0


def add_node_parser(sub) -> None:
    n = sub.add_parser("node", help="run the node agent (no verb), or list / get / drain nodes",
                       description="Without a verb: run the node agent for the server at --server.")
    n.add_argument("--server", default=DEFAULT_SERVER, help="server gRPC address HOST:PORT (env TASKHUB_SERVER)")
    add_connection_flags(n)
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
    n.set_defaults(fn=cmd_agent)
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
