"""The one place errors become HTTP answers.

Adapters raise `BadRequest` for input they cannot use; gRPC calls raise `grpc.aio.AioRpcError`.
`answers(render)` wraps a family's handler so both reach the family's `render(status, code,
message)` with the HTTP status that goes with the gRPC code.
"""
from __future__ import annotations

import functools
import json
import logging
from typing import Awaitable, Callable

import grpc
from aiohttp import web

from client.fate_args import ArgumentError

from .credentials import refusal

log = logging.getLogger("taskhub.gateway")

C = grpc.StatusCode
HTTP_STATUS = {
    C.OK: 200,
    C.CANCELLED: 499,
    C.UNKNOWN: 500,
    C.INVALID_ARGUMENT: 400,
    C.DEADLINE_EXCEEDED: 504,
    C.NOT_FOUND: 404,
    C.ALREADY_EXISTS: 409,
    C.PERMISSION_DENIED: 403,
    C.RESOURCE_EXHAUSTED: 429,
    C.FAILED_PRECONDITION: 400,
    C.ABORTED: 409,
    C.OUT_OF_RANGE: 400,
    C.UNIMPLEMENTED: 501,
    C.INTERNAL: 500,
    C.UNAVAILABLE: 503,
    C.DATA_LOSS: 500,
    C.UNAUTHENTICATED: 401,
}

Render = Callable[[int, grpc.StatusCode, str], web.StreamResponse]


class BadRequest(Exception):
    """Input an adapter cannot use; becomes INVALID_ARGUMENT (or the code given)."""

    def __init__(self, message: str, code: grpc.StatusCode = C.INVALID_ARGUMENT):
        super().__init__(message)
        self.code = code


def error_of(e: BaseException) -> tuple[grpc.StatusCode, str] | None:
    """(code, message) for an error a request can cause; None for a bug."""
    if isinstance(e, (BadRequest, ArgumentError)):  # ArgumentError: client/fate_args.py, shared with the SDK
        return getattr(e, "code", C.INVALID_ARGUMENT), str(e)
    if isinstance(e, grpc.aio.AioRpcError):
        if e.code() == C.UNAVAILABLE:
            return e.code(), f"the taskhub server is unavailable: {e.details()}"
        return e.code(), e.details() or e.code().name
    return None


def answers(render: Render):
    """Decorator for a family's handlers: every failure is answered in the family's envelope."""
    def wrap(handler: Callable[[web.Request], Awaitable[web.StreamResponse]]):
        @functools.wraps(handler)
        async def handle(request: web.Request) -> web.StreamResponse:
            why = refusal(request)  # before anything of the body is read
            if why is not None:
                return render(401, C.UNAUTHENTICATED, why)
            try:
                return await handler(request)
            except web.HTTPException:
                raise
            except Exception as e:  # noqa: BLE001 - turned into an answer below
                found = error_of(e)
                if found is None:
                    log.exception("gateway: %s %s failed", request.method, request.path)
                    return render(500, C.INTERNAL, f"internal error ({type(e).__name__}); see the server log")
                code, message = found
                return render(HTTP_STATUS.get(code, 500), code, message)
        return handle
    return wrap


@web.middleware
async def last_resort(request: web.Request, handler):
    """No traceback ever reaches a client: anything unhandled becomes a short JSON 500."""
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except Exception as e:  # noqa: BLE001
        found = error_of(e)
        if found:
            code, message = found
            return json_response({"code": code.value[0], "message": message}, HTTP_STATUS.get(code, 500))
        log.exception("gateway: %s %s failed", request.method, request.path)
        return json_response({"code": C.INTERNAL.value[0], "message": f"internal error ({type(e).__name__})"}, 500)


def json_response(data, status: int = 200) -> web.Response:
    return web.Response(text=json.dumps(data, ensure_ascii=False), status=status, content_type="application/json")
