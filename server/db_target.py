"""What `--db` names, and the one server that may own it.

parse_db_target() is the one place a --db value is read: a file path is SQLite; a URL
(scheme://...) names another database, and each kind this build can serve is listed in KINDS.
claim_database() makes the server the database's only owner before anything reads it: a
second server on the same SQLite file would take the first one's running tasks for
interrupted ones and kill them.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass

from .owner_lock import holder, try_hold

SQLITE = "sqlite"
KINDS: dict[str, str] = {}   # URL scheme -> kind, for database servers this build supports (none yet)
_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


@dataclass(frozen=True)
class DbTarget:
    kind: str        # "sqlite", or a KINDS value
    location: str    # the file path, or the URL as given


class UnsupportedDatabase(ValueError):
    pass


def parse_db_target(value: str) -> DbTarget:
    m = _URL.match(value or "")
    if not m:
        return DbTarget(SQLITE, value)
    scheme = m.group(1).lower()
    if scheme in KINDS:
        return DbTarget(KINDS[scheme], value)
    raise UnsupportedDatabase(
        f"--db {value!r}: {scheme}:// databases are not supported by this build; give the path of a SQLite"
        f" file (e.g. var/taskhub.db)")


def claim_database(target: DbTarget) -> int | None:
    """Hold the database for this process's life (the descriptor of the lock, or None where the
    database server itself arbitrates). Raises SystemExit naming the owner if another server has it."""
    if target.kind != SQLITE:
        return None
    path = os.path.realpath(target.location) + ".lock"
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd = try_hold(path)
    if fd is None:
        raise SystemExit(f"taskhub: the database {os.path.realpath(target.location)} is in use by another taskhub"
                         f" server ({holder(path)}); stop that server first, or give this one another --db")
    return fd
