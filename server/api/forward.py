"""Calls a follower passes to the scheduler: services whose state lives in the scheduler's memory.

FATE jobs (FlowService, SiteService), Delta runs (DeltaService) and task group instances
(TaskGroupService) are driven by the engine that places their tasks, i.e. by the scheduler
(server/cluster.py). On a
follower their calls are sent on to the scheduler as they came (same method, same metadata, so the
scheduler checks the caller's token again), and its answer, or its error, comes back unchanged.
The handler decides per call: the server it runs on may become the scheduler at any moment.
With TLS a follower does not dial the scheduler; it answers FAILED_PRECONDITION saying where it is
(the `taskhub-leader` trailing metadata), as NodeService does.
"""
from __future__ import annotations

import grpc
from google.protobuf import descriptor_pool, message_factory

from .. import errors
from .errors import code_of, trailing_of

SCHEDULER_SERVICES = ("/taskhub.v1.FlowService/", "/taskhub.v1.DeltaService/", "/taskhub.v1.TaskGroupService/",
                      "/taskhub.v1.SiteService/")  # (the other FATE parties' calls, when on the main port)
# Call metadata that belongs to the connection, not to the call.
_CONNECTION_KEYS = ("content-type", "user-agent", "te", "grpc-", ":")


class ToScheduler(grpc.aio.ServerInterceptor):
    def __init__(self, cluster, dial: bool):
        self.cluster = cluster
        self.dial = dial                    # False under TLS: answer where the scheduler is instead
        self._channels: dict[str, grpc.aio.Channel] = {}

    async def intercept_service(self, continuation, details):
        handler = await continuation(details)
        if handler is None or not self.cluster.shared or not details.method.startswith(SCHEDULER_SERVICES):
            return handler
        return _per_call(handler, details.method, self)

    # -- on a follower, per call
    def _target(self) -> tuple[grpc.aio.Channel, str]:
        leader = self.cluster.leader_address()
        if not self.dial or not leader or leader == self.cluster.address:
            raise errors.NotScheduler("" if leader == self.cluster.address else leader)
        channel = self._channels.get(leader)
        if channel is None:
            channel = self._channels[leader] = grpc.aio.insecure_channel(leader)
        return channel, leader

    @staticmethod
    def metadata(context) -> tuple:
        return tuple((k, v) for k, v in context.invocation_metadata() or () if not k.startswith(_CONNECTION_KEYS))

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()


def _response_class(method: str):
    service, name = method.strip("/").split("/")
    desc = descriptor_pool.Default().FindServiceByName(service).FindMethodByName(name)
    return message_factory.GetMessageClass(desc.output_type)


async def _abort(context, e: Exception):
    if isinstance(e, errors.TaskhubError):
        await context.abort(code_of(e), str(e), trailing_metadata=trailing_of(e))
    await context.abort(e.code(), e.details() or "", trailing_metadata=tuple(e.trailing_metadata() or ()))


def _per_call(handler, method: str, fwd: ToScheduler):
    cluster = fwd.cluster
    kind = next(k for k in ("unary_unary", "unary_stream", "stream_unary", "stream_stream") if getattr(handler, k))
    real = getattr(handler, kind)
    response = _response_class(method)

    def call(request, context):
        """The same call to the scheduler (raises NotScheduler when there is none to dial)."""
        channel, _ = fwd._target()
        send = getattr(channel, kind)(method, request_serializer=lambda m: m.SerializeToString(),
                                      response_deserializer=response.FromString)
        return send(request, metadata=fwd.metadata(context), timeout=context.time_remaining())

    if kind.endswith("_unary"):
        async def behavior(request, context):
            if cluster.leading:
                return await real(request, context)
            try:
                return await call(request, context)
            except (grpc.aio.AioRpcError, errors.TaskhubError) as e:
                await _abort(context, e)
    else:
        async def behavior(request, context):
            if cluster.leading:
                async for m in real(request, context):
                    yield m
                return
            try:
                async for m in call(request, context):
                    yield m
            except (grpc.aio.AioRpcError, errors.TaskhubError) as e:
                await _abort(context, e)
    return getattr(grpc, f"{kind}_rpc_method_handler")(
        behavior, request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer)
