"""The one place domain errors become gRPC status codes."""
from __future__ import annotations

import functools
import inspect
import logging

import grpc

from .. import errors

log = logging.getLogger(__name__)

CODES = {
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    errors.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    errors.AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    errors.PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    errors.Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    errors.ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.Unavailable: grpc.StatusCode.UNAVAILABLE,
    errors.DeadlineExceeded: grpc.StatusCode.DEADLINE_EXCEEDED,
}


def code_of(e: errors.TaskhubError) -> grpc.StatusCode:
    for cls in type(e).__mro__:
        if cls in CODES:
            return CODES[cls]
    return grpc.StatusCode.UNKNOWN


def trailing_of(e: errors.TaskhubError) -> tuple:
    leader = getattr(e, "leader", "")
    return ((errors.LEADER_METADATA, leader),) if leader else ()


def mapped(fn):
    """Wrap a servicer method (unary or server-streaming) so domain errors abort with their code."""
    if inspect.isasyncgenfunction(fn):
        @functools.wraps(fn)
        async def stream(self, request, context):
            try:
                async for item in fn(self, request, context):
                    yield item
            except errors.TaskhubError as e:
                await context.abort(code_of(e), str(e), trailing_metadata=trailing_of(e))
        return stream

    @functools.wraps(fn)
    async def unary(self, request, context):
        try:
            return await fn(self, request, context)
        except errors.TaskhubError as e:
            await context.abort(code_of(e), str(e), trailing_metadata=trailing_of(e))
    return unary
