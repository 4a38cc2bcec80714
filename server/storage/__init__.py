"""Where taskhub keeps its state: one interface (base.py), one module of SQL per backend.

    open_store("var/taskhub.db")                          # SQLite, the embedded default
    open_store("postgresql://user:pass@host:5432/taskhub")  # PostgreSQL, shared by several servers
"""
from __future__ import annotations

from .base import Batch, Store, StoreError, Writer

__all__ = ["Batch", "Store", "StoreError", "Writer", "open_store", "parse_db"]

POSTGRES_SCHEMES = ("postgresql", "postgres")


def parse_db(text: str) -> tuple[str, str]:
    """--db as (backend, target): ("sqlite", path) or ("postgresql", url). An unknown scheme is an error."""
    scheme, sep, _ = text.partition("://")
    if not sep:
        if text.startswith("sqlite:"):
            return "sqlite", text[len("sqlite:"):]
        return "sqlite", text
    if scheme in POSTGRES_SCHEMES:
        return "postgresql", text
    if scheme == "sqlite":
        return "sqlite", text[len("sqlite://"):]
    raise StoreError(f"--db {text!r}: unknown scheme {scheme!r}; give a file path (SQLite) or"
                     " postgresql://user:password@host:port/dbname")


def open_store(text: str, read_only: bool = False) -> Store:
    """Open (and migrate, unless read_only) the store --db names; StoreError when it cannot be used."""
    kind, target = parse_db(text)
    if kind == "postgresql":
        from .postgres import PostgresStore
        return PostgresStore(target, read_only=read_only)
    from .sqlite import SqliteStore
    return SqliteStore(target, read_only=read_only)
