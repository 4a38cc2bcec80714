"""An agent's own files in its work directory, when several agents share the directory.

An agent keeps two files there: its instance marker (what a successor kills if the agent dies
and leaves processes behind) and its lease deadline (read by its fence). Agents started from
the same directory (`taskhub node` twice in one checkout) must not share them: the second would
kill the first's runs as a dead predecessor's, and renew the first's lease from its own
heartbeats, so a frozen first agent's fence would never fire. So each agent holds a slot: the
lowest-numbered lock file it can take (`.taskhub-agent.lock`, then `.taskhub-agent.lock.1`, ...),
held for its life, and slot N's files carry the suffix `.N` (slot 0 keeps the plain names of
earlier versions). Command tasks still start in the directory itself.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from ..owner_lock import holder, try_hold

LOCK, INSTANCE, LEASE = ".taskhub-agent.lock", ".taskhub-agent-instance", ".taskhub-lease"
MAX_SLOTS = 64


@dataclass
class AgentSlot:
    work_dir: str
    number: int
    lock_fd: int

    def file(self, base: str) -> str:
        return slot_file(self.work_dir, base, self.number)

    @property
    def instance_file(self) -> str:
        return self.file(INSTANCE)

    @property
    def lease_file(self) -> str:
        return self.file(LEASE)


def slot_file(work_dir: str, base: str, number: int) -> str:
    return os.path.join(work_dir, base if number == 0 else f"{base}.{number}")


def claim_slot(work_dir: str) -> tuple[AgentSlot, list[str]]:
    """The lowest free slot, and who holds the slots below it (for a message)."""
    os.makedirs(work_dir, exist_ok=True)
    busy = []
    for n in range(MAX_SLOTS):
        path = slot_file(work_dir, LOCK, n)
        fd = try_hold(path)
        if fd is not None:
            return AgentSlot(work_dir, n, fd), busy
        busy.append(holder(path))
    raise SystemExit(f"taskhub node: {MAX_SLOTS} agents already use work directory {work_dir}; give this one"
                     " another --work-dir")


def dead_slots(work_dir: str, own: int):
    """Slots other than `own` whose agent is gone: yields the path of each one's instance file,
    holding its lock meanwhile (so no agent starting now takes it before its leftovers are killed)."""
    for n in range(MAX_SLOTS):
        instance = slot_file(work_dir, INSTANCE, n)
        if n == own or not os.path.exists(instance):
            continue
        fd = try_hold(slot_file(work_dir, LOCK, n))
        if fd is None:
            continue  # a live agent's
        try:
            yield instance
        finally:
            os.close(fd)
