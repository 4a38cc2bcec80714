"""Where a task's round trip goes: monotonic timestamps at each stage, for `make bench` only.

Off unless the server starts with TASKHUB_STAGES=<file>; then every site on the path records
`time.monotonic()` (CLOCK_MONOTONIC, the same clock in every process of the machine, so the
bench's client and the Python workers line up with the server) and the records are written
to that file, one JSON line per task, when the server stops. Off, a site costs one test of
the module-level `ON`. bench/stages.py reads the file and prints the budget.

Stages recorded on the server, in the order a task meets them:
  received    the call reached the first interceptor
  servicer    it passed the interceptors (auth, metrics) and entered the servicer
  queued      the engine handed the rows to the store writer
  committed   the insert was committed (the create answers now)
  dispatched  the job was written to an idle Python worker's pipe
  worker_got / worker_done   the worker took the job / finished it (the worker's own clock)
  exited      the worker's "done" reached the engine
  announced   the terminal status was committed and handed to the waiters
Every mark made on the server also records the event loop's CPU time (`time.thread_time()` as
"<stage>@cpu"): between two such marks, how much of a stage was the loop's own work and how
much was waiting (for gRPC, the worker, a time slice).
"""
from __future__ import annotations

import contextvars
import json
import os
import time

PATH = os.environ.get("TASKHUB_STAGES", "")
ON = bool(PATH)
now = time.monotonic
cpu = time.thread_time  # the calling thread's: every server mark is made on the event loop's thread
CPU = "@cpu"

_records: dict[int, dict[str, float]] = {}
# The call in progress: (received, servicer) times and the loop's CPU time at each, set by
# StageInterceptor for the engine to claim.
call_times: contextvars.ContextVar[tuple[float, float, float, float]] = contextvars.ContextVar(
    "call_times", default=(0.0, 0.0, 0.0, 0.0))


def mark(task_id: int, stage: str, at: float = 0.0) -> None:
    """`stage` reached now (with the loop's CPU time), or at `at` (another process's clock)."""
    record = _records.setdefault(task_id, {})
    if at:
        record[stage] = at
    else:
        record[stage] = now()
        record[stage + CPU] = cpu()


def claim_call(task_id: int) -> None:
    """Give the current call's interceptor times to a task it created."""
    received, received_cpu, servicer, servicer_cpu = call_times.get()
    if received:
        _records.setdefault(task_id, {}).update({"received": received, "received" + CPU: received_cpu,
                                                 "servicer": servicer, "servicer" + CPU: servicer_cpu})


def flush() -> None:
    if not ON or not _records:
        return
    with open(PATH, "a") as f:
        for task_id, stages in _records.items():
            f.write(json.dumps({"id": task_id, **stages}) + "\n")
    _records.clear()


def interceptors(inner: list) -> list:
    """`inner` bracketed by two stage interceptors when ON (the first notes when a call arrived,
    the last when it reaches the servicer), else `inner` unchanged. grpc is imported only here:
    the Python workers import this module too."""
    if not ON:
        return inner
    import grpc

    class StageInterceptor(grpc.aio.ServerInterceptor):
        def __init__(self, first: bool):
            self.first = first

        async def intercept_service(self, continuation, details):
            arrived, arrived_cpu = now(), cpu()
            handler = await continuation(details)
            first = self.first

            def stamp() -> None:
                call_times.set((arrived, arrived_cpu, 0.0, 0.0) if first else (*call_times.get()[:2], now(), cpu()))

            if handler is not None and handler.unary_unary:
                unary = handler.unary_unary

                async def timed(request, context):
                    stamp()
                    return await unary(request, context)
                return grpc.unary_unary_rpc_method_handler(timed, handler.request_deserializer,
                                                           handler.response_serializer)
            if handler is not None and handler.unary_stream:  # RunTask creates too
                streaming = handler.unary_stream

                async def timed_stream(request, context):
                    stamp()
                    async for message in streaming(request, context):
                        yield message
                return grpc.unary_stream_rpc_method_handler(timed_stream, handler.request_deserializer,
                                                            handler.response_serializer)
            return handler
    return [StageInterceptor(True), *inner, StageInterceptor(False)]
