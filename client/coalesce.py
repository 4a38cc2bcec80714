"""Creates from many threads of one blocking client, coalesced into CreateTasks calls.

At most one create RPC of a client is in flight at a time. A caller that finds none goes out at
once, alone, as CreateTask; callers that arrive meanwhile queue, and when the call in flight
returns the first of them gets the turn: it sends the queue as it is when it wakes, as one
CreateTasks (itself alone as CreateTask), while the others wait. The callers of the call that
returned are woken before it, so those that come straight back can still join that batch; when
nobody was queued, the first of them back yields the GIL once before it sends, so that the others
straight back go with it. There is no timer: nothing waits for company.

Each caller gets its own task, or its own error. A batch the server refuses as a whole for
something one spec may cause (a bad spec, a namespace the token may not use, the queue full, the
message too large) made nothing, so its members are sent again one by one, each with the
request_id it was given on arrival, and each sees the answer to its own spec. A batch whose
outcome is unknown (UNAVAILABLE or DEADLINE_EXCEEDED after every retry, or an unexpected error)
is not sent again: every member gets that error. Retries of a batch carry the batch's own
request_id, so the server returns the tasks the first try made (engine.create).
"""
from __future__ import annotations

import threading
import time
from typing import Callable

import grpc
from taskhub.v1 import task_pb2 as pb
from taskhub.v1 import task_service_pb2 as svc

# A CreateTasks refused with one of these created nothing, and may have been refused for one
# member's sake: its members are sent again alone.
REFUSED = frozenset({grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.PERMISSION_DENIED,
                     grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.FAILED_PRECONDITION,
                     grpc.StatusCode.NOT_FOUND, grpc.StatusCode.OUT_OF_RANGE, grpc.StatusCode.ALREADY_EXISTS})
# Well under the server's 10,000 per batch; a larger queue goes in several turns.
MAX_BATCH = 500


class _Call:
    __slots__ = ("request", "done", "task", "error", "turn")

    def __init__(self, request: svc.CreateTaskRequest):
        self.request = request
        self.done = threading.Event()
        self.task: pb.Task | None = None
        self.error: BaseException | None = None
        self.turn = False  # set (under the lock) when this caller, first in the queue, is to send it


class Coalescer:
    """`one(request)` sends a CreateTaskRequest, `many(request)` a CreateTasksRequest (both
    retrying as the client does); `request_id()` makes a batch's id. `sent` counts the RPCs made,
    by method name (tests and benchmarks read it)."""

    def __init__(self, one: Callable, many: Callable, request_id: Callable[[], str]):
        self._one, self._many, self._request_id = one, many, request_id
        self._lock = threading.Lock()
        self._busy = False
        self._queue: list[_Call] = []
        self.sent = {"CreateTask": 0, "CreateTasks": 0}
        self._back_soon = 0  # callers of the last answer, with nobody queued then: they may come straight back

    def queued(self) -> int:
        """Callers waiting for the call in flight to return."""
        with self._lock:
            return len(self._queue)

    def create(self, request: svc.CreateTaskRequest) -> pb.Task:
        call = _Call(request)
        company = False
        with self._lock:
            if self._busy:
                self._queue.append(call)
            else:
                self._busy = call.turn = True
                company, self._back_soon = self._back_soon > 1, 0
        if call.turn and company:
            # The other callers the last answer woke may be on their way back: this caller lets
            # them run once (it yields the GIL; no timer), and those straight back go with it in one
            # batch instead of one call later. With 8 threads each creating in a loop, a call carried
            # 4.5 tasks (every other one a lone CreateTask), now 6.4: creates +20 %.
            with self._lock:
                self._queue.insert(0, call)
            try:
                time.sleep(0)
            finally:
                self._send_and_hand_on(self._take_queue())
        elif call.turn:  # nothing in flight: this caller goes out at once, alone
            self._send_and_hand_on([call])
        elif self._await(call):  # handed the turn: it sends the queue, itself first
            self._send_and_hand_on(self._take_queue())
        if call.error is not None:
            raise call.error
        return call.task

    def _await(self, call: _Call) -> bool:
        """Wait until the call is answered (False) or has the turn (True)."""
        try:
            call.done.wait()
        except BaseException:  # e.g. KeyboardInterrupt in the main thread
            with self._lock:
                if not call.turn:
                    self._queue.remove(call)
                    raise
            self._send_and_hand_on(self._take_queue())  # it had the turn: the others must not wait forever
            raise
        return call.turn

    def _take_queue(self) -> list[_Call]:
        """The batch of the caller that has the turn (the queue's first): the queue as it is now."""
        with self._lock:
            batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
        return batch

    def _send_and_hand_on(self, batch: list[_Call]) -> None:
        try:
            self._send(batch)
        finally:
            with self._lock:
                head = self._queue[0] if self._queue else None
                self._busy = head is not None
                self._back_soon = len(batch) if head is None else 0
                if head is not None:
                    head.turn = True
            for c in batch:  # first: a caller that comes straight back may still join the next batch
                c.done.set()
            if head is not None:
                head.done.set()

    def _send(self, batch: list[_Call]) -> None:
        if len(batch) == 1:
            self._send_alone(batch[0])
            return
        request = svc.CreateTasksRequest(specs=[c.request.spec for c in batch], request_id=self._request_id())
        try:
            self.sent["CreateTasks"] += 1
            tasks = list(self._many(request).tasks)
            if len(tasks) != len(batch):
                raise RuntimeError(f"CreateTasks answered {len(tasks)} tasks for {len(batch)} specs")
        except grpc.RpcError as e:
            if e.code() not in REFUSED:
                for c in batch:
                    c.error = e
                return
            for c in batch:
                self._send_alone(c)
            return
        except BaseException as e:
            for c in batch:
                c.error = e
            raise
        for c, t in zip(batch, tasks):
            c.task = t

    def _send_alone(self, call: _Call) -> None:
        try:
            self.sent["CreateTask"] += 1
            call.task = self._one(call.request)
        except Exception as e:
            call.error = e
