"""Authentication's records: tokens (hashes only) and the audit log, kept in the store.

Reads go through the store's domain methods; every write is a batch for the store's one writer.
"""
from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Callable, NamedTuple

from .storage import Store


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


class AuditRecord(NamedTuple):
    """One audited call. A tuple: one is made per audited call (a frozen dataclass took 4x as long)."""

    time_ms: int
    token_id: str
    token_name: str
    method: str
    namespace: str
    # The task ids the call named. A function returning them is called when the entry is written,
    # off the call's path (the auth interceptor passes one: reading them means walking protos).
    tasks: str | Callable[[], str]
    allowed: bool
    reason: str
    peer: str


AUDIT_DELAY = 0.05  # seconds an audit entry may wait for others to be written with


class AuthStore:
    def __init__(self, store: Store):
        self.store = store
        self._audit: list[AuditRecord] = []
        self._audit_timer: asyncio.TimerHandle | None = None

    # -- tokens -------------------------------------------------------------
    def all_tokens(self) -> list[TokenRecord]:
        return [TokenRecord(r["id"], r["name"], r["role"], tuple(json.loads(r["namespaces"])), r["hash"],
                            r["create_time_ms"], r["expire_time_ms"], r["revoke_time_ms"]) for r in self.store.tokens()]

    async def insert_token(self, t: TokenRecord) -> None:
        async with self.store.batch() as b:
            b.insert_token((t.id, t.name, t.role, json.dumps(list(t.namespaces)), t.hash, t.create_time_ms,
                            t.expire_time_ms, t.revoke_time_ms))

    async def revoke_token(self, token_id: str, when_ms: int) -> None:
        async with self.store.batch() as b:
            b.revoke_token(token_id, when_ms)

    # -- the key that task tokens are derived with ---------------------------------
    def server_key(self) -> str | None:
        return self.store.get_kv("auth:server_key")

    async def save_server_key(self, key: str) -> None:
        async with self.store.batch() as b:
            b.put_kv_if_absent("auth:server_key", key)

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
            with self.store.batch() as b:
                b.append_audit([(e.time_ms, e.token_id, e.token_name, e.method, e.namespace,
                                 e.tasks if isinstance(e.tasks, str) else e.tasks(), int(e.allowed), e.reason, e.peer)
                                for e in entries])

    def read_audit(self, limit: int, token_id: str = "") -> list[AuditRecord]:
        return [AuditRecord(r["time_ms"], r["token_id"], r["token_name"], r["method"], r["namespace"], r["tasks"],
                            bool(r["allowed"]), r["reason"], r["peer"]) for r in self.store.audit(limit, token_id)]
