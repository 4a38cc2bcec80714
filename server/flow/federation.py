"""The federation channel: objects one party's component task sends to another party of the same job.

Messages are keyed (job, name, tag, source party, destination party) and stored durably, so a
retried task reads again what it was sent. A send is acknowledged once it is queued for the
store (a crash before that commit re-runs the sender, which sends again); until committed, and
then while they fit in MEMORY_BYTES, payloads are also served from memory, so an exchange costs
no store read. A task may only send
as, and read for, its own party of its own job. Waiters are woken when the message arrives, and
fail when the job ends (cancelled, or failed because a peer failed), so nobody waits forever.
"""
from __future__ import annotations

import asyncio
from typing import Awaitable, Callable

from .. import errors
from ..broadcast import Broadcaster
from .data import FlowData
from .model import FlowJob

MAX_PAYLOAD = 64 << 20
MEMORY_BYTES = 64 << 20   # committed payloads kept for readers beyond this are read from the store


class NotYet(errors.DeadlineExceeded):
    """No message within the wait; ask again."""


class Federation:
    def __init__(self, data: FlowData):
        self.data = data
        self.fstore = data.fstore
        self._arrivals = Broadcaster()  # message key -> receivers waiting for it
        self._recent: dict[tuple, bytes] = {}     # payloads by key, oldest first (insertion order)
        self._pending: set[tuple] = set()         # keys not committed yet: never evicted
        self._recent_bytes = 0
        # Each party on its own server (server/sites/): a message for another server's party goes
        # there (forward(job_id, key, payload) returns once it is committed here, on its way there:
        # server/sites/outbox.py; the receiver's server takes it in with accept_batch).
        self.forward: Callable[[str, tuple, bytes], Awaitable[None]] | None = None
        self.is_local: Callable[[int], bool] = lambda party_id: True
        self.refused: Callable[[str], str] = lambda job_id: ""   # why another party refused this job's messages
        data.jobs.add_end_listener(self._job_ended)

    @staticmethod
    def _check_party(job: FlowJob, role: str, party_id: int, what: str) -> None:
        if (role, party_id) not in [tuple(p) for p in job.parties]:
            raise errors.InvalidArgument(f"{what} {role} {party_id} is not a party of job {job.job_id}")

    async def send(self, task_uid: str, name: str, tag: str, dst_role: str, dst_party: int, payload: bytes) -> None:
        job, t = self.data.caller(task_uid)
        if not name:
            raise errors.InvalidArgument("a federation message needs a name")
        if len(payload) > MAX_PAYLOAD:
            raise errors.InvalidArgument(f"a federation message is at most {MAX_PAYLOAD} bytes")
        self._check_party(job, dst_role, dst_party, "destination")
        key = (job.job_id, name, tag, (t.role, t.party_id), (dst_role, dst_party))
        if why := self.refused(job.job_id):
            raise errors.FailedPrecondition(why)
        if self.forward is not None and not self.is_local(dst_party):
            await self.forward(job.job_id, key, payload)
            return
        self._keep(key, payload)

    def _check_incoming(self, job, src: tuple[str, int], dst: tuple[str, int], payload: bytes) -> None:
        """What another party's server forwards: parties of the job, addressed to one of this server's."""
        self._check_party(job, *src, "source")
        self._check_party(job, *dst, "destination")
        if not self.is_local(dst[1]):
            raise errors.InvalidArgument(f"party {dst[1]} does not run on this server")
        if len(payload) > MAX_PAYLOAD:
            raise errors.InvalidArgument(f"a federation message is at most {MAX_PAYLOAD} bytes")

    async def accept(self, job_id: str, name: str, tag: str, src: tuple[str, int], dst: tuple[str, int],
                     payload: bytes) -> None:
        """A message another party's server forwarded to a party of this one; returns once committed."""
        job = self.data.jobs.get(job_id)
        if job.terminal:
            raise errors.FailedPrecondition(f"job {job_id} ended ({job.status.fate}) at party {dst[1]}: {job.error}")
        self._check_incoming(job, src, dst, payload)
        await self._keep((job_id, name, tag, tuple(src), tuple(dst)), payload)

    async def accept_batch(self, job_id: str, messages: list[tuple[str, str, tuple, tuple, bytes]]) -> None:
        """Messages (name, tag, src, dst, payload) of one job another party's server forwarded to parties
        of this one, committed together; returns once committed. For a job that ended here they are
        dropped: no task of it will read them."""
        job = self.data.jobs.get(job_id)
        if job.terminal:
            return
        keys, rows = [], []
        for name, tag, src, dst, payload in messages:
            self._check_incoming(job, src, dst, payload)
            keys.append((job_id, name, tag, tuple(src), tuple(dst)))
            rows.append((job_id, name, tag, src[0], src[1], dst[0], dst[1], payload))
        for key, (*_, payload) in zip(keys, rows):
            self._remember(key, payload)
            self._pending.add(key)
        b = self.fstore.store.batch()
        b.put_flow_messages(rows)
        committed = b.submit(wait=True)
        committed.add_done_callback(lambda _: self._committed(*keys))
        for key in keys:
            self._arrivals.publish(key)
        await committed

    def _keep(self, key: tuple, payload: bytes):
        """Store a message for its receiver and wake it; the store's commit future."""
        self._remember(key, payload)
        self._pending.add(key)
        committed = self.fstore.put_message(*key, payload)
        committed.add_done_callback(lambda _: self._committed(key))
        self._arrivals.publish(key)
        return committed

    async def receive(self, task_uid: str, name: str, tag: str, src_role: str, src_party: int,
                      timeout: float) -> bytes:
        job, t = self.data.caller(task_uid)
        self._check_party(job, src_role, src_party, "source")
        key = (job.job_id, name, tag, (src_role, src_party), (t.role, t.party_id))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (timeout if timeout > 0 else 1e9)
        # Listen before looking, so a message that arrives while we look still wakes us.
        with self._arrivals.subscribe(key, limit=1) as arrived:
            while True:
                arrived.clear()
                payload = self._recent.get(key)
                if payload is None:
                    payload = await loop.run_in_executor(None, self.fstore.get_message, *key)
                if payload is not None:
                    return payload
                if job.terminal:
                    raise errors.FailedPrecondition(f"job {job.job_id} ended ({job.status.fate}): {job.error}")
                if why := self.refused(job.job_id):
                    raise errors.FailedPrecondition(why)
                if not await arrived.wait(deadline - loop.time()) and loop.time() >= deadline:
                    raise NotYet(f"no message {name}/{tag} from {src_role} {src_party} yet")

    def _remember(self, key: tuple, payload: bytes) -> None:
        old = self._recent.pop(key, None)
        self._recent_bytes -= len(old) if old is not None else 0
        self._recent[key] = payload
        self._recent_bytes += len(payload)

    def _committed(self, *keys: tuple) -> None:
        for key in keys:
            self._pending.discard(key)
            if key[0] not in self.data.jobs.jobs and key in self._recent:   # its job ended meanwhile
                self._recent_bytes -= len(self._recent.pop(key))
        if self._recent_bytes <= MEMORY_BYTES:
            return
        for k in list(self._recent):   # oldest first; uncommitted ones must stay
            if self._recent_bytes <= MEMORY_BYTES:
                break
            if k not in self._pending:
                self._recent_bytes -= len(self._recent.pop(k))

    def _job_ended(self, job: FlowJob) -> None:
        for k in [k for k in self._recent if k[0] == job.job_id and k not in self._pending]:
            self._recent_bytes -= len(self._recent.pop(k))
        for key in self._arrivals.matching(lambda k: k[0] == job.job_id):
            self._arrivals.publish(key)  # its receivers see the job ended
        self.fstore.delete_messages(job.job_id)
