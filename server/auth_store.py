"""SQLite for authentication: the tokens table (hashes only) and the audit log.

Reads use the Store's per-thread connections; every write goes through the Store's Writer.
"""
from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass

from .store import EXTRA_MIGRATIONS, PURGE_STEPS, Store


def _auth_v1(db) -> None:
    db.execute("CREATE TABLE auth_tokens (id TEXT PRIMARY KEY, name TEXT NOT NULL, role TEXT NOT NULL,"
               " namespaces TEXT NOT NULL, hash TEXT NOT NULL UNIQUE, create_time_ms INTEGER NOT NULL,"
               " expire_time_ms INTEGER NOT NULL, revoke_time_ms INTEGER NOT NULL)")
    db.execute("CREATE TABLE auth_audit (seq INTEGER PRIMARY KEY AUTOINCREMENT, time_ms INTEGER NOT NULL,"
               " token_id TEXT NOT NULL, token_name TEXT NOT NULL, method TEXT NOT NULL, namespace TEXT NOT NULL,"
               " tasks TEXT NOT NULL, allowed INTEGER NOT NULL, reason TEXT NOT NULL, peer TEXT NOT NULL)")
    db.execute("CREATE INDEX auth_audit_token ON auth_audit (token_id, seq)")


EXTRA_MIGRATIONS.setdefault("auth", []).append(_auth_v1)


def purge_old_audit(store: Store, cutoff_ms: int, limit: int) -> list[tuple[str, tuple]]:
    """The statement deleting up to `limit` audit rows written before cutoff_ms (run by server/retention.py).
    Rows are appended in time order, so the oldest are the first by seq: reading the first `limit`
    rows finds them without an index on time_ms."""
    rows = store.query("SELECT seq, time_ms FROM auth_audit ORDER BY seq LIMIT ?", (limit,))
    old = tuple(r["seq"] for r in rows if r["time_ms"] < cutoff_ms)
    if not old:
        return []
    return [(f"DELETE FROM auth_audit WHERE seq IN ({','.join('?' * len(old))})", old)]


PURGE_STEPS.setdefault("auth_audit", purge_old_audit)


@dataclass(frozen=True)
class TokenRecord:
    id: str
    name: str
    role: str
    namespaces: tuple[str, ...]
    hash: str
    create_time_ms: int
    expire_time_ms: int = 0      # 0: never
    revoke_time_ms: int = 0      # 0: not revoked


@dataclass(frozen=True)
class AuditRecord:
    time_ms: int
    token_id: str
    token_name: str
    method: str
    namespace: str
    tasks: str
    allowed: bool
    reason: str
    peer: str


AUDIT_DELAY = 0.05  # seconds an audit entry may wait for others to be written with
_INSERT_AUDIT = ("INSERT INTO auth_audit (time_ms, token_id, token_name, method, namespace, tasks, allowed, reason,"
                 " peer) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)")


class AuthStore:
    def __init__(self, store: Store):
        self.store = store
        self._audit: list[AuditRecord] = []
        self._audit_timer: asyncio.TimerHandle | None = None

    # -- tokens -------------------------------------------------------------
    def all_tokens(self) -> list[TokenRecord]:
        rows = self.store.query("SELECT * FROM auth_tokens ORDER BY create_time_ms DESC, id")
        return [TokenRecord(r["id"], r["name"], r["role"], tuple(json.loads(r["namespaces"])), r["hash"],
                            r["create_time_ms"], r["expire_time_ms"], r["revoke_time_ms"]) for r in rows]

    def insert_token(self, t: TokenRecord):
        return self.store.writer.execute([(
            "INSERT INTO auth_tokens (id, name, role, namespaces, hash, create_time_ms, expire_time_ms,"
            " revoke_time_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (t.id, t.name, t.role, json.dumps(list(t.namespaces)), t.hash, t.create_time_ms, t.expire_time_ms,
             t.revoke_time_ms))])

    def revoke_token(self, token_id: str, when_ms: int):
        return self.store.writer.execute([("UPDATE auth_tokens SET revoke_time_ms=? WHERE id=?", (when_ms, token_id))])

    # -- the key that task tokens are derived with ---------------------------------
    def server_key(self) -> str | None:
        return self.store.get_kv("auth:server_key")

    def save_server_key(self, key: str):
        return self.store.writer.execute([("INSERT OR IGNORE INTO kv(key, value) VALUES ('auth:server_key', ?)", (key,))])

    # -- audit ------------------------------------------------------------
    def append_audit(self, entries: list[AuditRecord]) -> None:
        """Fire and forget: the audit never slows a call down. Entries wait up to AUDIT_DELAY and go
        to the writer together, so a busy server does not wake the writer an extra time per call."""
        self._audit.extend(entries)
        if self._audit_timer is None:
            self._audit_timer = asyncio.get_running_loop().call_later(AUDIT_DELAY, self.flush_audit)

    def flush_audit(self) -> None:
        """Hand the pending entries to the writer (also at shutdown, before the writer stops)."""
        if self._audit_timer is not None:
            self._audit_timer.cancel()
            self._audit_timer = None
        entries, self._audit = self._audit, []
        if entries:
            self.store.writer.execute([(_INSERT_AUDIT, (e.time_ms, e.token_id, e.token_name, e.method, e.namespace,
                                                        e.tasks, int(e.allowed), e.reason, e.peer))
                                       for e in entries], wait=False)

    def read_audit(self, limit: int, token_id: str = "") -> list[AuditRecord]:
        where, params = ("WHERE token_id=?", [token_id]) if token_id else ("", [])
        rows = self.store.query(f"SELECT * FROM auth_audit {where} ORDER BY seq DESC LIMIT ?", params + [limit])
        return [AuditRecord(r["time_ms"], r["token_id"], r["token_name"], r["method"], r["namespace"], r["tasks"],
                            bool(r["allowed"]), r["reason"], r["peer"]) for r in rows]
