"""`taskhub store stats` (it opens the database file, so it is server code), and the serve flags
that bound what the server keeps."""
from __future__ import annotations

import argparse
import json
import os
import sys

from client.cli_support import parse_duration


def _duration(text: str) -> str:
    try:
        parse_duration(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def add_reliability_flags(s: argparse.ArgumentParser) -> None:
    s.add_argument("--lease-grace", type=float, default=2.0, metavar="SECONDS",
                   help="a lost agent's tasks run elsewhere after --node-timeout + this (default 2)")
    s.add_argument("--retain", type=_duration, default="7d", metavar="DURATION",
                   help="purge finished tasks and their logs this long after they ended: 7d, 12h, 30m; 0 keeps"
                        " them forever (default 7d)")
    s.add_argument("--max-queued", type=_positive, default=1_000_000, metavar="N",
                   help="unfinished tasks the server holds; creates beyond get RESOURCE_EXHAUSTED (default 1000000)")
    s.add_argument("--queue-window", type=_positive, default=10_000, metavar="N",
                   help="queued tasks held in memory, the head of the queue; the rest stays in the database"
                        " (default 10000)")
    s.add_argument("--max-log-lines", type=_positive, default=1_000_000, metavar="N",
                   help="log lines kept per task; beyond, a marker line and the rest is dropped (default 1000000)")


def cmd_store_stats(a) -> int:
    # contract allow-list: the command loads the server's storage only for what it runs
    from .db_target import SQLITE, UnsupportedDatabase, parse_db_target
    from .storage import StoreError, open_store
    try:
        target = parse_db_target(a.db)
        if target.kind == SQLITE and not os.path.exists(target.location):
            print(f"taskhub: no database at {a.db} (give --db PATH)")
            return 2
        stats = open_store(a.db, read_only=True).stats()
    except (StoreError, UnsupportedDatabase) as e:
        print(f"taskhub: {e}", file=sys.stderr)
        return 2
    print(json.dumps(stats, indent=2))
    return 0


def add_store_parser(sub) -> None:
    st = sub.add_parser("store", help="the server's database: statistics")
    verbs = st.add_subparsers(dest="verb", required=True, metavar="VERB")
    s = verbs.add_parser("stats", help="rows per table, file sizes, the oldest task (JSON)")
    s.add_argument("--db", default=os.environ.get("TASKHUB_DB", "var/taskhub.db"), metavar="PATH|URL",
                   help="a SQLite file or postgresql://... URL (env TASKHUB_DB; default ./var/taskhub.db)")
    s.set_defaults(fn=cmd_store_stats)
