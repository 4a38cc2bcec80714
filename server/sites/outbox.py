"""Federation messages on their way to another party's server.

A component task's `remote` of a small message (up to KEEP_BYTES) to a party of another server is
acknowledged to the task once the message is committed here (in flow_messages, under its
receiver's key), not once the receiver has it: the task goes on sending while earlier messages
travel, and they travel together. A larger message is not written here (a second copy of it costs
more than its trip): its sender is acknowledged once the receiver committed it. Per receiving party, one worker
sends what is waiting in order, several messages of one job per DeliverBatch call (the receiver
commits the lot at once and acknowledges after that commit), resending until acknowledged; then
the copies here are deleted. A server restarted finds the undelivered ones in its store and sends
them again (the receiver replaces a message it already has). Waiting messages are bounded in
bytes: a sender past the bound waits for the receiver.
"""
from __future__ import annotations

import asyncio
import collections
import logging
from dataclasses import dataclass
from typing import Callable

from taskhub.v1 import site_service_pb2 as pb

from .. import errors
from ..background import spawn
from ..storage import Store
from .peers import Peers

log = logging.getLogger("taskhub.sites")
KEEP_BYTES = 64 << 10        # larger messages are not kept here: their sender waits for the receiver
BATCH_BYTES = 8 << 20        # per DeliverBatch call (well under the channels' 64 MiB message limit)
BATCH_MESSAGES = 1000
MAX_WAITING_BYTES = 128 << 20


@dataclass
class _Message:
    job_id: str
    key: tuple       # (job, name, tag, (src role, src party), (dst role, dst party))
    payload: bytes
    delivered: asyncio.Future | None = None   # a message not kept here: its sender waits on this

    @property
    def row(self) -> tuple:
        job_id, name, tag, (src_role, src_party), (dst_role, dst_party) = self.key
        return job_id, name, tag, src_role, src_party, dst_role, dst_party, self.payload

    def request(self) -> pb.DeliverRequest:
        job_id, name, tag, (src_role, src_party), (dst_role, dst_party) = self.key
        return pb.DeliverRequest(job_id=job_id, name=name, tag=tag, src_role=src_role, src_party_id=src_party,
                                 dst_role=dst_role, dst_party_id=dst_party, payload=self.payload)


class Outbox:
    def __init__(self, peers: Peers, store: Store, job_ended: Callable[[str], bool],
                 refused: Callable[[str, int, str], None]):
        self.peers = peers
        self.store = store
        self.job_ended = job_ended          # True: the job's messages are no longer needed
        self.refused = refused              # (job, party, why): the party said no, or never answered
        self._queues: dict[int, collections.deque[_Message]] = {}
        self._ready: dict[int, asyncio.Event] = {}
        self._workers: list[asyncio.Task] = []
        self._latest: dict[tuple, _Message] = {}   # key -> its newest message (a resent key replaces)
        # job -> why a party refused its messages: the job's tasks here fail with it when they next
        # send or wait for a message (they were acknowledged already; a party's no is not retried)
        self.refusals: dict[str, str] = {}
        self._waiting_bytes = 0
        self._room = asyncio.Event()
        self._room.set()

    async def send(self, job_id: str, key: tuple, payload: bytes) -> None:
        """Returns once the message is committed here; it reaches its party's server after."""
        while self._waiting_bytes and self._waiting_bytes + len(payload) > MAX_WAITING_BYTES:
            self._room.clear()
            await self._room.wait()
        if len(payload) > KEEP_BYTES:
            m = _Message(job_id, key, payload, asyncio.get_running_loop().create_future())
            self._waiting_bytes += len(payload)
            self._queue(m)
            await m.delivered
            return
        m = _Message(job_id, key, payload)
        self._waiting_bytes += len(payload)
        b = self.store.batch()
        b.put_flow_messages([m.row])
        try:
            await b.submit(wait=True)
        except BaseException:
            self._release(len(payload))
            raise
        self._queue(m)

    def restore(self, own_party: int, live_jobs: set[str]) -> int:
        """At the start: what was committed here but not yet delivered goes out again."""
        rows = self.store.flow_outbox(own_party)
        stale = [r[:-1] for r in rows if r[0] not in live_jobs]
        if stale:
            b = self.store.batch()
            b.delete_flow_messages(stale)
            b.submit(wait=False)
        for job_id, name, tag, src_role, src_party, dst_role, dst_party, payload in rows:
            if job_id in live_jobs:
                self._waiting_bytes += len(payload)
                self._queue(_Message(job_id, (job_id, name, tag, (src_role, src_party), (dst_role, dst_party)),
                                     bytes(payload)))
        return len(rows) - len(stale)

    def _queue(self, m: _Message) -> None:
        party = m.key[4][1]
        q = self._queues.get(party)
        if q is None:
            q = self._queues[party] = collections.deque()
            self._ready[party] = asyncio.Event()
            self._workers.append(spawn(self._deliver(party), f"federation messages to party {party}"))
        if m.delivered is None:
            self._latest[m.key] = m
        q.append(m)
        self._ready[party].set()

    def _release(self, size: int) -> None:
        self._waiting_bytes -= size
        if self._waiting_bytes < MAX_WAITING_BYTES:
            self._room.set()

    def _next_batch(self, q: collections.deque[_Message]) -> list[_Message]:
        """The oldest messages of one job, within the batch bounds."""
        batch = [q.popleft()]
        size = len(batch[0].payload)
        while q and q[0].job_id == batch[0].job_id and len(batch) < BATCH_MESSAGES \
                and size + len(q[0].payload) <= BATCH_BYTES:
            size += len(q[0].payload)
            batch.append(q.popleft())
        return batch

    async def _deliver(self, party: int) -> None:
        q, ready = self._queues[party], self._ready[party]
        while True:
            if not q:
                ready.clear()
                await ready.wait()
                continue
            batch = self._next_batch(q)
            job_id = batch[0].job_id
            failure: errors.TaskhubError | None = None
            try:
                if self.job_ended(job_id) or not await self.peers.call(
                        party, "DeliverBatch", pb.DeliverBatchRequest(messages=[m.request() for m in batch]),
                        lambda: self.job_ended(job_id), job_id):
                    failure = errors.Unavailable(self.peers.unreachable.get(party)
                                                 or f"job {job_id} ended before party {party} got its messages")
            except errors.TaskhubError as e:
                log.warning("%s", e)
                failure = e
                self.refusals[job_id] = str(e)
                self.refused(job_id, party, str(e))
            except Exception as e:  # noqa: BLE001 - one bad batch must not stop the party's messages
                log.exception("federation messages of job %s to party %s", job_id, party)
                failure = errors.Unavailable(f"federation messages to party {party}: {e}")
            for m in batch:
                if m.delivered is not None and not m.delivered.done():
                    if failure is None:
                        m.delivered.set_result(None)
                    else:
                        m.delivered.set_exception(failure)
            # Delivered, or no longer wanted: the copies here go (not a key sent again since: its
            # newer message waits in the queue). A worker cancelled mid-call (shutdown) keeps them.
            done = [m for m in batch if m.delivered is None and self._latest.get(m.key) is m]
            for m in done:
                del self._latest[m.key]
            if done:
                b = self.store.batch()
                b.delete_flow_messages([m.row[:-1] for m in done])
                b.submit(wait=False)
            self._release(sum(len(m.payload) for m in batch))

    async def close(self) -> None:
        for w in self._workers:
            w.cancel()
