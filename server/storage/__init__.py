"""Where taskhub keeps its state: one interface (base.py), one module of SQL per backend.

    open_store("var/taskhub.db")                          # SQLite, the embedded default
    open_store("postgresql://user:pass@host:5432/taskhub")  # PostgreSQL, shared by several servers
"""
from __future__ import annotations

from ..db_target import POSTGRESQL, UnsupportedDatabase, parse_db_target
from .base import Batch, Store, StoreError, Writer
from .sqlite import SqliteStore

__all__ = ["Batch", "Store", "StoreError", "Writer", "open_store"]


def open_store(text: str, read_only: bool = False) -> Store:
    """Open (and migrate, unless read_only) the store --db names (server/db_target.py reads it);
    StoreError when it cannot be used."""
    try:
        target = parse_db_target(text)
    except UnsupportedDatabase as e:
        raise StoreError(str(e)) from None
    if target.kind == POSTGRESQL:
        from .postgres import PostgresStore  # contract allow-list: psycopg loads only for PostgreSQL
        return PostgresStore(target.location, read_only=read_only)
    return SqliteStore(target.location, read_only=read_only)
