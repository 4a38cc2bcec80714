"""DeltaService: thin; the domain is server/delta/service.py."""
from __future__ import annotations

from google.protobuf import empty_pb2
from taskhub.v1 import delta_service_pb2 as pb
from taskhub.v1 import delta_service_pb2_grpc as pb_grpc

from ..delta.service import DeltaTasks
from .convert import task_to_proto
from .errors import mapped


class DeltaService(pb_grpc.DeltaServiceServicer):
    def __init__(self, delta: DeltaTasks):
        self.delta = delta

    @mapped
    async def CreateDeltaTask(self, request, context):
        return task_to_proto(await self.delta.create(request.task, request.namespace, request.creator))

    @mapped
    async def StartDeltaClients(self, request, context):
        return pb.StartDeltaClientsResponse(nodes=await self.delta.start_clients(request.task_uid))

    @mapped
    async def DeltaSend(self, request, context):
        await self.delta.send(request.task_uid, request.key, request.payload)
        return empty_pb2.Empty()

    @mapped
    async def DeltaReceive(self, request, context):
        payload = await self.delta.receive(request.task_uid, request.key, min(request.timeout_seconds, 30.0))
        return pb.DeltaReceiveResponse(found=payload is not None, payload=payload or b"")
