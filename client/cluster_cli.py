"""`taskhub cluster`: the servers sharing the database, which one schedules, its epoch and since when."""
from __future__ import annotations

import time

from .cli_support import DEFAULT_SERVER, SERVER_HELP, add_connection_flags, connect, print_message


def _when(ms: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ms / 1000)) if ms else "-"


def cmd_cluster(a) -> int:
    resp = connect(a).cluster.list_servers()
    if a.json:
        print_message(resp)
        return 0
    print(f"scheduler {resp.scheduler or '(none: an election is under way)'}, epoch {resp.epoch},"
          f" since {_when(resp.scheduler_since_ms)}")
    print(f"{'SERVER':<28} {'ROLE':<10} {'STATE':<6} {'STARTED':<20} LAST SEEN")
    now = time.time() * 1000
    for s in resp.servers:
        role = "scheduler" if s.scheduler else "follower"
        print(f"{s.address:<28} {role:<10} {'up' if s.alive else 'gone':<6} {_when(s.started_ms):<20}"
              f" {max(0.0, (now - s.heartbeat_ms) / 1000):.1f}s ago")
    return 0


def add_cluster_parser(sub) -> None:
    c = sub.add_parser("cluster", help="the servers on the database and which one schedules",
                       description="Lists the servers sharing the server's database (PostgreSQL), which one is"
                                   " the scheduler, its epoch and since when. Any server answers.")
    c.add_argument("--server", default=DEFAULT_SERVER, help=SERVER_HELP)
    c.add_argument("--json", action="store_true", help="the answer as JSON")
    add_connection_flags(c)
    c.set_defaults(fn=cmd_cluster)
