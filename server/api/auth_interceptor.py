"""The one gate in front of every service: authenticate, authorize by server/auth.py's RULES,
limit open streams per token, audit, and drop the streams of a token when it is revoked.

UNAUTHENTICATED without a valid token, PERMISSION_DENIED outside the token's role or
namespaces, RESOURCE_EXHAUSTED past the stream limit. A method with no rule is refused
(fail closed); health (and reflection, unless closed) stay open.
"""
from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from contextvars import ContextVar
from functools import partial

import grpc

from .. import errors
from ..auth import ANY_ROLE, HEALTH_PREFIX, REFLECTION_PREFIXES, RULES, SITE_PREFIX, Authority, Caller, Rule
from .errors import code_of

log = logging.getLogger("taskhub.auth")


CLOSED_REFLECTION = Rule(ANY_ROLE, audit=False)


class AuthInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, authority: Authority, *, open_reflection: bool = True, max_streams_per_token: int = 256):
        self.authority = authority
        # The SiteService authenticates by client certificate, in the servicer (rule role SITE: no token has it).
        self.open_prefixes = (HEALTH_PREFIX, SITE_PREFIX) + (REFLECTION_PREFIXES if open_reflection else ())
        self.max_streams = max_streams_per_token
        self.streams: dict[str, dict[asyncio.Task, Gate]] = defaultdict(dict)
        self._handlers: dict[str, grpc.RpcMethodHandler | None] = {}  # method -> its gated handler
        authority.on_revoke.append(self.drop)

    def drop(self, token_id: str) -> None:
        """End every open stream of a revoked token (an agent's Connect among them)."""
        for task, gate in list(self.streams.get(token_id, {}).items()):
            gate.revoked = True
            task.cancel()  # the stream's handler turns this into UNAUTHENTICATED (see _wrap)

    async def intercept_service(self, continuation, details):
        # Each method's gated handler is built once; per call, only the Gate (see _wrap).
        _CALL_METADATA.set(details.invocation_metadata)
        method = details.method
        try:
            return self._handlers[method]
        except KeyError:
            pass
        handler = await continuation(details)
        if handler is not None and not method.startswith(self.open_prefixes):
            # Closed reflection (--close-reflection) needs a valid token, of any role.
            rule = RULES.get(method) or (CLOSED_REFLECTION if method.startswith(REFLECTION_PREFIXES) else None)
            handler = _wrap(handler, self, method, rule)
        self._handlers[method] = handler
        return handler


# The call's metadata as gRPC read it to find the call's handler, handed from intercept_service to
# the gated handler (both run in the call's own asyncio task). context.invocation_metadata() would
# build the whole tuple again: about half of the gate's own time per call.
_CALL_METADATA: ContextVar[tuple | None] = ContextVar("taskhub_call_metadata", default=None)


def _authorization(context) -> str | None:
    metadata = _CALL_METADATA.get()
    for key, value in (context.invocation_metadata() if metadata is None else metadata) or ():
        if key == "authorization":
            return value
    return None


class Gate:
    """The checks for one call."""

    __slots__ = ("owner", "method", "rule", "authorization", "caller", "namespace", "revoked")

    def __init__(self, owner: AuthInterceptor, method: str, rule: Rule | None, authorization: str | None):
        self.owner, self.method, self.rule, self.authorization = owner, method, rule, authorization
        self.caller: Caller | None = None
        self.namespace = ""
        self.revoked = False

    def enter(self, request, context) -> errors.TaskhubError | None:
        """Authenticate and authorize; the refusal (audited) if the call may not go on, for the
        caller to abort with. Not a coroutine: an allowed call never waits here."""
        authority = self.owner.authority
        try:
            if self.rule is None:
                self.caller = authority.authenticate(self.authorization)
                raise errors.PermissionDenied(f"{self.method} has no access rule; it is refused to everyone")
            self.caller, self.namespace = authority.admit(self.authorization, self.method, self.rule, request)
            return None
        except errors.TaskhubError as e:
            caller = self.caller or getattr(e, "caller", None)
            authority.audit(caller, self.method, self.namespace, _task_ids(request), False, str(e), context.peer())
            return e

    def done(self, request, response, context) -> None:
        if self.rule is not None and self.rule.audited:
            # The task ids are read when the entry is written, off the call's path.
            self.owner.authority.audit(self.caller, self.method, self.namespace, partial(_task_ids, request, response),
                                       True, "", context.peer())

    async def open_stream(self, context) -> asyncio.Task:
        task = asyncio.current_task()
        open_ = self.owner.streams[self.caller.id]
        if len(open_) >= self.owner.max_streams:
            message = (f"token {self.caller.id} has {len(open_)} streams open, the most allowed"
                       f" (--max-streams-per-token); close some first")
            self.owner.authority.audit(self.caller, self.method, self.namespace, "", False, message, context.peer())
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, message)
        open_[task] = self
        return task

    async def cancelled(self, context) -> None:
        """A stream ended by revoking its token tells the caller why; any other cancel goes on."""
        if not self.revoked:
            raise asyncio.CancelledError
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, f"token {self.caller.id} was revoked")

    def close_stream(self, task: asyncio.Task) -> None:
        open_ = self.owner.streams.get(self.caller.id)
        if open_ is not None:
            open_.pop(task, None)
            if not open_:
                self.owner.streams.pop(self.caller.id, None)


