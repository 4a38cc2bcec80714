"""A gRPC server interceptor that counts every RPC by method and status code and times it."""
from __future__ import annotations

import asyncio
import time

import grpc

from .metrics import RPC_HANDLED, RPC_SECONDS

OK = grpc.StatusCode.OK


def _code_of(context, error: BaseException | None) -> str:
    """The status the call ended with: what the servicer set (abort sets it), else from the error."""
    code = None
    try:
        code = context.code()
    except (AttributeError, NotImplementedError):
        pass
    if isinstance(code, grpc.StatusCode):
        return code.name
    if isinstance(code, int):  # some grpcio versions report the raw number
        return next((c.name for c in grpc.StatusCode if c.value[0] == code), "UNKNOWN")
    if error is None:
        return OK.name
    if isinstance(error, asyncio.CancelledError):
        return grpc.StatusCode.CANCELLED.name
    return grpc.StatusCode.UNKNOWN.name


class MetricsInterceptor(grpc.aio.ServerInterceptor):
    """Wraps each method's handler once (cached by method name): per call, only timing and one count."""

    def __init__(self) -> None:
        self._wrapped: dict[str, grpc.RpcMethodHandler] = {}

    async def intercept_service(self, continuation, handler_call_details):
        wrapped = self._wrapped.get(handler_call_details.method)
        if wrapped is None:
            handler = await continuation(handler_call_details)
            if handler is None:
                return None  # unknown method: gRPC answers UNIMPLEMENTED
            wrapped = self._wrapped[handler_call_details.method] = self._wrap(handler_call_details.method, handler)
        return wrapped

    @staticmethod
    def _wrap(path: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        service, _, method = path.lstrip("/").partition("/")
        if handler.request_streaming and handler.response_streaming:
            kind, behavior, factory = "bidi_stream", handler.stream_stream, grpc.stream_stream_rpc_method_handler
        elif handler.request_streaming:
            kind, behavior, factory = "client_stream", handler.stream_unary, grpc.stream_unary_rpc_method_handler
        elif handler.response_streaming:
            kind, behavior, factory = "server_stream", handler.unary_stream, grpc.unary_stream_rpc_method_handler
        else:
            kind, behavior, factory = "unary", handler.unary_unary, grpc.unary_unary_rpc_method_handler
        labels = (kind, service, method)
        seconds = RPC_SECONDS.labels(*labels)
        handled: dict[str, object] = {}  # code -> its counter child

        def done(context, started: float, error: BaseException | None) -> None:
            seconds.observe(time.perf_counter() - started)
            code = _code_of(context, error)
            counter = handled.get(code)
            if counter is None:
                counter = handled[code] = RPC_HANDLED.labels(*labels, code)
            counter.inc()

        if handler.response_streaming:
            async def streaming(request, context):
                started, error = time.perf_counter(), None
                try:
                    answer = behavior(request, context)
                    if hasattr(answer, "__aiter__"):
                        async for item in answer:
                            yield item
                    else:  # a handler that writes with context.write() and returns nothing
                        await answer
                except BaseException as e:
                    error = e
                    raise
                finally:
                    done(context, started, error)
            wrapped = streaming
        else:
            async def unary(request, context):
                started, error = time.perf_counter(), None
                try:
                    return await behavior(request, context)
                except BaseException as e:
                    error = e
                    raise
                finally:
                    done(context, started, error)
            wrapped = unary
        return factory(wrapped, request_deserializer=handler.request_deserializer,
                       response_serializer=handler.response_serializer)