_ID_FIELDS: dict[type, tuple[bool, bool, bool]] = {}  # message class -> has (an integer id, tasks, ids)


def _id_fields(message) -> tuple[bool, bool, bool]:
    found = _ID_FIELDS.get(type(message))
    if found is None:
        fields = message.DESCRIPTOR.fields_by_name
        numeric = "id" in fields and fields["id"].cpp_type != fields["id"].CPPTYPE_STRING  # a task's, not a token's
        found = _ID_FIELDS[type(message)] = (numeric, "tasks" in fields, "ids" in fields)
    return found


def _task_ids(request, response=None) -> str:
    """Task ids a call named or created, for the audit."""
    ids = []
    for message in (request, response):
        if message is None:
            continue
        has_id, has_tasks, has_ids = _id_fields(message)
        if has_id and message.id:
            ids.append(message.id)
        if has_tasks:
            ids.extend(t.id for t in message.tasks)
        if has_ids:
            ids.extend(message.ids)
    if not ids:
        return ""
    return str(ids[0]) if len(ids) == 1 else f"{min(ids)}-{max(ids)} ({len(ids)})"


def _wrap(handler, owner: AuthInterceptor, method: str, rule: Rule | None):
    """The handler behind the checks; a Gate per call holds that call's caller and namespace."""
    def gate_of(context) -> Gate:
        return Gate(owner, method, rule, _authorization(context))

    if handler.unary_unary:
        inner = handler.unary_unary

        async def unary_unary(request, context):
            gate = gate_of(context)
            refused = gate.enter(request, context)
            if refused is not None:
                await context.abort(code_of(refused), str(refused))
            response = await inner(request, context)
            gate.done(request, response, context)
            return response
        return grpc.unary_unary_rpc_method_handler(unary_unary, handler.request_deserializer,
                                                   handler.response_serializer)

    if handler.unary_stream:
        inner = handler.unary_stream

        async def unary_stream(request, context):
            gate = gate_of(context)
            refused = gate.enter(request, context)
            if refused is not None:
                await context.abort(code_of(refused), str(refused))
            task = await gate.open_stream(context)
            try:
                gate.done(request, None, context)
                async for item in inner(request, context):
                    yield item
            except asyncio.CancelledError:
                await gate.cancelled(context)
            finally:
                gate.close_stream(task)
        return grpc.unary_stream_rpc_method_handler(unary_stream, handler.request_deserializer,
                                                    handler.response_serializer)

    if handler.stream_stream:
        inner = handler.stream_stream

        async def stream_stream(request_iterator, context):
            gate = gate_of(context)
            refused = gate.enter(None, context)
            if refused is not None:
                await context.abort(code_of(refused), str(refused))
            task = await gate.open_stream(context)
            try:
                gate.done(None, None, context)
                async for item in inner(request_iterator, context):
                    yield item
            except asyncio.CancelledError:
                await gate.cancelled(context)
            finally:
                gate.close_stream(task)
        return grpc.stream_stream_rpc_method_handler(stream_stream, handler.request_deserializer,
                                                     handler.response_serializer)

    inner = handler.stream_unary

    async def stream_unary(request_iterator, context):
        gate = gate_of(context)
        refused = gate.enter(None, context)
        if refused is not None:
            await context.abort(code_of(refused), str(refused))
        response = await inner(request_iterator, context)
        gate.done(None, response, context)
        return response
    return grpc.stream_unary_rpc_method_handler(stream_unary, handler.request_deserializer,
                                                handler.response_serializer)
